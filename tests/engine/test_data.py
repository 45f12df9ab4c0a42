"""DataLoader: batches, shuffling per epoch from its own seeded generator, resuming, memory."""

from __future__ import annotations

import json
import tracemalloc

import numpy as np
import pytest
from kiln_engine import random as kiln_random
from kiln_engine._spec import SpecError
from kiln_engine.data import DataLoader


def xy(n=10):
    return np.arange(n * 3, dtype=np.float64).reshape(n, 3), np.arange(n)


def epoch_labels(loader):
    return [y.tolist() for _, y in loader]


@pytest.mark.parametrize("n, bs, partial, batches, last", [
    (10, 4, True, 3, 2), (10, 4, False, 2, 4), (12, 4, True, 3, 4), (12, 4, False, 3, 4),
    (3, 5, True, 1, 3), (1, 1, True, 1, 1),
])
def test_len_and_batch_sizes(n, bs, partial, batches, last):
    loader = DataLoader(xy(n), batchsize=bs, partial=partial)
    sizes = [len(y) for _, y in loader]
    assert len(loader) == len(sizes) == batches
    assert sizes[-1] == last and all(s == bs for s in sizes[:-1])


def test_without_shuffle_batches_are_views_in_order():
    x, y = xy(10)
    batches = list(DataLoader((x, y), batchsize=4))
    assert [b[1].tolist() for b in batches] == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]
    assert all(np.shares_memory(bx, x) and np.shares_memory(by, y) for bx, by in batches)


def test_shuffle_covers_every_observation_and_reshuffles_each_epoch():
    x, y = xy(50)
    loader = DataLoader((x, y), batchsize=8, shuffle=True, rng=1)
    epochs = [epoch_labels(loader) for _ in range(3)]
    for ep in epochs:
        assert sorted(i for batch in ep for i in batch) == list(range(50))
    assert epochs[0] != epochs[1] != epochs[2]
    for bx, by in loader:  # inputs and labels stay paired
        np.testing.assert_array_equal(bx, x[by])
    # the same seed gives the same sequence of epochs; another seed another one
    again = DataLoader((x, y), batchsize=8, shuffle=True, rng=1)
    assert [epoch_labels(again) for _ in range(3)] == epochs
    other = DataLoader((x, y), batchsize=8, shuffle=True, rng=2)
    assert epoch_labels(other) != epochs[0]


def test_own_generator_seeded_from_kiln_random():
    x, y = xy(30)
    kiln_random.seed(7)
    a = DataLoader((x, y), batchsize=4, shuffle=True)
    kiln_random.seed(7)
    b = DataLoader((x, y), batchsize=4, shuffle=True)
    np.random.default_rng(0).random(5)  # other generators do not disturb it
    assert epoch_labels(a) == epoch_labels(b)
    assert a.rng is not kiln_random.default_rng()


def test_a_generator_passed_in_is_used():
    x, y = xy(30)
    g = np.random.default_rng(3)
    loader = DataLoader((x, y), batchsize=30, shuffle=True, rng=g)
    (_, labels), = list(loader)
    np.testing.assert_array_equal(labels, np.random.default_rng(3).permutation(30))


def test_dict_and_single_array_inputs():
    x, y = xy(9)
    batches = list(DataLoader({"img": x, "label": y}, batchsize=4, shuffle=True, rng=0))
    assert all(set(b) == {"img", "label"} for b in batches)
    for b in batches:
        np.testing.assert_array_equal(b["img"], x[b["label"]])
    singles = list(DataLoader(x, batchsize=4))
    assert all(isinstance(b, np.ndarray) for b in singles)
    np.testing.assert_array_equal(np.concatenate(singles), x)


@pytest.mark.parametrize("data, kwargs, err, words", [
    ((np.zeros((5, 2)), np.zeros(4)), {}, ValueError, "data[0] has 5, data[1] has 4"),
    ({"x": np.zeros((5, 2)), "y": np.zeros(6)}, {}, ValueError, "data['x'] has 5, data['y'] has 6"),
    ((np.zeros((5, 2)), [1, 2, 3, 4, 5]), {}, TypeError, "data[1] must be a numpy or cupy array"),
    ((np.zeros(()),), {}, ValueError, "data[0] is a 0-d array"),
    ((), {}, ValueError, "at least one array"),
    (np.zeros((0, 3)), {}, ValueError, "no observations"),
    (np.zeros((5, 2)), {"batchsize": 0}, ValueError, "batchsize must be a positive integer"),
    (np.zeros((5, 2)), {"batchsize": 6, "partial": False}, ValueError, "no batch at all"),
    (np.zeros((5, 2)), {"shuffle": 1}, TypeError, "shuffle must be True or False"),
    (np.zeros((5, 2)), {"rng": "seed"}, TypeError, "rng must be a seed"),
])
def test_bad_input_is_refused_clearly(data, kwargs, err, words):
    with pytest.raises(err) as info:
        DataLoader(data, **kwargs)
    assert words in str(info.value)


def test_an_epoch_allocates_one_batch_at_a_time():
    x = np.random.default_rng(0).random((20_000, 50))  # 8 MB
    y = np.arange(20_000)
    loader = DataLoader((x, y), batchsize=100, shuffle=True, rng=0)
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        for bx, by in loader:
            assert bx.shape[0] == by.shape[0]
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    batch = 100 * 50 * 8 + 100 * 8
    order = 20_000 * 8
    assert peak < order + 4 * batch + 64_000, peak  # never anything like the 8 MB data set


def test_state_resumes_mid_epoch_in_a_fresh_loader():
    x, y = xy(23)
    a = DataLoader((x, y), batchsize=4, shuffle=True, rng=11)
    epoch_labels(a)  # one full epoch first
    it = iter(a)
    taken = [next(it)[1].tolist() for _ in range(2)]
    state = json.loads(json.dumps(a.state()))
    assert state["position"] == 2
    rest_a = [b.tolist() for _, b in it]
    later_a = [epoch_labels(a) for _ in range(2)]

    b = DataLoader((x, y), batchsize=4, shuffle=True, rng=999)
    b.load_state(state)
    assert b.state() == state  # a pending resume reads back as saved
    rest_b = epoch_labels(b)
    assert rest_b == rest_a and len(taken + rest_b) == len(a)
    assert [epoch_labels(b) for _ in range(2)] == later_a


def test_state_between_epochs_starts_a_fresh_epoch():
    x, y = xy(12)
    a = DataLoader((x, y), batchsize=4, shuffle=True, rng=5)
    epoch_labels(a)
    state = a.state()
    assert state["position"] is None
    b = DataLoader((x, y), batchsize=4, shuffle=True, rng=0)
    b.load_state(state)
    assert epoch_labels(b) == epoch_labels(a)


def test_leaving_an_epoch_early_then_iterating_starts_a_new_epoch():
    x, y = xy(12)
    a = DataLoader((x, y), batchsize=4, shuffle=True, rng=5)
    b = DataLoader((x, y), batchsize=4, shuffle=True, rng=5)
    for _ in a:
        break
    epoch_labels(b)
    assert epoch_labels(a) == epoch_labels(b)  # a's second epoch is a whole new shuffle


@pytest.mark.parametrize("change, path", [
    ({"nobs": 11}, "loader.nobs"), ({"batchsize": 3}, "loader.batchsize"),
    ({"shuffle": False}, "loader.shuffle"), ({"position": 3}, "loader.position"),
    ({"position": -1}, "loader.position"), ({"rng": {"bit_generator": "MT19937"}}, "loader.rng"),
    ({"rng": {"bit_generator": "PCG64", "state": "x"}}, "loader.rng"),
])
def test_load_state_names_what_does_not_match(change, path):
    x, y = xy(12)
    a = DataLoader((x, y), batchsize=4, shuffle=True, rng=5)
    with pytest.raises(SpecError) as info:
        a.load_state({**a.state(), **change})
    assert info.value.path == path
    assert epoch_labels(a) == epoch_labels(DataLoader((x, y), batchsize=4, shuffle=True, rng=5))
