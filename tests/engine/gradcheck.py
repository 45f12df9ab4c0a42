"""One helper checks any differentiable function: Kiln's gradient against central finite
differences in float64, and, when given, against PyTorch autograd on the same inputs.
A new op is one line in a test table.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from kiln_engine import gradient, withgradient

FD_EPS = 1e-6
FD_RTOL = 1e-5
TORCH_RTOL = 1e-6


def _rel_err(a: np.ndarray, b: np.ndarray) -> float:
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    scale = max(np.max(np.abs(a), initial=0.0), np.max(np.abs(b), initial=0.0), 1e-8)
    return float(np.max(np.abs(a - b), initial=0.0) / scale)


def _scalarise(f: Callable, weights: np.ndarray | None) -> Callable:
    """Reduce f's output to a scalar with fixed random weights, so every output element
    contributes a distinct cotangent."""

    def loss(*args):
        out = f(*args)
        if weights is None:
            return out
        return (out * weights).sum()

    return loss


def finite_difference(loss: Callable, args: Sequence[np.ndarray], i: int) -> np.ndarray:
    """Central differences of scalar ``loss`` with respect to ``args[i]``."""
    x = args[i]
    assert x.flags.c_contiguous, "finite_difference needs a C-contiguous input to edit in place"
    g = np.zeros_like(x)
    flat = x.reshape(-1)
    gflat = g.reshape(-1)
    for k in range(flat.size):
        old = flat[k]
        flat[k] = old + FD_EPS
        hi = float(loss(*args))
        flat[k] = old - FD_EPS
        lo = float(loss(*args))
        flat[k] = old
        gflat[k] = (hi - lo) / (2 * FD_EPS)
    return g


def check_gradients(f: Callable, *args: Any, torch_f: Callable | None = None, torch: Any = None,
                    wrt: Sequence[int] | None = None, seed: int = 0, backend: Any = None) -> None:
    """Assert Kiln's value and gradients of ``f`` at ``args`` (float64 arrays or constants).

    ``wrt`` picks the argument positions to differentiate (default: every float array).
    With ``torch_f`` (the same function written for torch tensors) the output and the
    gradients must also match PyTorch within TORCH_RTOL. With ``backend`` (the fixture),
    Kiln's value and gradients are taken on its device; the finite differences, the
    reference, are taken on the CPU.
    """
    # C-contiguous float64 copies: finite_difference edits inputs through a flat view.
    args = [np.array(a, dtype=np.float64, order="C") if isinstance(a, np.ndarray)
            and a.dtype.kind == "f" else a for a in args]
    if wrt is None:
        wrt = [i for i, a in enumerate(args) if isinstance(a, np.ndarray) and a.dtype.kind == "f"]
    out = np.asarray(f(*args))
    assert np.all(np.isfinite(out)), "forward produced non-finite values"
    weights = None if out.ndim == 0 else np.random.default_rng(seed).standard_normal(out.shape)
    loss = _scalarise(f, weights)
    if backend is None or not backend.on_device:
        value, grads = withgradient(loss, *args)
        rtol = 1e-12
    else:  # another device's transcendentals and sums round differently
        value, grads = withgradient(_scalarise(f, backend.put(weights)), *backend.put(args))
        value, grads, rtol = backend.host(value), backend.host(grads), 1e-10
    assert np.isclose(float(value), float(loss(*args)), rtol=rtol), "value differs from f"
    for i in wrt:
        g = grads[i]
        assert g is not None, f"no gradient reached argument {i}"
        assert g.shape == args[i].shape, f"gradient {i} has shape {g.shape}, not {args[i].shape}"
        assert g.dtype == args[i].dtype, f"gradient {i} has dtype {g.dtype}"
        fd = finite_difference(loss, args, i)
        err = _rel_err(g, fd)
        assert err <= FD_RTOL, f"argument {i}: relative error {err:.2e} against finite differences"
    if torch_f is None or torch is None:
        return
    targs = [torch.tensor(a, requires_grad=(i in wrt)) if isinstance(a, np.ndarray) else a
             for i, a in enumerate(args)]
    tout = torch_f(*targs)
    err = _rel_err(out, tout.detach().numpy())
    assert err <= TORCH_RTOL, f"output differs from torch: relative error {err:.2e}"
    tl = tout if weights is None else (tout * torch.tensor(weights)).sum()
    tl.backward()
    for i in wrt:
        tg = targs[i].grad
        err = _rel_err(grads[i], tg.numpy() if tg is not None else np.zeros_like(args[i]))
        assert err <= TORCH_RTOL, f"argument {i}: relative error {err:.2e} against torch"


def torch_functional():
    """torch.nn.functional, imported only when a torch-side function runs (under the fixture)."""
    import torch.nn.functional

    return torch.nn.functional


def four(pad) -> tuple[int, int, int, int]:
    """A pad spec as (top, bottom, left, right): the tests' own reading of the documentation."""
    if isinstance(pad, int):
        return (pad,) * 4
    if len(pad) == 2:
        return (pad[0], pad[0], pad[1], pad[1])
    return tuple(pad)


__all__ = ["check_gradients", "finite_difference", "four", "gradient", "torch_functional"]
