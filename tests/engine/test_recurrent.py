"""RNN, LSTM and GRU: every hidden state and every gradient in float64 against finite
differences and torch.nn.RNN/LSTM/GRU (batch_first=True) loaded with the same weights;
state threading, dtypes and errors."""

from __future__ import annotations

import re

import numpy as np
import pytest
from kiln_engine import GRU, LSTM, RNN, Chain, Dense, ShapeError, elu, gradient, relu
from kiln_engine._tape import _state

from .gradcheck import check_gradients

rng = np.random.default_rng(0)
B, STEPS, IN, OUT = 2, 3, 3, 4


def r(*shape: int) -> np.ndarray:
    return rng.uniform(-1.0, 1.0, size=shape)


def _kiln(cls, kw: dict, bias: bool):
    """f(x, weight_ih, weight_hh, [bias_ih, bias_hh], *states) for a Kiln layer."""

    def f(x, *rest):
        m = cls(IN, OUT, dtype=np.float64, bias=bias, **kw)
        n = 4 if bias else 2
        m.weight_ih, m.weight_hh = rest[:2]
        if bias:
            m.bias_ih, m.bias_hh = rest[2:4]
        states = rest[n:]
        state = None if not states else tuple(states) if len(states) == 2 else states[0]
        return m(x, state)

    return f


def _torch(name: str, kw: dict, bias: bool):
    """The same function through torch.nn.<name>(batch_first=True) with the given weights."""

    def f(x, *rest):
        import torch
        from torch.func import functional_call

        module = getattr(torch.nn, name)(IN, OUT, batch_first=True, bias=bias, **kw)
        names = ["weight_ih_l0", "weight_hh_l0"] + (["bias_ih_l0", "bias_hh_l0"] if bias else [])
        states = [s.expand(B, OUT).unsqueeze(0) for s in rest[len(names):]]
        args = (x,) if not states else (x, tuple(states) if len(states) == 2 else states[0])
        return functional_call(module, dict(zip(names, rest)), args)[0]

    return f


def _gates(cls) -> int:
    return {RNN: 1, LSTM: 4, GRU: 3}[cls]


# (id, Kiln class, Kiln kwargs, torch name, torch kwargs, bias, initial state shapes)
CASES = [
    ("rnn_tanh", RNN, {}, "RNN", {}, True, []),
    ("rnn_relu_h0", RNN, {"activation": relu}, "RNN", {"nonlinearity": "relu"}, True, [(B, OUT)]),
    ("rnn_no_bias_h0", RNN, {}, "RNN", {}, False, [(B, OUT)]),
    ("lstm", LSTM, {}, "LSTM", {}, True, []),
    ("lstm_h0_c0", LSTM, {}, "LSTM", {}, True, [(B, OUT), (B, OUT)]),
    ("lstm_no_bias_broadcast_state", LSTM, {}, "LSTM", {}, False, [(OUT,), (B, OUT)]),
    ("gru", GRU, {}, "GRU", {}, True, []),
    ("gru_h0", GRU, {}, "GRU", {}, True, [(B, OUT)]),
    ("gru_broadcast_h0", GRU, {}, "GRU", {}, True, [(OUT,)]),
    ("gru_no_bias", GRU, {}, "GRU", {}, False, []),
]


@pytest.mark.parametrize("name,cls,kw,tname,tkw,bias,states", CASES, ids=[c[0] for c in CASES])
def test_recurrent_against_fd_and_torch(name, cls, kw, tname, tkw, bias, states, torch,
                                       backend):
    rows = _gates(cls) * OUT
    weights = [r(rows, IN), r(rows, OUT)] + ([r(rows), r(rows)] if bias else [])
    check_gradients(_kiln(cls, kw, bias), r(B, STEPS, IN), *weights,
                    *[r(*s) for s in states], torch_f=_torch(tname, tkw, bias), torch=torch,
                    backend=backend)


def test_rnn_with_an_unfused_activation_against_a_torch_loop(torch):
    def torch_f(x, wih, whh, bih, bhh):
        h = torch.zeros(B, OUT)
        hs = []
        for t in range(STEPS):
            h = torch.nn.functional.elu(x[:, t] @ wih.T + bih + h @ whh.T + bhh)
            hs.append(h)
        return torch.stack(hs, dim=1)

    check_gradients(_kiln(RNN, {"activation": elu}, True), r(B, STEPS, IN), r(OUT, IN),
                    r(OUT, OUT), r(OUT), r(OUT), torch_f=torch_f, torch=torch)


@pytest.mark.parametrize("cls", [RNN, GRU])
def test_output_is_every_hidden_state_and_the_state_threads_through(cls):
    m = cls(IN, OUT, dtype=np.float64, rng=np.random.default_rng(1))
    m.bias_ih[:], m.bias_hh[:] = r(_gates(cls) * OUT), r(_gates(cls) * OUT)
    x = r(B, 5, IN)
    y = m(x)
    assert y.shape == (B, 5, OUT)
    np.testing.assert_allclose(m(x[:, :2]), y[:, :2], rtol=1e-12)  # causal
    np.testing.assert_allclose(m(x[:, 2:], y[:, 1]), y[:, 2:], rtol=1e-12)  # resumable


@pytest.mark.parametrize("cls", [RNN, LSTM, GRU])
def test_a_whole_sequence_is_two_tape_nodes(cls):
    m = cls(IN, OUT)
    count = []

    def loss(m):
        before = len(_state.tape)
        y = m(r(B, 6, IN).astype(np.float32))
        count.append(len(_state.tape) - before)
        return y.sum()

    g = gradient(loss, m)[0]
    assert count == [2]
    assert g.keys() == ["weight_ih", "weight_hh", "bias_ih", "bias_hh"]


@pytest.mark.parametrize("cls", [RNN, LSTM, GRU])
def test_float32_preserved_and_float64_input_cast(cls):
    m = cls(IN, OUT)
    x = r(B, STEPS, IN)
    assert m(x.astype(np.float32)).dtype == np.float32
    assert m(x).dtype == np.float32
    g = gradient(lambda m: m(x).sum(), m)[0]
    assert all(g[k].dtype == np.float32 for k in g.keys())
    state = (r(B, OUT), r(B, OUT)) if cls is LSTM else r(B, OUT)
    assert m(x, state).dtype == np.float32


def test_layout_follows_pytorch():
    m = LSTM(3, 5)
    assert m.weight_ih.shape == (20, 3) and m.weight_hh.shape == (20, 5)
    assert m.bias_ih.shape == (20,) and m.bias_hh.shape == (20,)
    assert GRU(3, 5, bias=False).bias_ih is None
    assert repr(RNN(3, 5, relu)) == "RNN(3 => 5, relu)"
    assert repr(GRU(3, 5, bias=False)) == "GRU(3 => 5, bias=False)"


@pytest.mark.parametrize("layer,x,state,message", [
    (RNN(3, 4), r(2, 3), None, "RNN(3 => 4) expects input (batch, time, 3)"),
    (GRU(3, 4), r(2, 5, 2), None, "GRU(3 => 4) expects 3 features on axis 2"),
    (LSTM(3, 4), r(2, 0, 3), None, "LSTM(3 => 4) expects at least one time step"),
    (LSTM(3, 4), r(2, 5, 3), r(2, 4), "LSTM(3 => 4) expects its initial state as a tuple"),
    (RNN(3, 4), r(2, 5, 3), r(3, 4), "RNN(3 => 4) expects an initial state of shape (2, 4)"),
    (GRU(3, 4), r(2, 5, 3), np.zeros((2, 4), np.int64), "initial state of shape (2, 4)"),
    (RNN(3, 4), r(2, 5, 3).astype(np.int32), None, "RNN(3 => 4) expects floating-point"),
], ids=["rank", "features", "no_steps", "lstm_state", "state_shape", "state_dtype", "dtype"])
def test_bad_input_names_the_layer(layer, x, state, message):
    with pytest.raises(ShapeError, match=re.escape(message)):
        layer(x, state)


def test_error_inside_chain_names_the_path():
    with pytest.raises(ShapeError) as e:
        Chain(enc=Dense(2, 3), rnn=GRU(4, 4))(np.zeros((1, 2, 2), np.float32))
    assert e.value.path == "layers.rnn"


@pytest.mark.parametrize("build,message", [
    (lambda: RNN(0, 3), "RNN: in must be a positive integer"),
    (lambda: LSTM(3, True), "LSTM: out must be a positive integer"),
    (lambda: RNN(3, 3, activation="tanh"), "RNN: activation must be callable"),
])
def test_bad_construction(build, message):
    with pytest.raises(ValueError, match=message):
        build()
