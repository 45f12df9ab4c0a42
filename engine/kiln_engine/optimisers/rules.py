"""The optimisation rules of Optimisers.jl, one small class each.

Each rule holds only its hyper-parameters (checked on construction, cast to the
parameter's dtype at every step) and follows Optimisers.jl's formula exactly; where
PyTorch's rule of the same name differs, the docstring says how. ``x`` is the parameter
array, ``dx`` its gradient; ``apply`` returns the step that ``update`` subtracts from ``x``.
States hold arrays of ``x``'s dtype and scalars of it (running powers of beta) or ints.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .._backend import array_module
from ._rule import Rule, cast, cast_eps

__all__ = ["Adam", "Descent"]


@dataclass(frozen=True, repr=False)
class Descent(Rule):
    """``Descent(eta=0.1)``: plain gradient descent, ``x -= eta * dx`` (torch.optim.SGD)."""

    eta: float = 0.1

    def apply(self, state: None, x: Any, dx: Any) -> tuple[None, Any]:
        return state, dx * cast(x, self.eta)


@dataclass(frozen=True, repr=False)
class Adam(Rule):
    """``Adam(eta=0.001, beta=(0.9, 0.999), epsilon=1e-8)``: Kingma & Ba's Adam.

    ``m = b1 m + (1-b1) dx``, ``v = b2 v + (1-b2) dx^2``,
    step ``m / (1-b1^t) / (sqrt(v / (1-b2^t)) + epsilon) * eta``: the same as
    torch.optim.Adam. The state is ``(m, v, (b1^t, b2^t))``; after ``adjust(beta=...)``
    the running powers go on with the new betas.
    """

    eta: float = 0.001
    beta: tuple[float, float] = (0.9, 0.999)
    epsilon: float = 1e-8

    def init(self, x: Any) -> tuple:
        xp = array_module(x)
        return xp.zeros_like(x), xp.zeros_like(x), (cast(x, self.beta[0]), cast(x, self.beta[1]))

    def apply(self, state: tuple, x: Any, dx: Any) -> tuple[tuple, Any]:
        eta, b1, b2, eps = (cast(x, self.eta), cast(x, self.beta[0]), cast(x, self.beta[1]),
                            cast_eps(x, self.epsilon))
        m, v, (bt1, bt2) = state
        xp = array_module(x)
        m *= b1
        m += (1 - b1) * dx
        v *= b2
        v += (1 - b2) * (dx * dx)
        step = m / (1 - bt1) / (xp.sqrt(v / (1 - bt2)) + eps) * eta
        return (m, v, (bt1 * b1, bt2 * b2)), step
