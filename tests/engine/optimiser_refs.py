"""Reference formulas for every optimisation rule, written out in float64 numpy.

Each ``ref_<rule>(rule)`` returns a stepper ``step(rule, x, g) -> update`` holding its own
state; ``rule`` is passed at every call so a test can change hyper-parameters mid-run.
An update of None means "no step" (AccumGrad between accumulations). These are written
from the papers' / Optimisers.jl's equations, not from Kiln's code.
"""

from __future__ import annotations

import numpy as np


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
        s["q"] = r.rho * s["q"] + (1 - r.rho) * g ** 2
        if r.centred:
            s["l"] = r.rho * s["l"] + (1 - r.rho) * g
        return r.eta * g / (np.sqrt(s["q"] - s["l"] ** 2) + r.epsilon)
    return step


def _adam_core():
    s = {"m": 0.0, "v": 0.0, "t": 0}

    def moments(r, g):
        b1, b2 = r.beta
        s["t"] += 1
        s["m"] = b1 * s["m"] + (1 - b1) * g
        s["v"] = b2 * s["v"] + (1 - b2) * g ** 2
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
        s["acc"] = s["acc"] + g ** 2
        return r.eta * g / (np.sqrt(s["acc"]) + r.epsilon)
    return step


def ref_adadelta(r0):
    s = {"acc": 0.0, "dacc": 0.0}

    def step(r, x, g):
        s["acc"] = r.rho * s["acc"] + (1 - r.rho) * g ** 2
        out = g * np.sqrt(s["dacc"] + r.epsilon) / np.sqrt(s["acc"] + r.epsilon)
        s["dacc"] = r.rho * s["dacc"] + (1 - r.rho) * out ** 2
        return out
    return step


def ref_amsgrad(r0):
    s = {"m": r0.epsilon, "v": r0.epsilon, "vhat": r0.epsilon}

    def step(r, x, g):
        b1, b2 = r.beta
        s["m"] = b1 * s["m"] + (1 - b1) * g
        s["v"] = b2 * s["v"] + (1 - b2) * g ** 2
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
        s["s"] = b2 * s["s"] + (1 - b2) * (g - s["m"]) ** 2 + r.epsilon
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
