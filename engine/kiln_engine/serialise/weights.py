"""A model's arrays to and from safetensors or .npz files, by dotted path. No pickle.

Keys are the model's dotted paths (``layers.enc.weight``), non-trainable state
(BatchNorm's running statistics) included. An array used in several places (tied
weights) is stored once, under its first path; the other paths are recorded as aliases
(safetensors metadata, or the ``__kiln_tied__`` member of an .npz, a JSON string) and
are restored as one shared array. Loading checks every key, shape and dtype before
assigning anything, so a bad file leaves the model as it was; arrays are copied onto the
device of the array they replace.
"""

from __future__ import annotations

import io
import json
import os
import struct
import zipfile
from collections.abc import Mapping
from typing import IO, Any

import numpy as np
import safetensors
import safetensors.numpy

from .._backend import device_of, to_device
from .._ops import data
from .._tree import Node, _rebuild, children, is_array, leaves
from ..layers import Layer

__all__ = [
    "FORMATS",
    "WeightsError",
    "load_state_dict",
    "load_weights",
    "save_weights",
    "state_dict",
    "weights_from_bytes",
    "weights_to_bytes",
]

#: File formats ``save_weights`` writes; ``load_weights`` tells them apart by content.
FORMATS = ("safetensors", "npz")

_TIED_KEY = "__kiln_tied__"  # npz member / safetensors metadata key: {alias: stored path}
_ZIP_MAGIC = (b"PK\x03\x04", b"PK\x05\x06")  # a zip with members / an empty zip

Source = str | os.PathLike | bytes | bytearray | memoryview | IO[bytes]


class WeightsError(ValueError):
    """Weights that do not fit the model, or a file that is not a weights file.

    ``paths`` lists the offending dotted paths (empty for a file that cannot be read).
    """

    def __init__(self, message: str, paths: list[str] | None = None) -> None:
        super().__init__(message)
        self.paths = paths or []


def state_dict(model: Any) -> dict[str, Any]:
    """Every array of ``model`` by dotted path, non-trainable state included.

    The values are the model's own arrays, not copies; tied arrays appear under each of
    their paths as the same object.
    """
    return {path: data(x) for path, x in leaves(model, trainable=False)}


def weights_to_bytes(model: Any, format: str = "safetensors") -> bytes:
    """The model's arrays as a safetensors or .npz file, in memory."""
    if format not in FORMATS:
        raise ValueError(f"format must be one of {list(FORMATS)}; got {format!r}")
    stored: dict[str, np.ndarray] = {}
    tied: dict[str, str] = {}
    first: dict[int, str] = {}
    for path, x in state_dict(model).items():
        if id(x) in first:
            tied[path] = first[id(x)]
        else:
            first[id(x)] = path
            stored[path] = np.ascontiguousarray(to_device(x, "cpu"))
    if format == "safetensors":
        meta = {_TIED_KEY: json.dumps(tied)} if tied else None
        return safetensors.numpy.save(stored, metadata=meta)
    if _TIED_KEY in stored:
        raise ValueError(f"a model path may not be named {_TIED_KEY!r} in an .npz file")
    if tied:
        stored[_TIED_KEY] = np.array(json.dumps(tied))
    buf = io.BytesIO()
    np.savez(buf, allow_pickle=False, **stored)
    return buf.getvalue()


def save_weights(model: Any, path_or_file: str | os.PathLike | IO[bytes], *,
                 format: str | None = None) -> None:
    """Write the model's arrays to a file path or a binary file object.

    ``format`` is "safetensors" or "npz"; by default a path ending in ``.npz`` gets npz
    and anything else safetensors.
    """
    if format is None:
        npz = isinstance(path_or_file, (str, os.PathLike)) and \
            os.fspath(path_or_file).endswith(".npz")
        format = "npz" if npz else "safetensors"
    blob = weights_to_bytes(model, format)
    if isinstance(path_or_file, (str, os.PathLike)):
        with open(path_or_file, "wb") as f:
            f.write(blob)
    else:
        path_or_file.write(blob)


def load_weights(model: Layer, source: Source) -> None:
    """Load a safetensors or .npz file (a path, bytes or a binary file object) into
    ``model``, in place. Raises WeightsError, leaving the model unchanged, when the file
    is unreadable or its keys, shapes or dtypes do not match the model."""
    if isinstance(source, (str, os.PathLike)):
        with open(source, "rb") as f:
            blob = f.read()
    elif isinstance(source, (bytes, bytearray, memoryview)):
        blob = bytes(source)
    else:
        blob = source.read()
    load_state_dict(model, weights_from_bytes(blob))


def weights_from_bytes(blob: bytes) -> dict[str, np.ndarray]:
    """The arrays of a safetensors or .npz file by path, tied paths sharing one array."""
    if blob[:4] in _ZIP_MAGIC:
        arrays, tied_json = _read_npz(blob)
    else:
        arrays, tied_json = _read_safetensors(blob)
    tied = _parse_tied(tied_json)
    for alias, target in tied.items():
        if target not in arrays:
            raise WeightsError(f"the file ties {alias!r} to {target!r}, which it does not "
                               "hold", [alias])
        arrays[alias] = arrays[target]
    return arrays


def _read_safetensors(blob: bytes) -> tuple[dict[str, np.ndarray], str | None]:
    try:
        arrays = safetensors.numpy.load(blob)
    except safetensors.SafetensorError as e:
        raise WeightsError(f"not a readable weights file ({len(blob):,} bytes; expected "
                           f"safetensors or .npz): {e}") from e
    # The library has checked the header; read its metadata (8-byte length, then JSON).
    (n,) = struct.unpack("<Q", blob[:8])
    meta = json.loads(blob[8:8 + n]).get("__metadata__") or {}
    return arrays, meta.get(_TIED_KEY)


def _read_npz(blob: bytes) -> tuple[dict[str, np.ndarray], str | None]:
    arrays: dict[str, np.ndarray] = {}
    try:
        with np.load(io.BytesIO(blob), allow_pickle=False) as z:
            for key in z.files:
                try:
                    arrays[key] = z[key]
                except ValueError as e:
                    if "pickle" not in str(e):
                        raise
                    raise WeightsError(f"the .npz member {key!r} holds Python objects "
                                       "(pickled data); Kiln never unpickles, so only plain "
                                       "numeric arrays can be loaded", [key]) from None
    except WeightsError:
        raise
    except (zipfile.BadZipFile, ValueError, EOFError, OSError, KeyError) as e:
        raise WeightsError(f"not a readable .npz file ({len(blob):,} bytes): {e}") from e
    tied = arrays.pop(_TIED_KEY, None)
    if tied is not None and (tied.dtype.kind != "U" or tied.ndim != 0):
        raise WeightsError(f"the .npz member {_TIED_KEY!r} must be a JSON string", [_TIED_KEY])
    return arrays, None if tied is None else str(tied)


def _parse_tied(text: str | None) -> dict[str, str]:
    if text is None:
        return {}
    try:
        tied = json.loads(text)
    except json.JSONDecodeError as e:
        raise WeightsError(f"the file's record of tied arrays is not JSON: {e}") from e
    if not isinstance(tied, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in tied.items()):
        raise WeightsError("the file's record of tied arrays must map paths to paths")
    return tied


def load_state_dict(model: Layer, arrays: Mapping[str, Any]) -> None:
    """Copy ``arrays`` (dotted path -> array) into ``model``, in place.

    Every path of the model must be given, with its shape and dtype, and nothing else:
    otherwise WeightsError lists each problem and the model is left unchanged. Paths
    given the same array object end up sharing one array (tied).
    """
    if not isinstance(model, Layer):
        raise TypeError(f"load_state_dict needs a layer; got {type(model).__name__}")
    current = state_dict(model)
    problems, bad = [], []
    for path, old in current.items():  # in the model's order, then anything extra
        if path not in arrays:
            problems.append(f"{path}: missing (expected shape {old.shape} {old.dtype})")
        elif not is_array(new := arrays[path]):
            problems.append(f"{path}: expected an array; found {type(new).__name__}")
        elif (new := data(new)).shape != old.shape or new.dtype != old.dtype:
            problems.append(f"{path}: expected shape {old.shape} {old.dtype}; found shape "
                            f"{new.shape} {new.dtype}")
        else:
            continue
        bad.append(path)
    for path in arrays:
        if path not in current:
            problems.append(f"{path}: unexpected (the model has no array at this path)")
            bad.append(path)
    if problems:
        raise WeightsError(f"the weights do not fit the model ({len(problems)} problem"
                           f"{'s' if len(problems) > 1 else ''}):\n  " + "\n  ".join(problems),
                           bad)
    # Copy everything first, then assign: nothing is half-loaded if a copy fails.
    copies: dict[int, Any] = {}
    for path, new in arrays.items():
        new = data(new)
        if id(new) not in copies:
            moved = to_device(new, device_of(current[path]))
            copies[id(new)] = moved.copy() if moved is new else moved
    for path, new in arrays.items():
        _put(model, path.split("."), copies[id(data(new))])


def _put(node: Any, parts: list[str], value: Any) -> Any:
    """``node`` with the array at ``parts`` replaced: layers, lists and dicts in place;
    tuples and immutable nodes (``Layers``) rebuilt and returned for their parent."""
    key = parts[0]
    old = dict(children(node))[key]
    new = value if len(parts) == 1 else _put(old, parts[1:], value)
    if new is old:
        return node
    if isinstance(node, Node) and type(node)._children is Node._children:
        setattr(node, key, new)
        return node
    if type(node) is list:
        node[int(key)] = new
        return node
    if type(node) is dict:
        node[next(k for k in node if str(k) == key)] = new
        return node
    return _rebuild(node, {key: new})
