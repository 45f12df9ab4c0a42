"""Flux's loss functions, batch first: ``loss(yhat, y, *, agg=np.mean, ...)``.

Each loss is computed elementwise (or per sample, for losses over a class axis) and then
reduced by ``agg``: ``np.mean`` (the default, as Flux), ``np.sum`` (or the builtin
``sum``, read as a sum over everything, as Flux's ``agg=sum``), or any callable, e.g.
``lambda x: x`` for the unreduced losses. Where Flux sums over ``dims=1`` (the class axis
of a column-major batch), Kiln sums over ``axis=-1``: the per-sample losses of a
``(batch, classes)`` prediction have shape ``(batch,)``.

``crossentropy``, ``logitcrossentropy`` and ``focal_loss`` take targets either as
probabilities shaped like ``yhat`` (one-hot rows, smoothed labels) or as integer class
indices shaped like ``yhat`` without its class axis. ``logitcrossentropy`` with a
constant target is one fused primitive (logsoftmax, likelihood and reduction in one tape
node whose vjp is ``(softmax - target) * scale``, written in place over one buffer): it
is the hot path of classifier training. The other losses are composites of the
differentiable primitives in ``_ops`` and ``activations``.

Bad input raises ValueError naming the loss and the shapes or values at fault.
"""

from __future__ import annotations

import builtins
from collections.abc import Callable
from typing import Any

import numpy as np

from . import _ops as ops
from ._backend import array_module
from ._onehot import check_labels
from ._tape import Tracked, record
from .activations import logsigmoid, logsoftmax
from .kernels import C_TYPES
from .kernels import xent as xent_kernels

__all__ = [
    "binary_focal_loss", "binarycrossentropy", "crossentropy", "dice_coeff_loss",
    "focal_loss", "hinge_loss", "huber_loss", "kldivergence", "label_smoothing",
    "logitbinarycrossentropy", "logitcrossentropy", "mae", "mse", "msle", "poisson_loss",
    "siamese_contrastive_loss", "squared_hinge_loss", "tversky_loss",
]

Agg = Callable[[Any], Any]

# Aggregations Kiln recognises and reduces over every axis with its own primitives
# (the fused cross-entropy folds them into its vjp); any other callable is just called.
_REDUCTIONS: dict[Any, str] = {
    np.mean: "mean", ops.mean: "mean", np.sum: "sum", ops.sum_: "sum", builtins.sum: "sum",
}


def _aggregate(agg: Agg, x: Any) -> Any:
    kind = _REDUCTIONS.get(agg)
    if kind == "mean":
        return ops.mean(x)
    if kind == "sum":
        return ops.sum_(x)
    return agg(x)


# ---------------------------------------------------------------- input checks


def _shape(x: Any) -> tuple[int, ...]:
    return tuple(ops.data(x).shape)


def _prediction(name: str, yhat: Any, agg: Agg) -> Any:
    """``yhat`` as a floating-point array (tracked or plain); ``agg`` must be callable."""
    if not callable(agg):
        raise ValueError(f"{name}: agg must be a callable such as np.mean, np.sum or "
                         f"lambda x: x; got {agg!r}")
    if yhat.__class__ is not Tracked and not hasattr(yhat, "dtype"):
        yhat = np.asarray(yhat)
    if ops.data(yhat).dtype.kind != "f":
        raise ValueError(f"{name}: yhat must be a floating-point array; got dtype "
                         f"{ops.data(yhat).dtype} (cast it with .astype(np.float32))")
    return yhat


def _target(yhat: Any, y: Any) -> Any:
    """``y`` as an array of ``yhat``'s dtype, so a float32 prediction gives a float32 loss."""
    if y.__class__ is not Tracked and not hasattr(y, "dtype"):
        y = array_module(ops.data(yhat)).asarray(y)
    dtype = ops.data(yhat).dtype
    return y if ops.data(y).dtype == dtype else ops.astype(y, dtype)


def _pair(name: str, yhat: Any, y: Any, agg: Agg = np.mean) -> tuple[Any, Any]:
    """Check an elementwise loss's inputs: ``y`` shaped like ``yhat`` (or a constant)."""
    yhat = _prediction(name, yhat, agg)
    y = _target(yhat, y)
    if ops.data(y).ndim and _shape(y) != _shape(yhat):
        raise ValueError(f"{name}: yhat has shape {_shape(yhat)} but y has shape {_shape(y)}; "
                         "they must match")
    return yhat, y


def _classes(name: str, yhat: Any, y: Any, axis: int, agg: Agg) -> tuple[Any, Any, int]:
    """Check a class-axis loss's inputs. Returns ``(yhat, y, axis)`` with ``axis``
    non-negative and ``y`` either a float target shaped like ``yhat`` or integer labels
    shaped like ``yhat`` without ``axis``."""
    yhat = _prediction(name, yhat, agg)
    shape = _shape(yhat)
    if not isinstance(axis, (int, np.integer)) or not -len(shape) <= axis < len(shape):
        raise ValueError(f"{name}: axis {axis!r} is out of range for yhat of shape {shape}")
    axis = int(axis) % len(shape)
    if y.__class__ is not Tracked and not hasattr(y, "dtype"):
        y = array_module(ops.data(yhat)).asarray(y)
    per_sample = shape[:axis] + shape[axis + 1:]
    yshape = _shape(y)
    if ops.data(y).dtype.kind in "iu" and yshape == per_sample:
        check_labels(name, y, shape[axis])
        return yhat, y, axis
    if yshape != shape:
        raise ValueError(f"{name}: yhat has shape {shape} but y has shape {yshape}; y must be "
                         f"probabilities of shape {shape} or integer class labels of shape "
                         f"{per_sample}")
    return yhat, _target(yhat, y), axis


def _is_labels(y: Any) -> bool:
    return ops.data(y).dtype.kind in "iu"


def _eps(yhat: Any, eps: float | None) -> Any:
    """Flux's default ``eps(eltype(ŷ))``: the machine epsilon of the prediction's dtype."""
    return np.finfo(ops.data(yhat).dtype).eps if eps is None else eps


def _check_alpha(name: str, alpha: float, *, allow_zero: bool) -> None:
    """A smoothing factor in [0, 1) for a loss's ``label_smoothing``, (0, 1) for the helper."""
    lo_ok = alpha >= 0 if allow_zero else alpha > 0
    if not (lo_ok and alpha < 1):
        what, bound = ("label_smoothing", "[0, 1)") if allow_zero else ("alpha", "(0, 1)")
        raise ValueError(f"{name}: {what} must lie in {bound}; got {alpha!r}")


# ---------------------------------------------------------------- helpers


def _xlogy(x: Any, y: Any) -> Any:
    """``x * log(y)``, zero where ``x == 0`` (also when ``y == 0``), with its gradient."""
    zero = ops.data(x) == 0
    return ops.mul(x, ops.log(ops.where(zero, 1, y)))


def _pick(x: Any, labels: Any, axis: int) -> Any:
    """``x``'s entries at class ``labels`` along ``axis`` (a gather), with ``axis`` dropped."""
    xd = ops.data(x)
    xp = array_module(xd)
    idx = xp.expand_dims(labels, axis)
    out = xp.take_along_axis(xd, idx, axis).squeeze(axis)
    if x.__class__ is not Tracked:
        return out

    def vjp(g: Any) -> tuple:
        gx = xp.zeros(xd.shape, dtype=g.dtype)
        xp.put_along_axis(gx, idx, xp.expand_dims(g, axis), axis)
        return (gx,)

    return record(out, (x,), vjp)


def label_smoothing(y: Any, alpha: float, *, axis: int = -1, binary: bool = False) -> Any:
    """Relax one-hot targets: ``y * (1 - alpha) + alpha / classes`` over ``axis``.

    With ``binary=True`` (Flux's ``dims=0``), ``y`` holds 0/1 labels of a binary problem
    and is squeezed towards 0.5: ``y * (1 - alpha) + alpha / 2``. ``alpha`` in (0, 1).
    """
    _check_alpha("label_smoothing", alpha, allow_zero=False)
    if y.__class__ is not Tracked:
        y = y if hasattr(y, "dtype") else np.asarray(y)
        y = y if y.dtype.kind == "f" else y.astype(np.float32)
    yd = ops.data(y)
    if binary:
        k = 2
    else:
        if yd.ndim == 0 or not -yd.ndim <= axis < yd.ndim:
            raise ValueError(f"label_smoothing: axis {axis} is out of range for y of shape "
                             f"{tuple(yd.shape)}")
        k = yd.shape[axis]
    return ops.add(ops.mul(y, 1 - alpha), alpha / k)


# ---------------------------------------------------------------- regression losses


def mae(yhat: Any, y: Any, *, agg: Agg = np.mean) -> Any:
    """Mean absolute error, ``agg(|yhat - y|)``."""
    yhat, y = _pair("mae", yhat, y, agg)
    return _aggregate(agg, ops.abs_(ops.sub(yhat, y)))


def mse(yhat: Any, y: Any, *, agg: Agg = np.mean) -> Any:
    """Mean squared error, ``agg((yhat - y) ** 2)``."""
    yhat, y = _pair("mse", yhat, y, agg)
    reduction = _REDUCTIONS.get(agg)
    if reduction is not None and y.__class__ is not Tracked and ops.data(yhat).size:
        return _squared_error(yhat, y, reduction)
    return _aggregate(agg, ops.square(ops.sub(yhat, y)))


def _squared_error(yhat: Any, y: Any, reduction: str) -> Any:
    """``sum((yhat - y) ** 2)`` (divided by the size for "mean") against a constant
    target, as one tape node whose vjp scales the kept difference in place: a regression
    step records one node for its loss instead of three."""
    d = ops.data(yhat) - y
    out = (d * d).sum()
    n = d.size if reduction == "mean" else 1
    if n != 1:
        out = out / n
    if yhat.__class__ is not Tracked:
        return out

    def vjp(g: Any) -> tuple:
        return (array_module(d).multiply(d, g * (2 / n), out=d),)

    return record(out, (yhat,), vjp)


def msle(yhat: Any, y: Any, *, agg: Agg = np.mean, eps: float | None = None) -> Any:
    """Mean squared log error, ``agg(log((yhat + eps) / (y + eps)) ** 2)``.

    Penalises under-estimates more than over-estimates; ``eps`` (default: the machine
    epsilon of yhat's dtype) keeps zeros finite.
    """
    yhat, y = _pair("msle", yhat, y, agg)
    e = _eps(yhat, eps)
    return _aggregate(agg, ops.square(ops.log(ops.div(ops.add(yhat, e), ops.add(y, e)))))


def huber_loss(yhat: Any, y: Any, *, agg: Agg = np.mean, delta: float = 1.0) -> Any:
    """Huber loss: ``0.5 * d**2`` where ``|d| < delta``, else ``delta * (|d| - delta / 2)``,
    with ``d = yhat - y``: quadratic near the target, linear (robust) far from it."""
    if not delta > 0:
        raise ValueError(f"huber_loss: delta must be positive; got {delta!r}")
    yhat, y = _pair("huber_loss", yhat, y, agg)
    d = ops.sub(yhat, y)
    a = ops.abs_(d)
    small = ops.data(a) < delta
    quadratic = ops.mul(ops.square(d), 0.5)
    linear = ops.mul(ops.sub(a, 0.5 * delta), delta)
    return _aggregate(agg, ops.where(small, quadratic, linear))


# ---------------------------------------------------------------- classification losses


def crossentropy(yhat: Any, y: Any, *, axis: int = -1, agg: Agg = np.mean,
                 eps: float | None = None, label_smoothing: float = 0.0) -> Any:
    """Cross entropy of probabilities ``yhat`` (e.g. softmax output) over ``axis``:
    ``agg(-sum(y * log(yhat + eps), axis))``.

    ``y`` is probabilities shaped like ``yhat`` or integer class labels; with
    ``label_smoothing=a`` the target becomes ``(1 - a) * y + a / classes``. Prefer
    :func:`logitcrossentropy` on logits: it is exact where ``yhat`` underflows.
    """
    _check_alpha("crossentropy", label_smoothing, allow_zero=True)
    yhat, y, axis = _classes("crossentropy", yhat, y, axis, agg)
    p = ops.add(yhat, _eps(yhat, eps))
    a, k = label_smoothing, _shape(yhat)[axis]
    if _is_labels(y):
        logp = ops.log(p)
        per = ops.negative(_pick(logp, y, axis))
        if a:
            per = ops.sub(ops.mul(per, 1 - a), ops.mul(ops.sum_(logp, axis=axis), a / k))
    else:
        if a:
            y = ops.add(ops.mul(y, 1 - a), a / k)
        per = ops.negative(ops.sum_(_xlogy(y, p), axis=axis))
    return _aggregate(agg, per)


def logitcrossentropy(yhat: Any, y: Any, *, axis: int = -1, agg: Agg = np.mean,
                      label_smoothing: float = 0.0) -> Any:
    """Cross entropy of logits ``yhat`` over ``axis``: ``agg(-sum(y * logsoftmax(yhat), axis))``,
    i.e. ``crossentropy(softmax(yhat), y)`` computed stably (PyTorch's ``cross_entropy``).

    ``y`` is probabilities shaped like ``yhat`` or integer class labels shaped like
    ``yhat`` without ``axis``; ``label_smoothing=a`` mixes ``a / classes`` into the target.
    """
    _check_alpha("logitcrossentropy", label_smoothing, allow_zero=True)
    yhat, y, axis = _classes("logitcrossentropy", yhat, y, axis, agg)
    a = label_smoothing
    if a and not _is_labels(y):  # smooth a probability target up front; labels: in the fusion
        y, a = ops.add(ops.mul(y, 1 - a), a / _shape(yhat)[axis]), 0.0
    if y.__class__ is Tracked:  # a target under differentiation: no fused shortcut
        per = ops.negative(ops.sum_(ops.mul(y, logsoftmax(yhat, axis=axis)), axis=axis))
        return _aggregate(agg, per)
    reduction = _REDUCTIONS.get(agg, "none")
    out = _softmax_xent(yhat, y, axis, a, reduction)
    return out if reduction != "none" else agg(out)


def _softmax_xent(x: Any, target: Any, axis: int, alpha: float, reduction: str) -> Any:
    """Fused logsoftmax + cross entropy against a constant target, reduced by
    ``reduction`` ("mean", "sum" or "none" for per-sample losses), as one tape node.

    It works on a ``(samples, classes)`` view. One buffer holds ``x - max``, then its
    ``exp`` in place; the vjp turns that buffer into ``(softmax * sum(target) - target) * g``
    in place, so a training step allocates one logits-sized array for loss and gradient.
    On a GPU, with labels, each way is one kernel (``kernels/xent.py``).
    """
    xd = ops.data(x)
    xp = array_module(xd)
    k = xd.shape[axis]
    moved = axis != xd.ndim - 1
    x2 = (xp.moveaxis(xd, axis, -1) if moved else xd).reshape(-1, k)
    labels = target.dtype.kind in "iu"
    if labels:  # the target (1 - alpha) * onehot + alpha / k is never materialised
        t2 = target.reshape(-1)
    else:
        t2 = (xp.moveaxis(target, axis, -1) if moved else target).reshape(-1, k)
    n = x2.shape[0]
    gpu = labels and xp is not np and x2.dtype in C_TYPES
    if gpu:  # s: the exponentials
        s, total, per = xent_kernels.forward(x2, t2, alpha)
    else:
        s = x2 - x2.max(axis=1, keepdims=True)
        if labels:
            rows = xp.arange(n)
            fit = s[rows, t2]
            if alpha:
                fit *= 1 - alpha
                fit += (alpha / k) * s.sum(axis=1)
            mass = None
        else:
            fit = (s * t2).sum(axis=1)
            mass = t2.sum(axis=1, keepdims=True)
        xp.exp(s, out=s)
        total = s.sum(axis=1, keepdims=True)
        per = xp.log(total)
        if mass is not None:
            per *= mass
        per = per.reshape(-1)
        per -= fit
    if reduction == "mean":
        out = per.sum() / n
    elif reduction == "sum":
        out = per.sum()
    else:
        out = per.reshape(xd.shape[:axis] + xd.shape[axis + 1:])
    if x.__class__ is not Tracked:
        return out

    def vjp(g: Any) -> tuple:
        gs = g.reshape(-1) if reduction == "none" else g / n if reduction == "mean" else g
        if gpu:
            dx = xent_kernels.grad(s, total, t2, gs, alpha)
        else:
            col = gs[:, None] if gs.ndim else gs
            scale = col / total if mass is None else col * mass / total
            dx = xp.multiply(s, scale, out=s)  # this node's own buffer, used once: reuse it
            if labels:
                dx[rows, t2] -= gs * (1 - alpha)
                if alpha:
                    dx -= col * (alpha / k)
            else:
                dx -= t2 * col
        if moved:
            return (xp.moveaxis(dx.reshape(xp.moveaxis(xd, axis, -1).shape), -1, axis),)
        return (dx.reshape(xd.shape),)

    return record(out, (x,), vjp)


def binarycrossentropy(yhat: Any, y: Any, *, agg: Agg = np.mean,
                       eps: float | None = None) -> Any:
    """Binary cross entropy of probabilities ``yhat`` (e.g. sigmoid output):
    ``agg(-y * log(yhat + eps) - (1 - y) * log(1 - yhat + eps))``. Prefer
    :func:`logitbinarycrossentropy` on logits."""
    yhat, y = _pair("binarycrossentropy", yhat, y, agg)
    e = _eps(yhat, eps)
    pos = _xlogy(y, ops.add(yhat, e))
    neg = _xlogy(ops.sub(1, y), ops.add(ops.sub(1, yhat), e))
    return _aggregate(agg, ops.negative(ops.add(pos, neg)))


def logitbinarycrossentropy(yhat: Any, y: Any, *, agg: Agg = np.mean) -> Any:
    """``binarycrossentropy(sigmoid(yhat), y)`` computed stably from logits:
    ``agg((1 - y) * yhat - logsigmoid(yhat))`` (PyTorch's ``binary_cross_entropy_with_logits``)."""
    yhat, y = _pair("logitbinarycrossentropy", yhat, y, agg)
    return _aggregate(agg, ops.sub(ops.mul(ops.sub(1, y), yhat), logsigmoid(yhat)))


def kldivergence(yhat: Any, y: Any, *, axis: int = -1, agg: Agg = np.mean,
                 eps: float | None = None) -> Any:
    """Kullback-Leibler divergence of distribution ``yhat`` from ``y`` over ``axis``:
    ``agg(sum(y * log(y), axis)) + crossentropy(yhat, y)``; zero when they are equal."""
    yhat, y, axis = _classes("kldivergence", yhat, y, axis, agg)
    if _is_labels(y):
        raise ValueError(f"kldivergence: y must be a probability distribution of shape "
                         f"{_shape(yhat)}; got integer labels")
    entropy = _aggregate(agg, ops.sum_(_xlogy(y, y), axis=axis))
    return ops.add(entropy, crossentropy(yhat, y, axis=axis, agg=agg, eps=eps))


def poisson_loss(yhat: Any, y: Any, *, agg: Agg = np.mean) -> Any:
    """Poisson negative log-likelihood of rates ``yhat`` for counts ``y`` (up to a
    constant): ``agg(yhat - y * log(yhat))``."""
    yhat, y = _pair("poisson_loss", yhat, y, agg)
    return _aggregate(agg, ops.sub(yhat, _xlogy(y, yhat)))


def hinge_loss(yhat: Any, y: Any, *, agg: Agg = np.mean) -> Any:
    """Hinge loss for labels ``y`` in {-1, 1}: ``agg(max(0, 1 - yhat * y))``."""
    yhat, y = _pair("hinge_loss", yhat, y, agg)
    return _aggregate(agg, ops.maximum(ops.sub(1, ops.mul(yhat, y)), 0))


def squared_hinge_loss(yhat: Any, y: Any, *, agg: Agg = np.mean) -> Any:
    """Squared hinge loss for labels ``y`` in {-1, 1}: ``agg(max(0, 1 - yhat * y) ** 2)``."""
    yhat, y = _pair("squared_hinge_loss", yhat, y, agg)
    return _aggregate(agg, ops.square(ops.maximum(ops.sub(1, ops.mul(yhat, y)), 0)))


def dice_coeff_loss(yhat: Any, y: Any, *, smooth: float = 1.0) -> Any:
    """Dice loss for segmentation (V-Net), over the whole batch as in Flux (no ``agg``):
    ``1 - (2 * sum(y * yhat) + smooth) / (sum(y ** 2) + sum(yhat ** 2) + smooth)``."""
    yhat, y = _pair("dice_coeff_loss", yhat, y)
    num = ops.add(ops.mul(ops.sum_(ops.mul(y, yhat)), 2), smooth)
    den = ops.add(ops.add(ops.sum_(ops.square(y)), ops.sum_(ops.square(yhat))), smooth)
    return ops.sub(1, ops.div(num, den))


def tversky_loss(yhat: Any, y: Any, *, beta: float = 0.7) -> Any:
    """Tversky loss for imbalanced segmentation, over the whole batch as in Flux (no
    ``agg``): ``1 - (TP + 1) / (TP + beta * FP + (1 - beta) * FN + 1)`` with soft counts
    ``TP = sum(y * yhat)``, ``FP = sum((1 - y) * yhat)``, ``FN = sum(y * (1 - yhat))``."""
    yhat, y = _pair("tversky_loss", yhat, y)
    tp = ops.sum_(ops.mul(y, yhat))
    fp = ops.sum_(ops.mul(ops.sub(1, y), yhat))
    fn = ops.sum_(ops.mul(y, ops.sub(1, yhat)))
    den = ops.add(ops.add(ops.add(tp, ops.mul(fp, beta)), ops.mul(fn, 1 - beta)), 1)
    return ops.sub(1, ops.div(ops.add(tp, 1), den))


def binary_focal_loss(yhat: Any, y: Any, *, agg: Agg = np.mean, gamma: float = 2.0,
                      eps: float | None = None) -> Any:
    """Focal loss for binary labels and probabilities ``yhat``:
    ``agg(-max(1 - p_t, 0) ** gamma * log(p_t))``, ``p_t = y * yhat + (1 - y) * (1 - yhat) + eps``
    the probability given to the true class. It down-weights easy examples.

    ``eps`` is added to ``p_t`` as :func:`binarycrossentropy` adds it to each probability
    (Flux adds it to ``yhat``, which sends ``p_t`` below 0 at ``yhat == 1``, ``y == 0``),
    so ``gamma=0`` is exactly ``binarycrossentropy``."""
    yhat, y = _pair("binary_focal_loss", yhat, y, agg)
    p_t = ops.add(ops.add(ops.mul(y, yhat), ops.mul(ops.sub(1, y), ops.sub(1, yhat))),
                  _eps(yhat, eps))
    weight = ops.power(ops.maximum(ops.sub(1, p_t), 0), gamma)
    return _aggregate(agg, ops.negative(ops.mul(weight, ops.log(p_t))))


def focal_loss(yhat: Any, y: Any, *, axis: int = -1, agg: Agg = np.mean, gamma: float = 2.0,
               eps: float | None = None) -> Any:
    """Focal loss for probabilities ``yhat`` (e.g. softmax output) over ``axis``:
    ``agg(sum(-y * max(1 - p, 0) ** gamma * log(p), axis))`` with ``p = yhat + eps`` (the
    ``max`` keeps a fractional ``gamma`` defined at ``yhat == 1``); ``y`` is probabilities
    or integer class labels. ``gamma=0`` is :func:`crossentropy`."""
    yhat, y, axis = _classes("focal_loss", yhat, y, axis, agg)
    p = ops.add(yhat, _eps(yhat, eps))
    if _is_labels(y):
        p = _pick(p, y, axis)
    terms = ops.mul(ops.power(ops.maximum(ops.sub(1, p), 0), gamma), ops.log(p))
    if _is_labels(y):
        return _aggregate(agg, ops.negative(terms))
    return _aggregate(agg, ops.negative(ops.sum_(ops.mul(y, terms), axis=axis)))


def siamese_contrastive_loss(yhat: Any, y: Any, *, agg: Agg = np.mean,
                             margin: float = 1.0) -> Any:
    """Contrastive loss for distances ``yhat`` between the two items of each pair, with
    ``y`` 1 for a dissimilar pair and 0 for a similar one (Flux's convention):
    ``agg((1 - y) * yhat ** 2 + y * max(0, margin - yhat) ** 2)``."""
    if not margin >= 0:
        raise ValueError(f"siamese_contrastive_loss: margin must be non-negative; got {margin!r}")
    yhat, y = _pair("siamese_contrastive_loss", yhat, y, agg)
    near = ops.mul(ops.sub(1, y), ops.square(yhat))
    far = ops.mul(y, ops.square(ops.maximum(ops.sub(margin, yhat), 0)))
    return _aggregate(agg, ops.add(near, far))
