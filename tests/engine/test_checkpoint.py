"""Checkpoints: resumed mid-epoch in a new process, bit for bit; contents; clear refusals.

Run as a script, this file is the resuming process:
``python test_checkpoint.py CHECKPOINT STEPS OUT`` loads CHECKPOINT into a freshly built
trainer, takes STEPS steps and writes the weights and the history to OUT.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import safetensors.numpy
from kiln_engine import (
    Adam,
    Chain,
    CheckpointError,
    DataLoader,
    Dense,
    Dropout,
    Exp,
    Interpolator,
    OptimiserChain,
    ReduceOnPlateau,
    SpecError,
    Trainer,
    WeightDecay,
    WeightsError,
    accuracy,
    early_stopping,
    load_checkpoint,
    losses,
    relu,
    save_checkpoint,
    save_weights,
    setup,
    state_dict,
)
from kiln_engine import random as kiln_random
from kiln_engine._backend import device_of, to_host
from kiln_engine._tree import leaves, map_arrays
from kiln_engine.checkpoint import checkpoint_from_bytes, checkpoint_to_bytes
from kiln_engine.optimisers import leaves_of
from kiln_engine.serialise import weights_from_bytes, weights_to_bytes


def digits():
    from sklearn.datasets import load_digits

    d = load_digits()
    return (d.data / 16.0).astype(np.float32), d.target.astype(np.int64)


def build(hidden=32, batchsize=32, seed=0, on=None, dropout=True):
    """The trainer both processes build: dropout (kiln's global generator), a shuffled
    loader, WeightDecay+Adam, a per-epoch schedule on dec, ReduceOnPlateau on enc and
    an early-stopping criterion (all of which carry state a resume must restore).
    ``on``: the backend whose device holds the model and the data (the CPU without)."""
    x, y = digits()
    kiln_random.seed(seed)
    enc = Chain(Dense(64, hidden, relu), *([Dropout(0.1)] if dropout else []))
    model = Chain(enc=enc, dec=Chain(Dense(hidden, 10)))
    if on is not None:
        model, x, y = on.put((model, x, y))
    loader = DataLoader((x[:1400], y[:1400]), batchsize=batchsize, shuffle=True, rng=seed)
    return Trainer(lambda m, xb, yb: losses.logitcrossentropy(m(xb), yb), model,
                   setup(OptimiserChain(WeightDecay(1e-4), Adam(1e-3)), model), loader,
                   validation=(x[1400:], y[1400:]), metrics={"accuracy": accuracy},
                   schedules=[("layers.dec", Interpolator(Exp(start=2e-3, decay=0.8),
                                                          len(loader))),
                              ("layers.enc", ReduceOnPlateau(1e-3, patience=0, factor=0.5,
                                                             mode="max", metric="val_loss"))],
                   stop=[early_stopping(lambda r: r.metrics["val_accuracy"], 50,
                                        distance=lambda best, s: s - best)])


def steer(trainer, n):
    """``n`` steps with controls along the way, as a worker would apply them."""
    for _ in range(n):
        record = trainer.step()
        if record.step == 30:
            trainer.freeze("layers.enc")
        if record.step == 50:
            trainer.thaw("layers.enc")
            trainer.adjust("layers.dec.layers.0.bias", 5e-4)


def history(trainer):
    """The epoch records without their timings (which no two runs share)."""
    return [{k: v for k, v in r.to_dict().items() if k not in ("seconds", "samples_per_s")}
            for r in trainer.history]


def same_weights(a, b):
    a, b = map_arrays(to_host, a), map_arrays(to_host, b)
    return a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)


def test_resumed_in_a_new_process_mid_epoch_is_bit_identical(tmp_path):
    trainer = build()
    steer(trainer, 100)  # 44 batches per epoch: mid-way through epoch 3
    assert trainer.loader.position == 12 and trainer.epoch == 3
    path = tmp_path / "mid.safetensors"
    save_checkpoint(trainer, path)
    steer(trainer, 60)  # the uninterrupted run goes on: 160 steps in all
    out = tmp_path / "resumed.safetensors"
    proc = subprocess.run([sys.executable, __file__, str(path), "60", str(out)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    blob = out.read_bytes()
    resumed = weights_from_bytes(blob)
    assert same_weights(state_dict(trainer.model), resumed)
    meta = json.loads(out.with_suffix(".json").read_text())
    assert meta["history"] == json.loads(json.dumps(history(trainer)))
    assert meta["steps"] == trainer.steps == 160 and meta["epoch"] == trainer.epoch == 4


@pytest.mark.parametrize("steps", [57, 88], ids=["mid-epoch", "epoch-boundary"])
def test_resumed_in_process_is_bit_identical(steps, backend):
    a = build(on=backend)
    steer(a, steps)
    blob = checkpoint_to_bytes(a)
    steer(a, 70)
    b = build(on=backend)
    steer(b, 5)  # whatever it did before loading is overwritten
    checkpoint_from_bytes(b, blob)
    steer(b, 70)
    assert same_weights(state_dict(a.model), state_dict(b.model))
    assert history(a) == history(b)
    assert a.controls.state() == b.controls.state()


def _devices(trainer) -> set[str]:
    """Where the model's arrays and the optimiser state's arrays are."""
    arrays = [x for _, x in leaves(trainer.model, trainable=False)]
    for _, leaf in leaves_of(trainer.opt_state):
        arrays += [s for s in leaf.state[1][:2]]  # WeightDecay's None, Adam's moments
    return {device_of(x) for x in arrays}


@pytest.mark.parametrize("direction", ["device to cpu", "cpu to device"])
def test_a_checkpoint_moves_between_devices(direction, device):
    """Written on one device, resumed on the other: the file holds host arrays, loading
    puts everything on the device of the trainer it goes into, and training goes on as
    it would have (bit for bit on the fake device, whose kernels are the CPU's twins)."""
    src, dst = (device, None) if direction == "device to cpu" else (None, device)
    a = build(on=src, dropout=False)  # masks come from each device's own generator
    steer(a, 57)
    blob = checkpoint_to_bytes(a)
    assert {k.split("/")[0] for k in safetensors.numpy.load(blob)} == {"model", "optimiser"}
    steer(a, 40)
    b = build(on=dst, dropout=False)
    checkpoint_from_bytes(b, blob)
    assert _devices(b) == {"cpu" if dst is None else "cuda:0"}
    steer(b, 40)
    if device.name == "fake":
        assert same_weights(state_dict(a.model), state_dict(b.model))
    else:  # the GPU rounds its sums and transcendentals its own way: close in norm
        wa, wb = (map_arrays(to_host, state_dict(t.model)) for t in (a, b))
        for k in wa:
            assert np.linalg.norm(wb[k] - wa[k]) <= 1e-3 * np.linalg.norm(wa[k]), k
    assert b.state()["steps"] == a.state()["steps"] == 97


def test_the_checkpoint_holds_everything_in_force():
    a = build()
    steer(a, 60)
    b = build()
    saved_rng = kiln_random.default_rng().bit_generator.state
    blob = checkpoint_to_bytes(a)
    kiln_random.default_rng().random(10)
    checkpoint_from_bytes(b, blob)
    assert kiln_random.default_rng().bit_generator.state == saved_rng
    assert same_weights(state_dict(a.model), state_dict(b.model))
    leaves_a = a.controls.in_force()
    assert leaves_a == b.controls.in_force()
    assert leaves_a["layers.dec.layers.0.bias"]["scheduled"] == {}  # adjusted at step 50
    assert leaves_a["layers.dec.layers.0.weight"]["scheduled"] == {"eta": "layers.dec"}
    assert "eta=0.0005" in leaves_a["layers.dec.layers.0.bias"]["rule"]
    opt_a = a.opt_state.layers.enc.layers[0].weight
    opt_b = b.opt_state.layers.enc.layers[0].weight
    assert opt_a.rule == opt_b.rule and opt_a.frozen == opt_b.frozen
    m_a, v_a, pows_a = opt_a.state[1]
    m_b, v_b, pows_b = opt_b.state[1]
    assert np.array_equal(m_a, m_b) and np.array_equal(v_a, v_b) and pows_a == pows_b
    assert m_b is not m_a and m_b.dtype == np.float32 and type(pows_b[0]) is np.float32
    assert b.state() == a.state()
    assert b.loader.state() == a.loader.state() and a.loader.state()["position"] == 16


def test_file_round_trip_is_atomic(tmp_path):
    a = build()
    steer(a, 10)
    path = tmp_path / "ck.safetensors"
    save_checkpoint(a, path)
    assert os.listdir(tmp_path) == ["ck.safetensors"]
    b = build()
    load_checkpoint(b, path)
    assert b.steps == 10 and same_weights(state_dict(a.model), state_dict(b.model))


def snapshot(trainer):
    return ({k: v.copy() for k, v in state_dict(trainer.model).items()}, trainer.state())


@pytest.mark.parametrize("other, error, words", [
    (lambda: build(hidden=16), WeightsError,
     "layers.enc.layers.0.weight: expected shape (16, 64) float32; found shape (32, 64)"),
    (lambda: build(batchsize=16), SpecError, "checkpoint.trainer.loader.batchsize"),
])
def test_a_checkpoint_that_does_not_fit_is_refused_changing_nothing(other, error, words):
    a = build()
    steer(a, 20)
    blob = checkpoint_to_bytes(a)
    b = other()
    steer(b, 3)
    before = snapshot(b)
    with pytest.raises(error) as info:
        checkpoint_from_bytes(b, blob)
    assert words in str(info.value)
    after = snapshot(b)
    assert same_weights(before[0], after[0]) and before[1] == after[1]
    steer(b, 1)  # and it trains on as before


def test_files_that_are_not_checkpoints_are_refused():
    b = build()
    with pytest.raises(CheckpointError, match="not a readable checkpoint"):
        checkpoint_from_bytes(b, b"\x00" * 64)
    with pytest.raises(CheckpointError, match="without Kiln checkpoint metadata"):
        checkpoint_from_bytes(b, weights_to_bytes(b.model))
    with pytest.raises(TypeError, match="needs a Trainer"):
        checkpoint_to_bytes(b.model)


def test_tied_weights_stay_tied_and_resume_exactly():
    x, y = digits()

    def tied():
        kiln_random.seed(1)
        first, second = Dense(64, 64, relu), Dense(64, 64, relu)
        second.weight = first.weight
        model = Chain(first, second, Dense(64, 10))
        return Trainer(lambda m, xb, yb: losses.logitcrossentropy(m(xb), yb), model,
                       setup(Adam(1e-3), model), DataLoader((x, y), batchsize=64, shuffle=True))

    a = tied()
    steer(a, 7)
    blob = checkpoint_to_bytes(a)
    steer(a, 9)
    b = tied()
    checkpoint_from_bytes(b, blob)
    steer(b, 9)
    assert b.model.layers[0].weight is b.model.layers[1].weight
    assert b.opt_state.layers[0].weight is b.opt_state.layers[1].weight
    assert same_weights(state_dict(a.model), state_dict(b.model))


@pytest.mark.parametrize("change, path", [
    (lambda c: c[0].update(drives=["layers.enc.layers.9.weight"]), "controls[0].drives"),
    (lambda c: c[1]["schedule"].update(factor=3), "controls[1].schedule.factor"),
    (lambda c: c[0].update(start=-1), "controls[0].start"),
    (lambda c: c[0].pop("field"), "controls[0].field"),
    (lambda c: c[0].update(field=3), "controls[0].field"),
    (lambda c: c[0].update(path="layers.nope"), "controls[0].path"),
])
def test_schedules_in_force_are_checked_on_load(change, path):
    a = build()
    steer(a, 3)
    before = a.controls.state()
    saved = json.loads(json.dumps(before))
    change(saved)
    with pytest.raises(SpecError) as info:
        a.controls.load_state(saved)
    assert info.value.path == path
    assert a.controls.state() == before  # nothing was taken in


def _resume(checkpoint: str, steps: int, out: str) -> None:
    trainer = build()
    load_checkpoint(trainer, checkpoint)
    steer(trainer, steps)
    save_weights(trainer.model, out)
    with open(os.path.splitext(out)[0] + ".json", "w") as f:
        json.dump({"history": history(trainer), "steps": trainer.steps,
                   "epoch": trainer.epoch}, f)


if __name__ == "__main__":
    _resume(sys.argv[1], int(sys.argv[2]), sys.argv[3])
