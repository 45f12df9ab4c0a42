"""Each fused kernel's numpy twin equals the engine's reference path, bit for bit.

The twins take a kernel's very arguments and do its operations in its order, so these
tests pin what the GPU computes to what the CPU computes: the optimiser kernels against
the rules' ``apply`` (chained after ClipGrad and WeightDecay too), the dense kernels
against Dense's numpy path, the cross-entropy kernels against ``logitcrossentropy``.
Every comparison is of the bits (NaN, inf and the sign of zero included). On a GPU,
``test_kernel_matches_its_twin`` holds each compiled kernel to its twin.
"""

from __future__ import annotations

import numpy as np
import pytest
from kiln_engine import gradient, losses
from kiln_engine.activations import identity, relu, sigmoid, tanh
from kiln_engine.kernels import dense as dk
from kiln_engine.kernels import optimisers as ok
from kiln_engine.kernels import xent as xk
from kiln_engine.layers.dense import dense
from kiln_engine.optimisers import (
    AccumGrad,
    Adam,
    AdamW,
    ClipGrad,
    ClipNorm,
    Descent,
    Momentum,
    Nesterov,
    OptimiserChain,
    RMSProp,
    WeightDecay,
    _fused,
    setup,
    update,
)
from kiln_engine.optimisers._kernels import plan

DTYPES = [np.float32, np.float64]


def bits(a: np.ndarray) -> np.ndarray:
    a = np.ascontiguousarray(a)
    return a.view({4: np.uint32, 8: np.uint64}[a.dtype.itemsize])


def assert_bits(a, b, what: str) -> None:
    a, b = np.asarray(a), np.asarray(b)
    assert a.dtype == b.dtype and a.shape == b.shape, what
    diff = np.flatnonzero(bits(a) != bits(b))
    assert diff.size == 0, f"{what}: {diff.size} entries differ, first at {diff[0]}: " \
                           f"{a.reshape(-1)[diff[0]]!r} vs {b.reshape(-1)[diff[0]]!r}"


# ---------------------------------------------------------------- optimisers

CORES = [Descent(0.1), Momentum(0.01, 0.8), Adam(0.01, (0.8, 0.9)),
         AdamW(0.01, (0.8, 0.9), 0.1), AdamW(0.01, (0.8, 0.9), 0.1, couple=False)]
STAGES = {"none": [], "clip": [ClipGrad(0.5)], "decay": [WeightDecay(0.05)],
          "clip+decay": [ClipGrad(0.5), WeightDecay(0.05)],
          "decay+clip": [WeightDecay(0.05), ClipGrad(0.5)]}


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # the NaN and inf entries
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("stages", STAGES, ids=list(STAGES))
@pytest.mark.parametrize("core", CORES, ids=repr)
def test_optimiser_twin_is_the_rule(core, stages, dtype):
    """The registry's plan for a rule (or chain), run by the kernel's twin, is its apply."""
    rng = np.random.default_rng(0)
    chain = OptimiserChain(*STAGES[stages], core) if STAGES[stages] else core
    x = rng.normal(size=(6, 7)).astype(dtype)
    x_twin = x.copy()
    state = chain.init(x)
    twin_state = chain.init(x_twin)
    for step in range(4):
        g = rng.normal(size=x.shape).astype(dtype)
        g[0, :4] = [np.nan, np.inf, -np.inf, -0.0]  # the clip and the moments see them
        if step == 3:
            g[1] = 0.0
        state, dx = chain.apply(state, x, g.copy())
        x -= dx
        p = plan(chain, x_twin, twin_state)
        p.kernel.twin(g, *p.scalars, x_twin, *p.arrays)
        twin_state = p.state
        assert_bits(x_twin, x, f"x after step {step}")
        core_state = (lambda s: s[-1]) if chain is not core else (lambda s: s)
        for i, (a, b) in enumerate(zip(_arrays(core_state(twin_state)),
                                       _arrays(core_state(state)), strict=True)):
            assert_bits(a, b, f"state array {i} after step {step}")


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("stages", STAGES, ids=list(STAGES))
@pytest.mark.parametrize("core", CORES, ids=repr)
def test_cpu_kernels_after_stages_are_the_rules(core, stages, dtype, monkeypatch):
    """The numba builds, chained stages included, against the reference path."""
    rule = OptimiserChain(*STAGES[stages], core)
    rng = np.random.default_rng(7)
    fused = {"w": rng.normal(size=(30, 11)).astype(dtype)}
    ref = {"w": fused["w"].copy()}
    s1, s2 = setup(rule, fused), setup(rule, ref)
    for _ in range(3):
        g = {"w": rng.normal(size=(30, 11)).astype(dtype) * 2}
        g["w"][0, :3] = [np.nan, np.inf, -0.0]
        monkeypatch.setattr(_fused, "enabled", True)
        update(s1, fused, g)
        monkeypatch.setattr(_fused, "enabled", False)
        update(s2, ref, g)
    assert plan(rule, fused["w"], s1.w.state) is not None
    assert_bits(fused["w"], ref["w"], "x")


@pytest.mark.parametrize("rule", [
    OptimiserChain(ClipGrad(1.0), WeightDecay(0.1), ClipGrad(2.0), Adam()),  # three stages
    OptimiserChain(ClipNorm(1.0), Adam()), OptimiserChain(AccumGrad(2), Descent()),
    OptimiserChain(Adam(), WeightDecay(0.1)), OptimiserChain(), Nesterov(), RMSProp()],
    ids=repr)
def test_rules_no_kernel_does_have_no_plan(rule):
    x = np.ones(3, np.float32)
    assert plan(rule, x, rule.init(x)) is None


@pytest.mark.parametrize("dtype", [np.float16, np.complex64])
def test_only_float32_and_float64_have_a_plan(dtype):
    x = np.ones(3, dtype)
    assert plan(Adam(), x, Adam().init(x)) is None


def test_the_generic_update_names_no_concrete_rule():
    """The interface and the update find kernels through the registry alone."""
    import ast
    from pathlib import Path

    import kiln_engine.optimisers as opt

    rules = set(opt.RULES) - {"OptimiserChain"}
    for module in ("interface.py", "_fused.py", "_kernels.py"):
        tree = ast.parse((Path(opt.__file__).parent / module).read_text())
        names = {a.asname or a.name for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)
                 for a in n.names}
        assert not names & rules, f"{module} imports {sorted(names & rules)}"


def _arrays(state) -> list:
    if state is None:
        return []
    if isinstance(state, np.ndarray):
        return [state]
    m, v, powers = state
    return [m, v, np.asarray(powers)]


def test_stage_args_refuse_a_third_stage():
    with pytest.raises(ValueError, match="at most two"):
        ok.stage_args(np.zeros(1), [(ok.CLIP, 1.0)] * 3)


# ---------------------------------------------------------------- dense

ACTS = {"identity": (identity, dk.IDENTITY), "relu": (relu, dk.RELU),
        "sigmoid": (sigmoid, dk.SIGMOID), "tanh": (tanh, dk.TANH)}


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("act", ACTS)
def test_dense_twins_are_denses_numpy_path(act, dtype):
    fn, code = ACTS[act]
    rng = np.random.default_rng(1)
    x = rng.normal(size=(9, 5)).astype(dtype)
    w = rng.normal(size=(4, 5)).astype(dtype)
    b = rng.normal(size=4).astype(dtype)
    x[0, 0] = np.nan
    w[1] = 0.0  # an output column of zeros and -0s before the bias
    upstream = rng.normal(size=(9, 4)).astype(dtype)

    y = x @ w.T
    dk.BIAS_ACT.twin(b, np.int32(code), y)
    assert_bits(y, dense(x, w, b, fn), "forward")

    gx, gw, gb = gradient(lambda x, w, b: (dense(x, w, b, fn) * upstream).sum(), x, w, b)
    dz, db = np.empty_like(y), np.empty(4, dtype=dtype)
    dk.BIAS_ACT_GRAD.twin(y, upstream, dz, db, 9, 4, np.int32(code), np.int32(1))
    assert_bits(db, gb, "bias gradient")
    assert_bits(dz @ w, gx, "input gradient")
    assert_bits(dz.T @ x, gw, "weight gradient")


# ---------------------------------------------------------------- cross-entropy


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("alpha", [0.0, 0.1])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_xent_twins_are_logitcrossentropy(reduction, alpha, dtype):
    rng = np.random.default_rng(2)
    n, k = 11, 13
    x = (rng.normal(size=(n, k)) * 4).astype(dtype)
    x[3, 5] = 40.0  # a dominant logit: an exp far above the others
    labels = rng.integers(0, k, n)
    agg = {"mean": np.mean, "sum": np.sum, "none": lambda v: v}[reduction]
    upstream = rng.normal(size=n).astype(dtype) if reduction == "none" else None

    def loss(x):
        out = losses.logitcrossentropy(x, labels, agg=agg, label_smoothing=alpha)
        return (out * upstream).sum() if upstream is not None else out

    per = losses.logitcrossentropy(x, labels, agg=lambda v: v, label_smoothing=alpha)
    e, total, rows = np.empty_like(x), np.empty(n, dtype=dtype), np.empty(n, dtype=dtype)
    omalpha, apk, smooth = xk._constants(dtype, alpha, k)
    xk.XENT_FORWARD.twin(x, labels, e, total, rows, n, k, omalpha, apk, smooth)
    assert_bits(rows, per, "per-sample losses")

    (gx,) = gradient(loss, x)
    seed = np.ones((), dtype=dtype)
    gs = seed / n if reduction == "mean" else upstream if reduction == "none" else seed
    xk.XENT_GRAD.twin(total, labels, gs, 1 if gs.ndim else 0, k, omalpha, apk, smooth, e)
    assert_bits(e, gx, "gradient")


# ---------------------------------------------------------------- the GPU's kernels


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("kernel", ["descent", "momentum", "adam", "adamw"])
def test_optimiser_kernel_matches_its_twin_bit_for_bit(kernel, dtype, device):
    """Compiled without multiply-add contraction, the GPU gives the CPU's very bits."""
    rng = np.random.default_rng(3)
    x, g = (rng.normal(size=(33, 17)).astype(dtype) for _ in range(2))
    state = [np.abs(rng.normal(size=x.shape)).astype(dtype) for _ in range(2)]
    t = x.dtype.type
    sa = ok.stage_args(x, [(ok.CLIP, 0.7), (ok.DECAY, 0.01)])
    spec, scalars, state = {
        "descent": (ok.DESCENT, (t(0.1),), []),
        "momentum": (ok.MOMENTUM, (t(0.1), t(0.9)), state[:1]),
        "adam": (ok.ADAM, ok.adam_scalars(x, eta=1e-3, beta=(0.9, 0.999), epsilon=1e-8,
                                          bt1=t(0.9**3), bt2=t(0.999**3)), state),
        "adamw": (ok.ADAM, ok.adam_scalars(x, eta=1e-3, beta=(0.9, 0.999), epsilon=1e-8,
                                           bt1=t(0.9), bt2=t(0.999), mode=ok.ADAMW_DECOUPLED,
                                           lambda_=0.1), state)}[kernel]
    on = device.put([x, g, *state])
    ok.launch(spec, on[0], on[1], tuple(on[2:]), sa + scalars)
    spec.twin(g, *sa, *scalars, x, *state)
    got = device.host([on[0], *on[2:]])
    for name, a, b in zip(["x", "first moment", "second moment"], got, [x, *state]):
        assert_bits(a, b, name)


@pytest.mark.parametrize("rule", [Descent(0.1), Momentum(0.01), Adam(0.01),
                                  OptimiserChain(ClipGrad(1.0), WeightDecay(0.1), AdamW(0.01))],
                         ids=repr)
def test_a_device_update_takes_the_kernel(rule, device, monkeypatch):
    """On a GPU the registry's kernel steps the leaf, not the rule's dozen cupy calls."""
    def refuse(*args):
        raise AssertionError("the reference path ran")

    monkeypatch.setattr(_fused, "step_leaf", refuse)
    x = device.put(np.ones((3, 4), np.float32))
    state = setup(rule, x)
    update(state, x, device.put(np.ones((3, 4), np.float32)))
    assert not np.array_equal(device.host(x), np.ones((3, 4)))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("act", ACTS)
def test_dense_kernels_match_their_twins(act, dtype, device):
    """relu and identity bit for bit; tanh (sigmoid is made of it) to a few ulps of 1, the
    GPU's tanh not being the CPU's (absolute: sigmoid's ``tanh + 1`` cancels for very
    negative inputs, which magnifies tanh's error relative to the output). The backward
    pass from the same output: bit for bit."""
    code = ACTS[act][1]
    rng = np.random.default_rng(4)
    y, b, g = (rng.normal(size=s).astype(dtype) for s in ((40, 33), (33,), (40, 33)))
    on_y = device.put(y)
    dk.bias_act(on_y, device.put(b), code)
    want = y.copy()
    dk.BIAS_ACT.twin(b, code, want)
    got = device.host(on_y)
    if code in (dk.IDENTITY, dk.RELU):
        assert_bits(got, want, "forward")
    else:
        np.testing.assert_allclose(got, want, rtol=0, atol=8 * np.finfo(dtype).eps)
    dz, db = dk.bias_act_grad(device.put(want), device.put(g), code, True)
    twin_dz, twin_db = np.empty_like(g), np.empty(33, dtype=dtype)
    dk.BIAS_ACT_GRAD.twin(want, g, twin_dz, twin_db, 40, 33, code, 1)
    assert_bits(device.host(dz), twin_dz, "dz")
    assert_bits(device.host(db), twin_db, "db (a column summed row after row, as numpy does)")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("alpha", [0.0, 0.1])
def test_xent_kernels_match_their_twins(alpha, dtype, device):
    """Forward to rounding: the exponentials to a few ulps (the GPU's exp), each row's sum
    to its length in ulps (a warp's tree against numpy's pairwise sum), the loss to that in
    absolute terms (it is ``log(total) - fit``, which cancels when the label wins by far).
    The gradient from the same buffer: bit for bit."""
    rng = np.random.default_rng(5)
    n, k = 70, 37  # rows over several blocks, a row longer than a warp
    x = (rng.normal(size=(n, k)) * 3).astype(dtype)
    labels = rng.integers(0, k, n)
    e, total, rows = xk.forward(device.put(x), device.put(labels), alpha)
    want = [np.empty_like(x), np.empty(n, dtype=dtype), np.empty(n, dtype=dtype)]
    xk.XENT_FORWARD.twin(x, labels, *want, n, k, *xk._constants(dtype, alpha, k))
    eps = np.finfo(dtype).eps
    got = device.host([e, total, rows])
    np.testing.assert_allclose(got[0], want[0], rtol=8 * eps, err_msg="exp")
    np.testing.assert_allclose(got[1], want[1], rtol=2 * k * eps, err_msg="total")
    scale = np.abs(np.log(want[1])) + np.abs(want[2]) + 1
    assert np.all(np.abs(got[2] - want[2]) <= 2 * k * eps * scale), "loss"
    e_host, total_host = device.host(e), device.host(total)
    gs = rng.normal(size=n).astype(dtype)
    got = device.host(xk.grad(e, total, device.put(labels), device.put(gs), alpha))
    xk.XENT_GRAD.twin(total_host, labels, gs, 1, k, *xk._constants(dtype, alpha, k), e_host)
    assert_bits(got, e_host, "gradient")


def test_every_kernel_is_registered_once_with_a_twin():
    from kiln_engine.kernels import families

    found = families()
    assert {"kiln_descent", "kiln_momentum", "kiln_adam", "kiln_bias_act",
            "kiln_bias_act_grad", "kiln_xent_forward", "kiln_xent_grad"} <= set(found)
    assert all(callable(k.twin) for k in found.values())
