"""Hyper-parameter schedules, after ParameterSchedulers.jl: callables ``t -> value``.

``t`` counts from 1, as in ParameterSchedulers.jl: ``Exp(start=0.1, decay=0.5)(1) == 0.1``.
A training loop evaluates a bound schedule at every step (``t`` = the global step); to
give a schedule in epochs and evaluate it per step, wrap it in
``Interpolator(schedule, rate=batches_per_epoch)``.

Every schedule is a small dataclass that validates its fields and round-trips to JSON::

    s = Sequence([Triangle(l0=0.0, l1=0.1, period=10), Exp(start=0.1, decay=0.99)], [5, 1000])
    Schedule.from_spec(s.to_spec()) == s
    Schedule.from_spec({"type": "Exp", "start": 0.1, "decay": -1}, "job.schedule")
    # SpecError: job.schedule.decay: must be in (0.0, inf]; got -1

Where this module departs from ParameterSchedulers.jl it says so in the class docstring
(``Poly`` past ``max_iter``; ``ReduceOnPlateau``, which has no counterpart there).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence as Seq
from dataclasses import dataclass, field
from typing import Any, ClassVar

from ._spec import (
    Check,
    SpecError,
    accepts,
    check_keys,
    described,
    get_choice,
    get_float,
    get_int,
    integer_schema,
    join,
    number_schema,
    object_schema,
    ref,
    summary,
    union,
)

__all__ = [
    "SCHEDULES",
    "Constant",
    "CosAnneal",
    "Exp",
    "Interpolator",
    "Inv",
    "OneCycle",
    "Poly",
    "ReduceOnPlateau",
    "Schedule",
    "Sequence",
    "Shifted",
    "Sin",
    "SinDecay2",
    "SinExp",
    "Step",
    "Triangle",
    "TriangleDecay2",
    "TriangleExp",
    "schedule_schemas",
]

# A field check is a Check: ``(spec, key, path) -> normalised value``, raising SpecError
# at the path, with the JSON Schema of the values it accepts.

@accepts(number_schema())
def _number(spec: dict, key: str, path: str) -> float:
    return get_float(spec, key, path)


@accepts(number_schema(minimum=0.0, exclusive_minimum=True))
def _positive(spec: dict, key: str, path: str) -> float:
    return get_float(spec, key, path, minimum=0.0, exclusive_minimum=True)


@accepts(number_schema(minimum=0.0))
def _nonnegative(spec: dict, key: str, path: str) -> float:
    return get_float(spec, key, path, minimum=0.0)


@accepts(number_schema(minimum=0.0, maximum=1.0, exclusive_minimum=True,
                       exclusive_maximum=True))
def _fraction(spec: dict, key: str, path: str) -> float:
    v = get_float(spec, key, path)
    if not 0 < v < 1:
        raise SpecError(join(path, key), f"must be in (0, 1); got {spec[key]!r}")
    return v


@accepts(integer_schema(1))
def _posint(spec: dict, key: str, path: str) -> int:
    return get_int(spec, key, path)


@accepts(integer_schema(0))
def _count(spec: dict, key: str, path: str) -> int:
    return get_int(spec, key, path, minimum=0)


@accepts({"type": "boolean"})
def _bool(spec: dict, key: str, path: str) -> bool:
    v = spec[key]
    if not isinstance(v, bool):
        raise SpecError(join(path, key), f"must be true or false; got {v!r}")
    return v


@accepts({"type": "string", "minLength": 1})
def _name(spec: dict, key: str, path: str) -> str:
    v = spec[key]
    if not isinstance(v, str) or not v:
        raise SpecError(join(path, key), f"must be a non-empty string; got {v!r}")
    return v


def _choice(*options: str) -> Check:
    return Check(lambda spec, key, path: get_choice(spec, key, path, list(options)),
                 {"type": "string", "enum": list(options)})


@accepts(ref("ScheduleSpec"))
def _schedule(spec: dict, key: str, path: str) -> Schedule:
    v = spec[key]
    return v if isinstance(v, Schedule) else Schedule.from_spec(v, join(path, key))


@accepts({"type": "array", "minItems": 1, "items": {"anyOf": [
    {"type": "number", "description": "a constant"}, ref("ScheduleSpec")]}})
def _schedules(spec: dict, key: str, path: str) -> tuple[Schedule, ...]:
    """A non-empty list of schedules; a bare number stands for ``Constant(number)``."""
    v = spec[key]
    where = join(path, key)
    if not isinstance(v, (list, tuple)) or not v:
        raise SpecError(where, f"must be a non-empty list of schedules; got {v!r}")
    out = []
    for i, s in enumerate(v):
        if isinstance(s, (int, float)) and not isinstance(s, bool):
            out.append(Constant(get_float({i: s}, i, where)))
        else:
            out.append(_schedule({i: s}, i, where))
    return tuple(out)


@accepts({"anyOf": [integer_schema(1),
                   {"type": "array", "minItems": 1, "items": integer_schema(1)}]})
def _step_sizes(spec: dict, key: str, path: str) -> int | tuple[int, ...]:
    """One positive integer (repeat forever) or a non-empty list of them."""
    v = spec[key]
    if isinstance(v, (list, tuple)):
        if not v:
            raise SpecError(join(path, key), "must be a positive integer or a non-empty list "
                                             "of positive integers; got []")
        return tuple(_posint({i: s}, i, join(path, key)) for i, s in enumerate(v))
    return _posint(spec, key, path)


def _encode(v: Any) -> Any:
    if isinstance(v, Schedule):
        return v.to_spec()
    if isinstance(v, tuple):
        return [_encode(e) for e in v]
    return v


@dataclass
class Schedule:
    """Base of every schedule: call it with the step ``t`` (1, 2, ...) to get the value.

    Subclasses are dataclasses; ``checks`` maps each field to the check that validates
    it, both when built in Python (errors name ``ClassName.field``) and from JSON (errors
    name the spec's path).
    """

    checks: ClassVar[dict[str, Check]] = {}

    def __post_init__(self) -> None:
        self._validate(type(self).__name__)

    def _validate(self, path: str) -> None:
        values = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.init}
        for name, value in self._checked(values, path).items():
            setattr(self, name, value)

    @classmethod
    def _checked(cls, values: dict[str, Any], path: str) -> dict[str, Any]:
        """``values`` with every field checked and normalised; None stays None where it is
        the field's default (an optional field left out)."""
        optional = {f.name for f in dataclasses.fields(cls) if f.default is None}
        out = {name: None if values[name] is None and name in optional
               else cls.checks[name](values, name, path) for name in values}
        cls._relate(out, path)
        return out

    @classmethod
    def _relate(cls, values: dict[str, Any], path: str) -> None:
        """Checks across fields, for the schedules that have some."""

    def __call__(self, t: int) -> float:
        if not isinstance(t, int) or isinstance(t, bool) or t < 1:
            raise ValueError(f"{type(self).__name__}: t must be an integer >= 1 (the first "
                             f"step is 1); got {t!r}")
        return self._at(t)

    def _at(self, t: int) -> float:  # pragma: no cover - every schedule overrides it
        raise NotImplementedError

    def to_spec(self) -> dict[str, Any]:
        """The JSON spec: ``{"type": "Exp", "start": 0.1, "decay": 0.5}``."""
        out: dict[str, Any] = {"type": type(self).__name__}
        for f in dataclasses.fields(self):
            if f.init:
                out[f.name] = _encode(getattr(self, f.name))
        return out

    @staticmethod
    def from_spec(spec: Any, path: str = "schedule") -> Schedule:
        """Build a schedule from its JSON spec; errors name the path of the bad field."""
        if not isinstance(spec, dict):
            raise SpecError(path, "must be a schedule spec, an object such as "
                                  f'{{"type": "Exp", "start": 0.1, "decay": 0.5}}; got {spec!r}')
        cls = get_choice(spec, "type", path, SCHEDULES)
        fields = [f for f in dataclasses.fields(cls) if f.init]
        required = tuple(f.name for f in fields if f.default is dataclasses.MISSING)
        check_keys(spec, path, {"type", *(f.name for f in fields)}, required)
        return cls(**cls._checked({k: v for k, v in spec.items() if k != "type"}, path))


def _cycle(l0: float, l1: float, g: float) -> float:
    """A value between l0 and l1: ``|l0 - l1| * g + min(l0, l1)`` for g in [0, 1]."""
    return abs(l0 - l1) * g + min(l0, l1)


def _tri(t: int, period: int) -> float:
    return (2 / math.pi) * abs(math.asin(math.sin(math.pi * (t - 1) / period)))


def _sin(t: int, period: int) -> float:
    return abs(math.sin(math.pi * (t - 1) / period))


# ----------------------------------------------------------------------------- decay


@dataclass
class Step(Schedule):
    """``start * decay**i``, where i counts the steps in ``step_sizes`` already passed.

    ``Step(start=1.0, decay=0.5, step_sizes=[2, 3])`` gives 1, 1, 0.5, 0.5, 0.5, then
    0.25 for ever; an integer ``step_sizes`` decays every that many steps, for ever.
    """

    start: float
    decay: float
    step_sizes: int | tuple[int, ...]
    checks: ClassVar[dict[str, Check]] = {
        "start": _number, "decay": _positive, "step_sizes": _step_sizes}

    def _at(self, t: int) -> float:
        if isinstance(self.step_sizes, int):
            i = (t - 1) // self.step_sizes
        else:
            i, edge = 0, 0
            for size in self.step_sizes:
                edge += size
                if t <= edge:
                    break
                i += 1
        return self.start * self.decay ** i


@dataclass
class Exp(Schedule):
    """``start * decay**(t - 1)``: exponential decay at every step."""

    start: float
    decay: float
    checks: ClassVar[dict[str, Check]] = {"start": _number, "decay": _positive}

    def _at(self, t: int) -> float:
        return self.start * self.decay ** (t - 1)


@dataclass
class Poly(Schedule):
    """``start * (1 - (t - 1) / max_iter)**degree``: polynomial decay to 0.

    Past ``max_iter`` it stays at 0 (ParameterSchedulers.jl raises a BoundsError there,
    which would end a training run).
    """

    start: float
    degree: float
    max_iter: int
    checks: ClassVar[dict[str, Check]] = {
        "start": _number, "degree": _positive, "max_iter": _posint}

    def _at(self, t: int) -> float:
        return self.start * max(0.0, 1 - (t - 1) / self.max_iter) ** self.degree


@dataclass
class Inv(Schedule):
    """``start / (1 + (t - 1) * decay)**degree``: inverse decay."""

    start: float
    decay: float
    degree: float
    checks: ClassVar[dict[str, Check]] = {
        "start": _number, "decay": _positive, "degree": _positive}

    def _at(self, t: int) -> float:
        return self.start / (1 + (t - 1) * self.decay) ** self.degree


# ---------------------------------------------------------------------------- cyclic

_CYCLIC: dict[str, Check] = {"l0": _number, "l1": _number, "period": _posint}


@dataclass
class Triangle(Schedule):
    """A triangle wave between l0 and l1: ``min(l0, l1)`` at t = 1, the other end at
    t = 1 + period/2, back at t = 1 + period: ``|l0 - l1| (2/π) |asin(sin(π (t-1) / period))|
    + min(l0, l1)``.
    """

    l0: float
    l1: float
    period: int
    checks: ClassVar[dict[str, Check]] = _CYCLIC

    def _at(self, t: int) -> float:
        return _cycle(self.l0, self.l1, _tri(t, self.period))


@dataclass
class TriangleDecay2(Triangle):
    """``Triangle`` whose amplitude halves every period: ``tri(t) / 2**((t-1) // period)``."""

    def _at(self, t: int) -> float:
        return _cycle(self.l0, self.l1, _tri(t, self.period) / 2 ** ((t - 1) // self.period))


@dataclass
class TriangleExp(Schedule):
    """``Triangle`` whose amplitude decays exponentially: ``tri(t) * decay**(t - 1)``."""

    l0: float
    l1: float
    period: int
    decay: float
    checks: ClassVar[dict[str, Check]] = {**_CYCLIC, "decay": _positive}

    def _at(self, t: int) -> float:
        return _cycle(self.l0, self.l1, _tri(t, self.period) * self.decay ** (t - 1))


@dataclass
class Sin(Schedule):
    """A rectified sine wave between l0 and l1: ``|l0 - l1| |sin(π (t-1) / period)| + min``."""

    l0: float
    l1: float
    period: int
    checks: ClassVar[dict[str, Check]] = _CYCLIC

    def _at(self, t: int) -> float:
        return _cycle(self.l0, self.l1, _sin(t, self.period))


@dataclass
class SinDecay2(Sin):
    """``Sin`` whose amplitude halves every period: ``sin(t) / 2**((t-1) // period)``."""

    def _at(self, t: int) -> float:
        return _cycle(self.l0, self.l1, _sin(t, self.period) / 2 ** ((t - 1) // self.period))


@dataclass
class SinExp(Schedule):
    """``Sin`` whose amplitude decays exponentially: ``sin(t) * decay**(t - 1)``."""

    l0: float
    l1: float
    period: int
    decay: float
    checks: ClassVar[dict[str, Check]] = {**_CYCLIC, "decay": _positive}

    def _at(self, t: int) -> float:
        return _cycle(self.l0, self.l1, _sin(t, self.period) * self.decay ** (t - 1))


@dataclass
class CosAnneal(Schedule):
    """Cosine annealing (SGDR) from l0 to l1 over ``period`` steps.

    ``|l0 - l1| (1 + cos(π t̂ / period)) / 2 + min(l0, l1)`` with ``t̂ = (t - 1) mod period``
    when ``restart`` (a warm restart at l0 every period), else ``t̂ = t - 1`` (a cosine
    wave that climbs back).
    """

    l0: float
    l1: float
    period: int
    restart: bool = True
    checks: ClassVar[dict[str, Check]] = {**_CYCLIC, "restart": _bool}

    def _at(self, t: int) -> float:
        th = (t - 1) % self.period if self.restart else t - 1
        return _cycle(self.l0, self.l1, (1 + math.cos(math.pi * th / self.period)) / 2)


# --------------------------------------------------------------------------- complex


@dataclass
class Constant(Schedule):
    """Always ``value``."""

    value: float
    checks: ClassVar[dict[str, Check]] = {"value": _number}

    def _at(self, t: int) -> float:
        return self.value


@dataclass
class OneCycle(Schedule):
    """The one-cycle policy (Smith, "Super-Convergence"): over ``nsteps`` steps, a cosine
    warm-up from ``startval`` to ``maxval`` during the first ``ceil(percent_start *
    nsteps)`` steps, then a cosine decay towards ``endval``; ``endval`` after ``nsteps``.

    Defaults as in ParameterSchedulers.jl: ``startval = maxval / 25``,
    ``endval = maxval / 1e5``.
    """

    nsteps: int
    maxval: float
    startval: float | None = None
    endval: float | None = None
    percent_start: float = 0.25
    checks: ClassVar[dict[str, Check]] = {
        "nsteps": _posint, "maxval": _number, "startval": _number, "endval": _number,
        "percent_start": _fraction}

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.startval is None:
            self.startval = self.maxval / 25
        if self.endval is None:
            self.endval = self.maxval / 1e5

    @property
    def warmup(self) -> int:
        """Steps of the rising half."""
        return math.ceil(self.percent_start * self.nsteps)

    def _at(self, t: int) -> float:
        up = self.warmup
        down = self.nsteps - up
        if t > self.nsteps:
            return self.endval
        if t <= up:
            return _cycle(self.startval, self.maxval, (1 - math.cos(math.pi * (t - 1) / up)) / 2)
        return _cycle(self.maxval, self.endval, (1 + math.cos(math.pi * (t - up - 1) / down)) / 2)


@dataclass
class Sequence(Schedule):
    """``schedules[i]`` for ``step_sizes[i]`` steps each, every one started at its own t = 1;
    the last continues past its steps. A number stands for ``Constant(number)``.

    Warm-up then decay: ``Sequence([Triangle(l0=0, l1=0.1, period=10), Exp(start=0.1,
    decay=0.99)], [5, 1000])``.
    """

    schedules: Seq[Schedule | float]
    step_sizes: Seq[int]
    checks: ClassVar[dict[str, Check]] = {"schedules": _schedules, "step_sizes": _step_sizes}

    @classmethod
    def _relate(cls, values: dict[str, Any], path: str) -> None:
        if isinstance(values["step_sizes"], int):
            values["step_sizes"] = (values["step_sizes"],)
        if len(values["step_sizes"]) != len(values["schedules"]):
            raise SpecError(join(path, "step_sizes"),
                            f"must have one entry per schedule ({len(values['schedules'])}); "
                            f"got {len(values['step_sizes'])}")

    def _at(self, t: int) -> float:
        offset = 0
        for schedule, size in zip(self.schedules[:-1], self.step_sizes):
            if t <= offset + size:
                return schedule(t - offset)
            offset += size
        return self.schedules[-1](t - offset)


@dataclass
class Shifted(Schedule):
    """``schedule`` started at ``offset``: ``Shifted(s, offset)(t) == s(t - 1 + offset)``."""

    schedule: Schedule
    offset: int
    checks: ClassVar[dict[str, Check]] = {"schedule": _schedule, "offset": _posint}

    def _at(self, t: int) -> float:
        return self.schedule(t - 1 + self.offset)


@dataclass
class Interpolator(Schedule):
    """``schedule(ceil(t / rate))``: a schedule in coarse units (epochs) evaluated per step.

    ``Interpolator(Exp(start=0.1, decay=0.5), rate=len(loader))`` halves once per epoch.
    """

    schedule: Schedule
    rate: float
    checks: ClassVar[dict[str, Check]] = {"schedule": _schedule, "rate": _positive}

    def _at(self, t: int) -> float:
        return self.schedule(math.ceil(t / self.rate))


# ---------------------------------------------------------------------------- policy


@dataclass
class ReduceOnPlateau(Schedule):
    """Multiply the value by ``factor`` when ``metric`` stops improving (a policy, not a
    function of t; ParameterSchedulers.jl has no counterpart, this follows PyTorch's).

    The training loop calls :meth:`observe` with the epoch's ``metric`` (a key of the
    epoch record, e.g. ``"val_loss"``). An improvement is a change beyond ``threshold``
    relative to the best value (lower for ``mode="min"``, higher for ``"max"``). After
    more than ``patience`` epochs without one, the value drops to
    ``max(value * factor, min_value)``, then ``cooldown`` epochs pass before counting again.
    """

    start: float
    factor: float = 0.1
    patience: int = 10
    threshold: float = 1e-4
    mode: str = "min"
    cooldown: int = 0
    min_value: float = 0.0
    metric: str = "val_loss"
    value: float = field(init=False, compare=False)
    best: float | None = field(init=False, compare=False, default=None)
    bad_epochs: int = field(init=False, compare=False, default=0)
    cooldown_left: int = field(init=False, compare=False, default=0)
    checks: ClassVar[dict[str, Check]] = {
        "start": _number, "factor": _fraction, "patience": _count, "threshold": _nonnegative,
        "mode": _choice("min", "max"), "cooldown": _count, "min_value": _nonnegative,
        "metric": _name}

    def __post_init__(self) -> None:
        super().__post_init__()
        self.value = self.start

    def _at(self, t: int) -> float:
        return self.value

    def _improved(self, metric: float) -> bool:
        if not math.isfinite(metric):
            return False
        if self.best is None:
            return True
        margin = self.threshold * abs(self.best)
        return metric < self.best - margin if self.mode == "min" else metric > self.best + margin

    def observe(self, metric: float) -> bool:
        """Record one epoch's metric; True when this lowered the value."""
        if self._improved(metric):
            self.best, self.bad_epochs = float(metric), 0
        else:
            self.bad_epochs += 1
        if self.cooldown_left > 0:
            self.cooldown_left -= 1
            self.bad_epochs = 0
        if self.bad_epochs > self.patience:
            new = max(self.value * self.factor, self.min_value)
            self.bad_epochs = 0
            if new < self.value:
                self.value = new
                self.cooldown_left = self.cooldown
                return True
        return False

    def state(self) -> dict[str, Any]:
        """What :meth:`observe` has learnt, as JSON (for checkpoints)."""
        return {"value": self.value, "best": self.best, "bad_epochs": self.bad_epochs,
                "cooldown_left": self.cooldown_left}

    def load_state(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state` returned."""
        check_keys(state, "state", {"value", "best", "bad_epochs", "cooldown_left"},
                   ("value", "best", "bad_epochs", "cooldown_left"))
        self.value = get_float(state, "value", "state")
        self.best = None if state["best"] is None else get_float(state, "best", "state")
        self.bad_epochs = get_int(state, "bad_epochs", "state", minimum=0)
        self.cooldown_left = get_int(state, "cooldown_left", "state", minimum=0)


#: Every schedule by the name a spec's ``"type"`` uses.
SCHEDULES: dict[str, type[Schedule]] = {
    cls.__name__: cls for cls in (
        Step, Exp, Poly, Inv, Triangle, TriangleDecay2, TriangleExp, Sin, SinDecay2, SinExp,
        CosAnneal, Constant, OneCycle, Sequence, Shifted, Interpolator, ReduceOnPlateau)
}


def schedule_schemas() -> dict[str, dict[str, Any]]:
    """The JSON Schema definitions of a schedule spec, from ``SCHEDULES`` and each
    class's ``checks``: ``ScheduleSpec`` (one of the ``<Type>Schedule`` definitions, by
    ``type``). References are to ``#/$defs/<name>``."""
    names = {name: f"{name}Schedule" for name in SCHEDULES}
    out = {"ScheduleSpec": union("type", names, "A schedule of the learning rate, by step "
                                 "(the first step is 1): {\"type\": \"Exp\", \"start\": "
                                 "0.01, \"decay\": 0.999}.")}
    for name, cls in SCHEDULES.items():
        fields = [f for f in dataclasses.fields(cls) if f.init]
        props = {}
        for f in fields:
            schema = cls.checks[f.name].schema
            if f.default is None:  # an optional field: null is its default
                schema = {"anyOf": [schema, {"type": "null"}]}
            props[f.name] = described(schema, default=... if f.default is dataclasses.MISSING
                                      else _encode(f.default))
        required = [f.name for f in fields if f.default is dataclasses.MISSING]
        out[names[name]] = object_schema("type", name, props, required, summary(cls))
    return out
