"""The engine on each backend against the CPU: optimiser rules, the DataLoader, training.

Each test runs the same work on the CPU and on ``backend``'s device and compares: bit
for bit on the fake device (numpy playing cupy, the kernels run as their twins, which
equal the CPU's path bit for bit) and on the CPU itself; to rounding on a real GPU,
whose sums, transcendentals and matmuls round their own way.
"""

from __future__ import annotations

import numpy as np
import pytest
from kiln_engine import (
    AdaBelief,
    AdaDelta,
    AdaGrad,
    Adam,
    AdaMax,
    AdamW,
    AMSGrad,
    BatchNorm,
    Chain,
    ClipGrad,
    ClipNorm,
    Conv,
    DataLoader,
    Dense,
    Descent,
    Embedding,
    Flatten,
    LayerNorm,
    Lion,
    MaxPool,
    MeanPool,
    Momentum,
    NAdam,
    Nesterov,
    OAdam,
    OptimiserChain,
    RAdam,
    RMSProp,
    Rprop,
    SignDecay,
    Trainer,
    WeightDecay,
    gradient,
    losses,
    relu,
    setup,
    sigmoid,
    state_dict,
    tanh,
    update,
)
from kiln_engine import random as kiln_random
from kiln_engine._backend import device_of

RULES = [Descent(0.1), Momentum(0.01, 0.8), Nesterov(0.01), Rprop(0.01), RMSProp(0.01),
         RMSProp(0.01, centred=True), Adam(0.01), AdamW(0.01, lambda_=0.1),
         AdamW(0.01, lambda_=0.1, couple=False), RAdam(0.01), AdaMax(0.01), OAdam(0.01),
         AdaGrad(0.1), AdaDelta(0.9), AMSGrad(0.01), NAdam(0.01), AdaBelief(0.01), Lion(0.01),
         OptimiserChain(ClipGrad(0.5), WeightDecay(0.01), Adam(0.01)),
         OptimiserChain(WeightDecay(0.01), ClipGrad(0.5), Momentum(0.01)),
         OptimiserChain(ClipNorm(1.0), SignDecay(0.01), Descent(0.1))]


def agree(got: np.ndarray, want: np.ndarray, backend, what: str, rtol: float = 1e-5) -> None:
    """Bit for bit where the device's arithmetic is the CPU's; on a GPU, to ``rtol`` in
    norm, ‖got − want‖ / ‖want‖ (Adam's steps turn a rounding in a tiny gradient into a
    full step now and then, so single entries may stray further)."""
    if backend.name == "cupy":
        err = np.linalg.norm(got - want) / max(np.linalg.norm(want), 1e-30)
        assert err <= rtol, f"{what}: relative error {err:.2e} > {rtol:g}"
    else:
        np.testing.assert_array_equal(got, want, err_msg=what)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("rule", RULES, ids=repr)
def test_every_rule_steps_a_device_model_as_the_cpu(rule, dtype, backend):
    rng = np.random.default_rng(0)
    model = {"w": rng.normal(size=(20, 9)).astype(dtype), "b": rng.normal(size=9).astype(dtype)}
    grads = [{k: rng.normal(size=v.shape).astype(dtype) for k, v in model.items()}
             for _ in range(4)]
    on = backend.put(model)
    cpu_state, dev_state = setup(rule, model), setup(rule, on)
    for g in grads:
        update(cpu_state, model, g)
        update(dev_state, on, backend.put(g))
    assert {device_of(x) for x in on.values()} == {"cpu" if backend.name == "numpy" else "cuda:0"}
    for k in model:
        agree(backend.host(on[k]), model[k], backend, k)


def test_the_loader_batches_device_arrays_as_host_ones(backend):
    x = np.arange(60, dtype=np.float32).reshape(20, 3)
    y = np.arange(20)
    host = DataLoader((x, y), batchsize=6, shuffle=True, rng=4)
    dev = DataLoader(backend.put((x, y)), batchsize=6, shuffle=True, rng=4)
    for _ in range(2):  # two epochs: the same shuffles
        for (hx, hy), (dx, dy) in zip(host, dev, strict=True):
            assert device_of(dx) == device_of(dy) == ("cpu" if backend.name == "numpy"
                                                      else "cuda:0")
            np.testing.assert_array_equal(backend.host(dx), hx)
            np.testing.assert_array_equal(backend.host(dy), hy)
    assert dev.state() == host.state()


def _models():
    kiln_random.seed(5)
    mlp = Chain(Dense(12, 16, relu), LayerNorm(16), Dense(16, 16, sigmoid), Dense(16, 16, tanh),
                Dense(16, 4))
    cnn = Chain(Conv(3, 1, 4, relu, pad=1), BatchNorm(4, relu), MaxPool(2),
                Conv(3, 4, 6, stride=2, pad="same"), MeanPool(2), Flatten(), Dense(6, 4))
    tokens = Chain(Embedding(10, 6), Flatten(), Dense(18, 4))
    return {"mlp": mlp, "cnn": cnn, "embedding": tokens}


def _data(kind: str, rng: np.random.Generator) -> tuple:
    n = 24
    x = {"mlp": lambda: rng.normal(size=(n, 12)),
         "cnn": lambda: rng.normal(size=(n, 1, 8, 8)),
         "embedding": lambda: rng.integers(0, 10, size=(n, 3))}[kind]()
    x = x.astype(np.float32) if x.dtype.kind == "f" else x
    return x, rng.integers(0, 4, n)


@pytest.mark.parametrize("kind", ["mlp", "cnn", "embedding"])
def test_a_training_run_on_the_device_is_the_cpus(kind, backend):
    """Dense with every fused activation (the bias-activation kernels), LayerNorm, Conv,
    BatchNorm (running statistics on the device), both pools, Embedding (scatter-add),
    the labels' cross-entropy (its kernels) and AdamW after ClipGrad (its kernel), driven
    by the Trainer over a shuffling loader."""
    x, y = _data(kind, np.random.default_rng(6))
    rule = OptimiserChain(ClipGrad(1.0), AdamW(3e-3, lambda_=1e-3))
    runs = []
    for on in (None, backend):
        model = _models()[kind]
        data = (x, y) if on is None else on.put((x, y))
        model = model if on is None else on.put(model)
        trainer = Trainer(lambda m, xb, yb: losses.logitcrossentropy(m(xb), yb), model,
                          setup(rule, model), DataLoader(data, batchsize=8, shuffle=True, rng=0))
        trainer.run(3)
        runs.append(trainer)
    cpu, dev = runs
    for path, want in state_dict(cpu.model).items():
        agree(backend.host(state_dict(dev.model)[path]), want, backend, path, rtol=1e-3)
    assert [r.metrics["train_loss"] for r in dev.history] == pytest.approx(
        [r.metrics["train_loss"] for r in cpu.history], rel=0 if backend.name != "cupy" else 1e-4)


def test_a_gradient_of_a_device_model_lives_on_the_device(device):
    model = device.put(Chain(Dense(3, 2, relu)))
    x = device.put(np.ones((4, 3), dtype=np.float32))
    (g,) = gradient(lambda m: m(x).sum(), model)
    assert device_of(g.layers[0].weight) == device_of(g.layers[0].bias) == "cuda:0"
