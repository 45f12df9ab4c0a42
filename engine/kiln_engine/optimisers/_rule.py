"""The base of every optimisation rule, and the checks its hyper-parameters pass.

A rule is an immutable record of hyper-parameters (a frozen dataclass) with two methods,
as in Optimisers.jl: ``init(x) -> state`` makes the state for one parameter array, and
``apply(state, x, dx) -> (state, dx)`` turns a gradient into the step that is subtracted
from ``x``. ``apply`` may update the state's arrays in place but never ``x`` or ``dx``.
A step of None means "no update this time" (AccumGrad between accumulations).

Complex parameters are stepped as in Optimisers.jl: hyper-parameters are real, and a rule
that squares the gradient takes its squared modulus (:func:`abs2`). A rule whose formula
needs an order on the entries (clamping, comparing signs) names why in
``complex_refusal``, and ``setup`` refuses complex parameters for it.

Every hyper-parameter is checked by name through :data:`CHECKS`, so the constructor,
``adjust`` and the JSON specs all refuse the same bad values with the same words. Each
check carries the JSON Schema of what it accepts, and :data:`DESCRIPTIONS` says what
each name means, for the documented optimiser schema (``json_schema``).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, ClassVar

import numpy as np

from .._spec import Check, accepts

__all__ = ["CHECKS", "DESCRIPTIONS", "HyperError", "Rule", "abs2", "cast", "cast_eps",
           "is_half"]


class HyperError(ValueError):
    """A hyper-parameter value out of range; the message reads after the field's name."""


def _number(v: Any) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float, np.integer, np.floating)):
        raise HyperError(f"must be a number; got {v!r}")
    v = float(v)
    if math.isnan(v):
        raise HyperError("must be a number; got nan")
    return v


def _finite(v: Any) -> float:
    v = _number(v)
    if not math.isfinite(v):
        raise HyperError(f"must be finite; got {v!r}")
    return v


_NONNEGATIVE = {"type": "number", "minimum": 0}
_DECAY = {"type": "number", "minimum": 0, "exclusiveMaximum": 1}


def _pair_of(item: dict[str, Any]) -> dict[str, Any]:
    return {"type": "array", "items": item, "minItems": 2, "maxItems": 2}


@accepts(_NONNEGATIVE)
def nonnegative(v: Any) -> float:
    """A finite number >= 0 (learning rates, epsilons, decay strengths)."""
    v = _finite(v)
    if v < 0:
        raise HyperError(f"must be >= 0; got {v!r}")
    return v


@accepts({"type": "number", "exclusiveMinimum": 0})
def positive(v: Any) -> float:
    """A finite number > 0 (clipping thresholds)."""
    v = _finite(v)
    if v <= 0:
        raise HyperError(f"must be > 0; got {v!r}")
    return v


@accepts(_DECAY)
def decay(v: Any) -> float:
    """A decay factor in [0, 1)."""
    v = _finite(v)
    if not 0 <= v < 1:
        raise HyperError(f"must be in [0, 1); got {v!r}")
    return v


def _pair(v: Any) -> tuple[Any, Any]:
    if not isinstance(v, (tuple, list)) or len(v) != 2:
        raise HyperError(f"must be a pair of numbers; got {v!r}")
    return v[0], v[1]


@accepts(_pair_of(_DECAY))
def betas(v: Any) -> tuple[float, float]:
    """Two decay factors, each in [0, 1)."""
    a, b = _pair(v)
    try:
        return decay(a), decay(b)
    except HyperError as e:
        raise HyperError(f"must be a pair of numbers in [0, 1); got {v!r} ({e})") from None


@accepts(_pair_of({"type": "number", "exclusiveMinimum": 0}))
def scales(v: Any) -> tuple[float, float]:
    """Rprop's (decrease, increase) factors: 0 < decrease < 1 < increase."""
    a, b = (_finite(e) for e in _pair(v))
    if not (0 < a < 1 < b):
        raise HyperError(f"must be (decrease, increase) with 0 < decrease < 1 < increase; "
                         f"got {v!r}")
    return a, b


@accepts(_pair_of(_NONNEGATIVE))
def bounds(v: Any) -> tuple[float, float]:
    """Rprop's (smallest, largest) step: 0 <= smallest <= largest."""
    a, b = (_finite(e) for e in _pair(v))
    if not (0 <= a <= b):
        raise HyperError(f"must be (smallest, largest) with 0 <= smallest <= largest; got {v!r}")
    return a, b


@accepts({"anyOf": [{"type": "number", "minimum": 1}, {"const": "inf"}]})
def pnorm(v: Any) -> float:
    """The p of a p-norm: a number >= 1, or inf (the largest absolute value)."""
    if v == "inf":
        return math.inf
    v = _number(v)
    if v < 1:
        raise HyperError(f"must be a number >= 1 or inf; got {v!r}")
    return v


@accepts({"type": "boolean"})
def flag(v: Any) -> bool:
    """True or False (numpy booleans allowed, integers not)."""
    if not isinstance(v, (bool, np.bool_)):
        raise HyperError(f"must be true or false; got {v!r}")
    return bool(v)


@accepts({"type": "integer", "minimum": 1})
def count(v: Any) -> int:
    """An integer >= 1."""
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
        raise HyperError(f"must be an integer >= 1; got {v!r}")
    return int(v)


#: The check for every hyper-parameter name used by a rule.
CHECKS: dict[str, Check] = {
    "eta": nonnegative, "epsilon": nonnegative, "lambda_": nonnegative,
    "rho": decay, "beta": betas, "ell": scales, "gamma": bounds,
    "delta": positive, "omega": positive, "p": pnorm, "n": count,
    "centred": flag, "couple": flag, "throw": flag,
}

#: What every hyper-parameter name means, for the documented schema.
DESCRIPTIONS: dict[str, str] = {
    "eta": "the learning rate",
    "epsilon": "added to the denominator, for stability",
    "lambda_": "the strength of the decay",
    "rho": "the decay of the running average (momentum)",
    "beta": "[beta1, beta2]: the decays of the first and second moment estimates",
    "ell": "[decrease, increase], 0 < decrease < 1 < increase: the factors of a step size "
           "when the gradient's sign flips and while it holds",
    "gamma": "[smallest, largest]: the bounds of a step size, 0 <= smallest <= largest",
    "delta": "clip each gradient entry to [-delta, delta]",
    "omega": "rescale a gradient whose p-norm is above omega to omega",
    "p": "the p of the norm (\"inf\": the largest absolute entry)",
    "n": "how many gradients to accumulate before a step",
    "centred": "normalise by the gradient's variance rather than its second moment",
    "couple": "scale the weight decay by the learning rate",
    "throw": "fail on a gradient whose norm is not finite (false: clip it anyway)",
}


_HALF = np.dtype(np.float16)


def _real_type(x: Any) -> Any:
    dt = x.dtype
    return np.finfo(dt).dtype.type if dt.kind == "c" else dt.type


def cast(x: Any, v: float) -> Any:
    """The hyper-parameter ``v`` as a scalar of ``x``'s real dtype, so float32 stays float32
    (and complex64 takes float32 hyper-parameters)."""
    return _real_type(x)(v)


def cast_eps(x: Any, v: float) -> Any:
    """An epsilon in ``x``'s real dtype that float16 does not round to zero (as Optimisers.jl)."""
    t = _real_type(x)
    if x.dtype == _HALF and v != 0:
        return max(t(1e-7), t(v))
    return t(v)


def is_half(x: Any) -> bool:
    """True for float16 arrays, where a rule may need another order of operations."""
    return x.dtype == _HALF


def abs2(dx: Any) -> Any:
    """The squared modulus ``conj(dx) * dx`` as a real array (``dx * dx`` for real ``dx``),
    as Julia's ``abs2``: what rules that square the gradient use."""
    if dx.dtype.kind == "c":
        re, im = dx.real, dx.imag
        return re * re + im * im
    return dx * dx


class Rule:
    """Base of every rule. Subclasses are ``@dataclass(frozen=True, repr=False)``.

    ``fixed`` names fields that decide the state's layout, which ``adjust`` may not change;
    ``complex_refusal`` says why a rule cannot step complex arrays, if it cannot.
    """

    fixed: ClassVar[frozenset[str]] = frozenset()
    #: Why the rule cannot step complex arrays, or None where it can.
    complex_refusal: ClassVar[str | None] = None

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            try:
                value = CHECKS[f.name](getattr(self, f.name))
            except HyperError as e:
                raise ValueError(f"{type(self).__name__}: {f.name} {e}") from None
            object.__setattr__(self, f.name, value)

    @classmethod
    def hypernames(cls) -> tuple[str, ...]:
        """The names of this rule's hyper-parameters, in constructor order."""
        return tuple(f.name for f in dataclasses.fields(cls))

    def hyperparameters(self) -> dict[str, Any]:
        """``{name: value}`` for every hyper-parameter."""
        return {name: getattr(self, name) for name in self.hypernames()}

    def refuses_complex(self) -> str | None:
        """Why this rule cannot step a complex array (None where it can)."""
        return self.complex_refusal

    def init(self, x: Any) -> Any:
        """The state for parameter array ``x`` (None for a stateless rule)."""
        return None

    def apply(self, state: Any, x: Any, dx: Any) -> tuple[Any, Any]:  # pragma: no cover
        raise NotImplementedError

    def __repr__(self) -> str:
        inner = ", ".join(f"{k}={v!r}" for k, v in self.hyperparameters().items())
        return f"{type(self).__name__}({inner})"
