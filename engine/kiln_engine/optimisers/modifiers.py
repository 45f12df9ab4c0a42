"""Rules that modify the gradient before another rule: decay, clipping, accumulation.

They are meant for an :class:`~kiln_engine.optimisers.OptimiserChain`, first in line:
``OptimiserChain(ClipNorm(1.0), WeightDecay(1e-4), Adam())``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from .._backend import array_module
from ..kernels import optimisers as kernels
from ._kernels import register_stage
from ._rule import Rule, cast

__all__ = ["AccumGrad", "ClipGrad", "ClipNorm", "NonFiniteError", "SignDecay", "WeightDecay"]


class NonFiniteError(FloatingPointError):
    """A gradient whose norm is inf or nan reached ClipNorm; ``path`` names the parameter."""

    def __init__(self, message: str, path: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.path = path

    def __str__(self) -> str:
        return f"{self.path}: {self.message}" if self.path else self.message


@dataclass(frozen=True, repr=False)
class WeightDecay(Rule):
    """``WeightDecay(lambda_=5e-4)``: adds ``lambda_ x`` to the gradient (L2 regularisation).

    The same as adding ``lambda_/2 * sum(x^2)`` to the loss; torch's ``weight_decay=``.
    """

    lambda_: float = 5e-4

    def apply(self, state: None, x: Any, dx: Any) -> tuple[None, Any]:
        return state, dx + cast(x, self.lambda_) * x


@dataclass(frozen=True, repr=False)
class SignDecay(Rule):
    """``SignDecay(lambda_=1e-3)``: adds ``lambda_ sign(x)`` (L1 regularisation, lasso)."""

    lambda_: float = 1e-3

    def apply(self, state: None, x: Any, dx: Any) -> tuple[None, Any]:
        return state, dx + cast(x, self.lambda_) * array_module(x).sign(x)


@dataclass(frozen=True, repr=False)
class ClipGrad(Rule):
    """``ClipGrad(delta=10.0)``: clamps every gradient entry to [-delta, delta].

    Equal to torch.nn.utils.clip_grad_value_(params, delta). Complex parameters are refused
    at ``setup``: clamping needs an order (Julia's ``clamp`` and ``torch.clamp`` refuse
    complex numbers too); ClipNorm bounds a complex gradient by its modulus.
    """

    complex_refusal = "clamping needs ordered entries, which complex numbers lack; use ClipNorm"

    delta: float = 10.0

    def apply(self, state: None, x: Any, dx: Any) -> tuple[None, Any]:
        delta = cast(x, self.delta)
        return state, array_module(dx).clip(dx, -delta, delta)


@dataclass(frozen=True, repr=False)
class ClipNorm(Rule):
    """``ClipNorm(omega=10.0, p=2.0, *, throw=True)``: rescales a gradient whose p-norm > omega.

    Per array, as Optimisers.jl: each parameter's gradient is clipped on its own norm,
    whereas torch.nn.utils.clip_grad_norm_ clips all gradients by their joint norm.
    ``p`` is any number >= 1 or ``math.inf`` (``"inf"`` in JSON), of the entries' moduli
    for a complex gradient. A norm that is inf or nan raises :class:`NonFiniteError`
    unless ``throw=False``.
    """

    omega: float = 10.0
    p: float = 2.0
    throw: bool = field(default=True, kw_only=True)

    def apply(self, state: None, x: Any, dx: Any) -> tuple[None, Any]:
        xp = array_module(dx)
        flat = dx.reshape(-1)
        nrm = float(xp.linalg.norm(flat, ord=self.p)) if flat.size else 0.0
        if self.throw and not math.isfinite(nrm):
            raise NonFiniteError(f"ClipNorm: the gradient has {self.p}-norm {nrm} (array of "
                                 f"shape {tuple(dx.shape)}, {dx.dtype}); pass throw=False to "
                                 f"clip it anyway")
        scale = min(self.omega / nrm, 1.0) if nrm > 0 else 1.0
        return state, dx * cast(x, scale)


@dataclass(frozen=True, repr=False)
class AccumGrad(Rule):
    """``AccumGrad(n)``: averages ``n`` gradients, then passes the mean on; no step between.

    ``OptimiserChain(AccumGrad(4), Adam())`` trains with an effective batch four times the
    loader's. The state is ``(sum_so_far / n, count)``; the parameters and the later rules
    change only on every ``n``-th update.
    """

    n: int

    def init(self, x: Any) -> tuple:
        return array_module(x).zeros_like(x), 1

    def apply(self, state: tuple, x: Any, dx: Any) -> tuple[tuple, Any]:
        acc, counter = state
        if counter == 1:
            acc[...] = dx / self.n
        else:
            acc += dx / self.n
        if counter == self.n:
            return (acc, 1), acc
        return (acc, counter + 1), None


# Stages a fused kernel applies to the gradient before its rule's step (``_kernels.py``).
register_stage(ClipGrad, lambda r: (kernels.CLIP, r.delta))
register_stage(WeightDecay, lambda r: (kernels.DECAY, r.lambda_))
