"""One-hot encoding and decoding, batch first: Flux's ``onehotbatch`` and ``onecold``.

``onehot(labels, classes)`` gives an array of shape ``labels.shape + (classes,)``, the
class axis last, which is where Kiln's losses look for it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from ._backend import array_module, to_device
from ._ops import data

__all__ = ["check_labels", "onecold", "onehot"]


def check_labels(name: str, labels: Any, classes: int) -> None:
    """Raise ValueError unless ``labels`` are integers in ``[0, classes)``.

    ``name`` is the function asking, so the message says where the bad label went.
    """
    if labels.dtype.kind not in "iu":
        raise ValueError(f"{name}: class labels must be integers; got dtype {labels.dtype}")
    if labels.size == 0:
        return
    lo, hi = int(labels.min()), int(labels.max())
    if lo < 0 or hi >= classes:
        bad = lo if lo < 0 else hi
        raise ValueError(f"{name}: class labels must lie in [0, {classes}) for {classes} "
                         f"classes; found {bad}")


def onehot(labels: Any, classes: int | Sequence[Any], *, dtype: Any = np.float32) -> Any:
    """One-hot rows for ``labels``: shape ``labels.shape + (number of classes,)``.

    ``classes`` is either the number of classes (labels are indices ``0 .. classes-1``)
    or the sequence of class values (``onehot(["b", "a"], ["a", "b", "c"])``), as in
    Flux's ``onehotbatch(data, labels)``.
    """
    if isinstance(classes, (int, np.integer)) and not isinstance(classes, bool):
        if classes < 1:
            raise ValueError(f"onehot: classes must be a positive integer; got {classes}")
        idx = labels if hasattr(labels, "dtype") else np.asarray(labels)
        check_labels("onehot", idx, int(classes))
        k = int(classes)
    else:
        values = list(classes)
        position = {v: i for i, v in enumerate(values)}
        if len(position) != len(values):
            raise ValueError(f"onehot: classes must be distinct; got {values}")
        flat = np.asarray(labels).ravel().tolist()
        missing = [v for v in flat if v not in position]
        if missing:
            raise ValueError(f"onehot: label {missing[0]!r} is not one of the classes {values}")
        idx = np.array([position[v] for v in flat], dtype=np.int64).reshape(np.shape(labels))
        k = len(values)
    xp = array_module(idx)
    out = xp.zeros((*idx.shape, k), dtype=dtype)
    xp.put_along_axis(out, idx[..., None], 1, axis=-1)
    return out


def onecold(yhat: Any, labels: Sequence[Any] | None = None) -> Any:
    """The class of each row: the argmax over the last axis, as an index or a label.

    The inverse of :func:`onehot`; ``yhat`` may be scores, probabilities or one-hot rows.
    """
    d = data(yhat)
    if not hasattr(d, "ndim") or d.ndim < 1:
        raise ValueError(f"onecold: yhat must be an array with a class axis; got {yhat!r}")
    idx = d.argmax(axis=-1)
    if labels is None:
        return idx
    values = np.asarray(labels)
    if values.ndim != 1 or len(values) != d.shape[-1]:
        raise ValueError(f"onecold: {d.shape[-1]} classes in yhat of shape {tuple(d.shape)} "
                         f"but {values.size} labels")
    return values[to_device(idx, "cpu")]
