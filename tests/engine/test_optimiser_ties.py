"""Tied parameters: views of an array share its leaf; a leaf at several paths steps them all.

Optimisers.jl's tied-weights tests (a matrix and its transpose in one model) with their
expected results written out, the gradient of the shared memory checked against central
differences, and every rule of the RULES table held to the untied model stepped with the
summed gradient.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from kiln_engine import gradient
from kiln_engine.optimisers import (
    Adam,
    ClipGrad,
    Descent,
    Leaf,
    Momentum,
    OptimiserChain,
    StateTree,
    export_state,
    freeze,
    restore_state,
    setup,
    update,
)

from tests.engine.test_optimisers import IDS, RULES


def _bidir():
    """Optimisers.jl's example: a matrix, its transpose, a vector; log in between."""
    mat = np.array([[1.0, 2, 3], [4, 5, 6]])
    return {"m": mat, "t": mat.T, "v": np.array([7.0, 8, 9])}


def _bidir_loss(m):
    return ((m["m"] @ np.log(m["t"] @ np.array([1.0, 0.1]) + m["v"])) ** 2).sum()


def test_the_summed_gradient_is_the_central_difference_in_the_shared_memory():
    model = _bidir()
    g = gradient(_bidir_loss, model)[0]
    assert g["t"].shape == (3, 2)
    mat, h, fd = model["m"], 1e-6, np.zeros((2, 3))
    for i in np.ndindex(mat.shape):
        keep = mat[i]
        mat[i] = keep + h  # moves m and t together: they are one memory
        up = _bidir_loss(model)
        mat[i] = keep - h
        down = _bidir_loss(model)
        mat[i] = keep
        fd[i] = (up - down) / (2 * h)
    np.testing.assert_allclose(g["m"] + g["t"].T, fd, rtol=1e-7)


def test_a_transposed_view_is_clipped_once_with_the_summed_gradient():
    model = _bidir()
    before = model["m"].copy()
    g = gradient(_bidir_loss, model)[0]
    state = setup(OptimiserChain(ClipGrad(10), Descent(0.1), ClipGrad(10)), model)
    assert state["t"] is state["m"] and state["v"] is not state["m"]
    update(state, model, g)
    assert np.shares_memory(model["t"], model["m"])  # still one memory
    summed = g["m"] + g["t"].T
    per_view = np.clip(g["m"], -10, 10) + np.clip(g["t"].T, -10, 10)
    assert not np.allclose(per_view, np.clip(summed, -10, 10))  # the test can tell them apart
    np.testing.assert_allclose(model["m"], before - 0.1 * np.clip(summed, -10, 10),
                               rtol=1e-14)


def test_the_parent_is_the_viewed_array_whichever_path_comes_first():
    mat = np.array([[1.0, 2, 3], [4, 5, 6]])
    tri = {"a": mat.T, "b": mat, "c": mat.T}
    before = mat.T.copy()
    trigrad = gradient(lambda m: ((m["a"] @ (m["b"] @ (m["c"] @ np.array([0.1, 1.0]) + 4.0)
                                             - 4.0)) ** 2).sum(), tri)[0]
    state = setup(Adam(0.1), tri)
    assert state["a"] is state["b"] is state["c"]
    assert state["a"].state[0].shape == (2, 3)  # shaped like mat, not like mat.T
    update(setup(Descent(0.1), tri), tri, trigrad)
    np.testing.assert_allclose(tri["a"], before - 0.1 * (trigrad["a"] + trigrad["b"].T
                                                         + trigrad["c"]), rtol=1e-14)


@pytest.mark.parametrize("rule, ref, fit, knob", RULES, ids=IDS)
def test_every_rule_steps_a_view_and_its_parent_as_one_parameter(rule, ref, fit, knob):
    rng = np.random.default_rng(5)
    w = rng.normal(size=(3, 4))
    model = {"enc": w, "dec": {"w": w.T, "b": rng.normal(size=3)}}
    twin = {"w": w.copy(), "b": model["dec"]["b"].copy()}
    state, twin_state = setup(rule, model), setup(rule, twin)
    for _ in range(6):
        g1, g2, gb = rng.normal(size=(3, 4)), rng.normal(size=(4, 3)), rng.normal(size=3)
        update(state, model, {"enc": g1, "dec": {"w": g2, "b": gb}})
        update(twin_state, twin, {"w": g1 + g2.T, "b": gb})
        np.testing.assert_array_equal(w, twin["w"])
        np.testing.assert_array_equal(model["dec"]["b"], twin["b"])


VIEWS = {
    "transpose": lambda a: a.T,
    "moveaxis": lambda a: np.moveaxis(a.reshape(2, 3, 4), 0, 2),
    "reversed": lambda a: a[::-1],
    "rows": lambda a: a[1:],
    "strided": lambda a: a[:, ::2],
    "flat": lambda a: a.reshape(-1),
    "newaxis": lambda a: a[None],
    "transpose of a strided parent": lambda a: a.T,
}


@pytest.mark.parametrize("kind", VIEWS)
def test_any_view_of_a_parameter_shares_its_leaf(kind):
    rng = np.random.default_rng(6)
    view = VIEWS[kind]
    big = rng.normal(size=(6, 8))
    w = big[::2, :4] if kind == "transpose of a strided parent" else big[:6, :4].copy()
    model = {"w": w, "v": view(w)}
    twin = w.copy()
    state, twin_state = setup(Adam(0.1), model), setup(Adam(0.1), twin)
    assert state["v"] is state["w"]
    for _ in range(4):
        gw, gv = rng.normal(size=w.shape), rng.normal(size=model["v"].shape)
        scattered = np.zeros_like(w)
        view(scattered)[...] += gv  # the view's gradient, placed where it reads w
        update(state, model, {"w": gw, "v": gv})
        update(twin_state, twin, gw + scattered)
        np.testing.assert_array_equal(w, twin)


def test_a_view_alone_in_the_gradient_steps_its_parent():
    model = _bidir()
    before = model["m"].copy()
    gt = np.arange(6.0).reshape(3, 2)
    update(setup(Descent(0.1), model), model, {"m": None, "t": gt, "v": None})
    np.testing.assert_allclose(model["m"], before - 0.1 * gt.T, rtol=1e-15)


def test_freezing_a_view_freezes_its_parent():
    model = _bidir()
    before = model["m"].copy()
    state = setup(Descent(0.1), model)
    freeze(state["t"])
    update(state, model, {"m": np.ones((2, 3)), "t": np.ones((3, 2)), "v": np.ones(3)})
    np.testing.assert_array_equal(model["m"], before)


def test_arrays_that_overlap_without_one_viewing_the_other_are_refused():
    buf = np.zeros(10)
    with pytest.raises(ValueError, match=r"setup: the parameters at 'a' and 'b' share memory, "
                                         r"but neither is a view of the other"):
        setup(Adam(), {"a": buf[:6], "b": buf[4:]})
    c = np.zeros(3, np.complex128)
    with pytest.raises(ValueError, match="'re' and 'c' share memory"):
        setup(Adam(), {"re": c.real, "c": c})


def test_disjoint_and_interleaved_pieces_of_one_buffer_are_separate_parameters():
    for a, b in [(slice(0, 6), slice(6, 12)), (slice(0, None, 2), slice(1, None, 2))]:
        buf = np.arange(12.0)
        model = {"a": buf[a], "b": buf[b]}
        state = setup(Momentum(0.1), model)
        assert state["a"] is not state["b"]
        update(state, model, {"a": np.ones(6), "b": None})
        np.testing.assert_allclose(buf[a], np.arange(12.0)[a] - 0.1)
        np.testing.assert_array_equal(buf[b], np.arange(12.0)[b])


@pytest.mark.parametrize("rule, ref, fit, knob", RULES, ids=IDS)
def test_a_leaf_shared_by_copies_steps_every_copy_once(rule, ref, fit, knob):
    """A tree built by hand (or a tie broken by copying the model): one leaf at two paths
    holding two arrays. Both take the step of the summed gradient; the state advances once."""
    rng = np.random.default_rng(7)
    w = rng.normal(size=(3, 4))
    model = {"a": w.copy(), "b": w.copy()}
    leaf = Leaf(rule, rule.init(model["a"]))
    state = StateTree("dict", {"a": leaf, "b": leaf})
    twin = w.copy()
    twin_state = setup(rule, twin)
    for _ in range(6):
        g1, g2 = rng.normal(size=(3, 4)), rng.normal(size=(3, 4))
        update(state, model, {"a": g1, "b": g2})
        update(twin_state, twin, g1 + g2)
        np.testing.assert_array_equal(model["a"], twin)
        np.testing.assert_array_equal(model["b"], twin)


def test_a_leaf_shared_by_unlike_arrays_is_an_error_naming_both_paths():
    leaf = Leaf(Descent(), None)
    state = StateTree("dict", {"enc": leaf, "dec": leaf})
    with pytest.raises(ValueError, match=r"update: one optimiser leaf is at 'enc' and 'dec', "
                                         r"but the model holds arrays there that share no "
                                         r"memory and differ \(float64 \(2, 3\) and float64 "
                                         r"\(3, 2\)\)"):
        update(state, {"enc": np.ones((2, 3)), "dec": np.ones((3, 2))},
               {"enc": np.ones((2, 3)), "dec": np.ones((3, 2))})


def test_a_tied_view_round_trips_through_export_and_restore():
    rng = np.random.default_rng(8)
    w = rng.normal(size=(3, 4))
    model = {"enc": w, "dec": w.T}
    state = setup(Adam(0.05), model)
    grads = [{"enc": rng.normal(size=(3, 4)), "dec": rng.normal(size=(4, 3))} for _ in range(6)]
    for g in grads[:3]:
        update(state, model, g)
    arrays, meta = export_state(state)
    assert sorted(arrays) == ["enc.state.0", "enc.state.1"]
    w2 = w.copy()
    twin = {"enc": w2, "dec": w2.T}
    restored = restore_state(arrays, json.loads(json.dumps(meta)), model=twin)
    assert restored["enc"] is restored["dec"]
    for g in grads[3:]:
        update(state, model, g)
        update(restored, twin, g)
    np.testing.assert_array_equal(w, w2)
    with pytest.raises(ValueError, match="tied leaves differ"):
        restore_state(arrays, meta, model={"enc": w.copy(), "dec": w.T.copy()})
