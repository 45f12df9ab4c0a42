"""train(), the Trainer, schedules in force, non-finite policies, early stopping, and the
seed's training loop (/work/shared/flux-training.md, "Training Loops") on digits."""

from __future__ import annotations

import logging
import math
from types import SimpleNamespace

import numpy as np
import pytest
from kiln_engine import (
    Adam,
    Chain,
    CosAnneal,
    DataLoader,
    Dense,
    Descent,
    Exp,
    Interpolator,
    NonFiniteLossError,
    OptimiserChain,
    PathError,
    ReduceOnPlateau,
    Trainer,
    WeightDecay,
    accuracy,
    adjust,
    early_stopping,
    freeze,
    losses,
    patience,
    plateau,
    relu,
    setup,
    state_dict,
    thaw,
    train,
    update,
    withgradient,
)
from kiln_engine import random as kiln_random

logger = logging.getLogger("test_training")


@pytest.fixture(scope="module")
def digits():
    sklearn = pytest.importorskip("sklearn.datasets")
    d = sklearn.load_digits()
    x = (d.data / 16.0).astype(np.float32)
    y = d.target.astype(np.int64)
    order = np.random.default_rng(0).permutation(len(x))
    x, y = x[order], y[order]
    cut = int(0.8 * len(x))
    return x[:cut], y[:cut], x[cut:], y[cut:]


def mlp(seed=0, hidden=32):
    kiln_random.seed(seed)
    return Chain(enc=Chain(Dense(64, hidden, relu)), dec=Chain(Dense(hidden, 10)))


def xent(m, x, y):
    return losses.logitcrossentropy(m(x), y)


def weights(model):
    return {k: v.copy() for k, v in state_dict(model).items()}


def same(a, b):
    return a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)


def toy(n=40, seed=1):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, 4)).astype(np.float32), rng.integers(0, 3, n)


def small():
    kiln_random.seed(3)
    return Chain(Dense(4, 8, relu), Dense(8, 3))


# ------------------------------------------------------------------------- train()


def test_train_is_the_hand_written_loop():
    x, y = toy()
    m1, m2 = small(), small()
    s1, s2 = setup(Adam(0.01), m1), setup(Adam(0.01), m2)
    result = train(xent, m1, DataLoader((x, y), batchsize=8), s1)
    for xb, yb in DataLoader((x, y), batchsize=8):
        _, grads = withgradient(lambda m: xent(m, xb, yb), m2)
        update(s2, m2, grads[0])
    assert same(weights(m1), weights(m2))
    assert len(result.losses) == 5 and result.skipped == []
    assert result.mean_loss == pytest.approx(np.mean(result.losses))


def poisoned(bad):
    """The cross entropy, made NaN on the batches whose first index ``i`` is in ``bad``
    (validation batches carry no index and are never poisoned)."""
    def loss(m, x, y, i=None):
        out = xent(m, x, y)
        return out * math.nan if i is not None and int(i[0]) in bad else out
    return loss


def test_nonfinite_loss_skips_the_update_and_warns_with_the_batch(caplog):
    x, y = toy()
    idx = np.arange(40)
    m1, m2 = small(), small()
    s1, s2 = setup(Adam(0.01), m1), setup(Adam(0.01), m2)
    with caplog.at_level(logging.WARNING, logger="kiln_engine.training"):
        result = train(poisoned({16}), m1, DataLoader((x, y, idx), batchsize=8), s1, epoch=4)
    assert result.skipped == [2] and math.isnan(result.losses[2])
    assert "loss is nan on batch 2 of epoch 4; skipping this update" in caplog.text
    kept = [b for i, b in enumerate(DataLoader((x, y, idx), batchsize=8)) if i != 2]
    train(poisoned(set()), m2, kept, s2)  # the same run without that batch at all
    assert same(weights(m1), weights(m2))
    assert result.mean_loss == pytest.approx(np.mean([v for v in result.losses if v == v]))


def test_raise_policy_stops_before_the_update():
    x, y = toy()
    idx = np.arange(40)
    m1, m2 = small(), small()
    s1, s2 = setup(Adam(0.01), m1), setup(Adam(0.01), m2)
    with pytest.raises(NonFiniteLossError, match="loss is nan on batch 3 of epoch 1") as info:
        train(poisoned({24}), m1, DataLoader((x, y, idx), batchsize=8), s1,
              on_nonfinite="raise")
    assert (info.value.batch, info.value.epoch) == (3, 1) and math.isnan(info.value.value)
    train(poisoned(set()), m2, list(DataLoader((x, y, idx), batchsize=8))[:3], s2)
    assert same(weights(m1), weights(m2))


def test_stop_after_n_nonfinite_losses_in_a_row():
    x, y = toy()
    idx = np.arange(40)
    loader = DataLoader((x, y, idx), batchsize=8)
    # two apart (batches 1 and 3): never two in a row, so training goes on
    result = train(poisoned({8, 24}), small(), loader, setup(Adam(0.01), small()),
                   max_nonfinite=2)
    assert result.skipped == [1, 3]
    with pytest.raises(NonFiniteLossError, match=r"2 non-finite losses in a row.*batch 3"):
        train(poisoned({16, 24}), small(), loader, setup(Adam(0.01), small()),
              max_nonfinite=2)


@pytest.mark.parametrize("kwargs, words", [
    ({"on_nonfinite": "ignore"}, "on_nonfinite must be one of"),
    ({"max_nonfinite": 0}, "max_nonfinite must be a positive integer"),
])
def test_bad_policies_are_refused(kwargs, words):
    x, y = toy()
    m = small()
    with pytest.raises(ValueError, match=words):
        train(xent, m, DataLoader((x, y)), setup(Adam(), m), **kwargs)


# ------------------------------------------------------------------ the seed's loop


@pytest.fixture(scope="module")
def seed_loop(digits):
    """The "Training Loops" example of the seed, line for line, with controls between
    epochs: an adjust after epoch 2, enc frozen for epoch 4 and thawed after it."""
    xtr, ytr, xva, yva = digits
    model = mlp()
    train_set = DataLoader((xtr, ytr), batchsize=32, shuffle=True, rng=0)

    def my_loss(result, label):
        return losses.logitcrossentropy(result, label)

    def my_accuracy(m, data):
        return accuracy(m(data[0]), data[1])

    opt_state = setup(OptimiserChain(WeightDecay(1e-4), Adam(1e-3)), model)
    my_log = []
    snapshots = {}
    stopped_after = None
    for epoch in range(1, 101):
        losses_ = []
        for i, data in enumerate(train_set):
            input, label = data
            val, grads = withgradient(lambda m: my_loss(m(input), label), model)
            losses_.append(val)
            if not math.isfinite(val):
                logger.warning("loss is %s on item %d (epoch %d)", val, i, epoch)
                continue
            update(opt_state, model, grads[0])
        acc = my_accuracy(model, (xva, yva))
        my_log.append({"acc": acc, "losses": losses_})
        snapshots[epoch] = weights(model)
        if acc > 0.95:
            stopped_after = epoch
            break
        if epoch == 2:
            adjust(opt_state, 5e-4)
        if epoch == 3:
            freeze(opt_state.layers.enc)
        if epoch == 4:
            thaw(opt_state)
    return SimpleNamespace(log=my_log, snapshots=snapshots, stopped_after=stopped_after,
                           opt_state=opt_state, final=weights(model))


def test_seed_training_loop_on_digits(seed_loop):
    assert seed_loop.stopped_after is not None and 4 < seed_loop.stopped_after < 100
    assert seed_loop.log[-1]["acc"] >= 0.95
    assert len(seed_loop.log[0]["losses"]) == 45  # 1437 samples in batches of 32
    snaps = seed_loop.snapshots
    enc = ["layers.enc.layers.0.weight", "layers.enc.layers.0.bias"]
    dec = ["layers.dec.layers.0.weight", "layers.dec.layers.0.bias"]
    for p in enc:  # frozen through epoch 4, moving before and after
        assert np.array_equal(snaps[3][p], snaps[4][p])
        assert not np.array_equal(snaps[2][p], snaps[3][p])
        assert not np.array_equal(snaps[4][p], snaps[5][p])
    for p in dec:
        assert not np.array_equal(snaps[3][p], snaps[4][p])
    opt_state = seed_loop.opt_state
    for leaf in (opt_state.layers.enc.layers[0].weight, opt_state.layers.dec.layers[0].bias):
        assert leaf.rule == OptimiserChain(WeightDecay(1e-4), Adam(5e-4)) and not leaf.frozen


def test_trainer_runs_the_seed_loop_bit_for_bit(digits, seed_loop):
    """The Trainer, with the same controls applied from its epoch hook, is the seed loop."""
    stopped_after, expected = seed_loop.stopped_after, seed_loop.final
    xtr, ytr, xva, yva = digits
    model = mlp()
    opt_state = setup(OptimiserChain(WeightDecay(1e-4), Adam(1e-3)), model)

    def controls(trainer, record):
        if record.epoch == 2:
            trainer.adjust("", 5e-4)
        if record.epoch == 3:
            trainer.freeze("layers.enc")
        if record.epoch == 4:
            trainer.thaw("")

    steps = []
    trainer = Trainer(xent, model, opt_state,
                      DataLoader((xtr, ytr), batchsize=32, shuffle=True, rng=0),
                      validation=(xva, yva), metrics={"accuracy": accuracy},
                      stop=[lambda r: r.metrics["val_accuracy"] > 0.95],
                      on_epoch=[controls], on_step=[lambda t, r: steps.append(r.step)])
    records = trainer.run(100)
    assert len(records) == stopped_after and trainer.stopped.startswith("stop criterion 0")
    assert same(weights(model), expected)
    assert steps == list(range(1, trainer.steps + 1))
    assert [r.frozen for r in records[:5]] == [[], [], [], ["layers.enc"], []]
    assert [r.hyper["eta"] for r in records[:3]] == [{"": 1e-3}, {"": 1e-3}, {"": 5e-4}]
    assert records[-1].metrics["val_accuracy"] > 0.95
    assert all(r.samples_per_s > 0 and r.skipped == [] for r in records)
    assert records[0].metrics["train_loss"] > records[-1].metrics["train_loss"]
    with pytest.raises(RuntimeError, match="training has stopped"):
        trainer.step()


# ------------------------------------------------------------ schedules and controls


def eta_of(opt_state, path):
    rule = opt_state[path].rule
    return rule.eta if not isinstance(rule, OptimiserChain) else rule.rules[-1].eta


def test_a_schedule_drives_eta_each_step_until_adjust_replaces_it_there():
    x, y = toy()
    model = small()
    opt_state = setup(Descent(0.1), model)
    sched = CosAnneal(l0=0.1, l1=0.01, period=7)
    seen = []
    trainer = Trainer(xent, model, opt_state, DataLoader((x, y), batchsize=8),
                      schedules=[("", sched)],
                      on_step=[lambda t, r: seen.append(
                          (eta_of(opt_state, "layers.0.weight"),
                           eta_of(opt_state, "layers.1.weight")))])
    for _ in range(6):
        trainer.step()
    assert [s[0] for s in seen] == [sched(t) for t in range(1, 7)]
    trainer.adjust("layers.0", 0.5)  # takes layers.0 away from the schedule, only there
    for _ in range(6):
        trainer.step()
    assert [s[0] for s in seen[6:]] == [0.5] * 6
    assert [s[1] for s in seen] == [sched(t) for t in range(1, 13)]
    force = trainer.controls.in_force()
    assert force["layers.0.weight"]["scheduled"] == {}
    assert force["layers.1.bias"]["scheduled"] == {"eta": ""}
    assert trainer.history[-1].hyper["eta"] == {"layers.0": 0.5, "layers.1": sched(10)}
    trainer.adjust("", 0.2)  # the whole tree: the schedule is gone
    assert trainer.controls.bindings == []


def test_a_schedule_bound_mid_run_starts_at_its_t1_and_per_epoch_via_interpolator():
    x, y = toy()
    model = small()
    opt_state = setup(OptimiserChain(WeightDecay(1e-3), Adam(0.01)), model)
    loader = DataLoader((x, y), batchsize=8)  # 5 steps per epoch
    trainer = Trainer(xent, model, opt_state, loader)
    trainer.run(1)
    per_epoch = Interpolator(Exp(start=0.03, decay=0.5), rate=len(loader))
    trainer.schedule("layers.1", per_epoch)
    trainer.schedule("layers.0", Exp(start=1e-3, decay=0.5), field="lambda_")
    records = trainer.run(3)
    assert [r.hyper["eta"]["layers.1"] for r in records] == [0.03, 0.015, 0.0075]
    assert [r.hyper["lambda_"]["layers.0"] for r in records] == [
        1e-3 * 0.5 ** 4, 1e-3 * 0.5 ** 9, 1e-3 * 0.5 ** 14]
    assert all(r.hyper["eta"]["layers.0"] == 0.01 for r in records)


def test_reduce_on_plateau_lowers_eta_when_the_metric_stalls():
    x, y = toy()
    model = small()
    opt_state = setup(Adam(0.01), model)
    # "max" mode on a falling training loss: never an improvement after the first epoch
    plateau_ = ReduceOnPlateau(0.01, factor=0.5, patience=1, mode="max", metric="train_loss")
    trainer = Trainer(xent, model, opt_state, DataLoader((x, y), batchsize=8),
                      schedules=[("", plateau_)])
    records = trainer.run(6)
    assert [r.hyper["eta"][""] for r in records] == [0.01, 0.01, 0.01, 0.005, 0.005, 0.0025]
    with pytest.raises(ValueError, match=r"watches 'val_loss'.*records \['train_loss'\]"):
        trainer.schedule("", ReduceOnPlateau(0.01))


def test_controls_refuse_bad_paths_and_fields_changing_nothing():
    x, y = toy()
    model = small()
    opt_state = setup(Adam(0.01), model)
    trainer = Trainer(xent, model, opt_state, DataLoader((x, y), batchsize=8))
    with pytest.raises(PathError, match=r"layers\.2"):
        trainer.adjust("layers.2", 0.1)
    with pytest.raises(PathError):
        trainer.freeze("layers.0.kernel")
    with pytest.raises(ValueError, match="no hyper-parameter 'lr'"):
        trainer.schedule("layers.0", Exp(start=0.1, decay=0.9), field="lr")
    with pytest.raises(TypeError, match="must be a Schedule"):
        trainer.schedule("", 0.1)
    assert trainer.controls.bindings == [] and eta_of(opt_state, "layers.0.weight") == 0.01


def test_trainer_records_skipped_steps_and_validation_metrics():
    x, y = toy()
    idx = np.arange(40)
    model = small()
    trainer = Trainer(poisoned({8}), model, setup(Adam(0.01), model),
                      DataLoader((x, y, idx), batchsize=8),
                      validation=DataLoader((x[:20], y[:20]), batchsize=6),
                      metrics={"accuracy": accuracy})
    record = trainer.run_epoch()
    assert record.skipped == [1]
    assert set(record.metrics) == {"train_loss", "val_loss", "val_accuracy"}
    yhat = model(x[:20])
    assert record.metrics["val_accuracy"] == pytest.approx(np.mean(yhat.argmax(1) == y[:20]))
    assert record.metrics["val_loss"] == pytest.approx(float(xent(model, x[:20], y[:20])))


def test_trainer_refuses_bad_construction():
    x, y = toy()
    model = small()
    opt = setup(Adam(), model)
    with pytest.raises(TypeError, match="data must be a DataLoader"):
        Trainer(xent, model, opt, [(x, y)])
    with pytest.raises(TypeError, match="loss must be callable"):
        Trainer("mse", model, opt, DataLoader((x, y)))
    with pytest.raises(TypeError, match="metric 'acc' must be callable"):
        Trainer(xent, model, opt, DataLoader((x, y)), metrics={"acc": "accuracy"})
    with pytest.raises(TypeError, match="validation must be"):
        Trainer(xent, model, opt, DataLoader((x, y)), validation=[x, y])


def test_accuracy():
    yhat = np.array([[0.1, 0.9], [0.8, 0.2], [0.3, 0.7], [0.6, 0.4]])
    assert accuracy(yhat, np.array([1, 0, 0, 0])) == 0.75
    assert accuracy(yhat, np.eye(2)[[1, 0, 0, 0]]) == 0.75
    with pytest.raises(ValueError, match=r"class indices of shape \(4,\)"):
        accuracy(yhat, np.zeros(3, dtype=int))


# ---------------------------------------------------------------- early stopping


def test_patience_counts_in_a_row():
    p = patience(lambda v: v > 0, 3)
    assert [p(v) for v in [1, 1, 0, 1, 1, 1, 1]] == [False, False, False, False, False, True,
                                                      True]


def test_early_stopping_counts_calls_without_a_new_best():
    es = early_stopping(lambda v: v, 2)
    assert [es(v) for v in [5, 4, 4.5, 3, 3.5, 3.2]] == [False, False, False, False, False,
                                                         True]
    es = early_stopping(lambda v: v, 2, min_dist=0.5)  # improving by < 0.5 does not count
    assert [es(v) for v in [5, 4.8, 4.7]] == [False, False, True]
    acc = early_stopping(lambda v: v, 1, distance=lambda best, s: s - best,
                         init_score=-math.inf)
    assert [acc(v) for v in [0.5, 0.6, 0.55]] == [False, False, True]


def test_plateau_compares_with_the_last_score():
    pl = plateau(lambda v: v, 2, min_dist=0.1)
    assert [pl(v) for v in [1.0, 0.5, 0.45, 0.42, 0.3]] == [False, False, False, True, False]


def test_stop_helpers_save_and_restore_their_counts():
    es = early_stopping(lambda v: v, 3)
    for v in [5, 6, 7]:
        es(v)
    fresh = early_stopping(lambda v: v, 3)
    fresh.load_state(es.state())
    assert fresh.state() == es.state() == {"count": 2, "predicate": {"score": 5.0}}
    assert fresh(8) and es(8)
    with pytest.raises(ValueError, match="wait must be a positive integer"):
        patience(lambda: True, 0)
