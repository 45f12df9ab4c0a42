"""RNN, LSTM and GRU over whole sequences, with PyTorch's weight layout and gate order.

A layer maps (batch, time, in) to every hidden state, (batch, time, out), as Flux's
recurrent layers do since 0.15; take ``y[:, -1]`` for the last one. The whole sequence
is two tape nodes: one fused Dense for the input projection of all steps at once, and
one scan over time whose vjp runs backpropagation through time by hand, gathering the
recurrent weight's gradient in a single matmul at the end.

Parameters follow PyTorch (``torch.nn.RNN/LSTM/GRU``, one layer, ``batch_first=True``):
``weight_ih`` (gates*out, in), ``weight_hh`` (gates*out, out), ``bias_ih`` and
``bias_hh`` (gates*out,), with gates stacked in PyTorch's order (LSTM: i, f, g, o; GRU:
r, z, n). Two biases are redundant for RNN and LSTM but not for GRU, where ``bias_hh``'s
n part sits inside the reset gate; keeping both everywhere lets PyTorch weights load
one to one (drop the ``_l0`` suffix). Flux keeps one bias, so a Flux GRU's n gate lacks
that term.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar

import numpy as np

from .._backend import array_module
from .._grad import gradient
from .._ops import astype, data
from .._tape import Tracked, record
from ..activations import FUSABLE, sigmoid, tanh
from ..init import glorot_uniform
from ._base import Layer, ShapeError, check_input, member_name
from .dense import dense

__all__ = ["GRU", "LSTM", "RNN"]

_UNFUSED = object()


class _RNNCell:
    """h' = activation(x W_ih' + b_ih + h W_hh' + b_hh)."""

    def __init__(self, activation: Callable) -> None:
        self.activation = activation
        self.dact = FUSABLE.get(activation, _UNFUSED)

    def step(self, xp: Any, xw: Any, hw: Any, state: tuple) -> tuple[tuple, tuple]:
        hw += xw
        h = self.activation(hw)
        return (h,), ((hw if self.dact is _UNFUSED else h),)

    def unstep(self, xp: Any, cache: tuple, dstate: tuple) -> tuple:
        (dh,), (saved,) = dstate, cache
        if self.dact is _UNFUSED:  # recompute the activation on the tape: any function works
            da = gradient(lambda a: (self.activation(a) * dh).sum(), saved)[0]
            da = xp.zeros_like(saved) if da is None else da
        else:
            da = dh if self.dact is None else self.dact(xp, saved, dh)
        return da, da, (None,)


class _LSTMCell:
    """Gates i, f, g, o; c' = f c + i g; h' = o tanh(c')."""

    @staticmethod
    def step(xp: Any, xw: Any, hw: Any, state: tuple) -> tuple[tuple, tuple]:
        h, c = state
        n = h.shape[1]
        hw += xw
        gates = sigmoid(hw)
        gates[:, 2 * n:3 * n] = xp.tanh(hw[:, 2 * n:3 * n])
        i, f, g, o = (gates[:, k * n:(k + 1) * n] for k in range(4))
        c_new = f * c
        c_new += i * g
        tc = xp.tanh(c_new)
        return (o * tc, c_new), (gates, c, tc)

    @staticmethod
    def unstep(xp: Any, cache: tuple, dstate: tuple) -> tuple:
        gates, c, tc = cache
        dh, dc = dstate
        n = dh.shape[1]
        i, f, g, o = (gates[:, k * n:(k + 1) * n] for k in range(4))
        dc = dc + dh * o * (1 - tc * tc)
        da = xp.empty_like(gates)
        da[:, :n] = dc * g * i * (1 - i)
        da[:, n:2 * n] = dc * c * f * (1 - f)
        da[:, 2 * n:3 * n] = dc * i * (1 - g * g)
        da[:, 3 * n:] = dh * tc * o * (1 - o)
        return da, da, (None, dc * f)


class _GRUCell:
    """r, z = sigmoid(...); n = tanh(x W_in' + b_in + r (h W_hn' + b_hn)); h' = (1-z) n + z h."""

    @staticmethod
    def step(xp: Any, xw: Any, hw: Any, state: tuple) -> tuple[tuple, tuple]:
        (h,) = state
        n = h.shape[1]
        rz = sigmoid(xw[:, :2 * n] + hw[:, :2 * n])
        r, z = rz[:, :n], rz[:, n:]
        hn = hw[:, 2 * n:]
        cand = xp.tanh(xw[:, 2 * n:] + r * hn)
        return (cand + z * (h - cand),), (rz, cand, hn, h)

    @staticmethod
    def unstep(xp: Any, cache: tuple, dstate: tuple) -> tuple:
        rz, cand, hn, h = cache
        (dh,) = dstate
        n = dh.shape[1]
        r, z = rz[:, :n], rz[:, n:]
        dan = dh * (1 - z) * (1 - cand * cand)
        dxw = xp.empty((dh.shape[0], 3 * n), dtype=dh.dtype)
        dxw[:, :n] = dan * hn * r * (1 - r)
        dxw[:, n:2 * n] = dh * (h - cand) * z * (1 - z)
        dxw[:, 2 * n:] = dan
        dhw = dxw.copy()
        dhw[:, 2 * n:] *= r
        return dxw, dhw, (dh * z,)


def _scan(cell: Any, xw: Any, state0: tuple, weight_hh: Any, bias_hh: Any) -> Any:
    """Run ``cell`` over axis 1 of ``xw`` (the input projections) from ``state0``; one tape
    node with every hidden state as output, (batch, time, out)."""
    xwd, w = data(xw), data(weight_hh)
    b = None if bias_hh is None else data(bias_hh)
    xp = array_module(xwd)
    batch, steps, width = xwd.shape
    hidden = w.shape[1]
    start = tuple(xp.broadcast_to(data(s), (batch, hidden)) for s in state0)
    out = xp.empty((batch, steps, hidden), dtype=xwd.dtype)
    caches = []
    state = start
    w_t = xp.ascontiguousarray(w.T)  # BLAS runs the per-step product ~20% faster on it
    for t in range(steps):
        hw = state[0] @ w_t
        if b is not None:
            hw += b
        state, cache = cell.step(xp, xwd[:, t], hw, state)
        out[:, t] = state[0]
        caches.append(cache)
    parents = (xw, *state0, weight_hh, bias_hh)
    if not any(p.__class__ is Tracked for p in parents):
        return out

    def vjp(g: Any) -> tuple:
        dxw_all = xp.empty_like(xwd)
        dhw_all = None
        dstate = tuple(xp.zeros((batch, hidden), dtype=xwd.dtype) for _ in start)
        for t in range(steps - 1, -1, -1):
            dstate = (dstate[0] + g[:, t], *dstate[1:])
            dxw, dhw, direct = cell.unstep(xp, caches[t], dstate)
            dxw_all[:, t] = dxw
            if dhw is not dxw:
                if dhw_all is None:
                    dhw_all = xp.empty_like(xwd)
                dhw_all[:, t] = dhw
            dh_prev = dhw @ w
            if direct[0] is not None:
                dh_prev += direct[0]
            dstate = (dh_prev, *direct[1:])
        dhw_all = dxw_all if dhw_all is None else dhw_all
        h_prev = xp.concatenate([start[0][:, None], out[:, :-1]], axis=1)
        gw = dhw_all.reshape(-1, width).T @ h_prev.reshape(-1, hidden) \
            if weight_hh.__class__ is Tracked else None
        gb = dhw_all.sum(axis=(0, 1)) if bias_hh.__class__ is Tracked else None
        return (dxw_all, *dstate, gw, gb)

    return record(out, parents, vjp)


class _Recurrent(Layer):
    """Shared construction, input checks and initial state of RNN, LSTM and GRU."""

    _gates: ClassVar[int]
    _states: ClassVar[int] = 1

    def __init__(self, in_: int, out: int, *, bias: bool = True,
                 init_kernel: Callable = glorot_uniform,
                 init_recurrent_kernel: Callable = glorot_uniform, dtype: Any = np.float32,
                 rng: np.random.Generator | None = None) -> None:
        name = type(self).__name__
        for label, v in (("in", in_), ("out", out)):
            if not isinstance(v, (int, np.integer)) or isinstance(v, bool) or v < 1:
                raise ValueError(f"{name}: {label} must be a positive integer; got {v!r}")
        rows = self._gates * out
        self.weight_ih = init_kernel(rows, in_, rng=rng, dtype=dtype)
        self.weight_hh = init_recurrent_kernel(rows, out, rng=rng, dtype=dtype)
        self.bias_ih = np.zeros(rows, dtype=dtype) if bias else None
        self.bias_hh = np.zeros(rows, dtype=dtype) if bias else None

    @property
    def in_features(self) -> int:
        return data(self.weight_ih).shape[1]

    @property
    def out_features(self) -> int:
        return data(self.weight_hh).shape[1]

    def _cell(self) -> Any:  # pragma: no cover - every subclass overrides it
        raise NotImplementedError

    def _initial_state(self, state: Any, batch: int) -> tuple:
        w = data(self.weight_hh)
        h = self.out_features
        if state is None:
            return tuple(array_module(w).zeros((batch, h), dtype=w.dtype)
                         for _ in range(self._states))
        if self._states > 1:
            if not isinstance(state, (tuple, list)) or len(state) != self._states:
                raise ShapeError(f"{self!r} expects its initial state as a tuple (h, c); got "
                                 f"{type(state).__name__}")
            parts = tuple(state)
        else:
            parts = (state,)
        for s in parts:
            d = data(s)
            shape = getattr(d, "shape", None)
            if shape not in ((batch, h), (h,)) or d.dtype.kind != "f":
                found = f"shape {shape}, dtype {d.dtype}" if shape is not None \
                    else type(s).__name__
                raise ShapeError(f"{self!r} expects an initial state of shape ({batch}, {h}) or "
                                 f"({h},) and floating dtype; got {found}")
        return tuple(s if data(s).dtype == w.dtype else astype(s, w.dtype) for s in parts)

    def __call__(self, x: Any, state: Any = None) -> Any:
        """All hidden states (batch, time, out) for input (batch, time, in), starting from
        ``state`` (zeros by default; ``(h, c)`` for an LSTM)."""
        n_in = self.in_features
        x = check_input(self, x, ndim=3, features=n_in, axis=2, like=data(self.weight_ih),
                        what=f"input (batch, time, {n_in})")
        shape = data(x).shape
        if shape[1] < 1:
            raise ShapeError(f"{self!r} expects at least one time step; got shape {shape}")
        state0 = self._initial_state(state, shape[0])
        xw = dense(x, self.weight_ih, self.bias_ih)
        return _scan(self._cell(), xw, state0, self.weight_hh, self.bias_hh)

    def _repr_extra(self) -> str:
        return "" if self.bias_ih is not None else ", bias=False"

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.in_features} => {self.out_features}" \
               f"{self._repr_extra()})"


class RNN(_Recurrent):
    """``RNN(in, out, activation=tanh, *, bias=True, ...)``: the Elman recurrence
    ``h_t = activation(x_t W_ih' + b_ih + h_{t-1} W_hh' + b_hh)`` (PyTorch's nn.RNN).

    Any activation works; identity, relu, sigmoid and tanh are fused, others are
    re-evaluated on the tape during the backward pass.
    """

    _gates = 1

    def __init__(self, in_: int, out: int, activation: Callable = tanh, **kw: Any) -> None:
        if not callable(activation):
            raise ValueError(f"RNN: activation must be callable; got {activation!r}")
        super().__init__(in_, out, **kw)
        self.activation = activation

    def _cell(self) -> _RNNCell:
        return _RNNCell(self.activation)

    def _repr_extra(self) -> str:
        act = "" if self.activation is tanh else ", " + member_name(self.activation)
        return act + super()._repr_extra()


class LSTM(_Recurrent):
    """``LSTM(in, out, *, bias=True, ...)``: long short-term memory, gates i, f, g, o as
    PyTorch's nn.LSTM. Returns the hidden states h only; the initial state is ``(h0, c0)``.
    """

    _gates = 4
    _states = 2

    def _cell(self) -> type[_LSTMCell]:
        return _LSTMCell


class GRU(_Recurrent):
    """``GRU(in, out, *, bias=True, ...)``: gated recurrent unit with PyTorch's gates r, z, n
    and its candidate ``n = tanh(x W_in' + b_in + r * (h W_hn' + b_hn))``."""

    _gates = 3

    def _cell(self) -> type[_GRUCell]:
        return _GRUCell
