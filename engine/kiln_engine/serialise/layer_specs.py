"""The spec of every layer type: its JSON fields, its constructor and its arrays' shapes.

One ``register`` call per layer class. A field's ``dump`` reads it back from a built
layer; ``arrays`` must list exactly the arrays the constructor allocates (the tests
compare them with built models), since parameter limits are checked from it alone.
"""

from __future__ import annotations

import inspect
import operator
from collections.abc import Callable
from typing import Any

import numpy as np

from .._spec import SpecError, check_keys, described, get_int, integer_schema, join
from ..activations import ACTIVATIONS
from ..init import INITIALISERS
from ..layers import (
    GRU,
    LSTM,
    RNN,
    AlphaDropout,
    BatchNorm,
    Chain,
    Conv,
    ConvTranspose,
    Dense,
    Dropout,
    Embedding,
    Flatten,
    GlobalMaxPool,
    GlobalMeanPool,
    LayerNorm,
    MaxPool,
    MeanPool,
    Parallel,
    SkipConnection,
    concat,
)
from .spec import (
    Field,
    LayerSpec,
    PlannedArray,
    activation_field,
    bool_field,
    choice_field,
    dtype_field,
    float_field,
    int_field,
    layer_field,
    layers_field,
    register,
)

__all__: list[str] = []


def _dtype(v: dict[str, Any]) -> np.dtype:
    return np.dtype(v["dtype"])


def _init_field(name: str = "init", choices: dict = INITIALISERS,
                default: str = "glorot_uniform") -> Field:
    """An initialiser by name: a build-only option, since a built layer forgets it."""
    return choice_field(name, choices, None, default=default,
                        description="how the weights start (model_to_spec leaves it out)")


def _nullable(schema: dict[str, Any]) -> dict[str, Any]:
    """``schema`` or null (for a field whose null means its default)."""
    either = schema["anyOf"] if list(schema) == ["anyOf"] else [schema]
    return {"anyOf": [*either, {"type": "null"}]}


def _active_field() -> Field:
    """``active``: null (train inside ``gradient``, the default), true or false."""
    def parse(spec: dict, path: str) -> bool | None:
        v = spec.get("active")
        if v is not None and not isinstance(v, bool):
            raise SpecError(join(path, "active"),
                            f"must be true, false or null (automatic); got {v!r}")
        return v

    return Field("active", parse, lambda layer, path: layer.active, schema=described(
        _nullable({"type": "boolean"}), "null: active in training only; true or false: "
        "always or never", None))


def _ints_or_int_schema(minimum: int | None, required: bool) -> dict[str, Any]:
    """What :func:`_ints_or_int` accepts."""
    one = {"type": "integer"} if minimum is None else integer_schema(minimum)
    either = {"anyOf": [one, {"type": "array", "items": one, "minItems": 1}]}
    return either if required else _nullable(either)


def _ints_or_int(name: str, *, what: str, minimum: int | None,
                 required: bool) -> Callable[[dict, str], Any]:
    """A parser for an integer or a non-empty list of integers (each >= ``minimum``);
    an optional field may be null or absent (None)."""
    def parse(spec: dict, path: str) -> list[int] | None:
        v = spec.get(name)
        if v is None:
            if required:
                raise SpecError(join(path, name), f"is required: {what}")
            return None
        items = [v] if isinstance(v, int) else v
        if not isinstance(items, list) or not items or not all(
                isinstance(n, int) and not isinstance(n, bool)
                and (minimum is None or n >= minimum) for n in items):
            raise SpecError(join(path, name), f"must be {what}; got {v!r}")
        return list(items)

    return parse


def _affine(shape: tuple[int, ...], v: dict[str, Any]) -> list[PlannedArray]:
    """A normalisation's scale and shift, present with ``affine``."""
    return [(k, shape, v["dtype"]) for k in ("weight", "bias")] if v["affine"] else []


def _batchnorm_arrays(v: dict[str, Any]) -> list[PlannedArray]:
    c = (v["channels"],)
    stats = [(k, c, v["dtype"]) for k in ("running_mean", "running_var")]
    return _affine(c, v) + (stats if v["track_stats"] else [])


# --- Dense, Embedding -------------------------------------------------------------------

def _bias_field(dump: Callable[[Any], bool] = lambda m: m.bias is not None) -> Field:
    return bool_field("bias", dump, default=True, description="whether the layer adds a bias")


register(LayerSpec(
    Dense,
    (int_field("in", lambda m: m.in_features, description="input features"),
     int_field("out", lambda m: m.out_features, description="output features"),
     activation_field(lambda m: m.activation), _bias_field(), _init_field(),
     dtype_field(lambda m: m.weight)),
    build=lambda v, rng: Dense(v["in"], v["out"], ACTIVATIONS[v["activation"]], bias=v["bias"],
                               init=INITIALISERS[v["init"]], dtype=_dtype(v), rng=rng),
    arrays=lambda v: [("weight", (v["out"], v["in"]), v["dtype"])]
    + ([("bias", (v["out"],), v["dtype"])] if v["bias"] else []),
))

# Embedding's default initialiser is N(0, 1), which INITIALISERS does not name.
_EMBEDDING_INITS: dict[str, Callable | None] = {"normal": None, **INITIALISERS}

register(LayerSpec(
    Embedding,
    (int_field("vocab", lambda m: m.vocab, description="how many tokens (inputs are ids in "
               "0..vocab-1)"),
     int_field("dim", lambda m: m.dim, description="the size of each token's vector"),
     _init_field(choices=_EMBEDDING_INITS, default="normal"), dtype_field(lambda m: m.weight)),
    build=lambda v, rng: Embedding(v["vocab"], v["dim"], init=_EMBEDDING_INITS[v["init"]],
                                   dtype=_dtype(v), rng=rng),
    arrays=lambda v: [("weight", (v["vocab"], v["dim"]), v["dtype"])],
))

# --- convolution and pooling (2-d, NCHW) ------------------------------------------------

def _pair_field(name: str, dump: Callable[[Any], tuple[int, int]], *, default: Any = ...,
                minimum: int = 1, description: str) -> Field:
    """An integer or a [height, width] pair, each >= ``minimum``; parsed as the pair.
    Absent or null means ``default`` (``...``: required)."""
    kind = "a positive integer" if minimum == 1 else f"an integer >= {minimum}"
    one = integer_schema(minimum)
    pair = {"anyOf": [one, {"type": "array", "items": one, "minItems": 2, "maxItems": 2}]}

    def parse(spec: dict, path: str) -> list[int] | None:
        v = spec.get(name)
        if v is None:
            if default is ...:
                raise SpecError(join(path, name), f"is required: {kind} or a pair of them")
            return default
        items = [v, v] if isinstance(v, int) else v
        if not isinstance(items, list) or len(items) != 2 or not all(
                isinstance(n, int) and not isinstance(n, bool) and n >= minimum for n in items):
            raise SpecError(join(path, name), f"must be {kind} or a pair of them; got {v!r}")
        return list(items)

    return Field(name, parse, lambda layer, path: list(dump(layer)), required=default is ...,
                 schema=described(pair if default is ... else _nullable(pair),
                                  f"{description} (one number for both, or [height, width])",
                                  default))


def _pad_field(dump: Callable[[Any], tuple[int, ...]]) -> Field:
    """``pad``: an integer, [height, width], [top, bottom, left, right] or "same"."""
    def parse(spec: dict, path: str) -> list[int] | str:
        v = spec.get("pad", 0)
        if v == "same":
            return v
        items = [v] * 4 if isinstance(v, int) else v
        if isinstance(items, list) and len(items) == 2:
            items = [items[0], items[0], items[1], items[1]]
        if not isinstance(items, list) or len(items) != 4 or not all(
                isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in items):
            raise SpecError(join(path, "pad"), "must be a non-negative integer, [height, width], "
                            f"[top, bottom, left, right] or \"same\"; got {v!r}")
        return items

    side = integer_schema(0)
    schema = {"anyOf": [side, {"type": "array", "items": side, "minItems": 2, "maxItems": 2},
                        {"type": "array", "items": side, "minItems": 4, "maxItems": 4},
                        {"const": "same"}]}
    return Field("pad", parse, lambda layer, path: list(dump(layer)), schema=described(
        schema, "zeros added around the input: one number for every side, [height, width], "
        "[top, bottom, left, right], or \"same\" (the output keeps the input's size / stride)",
        0))


def _conv_fields(*extra: Field) -> tuple[Field, ...]:
    return (_pair_field("kernel", lambda m: m.geometry.kernel, description="the kernel's size"),
            int_field("in", lambda m: m.in_channels, description="input channels"),
            int_field("out", lambda m: m.out_channels, description="output channels"),
            activation_field(lambda m: m.activation),
            _pair_field("stride", lambda m: m.geometry.stride, default=[1, 1],
                        description="the step between windows"),
            _pad_field(lambda m: m.geometry.pad),
            _pair_field("dilation", lambda m: m.geometry.dilation, default=[1, 1],
                        description="the spacing of the kernel's taps"),
            int_field("groups", lambda m: m.geometry.groups, default=1,
                      description="channel groups; must divide in and out"), *extra,
            _bias_field(), _init_field(), dtype_field(lambda m: m.weight))


def _check_conv(v: dict[str, Any], path: str) -> None:
    g = v["groups"]
    if v["in"] % g or v["out"] % g:
        raise SpecError(join(path, "groups"), f"must divide both in ({v['in']}) and out "
                        f"({v['out']}); got {g}")


def _check_conv_transpose(v: dict[str, Any], path: str) -> None:
    _check_conv(v, path)
    stride, dilation, op = v["stride"], v["dilation"], v["output_padding"]
    if any(p >= max(s, d) for p, s, d in zip(op, stride, dilation)):
        raise SpecError(join(path, "output_padding"), f"must be smaller than the stride "
                        f"{stride} or the dilation {dilation}; got {op}")
    span = [d * (k - 1) + 1 for k, d in zip(v["kernel"], dilation)]
    if v["pad"] == "same" and any(n < s for n, s in zip(span, stride)):
        raise SpecError(join(path, "pad"), f"\"same\" needs a dilated kernel {span} at least "
                        f"as large as the stride {stride}")


def _conv_build(cls: type, **extra: Callable[[dict], Any]) -> Callable:
    def build(v: dict[str, Any], rng: np.random.Generator | None) -> Any:
        return cls(tuple(v["kernel"]), v["in"], v["out"], ACTIVATIONS[v["activation"]],
                   stride=tuple(v["stride"]),
                   pad=v["pad"] if v["pad"] == "same" else tuple(v["pad"]),
                   dilation=tuple(v["dilation"]), groups=v["groups"], bias=v["bias"],
                   init=INITIALISERS[v["init"]], dtype=_dtype(v), rng=rng,
                   **{k: f(v) for k, f in extra.items()})

    return build


def _conv_arrays(transpose: bool) -> Callable[[dict], list[PlannedArray]]:
    """Conv weight (out, in / groups, kh, kw); ConvTranspose (in, out / groups, kh, kw)."""
    def arrays(v: dict[str, Any]) -> list[PlannedArray]:
        a, b = (v["in"], v["out"]) if transpose else (v["out"], v["in"])
        w = ("weight", (a, b // v["groups"], *v["kernel"]), v["dtype"])
        return [w] + ([("bias", (v["out"],), v["dtype"])] if v["bias"] else [])

    return arrays


register(LayerSpec(Conv, _conv_fields(), _conv_build(Conv), _conv_arrays(False), _check_conv))
register(LayerSpec(
    ConvTranspose,
    _conv_fields(_pair_field("output_padding", lambda m: m.output_padding, default=[0, 0],
                             minimum=0, description="rows and columns added to one side of "
                             "the output; smaller than the stride or the dilation")),
    _conv_build(ConvTranspose, output_padding=lambda v: tuple(v["output_padding"])),
    _conv_arrays(True), _check_conv_transpose,
))


def _check_pool(v: dict[str, Any], path: str) -> None:
    pad, (h, w) = v["pad"], v["window"]
    if pad != "same" and (max(pad[:2]) >= h or max(pad[2:]) >= w):
        raise SpecError(join(path, "pad"), f"must be smaller than the window {v['window']} on "
                        f"each side; got {pad}")


def _pool_spec(cls: type) -> LayerSpec:
    """MaxPool and MeanPool: a null stride is the window."""
    def build(v: dict[str, Any], rng: np.random.Generator | None) -> Any:
        return cls(tuple(v["window"]), stride=None if v["stride"] is None else tuple(v["stride"]),
                   pad=v["pad"] if v["pad"] == "same" else tuple(v["pad"]))

    fields = (_pair_field("window", lambda m: m.window, description="the window's size"),
              _pair_field("stride", lambda m: m.stride, default=None,
                          description="the step between windows; null: the window"),
              _pad_field(lambda m: m.pad))
    return LayerSpec(cls, fields, build, check=_check_pool)


def _fieldless_spec(cls: type) -> LayerSpec:
    return LayerSpec(cls, (), build=lambda v, rng: cls())


register(_pool_spec(MaxPool))
register(_pool_spec(MeanPool))
register(_fieldless_spec(GlobalMaxPool))
register(_fieldless_spec(GlobalMeanPool))
register(_fieldless_spec(Flatten))


# --- Dropout ----------------------------------------------------------------------------

register(LayerSpec(
    Dropout,
    (float_field("p", lambda m: m.p, minimum=0.0, maximum=1.0,
                 description="the probability of dropping each entry"),
     Field("dims", _ints_or_int("dims", what="null, an integer or a non-empty list of integers",
                                minimum=None, required=False),
           lambda m, path: None if m.dims is None else list(m.dims),
           schema=described(_ints_or_int_schema(None, required=False), "the axes along which "
                            "the mask varies (it is shared along the others); null: all", None)),
     _active_field()),
    build=lambda v, rng: Dropout(v["p"], dims=None if v["dims"] is None else tuple(v["dims"]),
                                 rng=rng, active=v["active"]),
))

register(LayerSpec(
    AlphaDropout,
    (float_field("p", lambda m: m.p, minimum=0.0, maximum=1.0, exclusive_maximum=True,
                 description="the probability of dropping each entry"),
     _active_field()),
    build=lambda v, rng: AlphaDropout(v["p"], rng=rng, active=v["active"]),
))

# --- normalisation ----------------------------------------------------------------------

def _eps_field() -> Field:
    return float_field("eps", lambda m: m.eps, default=1e-5, minimum=0.0, exclusive_minimum=True,
                       description="added to the variance before its square root")


def _affine_field() -> Field:
    return bool_field("affine", lambda m: m.weight is not None, default=True,
                      description="learn a scale and a shift")


register(LayerSpec(
    BatchNorm,
    (int_field("channels", lambda m: m.channels,
               description="the size of axis 1 (channels of NCHW, features of (batch, n))"),
     activation_field(lambda m: m.activation), _eps_field(),
     float_field("momentum", lambda m: m.momentum, default=0.1, minimum=0.0, maximum=1.0,
                 description="the weight of each batch in the running statistics"),
     _affine_field(),
     bool_field("track_stats", lambda m: m.running_mean is not None, default=True,
                description="keep running statistics to normalise with outside training"),
     _active_field(),
     dtype_field(lambda m: m.weight if m.weight is not None else m.running_mean)),
    build=lambda v, rng: BatchNorm(
        v["channels"], ACTIVATIONS[v["activation"]], eps=v["eps"], momentum=v["momentum"],
        affine=v["affine"], track_stats=v["track_stats"], active=v["active"], dtype=_dtype(v)),
    arrays=_batchnorm_arrays,
))

register(LayerSpec(
    LayerNorm,
    (Field("size", _ints_or_int("size", what="a positive integer or a non-empty list of them",
                                minimum=1, required=True),
           lambda m, path: m.size[0] if len(m.size) == 1 else list(m.size), required=True,
           schema=described(_ints_or_int_schema(1, required=True),
                            "the shape of the trailing axes normalised over")),
     activation_field(lambda m: m.activation), _eps_field(), _affine_field(),
     dtype_field(lambda m: m.weight)),
    build=lambda v, rng: LayerNorm(tuple(v["size"]), ACTIVATIONS[v["activation"]], eps=v["eps"],
                                   affine=v["affine"], dtype=_dtype(v)),
    arrays=lambda v: _affine(tuple(v["size"]), v),
))

# --- recurrent --------------------------------------------------------------------------

def _recurrent(cls: type, gates: int, *, activation: bool) -> LayerSpec:
    """RNN (with an activation), LSTM and GRU: ``gates`` stacked blocks of ``out`` rows."""
    fields = [int_field("in", lambda m: m.in_features, description="input features per step"),
              int_field("out", lambda m: m.out_features, description="the state's size")]
    if activation:
        fields.append(activation_field(lambda m: m.activation, default="tanh"))
    fields += [_bias_field(lambda m: m.bias_ih is not None),
               _init_field("init_kernel"), _init_field("init_recurrent_kernel"),
               dtype_field(lambda m: m.weight_ih)]

    def build(v: dict[str, Any], rng: np.random.Generator | None) -> Any:
        act = (ACTIVATIONS[v["activation"]],) if activation else ()
        return cls(v["in"], v["out"], *act, bias=v["bias"],
                   init_kernel=INITIALISERS[v["init_kernel"]],
                   init_recurrent_kernel=INITIALISERS[v["init_recurrent_kernel"]],
                   dtype=_dtype(v), rng=rng)

    def arrays(v: dict[str, Any]) -> list[PlannedArray]:
        rows, dt = gates * v["out"], v["dtype"]
        out = [("weight_ih", (rows, v["in"]), dt), ("weight_hh", (rows, v["out"]), dt)]
        return out + ([("bias_ih", (rows,), dt), ("bias_hh", (rows,), dt)] if v["bias"] else [])

    return LayerSpec(cls, tuple(fields), build, arrays)


register(_recurrent(RNN, 1, activation=True))
register(_recurrent(LSTM, 4, activation=False))
register(_recurrent(GRU, 3, activation=False))

# --- containers -------------------------------------------------------------------------

register(LayerSpec(
    Chain,
    (layers_field("layers", lambda m: m.layers),),
    build=lambda v, rng: (Chain(**v["layers"]) if isinstance(v["layers"], dict)
                          else Chain(*v["layers"])),
))

#: Connections that join exactly two branches.
_BINARY: dict[str, Callable] = {"add": operator.add, "mul": operator.mul}
_CONCAT_CODE = concat().__code__
_CONNECTIONS = "\"add\", \"mul\", \"concat\" or {\"type\": \"concat\", \"axis\": n}"


def _parse_connection(spec: dict, path: str) -> str | dict:
    here = join(path, "connection")
    if "connection" not in spec:
        raise SpecError(here, f"is required: {_CONNECTIONS}")
    v = spec["connection"]
    if v == "concat":
        v = {"type": "concat"}
    if isinstance(v, str) and v in _BINARY:
        return v
    if isinstance(v, dict) and v.get("type") == "concat":
        check_keys(v, here, {"type", "axis"})
        return {"type": "concat", "axis": get_int(v, "axis", here, default=-1, minimum=-64)}
    raise SpecError(here, f"must be {_CONNECTIONS}; got {v!r}")


def _dump_connection(layer: Any, path: str) -> str | dict:
    fn = layer.connection
    for name, f in _BINARY.items():
        if fn is f:
            return name
    if getattr(fn, "__code__", None) is _CONCAT_CODE:
        return {"type": "concat", "axis": inspect.getclosurevars(fn).nonlocals["axis"]}
    raise SpecError(join(path, "connection"), f"the connection {getattr(fn, '__name__', fn)!r} "
                    f"has no spec; a spec can hold {_CONNECTIONS}")


def _connection(v: str | dict) -> Callable:
    return _BINARY[v] if isinstance(v, str) else concat(v["axis"])


_CONNECTION_FIELD = Field(
    "connection", _parse_connection, _dump_connection, required=True, schema=described(
        {"anyOf": [{"type": "string", "enum": [*_BINARY, "concat"]},
                   {"type": "object", "properties": {"type": {"const": "concat"},
                                                     "axis": integer_schema(-64)},
                    "required": ["type"], "additionalProperties": False}]},
        "how the branches' outputs join: added, multiplied, or concatenated along axis "
        "(default -1)"))

register(LayerSpec(
    SkipConnection,
    (layer_field("layer", lambda m: m.layer), _CONNECTION_FIELD),
    build=lambda v, rng: SkipConnection(v["layer"], _connection(v["connection"])),
))


def _check_parallel(v: dict[str, Any], path: str) -> None:
    n = len(v["layers"])
    if n == 0:
        raise SpecError(join(path, "layers"), "must hold at least one layer")
    if isinstance(v["connection"], str) and n > 2:
        raise SpecError(join(path, "connection"), f"{v['connection']!r} joins two branches but "
                        f"there are {n} layers; use concat")


register(LayerSpec(
    Parallel,
    (_CONNECTION_FIELD, layers_field("layers", lambda m: m.layers)),
    build=lambda v, rng: (Parallel(_connection(v["connection"]), **v["layers"])
                          if isinstance(v["layers"], dict)
                          else Parallel(_connection(v["connection"]), *v["layers"])),
    check=_check_parallel,
))
