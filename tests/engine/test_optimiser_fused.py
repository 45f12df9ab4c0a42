"""The fused kernels give bit-identical results to the rules' reference path.

Two copies of a model are trained side by side, one with the fused kernels and one with
``rule.apply`` per leaf, through adjust, freeze, None gradients, ties and threading; every
parameter must agree bit for bit after every step.
"""

from __future__ import annotations

import multiprocessing
import os

import numpy as np
import pytest
from kiln_engine.optimisers import (
    Adam,
    AdamW,
    Descent,
    Momentum,
    OptimiserChain,
    WeightDecay,
    _fused,
    adjust,
    freeze,
    setup,
    thaw,
    update,
)

FUSED = [Descent(0.1), Momentum(0.01, 0.8), Adam(0.01, (0.8, 0.9)),
         AdamW(0.01, (0.8, 0.9), 0.1), AdamW(0.01, (0.8, 0.9), 0.1, couple=False)]
KNOB = {Descent: ("eta", 0.03), Momentum: ("rho", 0.5), Adam: ("beta", (0.7, 0.95)),
        AdamW: ("lambda_", 0.3)}


def _twins(rule, dtype, rng):
    w = rng.normal(size=(40, 30)).astype(dtype)
    model = {"enc": {"w": w, "b": rng.normal(size=30).astype(dtype)},
             "dec": {"w": rng.normal(size=(30, 7)).astype(dtype), "tied": w}}
    twin = {"enc": {"w": w.copy(), "b": model["enc"]["b"].copy()},
            "dec": {"w": model["dec"]["w"].copy()}}
    twin["dec"]["tied"] = twin["enc"]["w"]
    return model, twin, setup(rule, model), setup(rule, twin)


def _grads(model, rng, dtype, skip=()):
    def g(path, x):
        return None if path in skip else rng.normal(size=x.shape).astype(dtype)
    return {"enc": {"w": g("enc.w", model["enc"]["w"]), "b": g("enc.b", model["enc"]["b"])},
            "dec": {"w": g("dec.w", model["dec"]["w"]),
                    "tied": g("dec.tied", model["dec"]["tied"])}}


def _step(state, model, g, fused, monkeypatch):
    monkeypatch.setattr(_fused, "enabled", fused)
    update(state, model, g)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("rule", FUSED, ids=repr)
def test_fused_equals_reference_through_a_steered_run(rule, dtype, monkeypatch):
    monkeypatch.setattr(_fused, "CHUNK_MIN", 64)  # small leaves still cut into chunks
    monkeypatch.setattr(_fused, "_CORES", 3)
    rng = np.random.default_rng(0)
    model, twin, s1, s2 = _twins(rule, dtype, rng)
    events = {2: lambda s: adjust(s, **dict([KNOB[type(rule)]])),
              4: lambda s: freeze(s.enc), 6: lambda s: thaw(s), 7: lambda s: adjust(s.dec, 0.02)}
    for i in range(9):
        if i in events:
            events[i](s1)
            events[i](s2)
        g = _grads(model, rng, dtype, skip={"enc.b"} if i % 3 == 0 else ())
        _step(s1, model, g, True, monkeypatch)
        _step(s2, twin, g, False, monkeypatch)
        for part in ("enc", "dec"):
            for k in model[part]:
                np.testing.assert_array_equal(model[part][k], twin[part][k])
    assert model["dec"]["tied"] is model["enc"]["w"]


@pytest.mark.parametrize("rule", FUSED, ids=repr)
def test_fusable_rules_take_the_kernel(rule, monkeypatch):
    def refuse(*args):
        raise AssertionError("the reference path ran")

    monkeypatch.setattr(_fused, "step_leaf", refuse)
    model = {"w": np.ones((3, 4), np.float32), "b": np.ones(4)}
    state = setup(rule, model)
    update(state, model, {"w": np.ones((3, 4), np.float32), "b": np.ones(4)})
    assert not np.array_equal(model["w"], np.ones((3, 4)))


@pytest.mark.parametrize("case", ["strided", "float16", "chain", "broadcast-grad"])
def test_other_arrays_and_rules_match_the_reference(case, monkeypatch):
    rng = np.random.default_rng(1)
    base = rng.normal(size=(6, 8)).astype(np.float16 if case == "float16" else np.float64)
    rule = OptimiserChain(WeightDecay(0.1), Adam(0.01)) if case == "chain" else Adam(0.01)
    x = base[:, ::2] if case == "strided" else base
    ref = x.copy()
    s1, s2 = setup(rule, x), setup(rule, ref)
    for _ in range(3):
        g = rng.normal(size=x.shape).astype(x.dtype)
        if case == "broadcast-grad":
            g = np.broadcast_to(g[:1], g.shape)
        _step(s1, x, g, True, monkeypatch)
        _step(s2, ref, g, False, monkeypatch)
    np.testing.assert_array_equal(x, ref)
    if case == "strided":
        np.testing.assert_array_equal(base[:, ::2], ref)  # updated in place, through the view


@pytest.mark.parametrize("dtype", [np.complex64, np.complex128, np.float16])
@pytest.mark.parametrize("rule", FUSED, ids=repr)
def test_complex_and_float16_leaves_take_the_reference_path(rule, dtype, monkeypatch):
    """Their squared moduli and float16's order of operations are the rules' own."""
    def refuse(*args):
        raise AssertionError("a kernel ran")

    monkeypatch.setattr(_fused, "_launch", refuse)
    rng = np.random.default_rng(2)
    x = (rng.normal(size=(5, 4)) + (1j * rng.normal(size=(5, 4)) if dtype != np.float16
                                    else 0)).astype(dtype)
    ref = x.copy()
    s1, s2 = setup(rule, x), setup(rule, ref)
    for _ in range(3):
        g = (x * 0.5 + 0.1).astype(dtype)
        _step(s1, x, g, True, monkeypatch)
        _step(s2, ref, g, False, monkeypatch)
    np.testing.assert_array_equal(x, ref)
    assert x.dtype == dtype


def _threaded_update_in_child(queue):
    x = np.zeros(4096)
    update(setup(Descent(1.0), x), x, np.ones(4096))
    queue.put(float(x.sum()))


@pytest.mark.skipif(not hasattr(os, "fork"), reason="fork is POSIX-only")
def test_a_forked_child_gets_its_own_thread_pool(monkeypatch):
    monkeypatch.setattr(_fused, "CHUNK_MIN", 64)
    monkeypatch.setattr(_fused, "_CORES", 2)
    x = np.zeros(4096)
    update(setup(Descent(1.0), x), x, np.ones(4096))  # the parent's pool now exists
    ctx = multiprocessing.get_context("fork")
    queue = ctx.Queue()
    child = ctx.Process(target=_threaded_update_in_child, args=(queue,))
    child.start()
    child.join(timeout=20)
    alive = child.is_alive()
    if alive:
        child.kill()
    assert not alive, "the child hung on the parent's thread pool"
    assert queue.get(timeout=1) == -4096.0
