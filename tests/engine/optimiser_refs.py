"""Reference formulas for every optimisation rule, written out in float64 numpy.

Each ``ref_<rule>(rule)`` returns a stepper ``step(rule, x, g) -> update`` holding its own
state; ``rule`` is passed at every call so a test can change hyper-parameters mid-run.
An update of None means "no step" (AccumGrad between accumulations). These are written
from the papers' / Optimisers.jl's equations, not from Kiln's code. A squared gradient is
its squared modulus (``abs2``, as Optimisers.jl), so the same formulas hold for complex
arrays.

The ``jl_<rule>`` steppers further down are Optimisers.jl's ``apply!`` op for op, in the
array's own dtype: in float16 the order of the operations decides what underflows.
"""

from __future__ import annotations

import numpy as np


def abs2(g):
    """|g|^2, real: Julia's abs2."""
    return (g * np.conj(g)).real


def ref_descent(r0):
    return lambda r, x, g: r.eta * g


def ref_momentum(r0):
    s = {"v": 0.0}

    def step(r, x, g):
        s["v"] = r.rho * s["v"] + r.eta * g
        return s["v"]
    return step


def ref_nesterov(r0):
    s = {"v": 0.0}

    def step(r, x, g):
        out = -r.rho ** 2 * s["v"] + (1 + r.rho) * r.eta * g
        s["v"] = r.rho * s["v"] - r.eta * g
        return out
    return step


def ref_rprop(r0):
    s = {"prev": 0.0, "size": None}

    def step(r, x, g):
        size = np.full_like(x, r0.eta) if s["size"] is None else s["size"]
        trend = s["prev"] * g
        size = np.where(trend > 0, np.minimum(size * r.ell[1], r.gamma[1]),
                        np.where(trend < 0, np.maximum(size * r.ell[0], r.gamma[0]), size))
        s["prev"] = np.where(trend < 0, 0.0, g)
        s["size"] = size
        return size * np.sign(s["prev"])
    return step


def ref_rmsprop(r0):
    s = {"q": 0.0, "l": 0.0}

    def step(r, x, g):
        s["q"] = r.rho * s["q"] + (1 - r.rho) * abs2(g)
        if r.centred:
            s["l"] = r.rho * s["l"] + (1 - r.rho) * g
        return r.eta * g / (np.sqrt(s["q"] - abs2(s["l"])) + r.epsilon)
    return step


def _adam_core():
    s = {"m": 0.0, "v": 0.0, "t": 0}

    def moments(r, g):
        b1, b2 = r.beta
        s["t"] += 1
        s["m"] = b1 * s["m"] + (1 - b1) * g
        s["v"] = b2 * s["v"] + (1 - b2) * abs2(g)
        t = s["t"]
        return s["m"], s["v"], t, s["m"] / (1 - b1 ** t), s["v"] / (1 - b2 ** t)
    return moments


def ref_adam(r0):
    moments = _adam_core()

    def step(r, x, g):
        _, _, _, mhat, vhat = moments(r, g)
        return r.eta * mhat / (np.sqrt(vhat) + r.epsilon)
    return step


def ref_adamw(r0):
    moments = _adam_core()

    def step(r, x, g):
        _, _, _, mhat, vhat = moments(r, g)
        adam = mhat / (np.sqrt(vhat) + r.epsilon)
        return r.eta * (adam + r.lambda_ * x) if r.couple else r.eta * adam + r.lambda_ * x
    return step


def ref_radam(r0):
    moments = _adam_core()

    def step(r, x, g):
        _, _, t, mhat, vhat = moments(r, g)
        b2 = r.beta[1]
        rho_inf = 2 / (1 - b2) - 1
        rho = rho_inf - 2 * t * b2 ** t / (1 - b2 ** t)
        if rho > 4:
            rect = np.sqrt((rho - 4) * (rho - 2) * rho_inf / ((rho_inf - 4) * (rho_inf - 2) * rho))
            return r.eta * rect * mhat / (np.sqrt(vhat) + r.epsilon)
        return r.eta * mhat
    return step


def ref_adamax(r0):
    s = {"m": 0.0, "u": 0.0, "t": 0}

    def step(r, x, g):
        b1, b2 = r.beta
        s["t"] += 1
        s["m"] = b1 * s["m"] + (1 - b1) * g
        s["u"] = np.maximum(b2 * s["u"], np.abs(g))
        return r.eta / (1 - b1 ** s["t"]) * s["m"] / (s["u"] + r.epsilon)
    return step


def ref_oadam(r0):
    moments = _adam_core()
    s = {"prev": 0.0}

    def step(r, x, g):
        _, _, _, mhat, vhat = moments(r, g)
        term = r.eta * mhat / (np.sqrt(vhat) + r.epsilon)
        out = 2 * term - s["prev"]
        s["prev"] = term
        return out
    return step


def ref_adagrad(r0):
    s = {"acc": r0.epsilon}

    def step(r, x, g):
        s["acc"] = s["acc"] + abs2(g)
        return r.eta * g / (np.sqrt(s["acc"]) + r.epsilon)
    return step


def ref_adadelta(r0):
    s = {"acc": 0.0, "dacc": 0.0}

    def step(r, x, g):
        s["acc"] = r.rho * s["acc"] + (1 - r.rho) * abs2(g)
        out = g * np.sqrt(s["dacc"] + r.epsilon) / np.sqrt(s["acc"] + r.epsilon)
        s["dacc"] = r.rho * s["dacc"] + (1 - r.rho) * abs2(out)
        return out
    return step


def ref_amsgrad(r0):
    s = {"m": r0.epsilon, "v": r0.epsilon, "vhat": r0.epsilon}

    def step(r, x, g):
        b1, b2 = r.beta
        s["m"] = b1 * s["m"] + (1 - b1) * g
        s["v"] = b2 * s["v"] + (1 - b2) * abs2(g)
        s["vhat"] = np.maximum(s["vhat"], s["v"])
        return r.eta * s["m"] / (np.sqrt(s["vhat"]) + r.epsilon)
    return step


def ref_nadam(r0):
    moments = _adam_core()

    def step(r, x, g):
        m, v, t, _, _ = moments(r, g)
        b1, b2 = r.beta
        num = b1 * m / (1 - b1 ** (t + 1)) + (1 - b1) * g / (1 - b1 ** t)
        return r.eta * num / (np.sqrt(b2 * v / (1 - b2 ** t)) + r.epsilon)
    return step


def ref_adabelief(r0):
    s = {"m": 0.0, "s": 0.0, "t": 0}

    def step(r, x, g):
        b1, b2 = r.beta
        s["t"] += 1
        s["m"] = b1 * s["m"] + (1 - b1) * g
        s["s"] = b2 * s["s"] + (1 - b2) * abs2(g - s["m"]) + r.epsilon
        t = s["t"]
        return r.eta * s["m"] / (1 - b1 ** t) / (np.sqrt(s["s"] / (1 - b2 ** t)) + r.epsilon)
    return step


def ref_lion(r0):
    s = {"m": 0.0}

    def step(r, x, g):
        b1, b2 = r.beta
        out = r.eta * np.sign(b1 * s["m"] + (1 - b1) * g)
        s["m"] = b2 * s["m"] + (1 - b2) * g
        return out
    return step


def ref_weightdecay(r0):
    return lambda r, x, g: g + r.lambda_ * x


def ref_signdecay(r0):
    return lambda r, x, g: g + r.lambda_ * np.sign(x)


def ref_clipgrad(r0):
    return lambda r, x, g: np.clip(g, -r.delta, r.delta)


def ref_clipnorm(r0):
    def step(r, x, g):
        a = np.abs(g).ravel()
        norm = a.max() if np.isinf(r.p) else (a ** r.p).sum() ** (1 / r.p)
        return g * min(r.omega / norm, 1.0)
    return step


def ref_accumgrad(r0):
    s = {"seen": []}

    def step(r, x, g):
        s["seen"].append(g)
        if len(s["seen"]) < r.n:
            return None
        out = sum(s["seen"]) / r.n
        s["seen"] = []
        return out
    return step


def ref_chain(*refs):
    """A chain's stepper from its members' steppers: each transforms the previous output."""
    def make(r0):
        steppers = [ref(m) for ref, m in zip(refs, r0.rules)]

        def step(r, x, g):
            for st, member in zip(steppers, r.rules):
                if g is None:
                    return None
                g = st(member, x, g)
            return g
        return step
    return make


# Optimisers.jl's apply!, op for op, with every scalar in the array's dtype (Julia's T(...)).
# Epsilon is floored in float16 as its _eps does; AdamW's too (Kiln's choice: engine/README).


def _eps(x, e):
    t = x.dtype.type
    return max(t(1e-7), t(e)) if x.dtype == np.float16 and e != 0 else t(e)


def _jl_moments(r, x):
    t = x.dtype.type
    return {"m": np.zeros_like(x), "v": np.zeros_like(x), "bt": (t(r.beta[0]), t(r.beta[1]))}


def _jl_update(s, r, g):
    t = g.dtype.type
    b1, b2 = t(r.beta[0]), t(r.beta[1])
    s["m"] = b1 * s["m"] + (1 - b1) * g
    s["v"] = b2 * s["v"] + (1 - b2) * abs2(g).astype(g.dtype)
    return b1, b2


def _jl_advance(s, b1, b2):
    s["bt"] = (s["bt"][0] * b1, s["bt"][1] * b2)


def jl_rmsprop(r0):
    s = {}

    def step(r, x, g):
        t = x.dtype.type
        eta, rho, eps = t(r.eta), t(r.rho), _eps(x, r.epsilon)
        q, lin = s.get("q", np.zeros_like(x)), s.get("l", np.zeros_like(x))
        s["q"] = rho * q + (1 - rho) * abs2(g).astype(x.dtype)
        if r.centred:
            s["l"] = rho * lin + (1 - rho) * g
        return g * eta / (np.sqrt(s["q"] - abs2(s.get("l", t(0))).astype(x.dtype)) + eps)
    return step


def jl_adam(r0):
    s = {}

    def step(r, x, g):
        s.update(s or _jl_moments(r0, x))
        t = x.dtype.type
        b1, b2 = _jl_update(s, r, g)
        (bt1, bt2), eps = s["bt"], _eps(x, r.epsilon)
        out = s["m"] / (1 - bt1) / (np.sqrt(s["v"] / (1 - bt2)) + eps) * t(r.eta)
        _jl_advance(s, b1, b2)
        return out
    return step


def jl_adamw(r0):
    s = {}

    def step(r, x, g):
        s.update(s or _jl_moments(r0, x))
        t = x.dtype.type
        eta, lam = t(r.eta), t(r.lambda_)
        b1, b2 = _jl_update(s, r, g)
        (bt1, bt2), eps = s["bt"], _eps(x, r.epsilon)
        adam = s["m"] / (1 - bt1) / (np.sqrt(s["v"] / (1 - bt2)) + eps)
        _jl_advance(s, b1, b2)
        return eta * (adam + lam * x) if r.couple else eta * adam + lam * x
    return step


def jl_radam(r0):
    s = {}

    def step(r, x, g):
        s.update(s or {**_jl_moments(r0, x), "t": 1})
        t = x.dtype.type
        b1, b2 = _jl_update(s, r, g)
        (bt1, bt2), eps, eta = s["bt"], _eps(x, r.epsilon), t(r.eta)
        rho_inf = 2 / (1 - b2) - 1
        rho = rho_inf - 2 * s["t"] * bt2 / (1 - bt2)
        if rho > 4:
            rect = np.sqrt((rho - 4) * (rho - 2) * rho_inf / ((rho_inf - 4) * (rho_inf - 2) * rho))
            out = s["m"] / (1 - bt1) / (np.sqrt(s["v"] / (1 - bt2)) + eps) * eta * rect
        else:
            out = s["m"] / (1 - bt1) * eta
        _jl_advance(s, b1, b2)
        s["t"] += 1
        return out
    return step


def jl_adamax(r0):
    s = {}

    def step(r, x, g):
        s.update(s or _jl_moments(r0, x))
        t = x.dtype.type
        b1, b2 = t(r.beta[0]), t(r.beta[1])
        s["m"] = b1 * s["m"] + (1 - b1) * g
        s["v"] = np.maximum(b2 * s["v"], np.abs(g))
        out = (t(r.eta) / (1 - s["bt"][0])) * s["m"] / (s["v"] + _eps(x, r.epsilon))
        _jl_advance(s, b1, b2)
        return out
    return step


def jl_oadam(r0):
    s = {}

    def step(r, x, g):
        s.update(s or {**_jl_moments(r0, x), "term": np.zeros_like(x)})
        t = x.dtype.type
        b1, b2 = _jl_update(s, r, g)
        (bt1, bt2), eps = s["bt"], _eps(x, r.epsilon)
        prev = s["term"]
        s["term"] = t(r.eta) * s["m"] / (1 - bt1) / (np.sqrt(s["v"] / (1 - bt2)) + eps)
        _jl_advance(s, b1, b2)
        return 2 * s["term"] - prev
    return step


def jl_adagrad(r0):
    s = {}

    def step(r, x, g):
        t = x.dtype.type
        acc = s.get("acc", np.full_like(x, t(r0.epsilon)))
        s["acc"] = acc + abs2(g).astype(x.dtype)
        return g * t(r.eta) / (np.sqrt(s["acc"]) + _eps(x, r.epsilon))
    return step


def jl_adadelta(r0):
    s = {}

    def step(r, x, g):
        t = x.dtype.type
        rho, eps = t(r.rho), _eps(x, r.epsilon)
        acc, dacc = s.get("acc", np.zeros_like(x)), s.get("dacc", np.zeros_like(x))
        s["acc"] = rho * acc + (1 - rho) * abs2(g).astype(x.dtype)
        out = g * np.sqrt(dacc + eps) / np.sqrt(s["acc"] + eps)
        s["dacc"] = rho * dacc + (1 - rho) * abs2(out).astype(x.dtype)
        return out
    return step


def jl_amsgrad(r0):
    s = {}

    def step(r, x, g):
        t = x.dtype.type
        if not s:
            s.update({k: np.full_like(x, t(r0.epsilon)) for k in ("m", "v", "vhat")})
        _jl_update(s, r, g)
        s["vhat"] = np.maximum(s["vhat"], s["v"])
        return t(r.eta) * s["m"] / (np.sqrt(s["vhat"]) + _eps(x, r.epsilon))
    return step


def jl_nadam(r0):
    s = {}

    def step(r, x, g):
        s.update(s or _jl_moments(r0, x))
        t = x.dtype.type
        b1, b2 = _jl_update(s, r, g)
        (bt1, bt2), eps = s["bt"], _eps(x, r.epsilon)
        out = ((b1 * s["m"] / (1 - b1 * bt1) + (1 - b1) * g / (1 - bt1))
               / (np.sqrt(s["v"] * b2 / (1 - bt2)) + eps) * t(r.eta))
        _jl_advance(s, b1, b2)
        return out
    return step


def jl_adabelief(r0):
    s = {}

    def step(r, x, g):
        s.update(s or _jl_moments(r0, x))
        t = x.dtype.type
        b1, b2 = t(r.beta[0]), t(r.beta[1])
        eps = _eps(x, r.epsilon)
        s["m"] = b1 * s["m"] + (1 - b1) * g
        s["v"] = b2 * s["v"] + (1 - b2) * abs2(g - s["m"]).astype(x.dtype) + eps
        (bt1, bt2) = s["bt"]
        out = t(r.eta) * s["m"] / (1 - bt1) / (np.sqrt(s["v"] / (1 - bt2)) + eps)
        _jl_advance(s, b1, b2)
        return out
    return step
