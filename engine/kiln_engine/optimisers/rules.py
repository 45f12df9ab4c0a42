"""The optimisation rules of Optimisers.jl, one small class each.

Each rule holds only its hyper-parameters (checked on construction, cast to the
parameter's dtype at every step) and follows Optimisers.jl's formula exactly; where
PyTorch's rule of the same name differs, the docstring says how. ``x`` is the parameter
array, ``dx`` its gradient; ``apply`` returns the step that ``update`` subtracts from ``x``.
States hold arrays of ``x``'s dtype, scalars of its real dtype (running powers of beta)
and ints.

Complex parameters follow Optimisers.jl (Flux issue 1776): a squared gradient is its
squared modulus ``abs2(dx) = conj(dx) dx``, so Adam's second moment is real and one per
entry. torch.optim treats a complex entry as two real ones (``view_as_real``), each with
its own second moment: its Adam, RMSprop, Adagrad, Adadelta, NAdam and RAdam differ on
complex parameters, and Kiln's rule on the real view ``x.view(float dtype)`` is torch's.
Rprop refuses complex parameters (it compares signs, which complex numbers lack).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .._backend import array_module
from ..kernels import optimisers as kernels
from ._kernels import register_core
from ._rule import Rule, abs2, cast, cast_eps, is_half

__all__ = [
    "AMSGrad", "AdaBelief", "AdaDelta", "AdaGrad", "AdaMax", "Adam", "AdamW", "Descent",
    "Lion", "Momentum", "NAdam", "Nesterov", "OAdam", "RAdam", "RMSProp", "Rprop",
]


def _betas(rule: Any, x: Any) -> tuple[Any, Any]:
    return cast(x, rule.beta[0]), cast(x, rule.beta[1])


def _moments(rule: Any, x: Any) -> tuple:
    """Adam's initial state ``(m, v, (b1, b2))``: zeros and the betas' first powers."""
    xp = array_module(x)
    return xp.zeros_like(x), xp.zeros_like(x), _betas(rule, x)


def _update_moments(m: Any, v: Any, dx: Any, b1: Any, b2: Any) -> None:
    """``m = b1 m + (1-b1) dx`` and ``v = b2 v + (1-b2) |dx|^2``, in place."""
    m *= b1
    m += (1 - b1) * dx
    v *= b2
    v += (1 - b2) * abs2(dx)


def _adam_step(xp: Any, m: Any, v: Any, scale: Any, bt2: Any, eps: Any) -> Any:
    """``scale * m / (sqrt(v) * (1/sqrt(1-b2^t)) + eps)``: Adam's step, one division per entry.

    The fused kernel (``kernels/optimisers.py``) does these very operations in this order.
    """
    den = xp.sqrt(v)
    den *= 1 / np.sqrt(1 - bt2)
    den += eps
    step = scale * m
    step /= den
    return step


def _adam_unit(xp: Any, m: Any, v: Any, bt1: Any, bt2: Any, eps: Any) -> Any:
    """``m / (1-b1^t) / (sqrt(v / (1-b2^t)) + eps)``: Adam's step at rate 1 in Optimisers.jl's
    order. In float16 the rate must come last: ``eta / (1-b1^t) * m`` underflows where
    ``m`` is small (Optimisers.jl's issue 167), and that entry would not move at all.
    """
    return m / (1 - bt1) / (xp.sqrt(v / (1 - bt2)) + eps)


@dataclass(frozen=True, repr=False)
class Descent(Rule):
    """``Descent(eta=0.1)``: plain gradient descent, ``x -= eta * dx`` (torch.optim.SGD)."""

    eta: float = 0.1

    def apply(self, state: None, x: Any, dx: Any) -> tuple[None, Any]:
        return state, dx * cast(x, self.eta)


@dataclass(frozen=True, repr=False)
class Momentum(Rule):
    """``Momentum(eta=0.01, rho=0.9)``: heavy-ball momentum, ``v = rho v + eta dx``, step ``v``.

    The velocity carries the learning rate, so after ``adjust(eta)`` the old velocity keeps
    the old rate. torch.optim.SGD(momentum=rho) keeps ``buf = rho buf + dx`` and steps
    ``lr * buf``: the same trajectory at a constant rate, not after a rate change.
    """

    eta: float = 0.01
    rho: float = 0.9

    def init(self, x: Any) -> Any:
        return array_module(x).zeros_like(x)

    def apply(self, state: Any, x: Any, dx: Any) -> tuple[Any, Any]:
        eta, rho = cast(x, self.eta), cast(x, self.rho)
        state *= rho
        state += eta * dx
        return state, state


@dataclass(frozen=True, repr=False)
class Nesterov(Rule):
    """``Nesterov(eta=0.001, rho=0.9)``: Nesterov momentum in Optimisers.jl's form.

    Step ``-rho^2 v + (1+rho) eta dx``, then ``v = rho v - eta dx``. Equal to
    torch.optim.SGD(momentum=rho, nesterov=True) at a constant rate; like Momentum, the
    velocity carries the rate in force when it was accumulated.
    """

    eta: float = 0.001
    rho: float = 0.9

    def init(self, x: Any) -> Any:
        return array_module(x).zeros_like(x)

    def apply(self, state: Any, x: Any, dx: Any) -> tuple[Any, Any]:
        eta, rho = cast(x, self.eta), cast(x, self.rho)
        step = -(rho * rho) * state + (1 + rho) * eta * dx
        state *= rho
        state -= eta * dx
        return state, step


@dataclass(frozen=True, repr=False)
class Rprop(Rule):
    """``Rprop(eta=1e-3, ell=(0.5, 1.2), gamma=(1e-6, 50.0))``: resilient backpropagation.

    Each entry has its own step size, starting at ``eta``: times ``ell[1]`` (at most
    ``gamma[1]``) while the gradient keeps its sign, times ``ell[0]`` (at least ``gamma[0]``)
    when it flips, and a flipped gradient is then taken as zero. Steps ``size * sign(dx)``.
    Full-batch; equal to torch.optim.Rprop(lr=eta, etas=ell, step_sizes=gamma).
    Complex parameters are refused: the rule compares the signs of successive gradients.
    """

    complex_refusal = "it compares the signs of successive gradients, which complex numbers lack"

    eta: float = 1e-3
    ell: tuple[float, float] = (0.5, 1.2)
    gamma: tuple[float, float] = (1e-6, 50.0)

    def init(self, x: Any) -> tuple:
        xp = array_module(x)
        return xp.zeros_like(x), xp.full_like(x, self.eta)

    def apply(self, state: tuple, x: Any, dx: Any) -> tuple[tuple, Any]:
        xp = array_module(x)
        down, up = cast(x, self.ell[0]), cast(x, self.ell[1])
        lo, hi = cast(x, self.gamma[0]), cast(x, self.gamma[1])
        prev, size = state
        trend = prev * dx
        size = xp.where(trend > 0, xp.minimum(size * up, hi),
                        xp.where(trend < 0, xp.maximum(size * down, lo), size))
        prev = xp.where(trend < 0, xp.zeros_like(dx), dx)
        return (prev, size), size * xp.sign(prev)


@dataclass(frozen=True, repr=False)
class RMSProp(Rule):
    """``RMSProp(eta=0.001, rho=0.9, epsilon=1e-8, *, centred=False)``: Hinton's RMSProp.

    ``q = rho q + (1-rho) dx^2``; centred also keeps ``l = rho l + (1-rho) dx`` and
    normalises by the variance ``q - l^2``. Step ``eta dx / (sqrt(q - l^2) + epsilon)``.
    Equal to torch.optim.RMSprop(lr=eta, alpha=rho, eps=epsilon, centered=centred) (whose
    default alpha is 0.99). ``centred`` decides the state and cannot be adjusted.
    """

    fixed = frozenset({"centred"})

    eta: float = 0.001
    rho: float = 0.9
    epsilon: float = 1e-8
    centred: bool = field(default=False, kw_only=True)

    def init(self, x: Any) -> tuple:
        xp = array_module(x)
        return xp.zeros_like(x), (xp.zeros_like(x) if self.centred else None)

    def apply(self, state: tuple, x: Any, dx: Any) -> tuple[tuple, Any]:
        xp = array_module(x)
        eta, rho, eps = cast(x, self.eta), cast(x, self.rho), cast_eps(x, self.epsilon)
        quad, lin = state
        quad *= rho
        quad += (1 - rho) * abs2(dx)
        var = quad
        if lin is not None:
            lin *= rho
            lin += (1 - rho) * dx
            var = quad - abs2(lin)
        return (quad, lin), dx * eta / (xp.sqrt(var) + eps)


@dataclass(frozen=True, repr=False)
class Adam(Rule):
    """``Adam(eta=0.001, beta=(0.9, 0.999), epsilon=1e-8)``: Kingma & Ba's Adam.

    ``m = b1 m + (1-b1) dx``, ``v = b2 v + (1-b2) dx^2``, step
    ``m / (1-b1^t) / (sqrt(v / (1-b2^t)) + epsilon) * eta``, as Optimisers.jl and
    torch.optim.Adam. It is evaluated as torch does, with the scalar factors first:
    ``eta/(1-b1^t) * m / (sqrt(v) * (1/sqrt(1-b2^t)) + epsilon)`` (one division per entry
    instead of three; the same up to rounding). In float16, where that order underflows,
    it is Optimisers.jl's. The state is ``(m, v, (b1^t, b2^t))``; after
    ``adjust(beta=...)`` the powers go on with the new betas.
    """

    eta: float = 0.001
    beta: tuple[float, float] = (0.9, 0.999)
    epsilon: float = 1e-8

    def init(self, x: Any) -> tuple:
        return _moments(self, x)

    def apply(self, state: tuple, x: Any, dx: Any) -> tuple[tuple, Any]:
        xp = array_module(x)
        eta, eps = cast(x, self.eta), cast_eps(x, self.epsilon)
        b1, b2 = _betas(self, x)
        m, v, (bt1, bt2) = state
        _update_moments(m, v, dx, b1, b2)
        if is_half(x):
            step = _adam_unit(xp, m, v, bt1, bt2, eps) * eta
        else:
            step = _adam_step(xp, m, v, eta / (1 - bt1), bt2, eps)
        return (m, v, (bt1 * b1, bt2 * b2)), step


@dataclass(frozen=True, repr=False)
class AdamW(Rule):
    """``AdamW(eta=0.001, beta=(0.9, 0.999), lambda_=0.0, epsilon=1e-8, *, couple=True)``.

    Adam with decoupled weight decay. With ``couple=True`` the step is
    ``eta * (adam + lambda_ x)``, ``adam`` being Adam's step at rate 1: this is
    torch.optim.AdamW(lr=eta, weight_decay=lambda_) (whose default decay is 0.01, here 0).
    With ``couple=False`` the decay is not scaled by the rate: ``eta adam + lambda_ x``,
    as in Loshchilov & Hutter's paper. (``lambda`` is a Python keyword, hence ``lambda_``.)
    ``adam`` is evaluated as in :class:`Adam`: scalar factors first, but in Optimisers.jl's
    order in float16, where epsilon is also kept from rounding to zero as in every other
    rule (Optimisers.jl's AdamW lets it round to zero there, and divides by zero).
    """

    eta: float = 0.001
    beta: tuple[float, float] = (0.9, 0.999)
    lambda_: float = 0.0
    epsilon: float = 1e-8
    couple: bool = field(default=True, kw_only=True)

    def init(self, x: Any) -> tuple:
        return _moments(self, x)

    def apply(self, state: tuple, x: Any, dx: Any) -> tuple[tuple, Any]:
        xp = array_module(x)
        eta, lam, eps = cast(x, self.eta), cast(x, self.lambda_), cast_eps(x, self.epsilon)
        b1, b2 = _betas(self, x)
        m, v, (bt1, bt2) = state
        _update_moments(m, v, dx, b1, b2)
        if is_half(x):
            adam = _adam_unit(xp, m, v, bt1, bt2, eps)
        else:
            adam = _adam_step(xp, m, v, 1 / (1 - bt1), bt2, eps)
        step = eta * (adam + lam * x) if self.couple else eta * adam + lam * x
        return (m, v, (bt1 * b1, bt2 * b2)), step


@dataclass(frozen=True, repr=False)
class RAdam(Rule):
    """``RAdam(eta=0.001, beta=(0.9, 0.999), epsilon=1e-8)``: rectified Adam (Liu et al.).

    With ``rho_inf = 2/(1-b2) - 1`` and ``rho_t = rho_inf - 2 t b2^t / (1-b2^t)``, steps
    Adam's step times ``r = sqrt((rho_t-4)(rho_t-2) rho_inf / ((rho_inf-4)(rho_inf-2) rho_t))``
    when ``rho_t > 4``, else the bias-corrected momentum ``eta m / (1-b1^t)``.
    torch.optim.RAdam switches at ``rho_t > 5`` instead, so the early steps differ.
    """

    eta: float = 0.001
    beta: tuple[float, float] = (0.9, 0.999)
    epsilon: float = 1e-8

    def init(self, x: Any) -> tuple:
        return (*_moments(self, x), 1)

    def apply(self, state: tuple, x: Any, dx: Any) -> tuple[tuple, Any]:
        xp = array_module(x)
        eta, eps = cast(x, self.eta), cast_eps(x, self.epsilon)
        b1, b2 = _betas(self, x)
        m, v, (bt1, bt2), t = state
        _update_moments(m, v, dx, b1, b2)
        rho_inf = 2 / (1 - b2) - 1
        rho = rho_inf - 2 * t * bt2 / (1 - bt2)
        if rho > 4:
            r = np.sqrt((rho - 4) * (rho - 2) * rho_inf / ((rho_inf - 4) * (rho_inf - 2) * rho))
            step = _adam_unit(xp, m, v, bt1, bt2, eps) * eta * r
        else:
            step = m / (1 - bt1) * eta
        return (m, v, (bt1 * b1, bt2 * b2), t + 1), step


@dataclass(frozen=True, repr=False)
class AdaMax(Rule):
    """``AdaMax(eta=0.001, beta=(0.9, 0.999), epsilon=1e-8)``: Adam with the infinity norm.

    ``u = max(b2 u, |dx|)``, step ``eta / (1-b1^t) * m / (u + epsilon)``.
    torch.optim.Adamax adds epsilon inside the max instead (``max(b2 u, |dx| + eps)``).
    """

    eta: float = 0.001
    beta: tuple[float, float] = (0.9, 0.999)
    epsilon: float = 1e-8

    def init(self, x: Any) -> tuple:
        return _moments(self, x)

    def apply(self, state: tuple, x: Any, dx: Any) -> tuple[tuple, Any]:
        xp = array_module(x)
        eta, eps = cast(x, self.eta), cast_eps(x, self.epsilon)
        b1, b2 = _betas(self, x)
        m, u, (bt1, bt2) = state
        m *= b1
        m += (1 - b1) * dx
        u *= b2
        xp.maximum(u, xp.abs(dx), out=u)
        step = eta / (1 - bt1) * m / (u + eps)
        return (m, u, (bt1 * b1, bt2 * b2)), step


@dataclass(frozen=True, repr=False)
class OAdam(Rule):
    """``OAdam(eta=0.001, beta=(0.5, 0.9), epsilon=1e-8)``: optimistic Adam (Daskalakis et al.).

    With ``a`` Adam's step, steps ``2 a_t - a_(t-1)``: suited to adversarial training.
    """

    eta: float = 0.001
    beta: tuple[float, float] = (0.5, 0.9)
    epsilon: float = 1e-8

    def init(self, x: Any) -> tuple:
        return (*_moments(self, x), array_module(x).zeros_like(x))

    def apply(self, state: tuple, x: Any, dx: Any) -> tuple[tuple, Any]:
        xp = array_module(x)
        eta, eps = cast(x, self.eta), cast_eps(x, self.epsilon)
        b1, b2 = _betas(self, x)
        m, v, (bt1, bt2), prev = state
        _update_moments(m, v, dx, b1, b2)
        term = eta * m / (1 - bt1) / (xp.sqrt(v / (1 - bt2)) + eps)
        return (m, v, (bt1 * b1, bt2 * b2), term), 2 * term - prev


@dataclass(frozen=True, repr=False)
class AdaGrad(Rule):
    """``AdaGrad(eta=0.1, epsilon=1e-8)``: Duchi et al.'s AdaGrad.

    ``acc += dx^2``, step ``eta dx / (sqrt(acc) + epsilon)``. The accumulator starts at
    epsilon, as in Optimisers.jl; torch.optim.Adagrad starts it at 0
    (``initial_accumulator_value``).
    """

    eta: float = 0.1
    epsilon: float = 1e-8

    def init(self, x: Any) -> Any:
        return array_module(x).full_like(x, self.epsilon)

    def apply(self, state: Any, x: Any, dx: Any) -> tuple[Any, Any]:
        xp = array_module(x)
        eta, eps = cast(x, self.eta), cast_eps(x, self.epsilon)
        state += abs2(dx)
        return state, dx * eta / (xp.sqrt(state) + eps)


@dataclass(frozen=True, repr=False)
class AdaDelta(Rule):
    """``AdaDelta(rho=0.9, epsilon=1e-8)``: Zeiler's AdaDelta, without a learning rate.

    ``acc = rho acc + (1-rho) dx^2``, step ``s = dx sqrt(dacc + eps) / sqrt(acc + eps)``,
    ``dacc = rho dacc + (1-rho) s^2``: torch.optim.Adadelta at its default lr=1.
    Having no ``eta``, it refuses ``adjust(tree, eta)``.
    """

    rho: float = 0.9
    epsilon: float = 1e-8

    def init(self, x: Any) -> tuple:
        xp = array_module(x)
        return xp.zeros_like(x), xp.zeros_like(x)

    def apply(self, state: tuple, x: Any, dx: Any) -> tuple[tuple, Any]:
        xp = array_module(x)
        rho, eps = cast(x, self.rho), cast_eps(x, self.epsilon)
        acc, dacc = state
        acc *= rho
        acc += (1 - rho) * abs2(dx)
        step = dx * xp.sqrt(dacc + eps) / xp.sqrt(acc + eps)
        dacc *= rho
        dacc += (1 - rho) * abs2(step)
        return (acc, dacc), step


@dataclass(frozen=True, repr=False)
class AMSGrad(Rule):
    """``AMSGrad(eta=0.001, beta=(0.9, 0.999), epsilon=1e-8)``: Adam with a running max of v.

    ``vhat = max(vhat, v)``, step ``eta m / (sqrt(vhat) + epsilon)``, with no bias
    correction and all three moments starting at epsilon, as in Optimisers.jl and the
    paper. torch.optim.Adam(amsgrad=True) starts them at 0 and bias-corrects m and v.
    """

    eta: float = 0.001
    beta: tuple[float, float] = (0.9, 0.999)
    epsilon: float = 1e-8

    def init(self, x: Any) -> tuple:
        xp = array_module(x)
        return tuple(xp.full_like(x, self.epsilon) for _ in range(3))

    def apply(self, state: tuple, x: Any, dx: Any) -> tuple[tuple, Any]:
        xp = array_module(x)
        eta, eps = cast(x, self.eta), cast_eps(x, self.epsilon)
        b1, b2 = _betas(self, x)
        m, v, vhat = state
        _update_moments(m, v, dx, b1, b2)
        xp.maximum(vhat, v, out=vhat)
        return (m, v, vhat), eta * m / (xp.sqrt(vhat) + eps)


@dataclass(frozen=True, repr=False)
class NAdam(Rule):
    """``NAdam(eta=0.001, beta=(0.9, 0.999), epsilon=1e-8)``: Dozat's Nesterov-accelerated Adam.

    Step ``(b1 m / (1 - b1 b1^t) + (1-b1) dx / (1-b1^t)) / (sqrt(b2 v / (1-b2^t)) + eps) * eta``,
    as Optimisers.jl. torch.optim.NAdam uses a momentum schedule
    ``b1 (1 - 0.5 * 0.96^(t psi))`` instead of a constant b1, so it differs.
    """

    eta: float = 0.001
    beta: tuple[float, float] = (0.9, 0.999)
    epsilon: float = 1e-8

    def init(self, x: Any) -> tuple:
        return _moments(self, x)

    def apply(self, state: tuple, x: Any, dx: Any) -> tuple[tuple, Any]:
        xp = array_module(x)
        eta, eps = cast(x, self.eta), cast_eps(x, self.epsilon)
        b1, b2 = _betas(self, x)
        m, v, (bt1, bt2) = state
        _update_moments(m, v, dx, b1, b2)
        step = ((b1 * m / (1 - b1 * bt1) + (1 - b1) * dx / (1 - bt1))
                / (xp.sqrt(v * b2 / (1 - bt2)) + eps) * eta)
        return (m, v, (bt1 * b1, bt2 * b2)), step


@dataclass(frozen=True, repr=False)
class AdaBelief(Rule):
    """``AdaBelief(eta=0.001, beta=(0.9, 0.999), epsilon=1e-16)``: Zhuang et al.'s AdaBelief.

    Like Adam, but the second moment tracks the belief ``(dx - m)^2``:
    ``s = b2 s + (1-b2) (dx - m)^2 + epsilon``, step
    ``eta m / (1-b1^t) / (sqrt(s / (1-b2^t)) + epsilon)``.
    """

    eta: float = 0.001
    beta: tuple[float, float] = (0.9, 0.999)
    epsilon: float = 1e-16

    def init(self, x: Any) -> tuple:
        return _moments(self, x)

    def apply(self, state: tuple, x: Any, dx: Any) -> tuple[tuple, Any]:
        xp = array_module(x)
        eta, eps = cast(x, self.eta), cast_eps(x, self.epsilon)
        b1, b2 = _betas(self, x)
        m, s, (bt1, bt2) = state
        m *= b1
        m += (1 - b1) * dx
        diff = dx - m
        s *= b2
        s += (1 - b2) * abs2(diff)
        s += eps
        step = eta * m / (1 - bt1) / (xp.sqrt(s / (1 - bt2)) + eps)
        return (m, s, (bt1 * b1, bt2 * b2)), step


@dataclass(frozen=True, repr=False)
class Lion(Rule):
    """``Lion(eta=0.001, beta=(0.9, 0.999))``: Chen et al.'s evolved sign momentum.

    The paper's update: step ``eta sign(b1 m + (1-b1) dx)``, then
    ``m = b2 m + (1-b2) dx``. Optimisers.jl keeps ``m = b2 dx + (1-b2) m`` instead, which
    weights the new gradient by b2; Kiln follows the paper. The defaults are
    Optimisers.jl's (the paper suggests ``beta=(0.9, 0.99)``); the paper's decoupled
    weight decay is not included (chain a WeightDecay before Lion for coupled decay).
    """

    eta: float = 0.001
    beta: tuple[float, float] = (0.9, 0.999)

    def init(self, x: Any) -> Any:
        return array_module(x).zeros_like(x)

    def apply(self, state: Any, x: Any, dx: Any) -> tuple[Any, Any]:
        xp = array_module(x)
        eta = cast(x, self.eta)
        b1, b2 = _betas(self, x)
        step = eta * xp.sign(b1 * state + (1 - b1) * dx)
        state *= b2
        state += (1 - b2) * dx
        return state, step


# The fused kernels that step the common rules (``_kernels.py``): each planner hands its
# kernel the scalars ``apply`` computes, cast the same way, and returns the state ``apply``
# would leave (a kernel's build runs only for float32 and float64).


def _descent_plan(r: Descent, x: Any, state: None) -> tuple:
    return kernels.DESCENT, (), (cast(x, r.eta),), state


def _momentum_plan(r: Momentum, x: Any, v: Any) -> tuple:
    return kernels.MOMENTUM, (v,), (cast(x, r.eta), cast(x, r.rho)), v


def _adam_plan(r: Adam | AdamW, x: Any, state: tuple) -> tuple:
    m, v, (bt1, bt2) = state
    if isinstance(r, AdamW):
        mode = kernels.ADAMW_COUPLED if r.couple else kernels.ADAMW_DECOUPLED
        lam = r.lambda_
    else:
        mode, lam = kernels.ADAM_MODE, 0.0
    scalars = kernels.adam_scalars(x, eta=r.eta, beta=r.beta, epsilon=r.epsilon, bt1=bt1,
                                   bt2=bt2, mode=mode, lambda_=lam)
    b1, b2 = scalars[:2]  # the betas cast as _betas casts them
    return kernels.ADAM, (m, v), scalars, (m, v, (bt1 * b1, bt2 * b2))


register_core(Descent, _descent_plan)
register_core(Momentum, _momentum_plan)
register_core(Adam, _adam_plan)
register_core(AdamW, _adam_plan)
