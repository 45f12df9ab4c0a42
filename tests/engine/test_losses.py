"""Every loss in kiln_engine.losses: value and gradients in float64 against finite
differences and PyTorch under each aggregation, dtypes, integer labels against one-hot
targets, numerical stability and bad input."""

from __future__ import annotations

import re
from typing import Any, NamedTuple

import numpy as np
import pytest
from kiln_engine import _ops as ops
from kiln_engine import gradient, losses, onecold, onehot, withgradient
from kiln_engine._backend import array_module

from .gradcheck import check_gradients

rng = np.random.default_rng(0)
EPS = np.finfo(np.float64).eps  # the losses' default eps for float64 predictions


def r(*shape: int, lo: float = -1.0, hi: float = 1.0) -> np.ndarray:
    return rng.uniform(lo, hi, size=shape)


def probs(*shape: int) -> np.ndarray:
    e = np.exp(rng.standard_normal(shape))
    return e / e.sum(axis=-1, keepdims=True)


def labels(n: int, k: int) -> np.ndarray:
    return rng.integers(0, k, size=n)


def signs(*shape: int) -> np.ndarray:
    return rng.choice([-1.0, 1.0], size=shape)


def F():
    """torch.nn.functional, imported only when a torch-side lambda runs (under the fixture)."""
    import torch.nn.functional

    return torch.nn.functional


def T():
    import torch

    return torch


def gather(t, idx):
    """t[i, idx[i]] for torch tensors: the torch side of an integer-label loss."""
    return t.gather(-1, T().as_tensor(idx)[:, None])[:, 0]


class Case(NamedTuple):
    id: str
    fn: Any  # the Kiln loss
    torch: Any  # the same loss in torch, unreduced: per element, or per sample
    args: list  # (yhat, y)
    kw: dict = {}  # noqa: RUF012 (a NamedTuple default, never mutated)
    wrt: tuple = (0,)
    agg: bool = True  # whether the loss takes agg (dice and tversky reduce the batch, as Flux)


LOGITS = r(5, 4, lo=-3, hi=3)
LAB = labels(5, 4)
P = probs(5, 4)
Q = probs(5, 4)
BIN = rng.integers(0, 2, size=(5, 3)).astype(np.float64)
P01 = r(5, 3, lo=0.05, hi=0.95)
SMOOTH = 0.1

CASES = [
    Case("mae", losses.mae, lambda a, b: F().l1_loss(a, b, reduction="none"),
         [r(4, 3), r(4, 3)], wrt=(0, 1)),
    Case("mse", losses.mse, lambda a, b: F().mse_loss(a, b, reduction="none"),
         [r(4, 3), r(4, 3)], wrt=(0, 1)),
    Case("msle", losses.msle, lambda a, b: T().log((a + EPS) / (b + EPS)) ** 2,
         [r(4, 3, lo=0.1, hi=3), r(4, 3, lo=0.1, hi=3)], wrt=(0, 1)),
    Case("huber", losses.huber_loss, lambda a, b: F().huber_loss(a, b, reduction="none"),
         [r(4, 3, lo=-3, hi=3), r(4, 3, lo=-3, hi=3)], wrt=(0, 1)),
    Case("huber_delta0.5", losses.huber_loss,
         lambda a, b: F().huber_loss(a, b, reduction="none", delta=0.5),
         [r(4, 3, lo=-2, hi=2), r(4, 3, lo=-2, hi=2)], kw={"delta": 0.5}),
    Case("crossentropy_probs", losses.crossentropy,
         lambda a, b: -(b * T().log(a + EPS)).sum(-1), [P, Q], wrt=(0, 1)),
    Case("crossentropy_labels", losses.crossentropy,
         lambda a, b: F().nll_loss(T().log(a + EPS), b, reduction="none"), [P, LAB]),
    Case("crossentropy_labels_smoothing", losses.crossentropy,
         lambda a, b: (1 - SMOOTH) * F().nll_loss(T().log(a + EPS), b, reduction="none")
         - SMOOTH / 4 * T().log(a + EPS).sum(-1),
         [P, LAB], kw={"label_smoothing": SMOOTH}),
    Case("crossentropy_probs_smoothing", losses.crossentropy,
         lambda a, b: -((b * (1 - SMOOTH) + SMOOTH / 4) * T().log(a + EPS)).sum(-1),
         [P, Q], kw={"label_smoothing": SMOOTH}),
    Case("crossentropy_axis0", losses.crossentropy,
         lambda a, b: -(b * T().log(a + EPS)).sum(0), [P.T.copy(), Q.T.copy()], kw={"axis": 0}),
    Case("logitcrossentropy_labels", losses.logitcrossentropy,
         lambda a, b: F().cross_entropy(a, b, reduction="none"), [LOGITS, LAB]),
    Case("logitcrossentropy_probs", losses.logitcrossentropy,
         lambda a, b: F().cross_entropy(a, b, reduction="none"), [LOGITS, Q]),
    Case("logitcrossentropy_probs_tracked_target", losses.logitcrossentropy,
         lambda a, b: F().cross_entropy(a, b, reduction="none"), [LOGITS, Q], wrt=(0, 1)),
    Case("logitcrossentropy_labels_smoothing", losses.logitcrossentropy,
         lambda a, b: F().cross_entropy(a, b, reduction="none", label_smoothing=SMOOTH),
         [LOGITS, LAB], kw={"label_smoothing": SMOOTH}),
    Case("logitcrossentropy_probs_smoothing", losses.logitcrossentropy,
         lambda a, b: F().cross_entropy(a, b, reduction="none", label_smoothing=SMOOTH),
         [LOGITS, Q], kw={"label_smoothing": SMOOTH}),
    Case("logitcrossentropy_tracked_target_smoothing", losses.logitcrossentropy,
         lambda a, b: F().cross_entropy(a, b, reduction="none", label_smoothing=SMOOTH),
         [LOGITS, Q], kw={"label_smoothing": SMOOTH}, wrt=(0, 1)),
    # PyTorch's class axis is 1: (N, C, L) logits with (N, L) labels, per-sample (N, L).
    Case("logitcrossentropy_axis1_labels", losses.logitcrossentropy,
         lambda a, b: F().cross_entropy(a, b, reduction="none"),
         [r(2, 4, 3, lo=-3, hi=3), rng.integers(0, 4, size=(2, 3))], kw={"axis": 1}),
    Case("logitcrossentropy_axis1_probs", losses.logitcrossentropy,
         lambda a, b: F().cross_entropy(a, b, reduction="none", label_smoothing=SMOOTH),
         [r(2, 4, 3, lo=-3, hi=3), probs(2, 3, 4).transpose(0, 2, 1).copy()],
         kw={"axis": 1, "label_smoothing": SMOOTH}),
    Case("binarycrossentropy", losses.binarycrossentropy,
         lambda a, b: F().binary_cross_entropy(a, b, reduction="none"), [P01, BIN],
         kw={"eps": 0.0}),
    Case("binarycrossentropy_eps", losses.binarycrossentropy,
         lambda a, b: -(b * T().log(a + EPS) + (1 - b) * T().log(1 - a + EPS)),
         [P01, r(5, 3, lo=0, hi=1)], wrt=(0, 1)),
    Case("logitbinarycrossentropy", losses.logitbinarycrossentropy,
         lambda a, b: F().binary_cross_entropy_with_logits(a, b, reduction="none"),
         [r(5, 3, lo=-4, hi=4), BIN]),
    Case("kldivergence", losses.kldivergence,
         lambda a, b: F().kl_div(T().log(a), b, reduction="none").sum(-1), [P, Q],
         kw={"eps": 0.0}, wrt=(0, 1)),
    Case("poisson_loss", losses.poisson_loss,
         lambda a, b: F().poisson_nll_loss(a, b, log_input=False, eps=0.0, reduction="none"),
         [r(4, 3, lo=0.2, hi=3), rng.poisson(2.0, size=(4, 3)).astype(np.float64)]),
    Case("hinge_loss", losses.hinge_loss, lambda a, b: F().relu(1 - a * b),
         [r(6, 2, lo=-2, hi=2), signs(6, 2)]),
    Case("squared_hinge_loss", losses.squared_hinge_loss, lambda a, b: F().relu(1 - a * b) ** 2,
         [r(6, 2, lo=-2, hi=2), signs(6, 2)]),
    Case("dice_coeff_loss", losses.dice_coeff_loss,
         lambda a, b: 1 - (2 * (a * b).sum() + 1) / ((b**2).sum() + (a**2).sum() + 1),
         [P01, BIN], wrt=(0, 1), agg=False),
    Case("dice_coeff_loss_smooth", losses.dice_coeff_loss,
         lambda a, b: 1 - (2 * (a * b).sum() + 0.5) / ((b**2).sum() + (a**2).sum() + 0.5),
         [P01, BIN], kw={"smooth": 0.5}, agg=False),
    Case("tversky_loss", losses.tversky_loss,
         lambda a, b: 1 - ((a * b).sum() + 1)
         / ((a * b).sum() + 0.7 * ((1 - b) * a).sum() + 0.3 * (b * (1 - a)).sum() + 1),
         [P01, BIN], wrt=(0, 1), agg=False),
    Case("tversky_loss_beta", losses.tversky_loss,
         lambda a, b: 1 - ((a * b).sum() + 1)
         / ((a * b).sum() + 0.4 * ((1 - b) * a).sum() + 0.6 * (b * (1 - a)).sum() + 1),
         [P01, BIN], kw={"beta": 0.4}, agg=False),
    Case("binary_focal_loss", losses.binary_focal_loss,
         lambda a, b: -((1 - (b * a + (1 - b) * (1 - a) + EPS)) ** 2)
         * T().log(b * a + (1 - b) * (1 - a) + EPS), [P01, BIN]),
    Case("binary_focal_loss_gamma0_is_bce", losses.binary_focal_loss,
         lambda a, b: F().binary_cross_entropy(a, b, reduction="none"), [P01, BIN],
         kw={"gamma": 0.0, "eps": 0.0}),
    Case("focal_loss_probs", losses.focal_loss,
         lambda a, b: -(b * (1 - a - EPS) ** 2 * T().log(a + EPS)).sum(-1), [P, Q]),
    Case("focal_loss_labels_gamma3", losses.focal_loss,
         lambda a, b: -((1 - gather(a, b) - EPS) ** 3) * T().log(gather(a, b) + EPS), [P, LAB],
         kw={"gamma": 3.0}),
    Case("focal_loss_gamma0_is_crossentropy", losses.focal_loss,
         lambda a, b: F().nll_loss(T().log(a), b, reduction="none"), [P, LAB],
         kw={"gamma": 0.0, "eps": 0.0}),
    Case("siamese_contrastive_loss", losses.siamese_contrastive_loss,
         lambda a, b: (1 - b) * a**2 + b * F().relu(1 - a) ** 2,
         [np.r_[r(3, lo=0.05, hi=0.9), r(3, lo=1.1, hi=2)], np.array([0.0, 1, 1, 0, 1, 1])]),
    Case("siamese_contrastive_loss_margin2", losses.siamese_contrastive_loss,
         lambda a, b: (1 - b) * a**2 + b * F().relu(2 - a) ** 2,
         [r(6, lo=0.1, hi=3), np.array([0.0, 1, 1, 0, 1, 1])], kw={"margin": 2.0}),
]

AGGS = {
    "mean": (np.mean, lambda t: t.mean()),
    "sum": (np.sum, lambda t: t.sum()),
    "none": (lambda x: x, lambda t: t),
}
GRID = [(c, a) for c in CASES for a in (AGGS if c.agg else [None])]


def _bind(case: Case, agg: str | None) -> tuple:
    """The Kiln loss and its torch twin under aggregation ``agg``."""
    if agg is None:
        return (lambda a, b: case.fn(a, b, **case.kw)), case.torch
    kagg, tagg = AGGS[agg]
    return (lambda a, b: case.fn(a, b, agg=kagg, **case.kw)), (
        lambda a, b: tagg(case.torch(a, b)))


@pytest.mark.parametrize(("case", "agg"), GRID, ids=[f"{c.id}-{a}" for c, a in GRID])
def test_loss_against_fd_and_torch(case, agg, torch, backend):
    f, tf = _bind(case, agg)
    check_gradients(f, *case.args, torch_f=tf, torch=torch, wrt=case.wrt, backend=backend)


@pytest.mark.parametrize("agg", ["mean", "sum"])
def test_mse_against_a_constant_target(agg, torch, backend):
    """A constant target takes mse's fused one-node path (the grid tracks both sides)."""
    target = r(4, 3)
    kagg, tagg = AGGS[agg]

    def f(a):  # the target on the prediction's device
        return losses.mse(a, array_module(ops.data(a)).asarray(target), agg=kagg)

    check_gradients(f, r(4, 3), torch=torch, backend=backend,
                    torch_f=lambda a: tagg(F().mse_loss(a, torch.tensor(target), reduction="none")))


@pytest.mark.parametrize("case", [c for c in CASES if c.agg], ids=lambda c: c.id)
def test_unreduced_shape(case):
    yhat, y = case.args
    out = case.fn(yhat, y, agg=lambda x: x, **case.kw)
    axis = case.kw.get("axis", -1)
    per_sample = case.fn in (losses.crossentropy, losses.logitcrossentropy, losses.focal_loss,
                             losses.kldivergence)
    want = np.delete(np.array(yhat.shape), axis).tolist() if per_sample else list(yhat.shape)
    assert list(out.shape) == want


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_float32_in_float32_out(case):
    yhat = case.args[0].astype(np.float32)
    y = case.args[1]  # float64 or integer: the loss follows the prediction's dtype
    value, (g,) = withgradient(lambda a: case.fn(a, y, **case.kw), yhat)
    assert np.asarray(value).dtype == np.float32
    assert g.dtype == np.float32
    np.testing.assert_allclose(value, case.fn(case.args[0], y, **case.kw), rtol=1e-5)


# ---------------------------------------------------------------- integer labels


# (loss, label smoothing): focal_loss takes none, as in Flux.
LABEL_LOSSES = [(losses.crossentropy, 0.0), (losses.crossentropy, 0.2),
                (losses.logitcrossentropy, 0.0), (losses.logitcrossentropy, 0.2),
                (losses.focal_loss, 0.0)]


@pytest.mark.parametrize(("fn", "smoothing"), LABEL_LOSSES,
                         ids=[f"{f.__name__}-{a}" for f, a in LABEL_LOSSES])
@pytest.mark.parametrize("agg", list(AGGS), ids=str)
@pytest.mark.parametrize("axis", [-1, 1])
def test_integer_labels_agree_with_onehot(fn, smoothing, agg, axis):
    kw = {"agg": AGGS[agg][0], "axis": axis}
    if smoothing:
        kw["label_smoothing"] = smoothing
    x = r(3, 5, 2, lo=-2, hi=2)
    if fn is not losses.logitcrossentropy:  # probabilities over the class axis
        x = np.exp(x) / np.exp(x).sum(axis=axis, keepdims=True)
    lab = rng.integers(0, x.shape[axis], size=np.delete(np.array(x.shape), axis))
    hot = np.moveaxis(onehot(lab, x.shape[axis], dtype=np.float64), -1, axis)
    v_lab, (g_lab,) = withgradient(lambda a: (fn(a, lab, **kw) * 1.0).sum(), x)
    v_hot, (g_hot,) = withgradient(lambda a: (fn(a, hot, **kw) * 1.0).sum(), x)
    np.testing.assert_allclose(v_lab, v_hot, rtol=1e-12)
    np.testing.assert_allclose(g_lab, g_hot, rtol=1e-10, atol=1e-14)


def test_label_smoothing_helper_matches_torch(torch):
    x, lab = r(6, 5, lo=-3, hi=3), labels(6, 5)
    smoothed = losses.label_smoothing(onehot(lab, 5), 0.3)
    want = torch.nn.functional.cross_entropy(torch.tensor(x), torch.tensor(lab),
                                             label_smoothing=0.3)
    np.testing.assert_allclose(losses.logitcrossentropy(x, smoothed), want.item(), rtol=1e-6)
    np.testing.assert_allclose(smoothed.sum(axis=-1), 1.0, rtol=1e-6)


def test_binary_label_smoothing_squeezes_towards_half():
    y = np.array([0.0, 1.0, 1.0])
    np.testing.assert_allclose(losses.label_smoothing(y, 0.2, binary=True), [0.1, 0.9, 0.9])


# ---------------------------------------------------------------- aggregation


def test_builtin_sum_sums_everything():
    yhat, y = r(4, 3), r(4, 3)
    np.testing.assert_allclose(losses.mse(yhat, y, agg=sum), ((yhat - y) ** 2).sum(), rtol=1e-12)
    (g,) = gradient(lambda a: losses.logitcrossentropy(a, LAB, agg=sum), LOGITS)
    (g_np,) = gradient(lambda a: losses.logitcrossentropy(a, LAB, agg=np.sum), LOGITS)
    np.testing.assert_allclose(g, g_np, rtol=1e-12)


def test_any_callable_aggregates_the_per_sample_losses(torch):
    w = r(5, lo=0.5, hi=2)  # a weighted mean: a custom agg on the fused path
    agg = lambda per: (per * w).sum() / w.sum()
    f = lambda a: losses.logitcrossentropy(a, LAB, agg=agg)
    tf = lambda a: (torch.nn.functional.cross_entropy(a, torch.tensor(LAB), reduction="none")
                    * torch.tensor(w)).sum() / w.sum()
    check_gradients(f, LOGITS, torch_f=tf, torch=torch)


# ---------------------------------------------------------------- stability


def test_logitcrossentropy_is_exact_at_huge_logits(torch):
    x = np.array([[1000.0, -1000.0, 0.0], [-1000.0, 1000.0, 999.0]])
    check_gradients(lambda a: losses.logitcrossentropy(a, np.array([1, 2])), x,
                    torch_f=lambda a: torch.nn.functional.cross_entropy(a, torch.tensor([1, 2])),
                    torch=torch)


def test_logitbinarycrossentropy_is_exact_at_huge_logits(torch):
    x, y = np.array([1000.0, -1000.0, 1000.0, -1000.0]), np.array([1.0, 0.0, 0.0, 1.0])
    check_gradients(losses.logitbinarycrossentropy, x, y, wrt=(0,), torch=torch,
                    torch_f=lambda a, b: torch.nn.functional.binary_cross_entropy_with_logits(a, b))


@pytest.mark.parametrize("fn", [losses.crossentropy, losses.binarycrossentropy,
                                losses.focal_loss, losses.binary_focal_loss, losses.kldivergence],
                         ids=lambda f: f.__name__)
def test_eps_keeps_saturated_probabilities_finite(fn):
    yhat = np.array([[1.0, 0.0], [0.0, 1.0]], dtype=np.float32)
    y = np.array([[0.0, 1.0], [0.0, 1.0]], dtype=np.float32)
    with np.errstate(divide="raise", invalid="raise", over="raise"):
        value, (g,) = withgradient(lambda a: fn(a, y), yhat)
    assert np.isfinite(value) and np.isfinite(g).all()
    assert value > 1  # a confident wrong answer costs, rather than vanishing


def test_fused_logitcrossentropy_speed_path_leaves_inputs_untouched():
    x, keep = LOGITS.astype(np.float32), LOGITS.astype(np.float32).copy()
    gradient(lambda a: losses.logitcrossentropy(a, LAB, label_smoothing=0.1), x)
    np.testing.assert_array_equal(x, keep)


# ---------------------------------------------------------------- onehot / onecold


def test_onehot_matches_torch_and_onecold_inverts_it(torch):
    lab = rng.integers(0, 7, size=(4, 3))
    hot = onehot(lab, 7)
    assert hot.dtype == np.float32 and hot.shape == (4, 3, 7)
    np.testing.assert_array_equal(hot, torch.nn.functional.one_hot(torch.tensor(lab), 7).numpy())
    np.testing.assert_array_equal(onecold(hot), lab)


def test_onehot_with_class_values_and_onecold_with_labels():
    hot = onehot(["b", "a", "c", "b"], ["a", "b", "c"])
    np.testing.assert_array_equal(hot, np.eye(3, dtype=np.float32)[[1, 0, 2, 1]])
    assert onecold(hot, ["a", "b", "c"]).tolist() == ["b", "a", "c", "b"]


# ---------------------------------------------------------------- bad input

X = np.zeros((32, 10), dtype=np.float32)

BAD = [
    (lambda: losses.logitcrossentropy(X, np.zeros((32, 9))),
     "logitcrossentropy: yhat has shape (32, 10) but y has shape (32, 9)"),
    (lambda: losses.crossentropy(X, np.zeros(31, dtype=int)),
     "crossentropy: yhat has shape (32, 10) but y has shape (31,); y must be probabilities "
     "of shape (32, 10) or integer class labels of shape (32,)"),
    (lambda: losses.logitcrossentropy(X, np.full(32, 10)),
     "logitcrossentropy: class labels must lie in [0, 10) for 10 classes; found 10"),
    (lambda: losses.focal_loss(X, np.full(32, -1)),
     "focal_loss: class labels must lie in [0, 10) for 10 classes; found -1"),
    (lambda: losses.logitcrossentropy(X, np.zeros(32)),
     "logitcrossentropy: yhat has shape (32, 10) but y has shape (32,)"),
    (lambda: losses.mse(X, np.zeros((32, 1))),
     "mse: yhat has shape (32, 10) but y has shape (32, 1); they must match"),
    (lambda: losses.mae(np.zeros(3, dtype=int), np.zeros(3)),
     "mae: yhat must be a floating-point array; got dtype int64"),
    (lambda: losses.mse(X, X, agg="mean"), "mse: agg must be a callable"),
    (lambda: losses.logitcrossentropy(X, np.zeros(32, dtype=int), axis=2),
     "logitcrossentropy: axis 2 is out of range for yhat of shape (32, 10)"),
    (lambda: losses.logitcrossentropy(X, np.zeros(32, dtype=int), label_smoothing=1.0),
     "logitcrossentropy: label_smoothing must lie in [0, 1); got 1.0"),
    (lambda: losses.label_smoothing(X, 0.0), "label_smoothing: alpha must lie in (0, 1); got 0.0"),
    (lambda: losses.kldivergence(X, np.zeros(32, dtype=int)),
     "kldivergence: y must be a probability distribution of shape (32, 10)"),
    (lambda: losses.huber_loss(X, X, delta=0.0), "huber_loss: delta must be positive; got 0.0"),
    (lambda: losses.siamese_contrastive_loss(X, X, margin=-1.0),
     "siamese_contrastive_loss: margin must be non-negative; got -1.0"),
    (lambda: onehot(np.array([0, 3]), 3), "onehot: class labels must lie in [0, 3)"),
    (lambda: onehot(["d"], ["a", "b"]), "onehot: label 'd' is not one of the classes"),
    (lambda: onecold(X, ["a", "b"]), "onecold: 10 classes in yhat of shape (32, 10) but 2 labels"),
]


@pytest.mark.parametrize(("call", "message"), BAD, ids=[m.split(":")[0] + str(i)
                                                        for i, (_, m) in enumerate(BAD)])
def test_bad_input_raises_a_clear_error(call, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        call()


def test_bad_labels_fail_inside_gradient_too():
    with pytest.raises(ValueError, match=re.escape("found 10")):
        gradient(lambda a: losses.logitcrossentropy(a, np.full(32, 10)), X)
