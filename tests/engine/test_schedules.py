"""Schedules: values against ParameterSchedulers.jl's formulas, JSON round trips, errors."""

from __future__ import annotations

import itertools
import json
import math

import pytest
from kiln_engine._spec import SpecError
from kiln_engine.schedules import (
    SCHEDULES,
    Constant,
    CosAnneal,
    Exp,
    Interpolator,
    Inv,
    OneCycle,
    Poly,
    ReduceOnPlateau,
    Schedule,
    Sequence,
    Shifted,
    Sin,
    SinDecay2,
    SinExp,
    Step,
    Triangle,
    TriangleDecay2,
    TriangleExp,
)

pi = math.pi


def tri(t, p):
    return 2 / pi * abs(math.asin(math.sin(pi * (t - 1) / p)))


def rsin(t, p):
    return abs(math.sin(pi * (t - 1) / p))


# (schedule, formula of t) — the formulas as ParameterSchedulers.jl documents them.
FORMULAS = [
    (Exp(start=0.5, decay=0.9), lambda t: 0.5 * 0.9 ** (t - 1)),
    (Poly(start=0.2, degree=2, max_iter=60), lambda t: 0.2 * (1 - (t - 1) / 60) ** 2),
    (Inv(start=0.3, decay=0.1, degree=1.5), lambda t: 0.3 / (1 + (t - 1) * 0.1) ** 1.5),
    (Triangle(l0=0.1, l1=0.5, period=8), lambda t: 0.4 * tri(t, 8) + 0.1),
    (TriangleDecay2(l0=0.5, l1=0.1, period=8),
     lambda t: 0.4 * tri(t, 8) / 2 ** math.floor((t - 1) / 8) + 0.1),
    (TriangleExp(l0=0.1, l1=0.5, period=8, decay=0.95),
     lambda t: 0.4 * tri(t, 8) * 0.95 ** (t - 1) + 0.1),
    (Sin(l0=0.0, l1=1.0, period=6), lambda t: rsin(t, 6)),
    (SinDecay2(l0=0.0, l1=1.0, period=6), lambda t: rsin(t, 6) / 2 ** math.floor((t - 1) / 6)),
    (SinExp(l0=0.2, l1=1.0, period=6, decay=0.9),
     lambda t: 0.8 * rsin(t, 6) * 0.9 ** (t - 1) + 0.2),
    (CosAnneal(l0=1.0, l1=0.1, period=10),
     lambda t: 0.9 * (1 + math.cos(pi * ((t - 1) % 10) / 10)) / 2 + 0.1),
    (CosAnneal(l0=1.0, l1=0.1, period=10, restart=False),
     lambda t: 0.9 * (1 + math.cos(pi * (t - 1) / 10)) / 2 + 0.1),
    (Constant(value=0.25), lambda t: 0.25),
    (Shifted(Exp(start=1.0, decay=0.5), offset=4), lambda t: 0.5 ** (t + 2)),
    (Interpolator(Exp(start=1.0, decay=0.5), rate=3), lambda t: 0.5 ** (math.ceil(t / 3) - 1)),
]


@pytest.mark.parametrize("schedule, formula", FORMULAS, ids=lambda v: type(v).__name__)
def test_values_follow_the_formula(schedule, formula):
    for t in range(1, 41):
        assert schedule(t) == pytest.approx(formula(t), rel=1e-12, abs=1e-15), t


@pytest.mark.parametrize("sizes, expected", [
    ([2, 3], [1, 1, 0.5, 0.5, 0.5, 0.25, 0.25, 0.25]),  # one more decay after the list, then flat
    (3, [1, 1, 1, 0.5, 0.5, 0.5, 0.25, 0.25]),           # an integer repeats for ever
])
def test_step_decays_at_each_boundary(sizes, expected):
    s = Step(start=1.0, decay=0.5, step_sizes=sizes)
    assert [s(t) for t in range(1, 9)] == expected


def test_cyclic_landmarks():
    # Triangle: the low end at t=1, the high end half a period later, low again a period on.
    tr = Triangle(l0=0.2, l1=1.0, period=10)
    assert (tr(1), tr(6), tr(11)) == pytest.approx((0.2, 1.0, 0.2))
    # CosAnneal restarts at l0 every period; without restarts it climbs back smoothly.
    ca = CosAnneal(l0=1.0, l1=0.0, period=4)
    assert [ca(t) for t in (1, 3, 5)] == pytest.approx([1.0, 0.5, 1.0])
    assert CosAnneal(l0=1.0, l1=0.0, period=4, restart=False)(5) == pytest.approx(0.0)
    # Poly reaches 0 after max_iter steps and stays there.
    p = Poly(start=1.0, degree=1, max_iter=4)
    assert [p(t) for t in range(1, 8)] == pytest.approx([1, 0.75, 0.5, 0.25, 0, 0, 0])


def test_one_cycle_warms_up_then_anneals():
    s = OneCycle(20, 1.0)  # warm-up over ceil(0.25 * 20) = 5 steps
    vals = [s(t) for t in range(1, 26)]
    assert vals[0] == pytest.approx(1.0 / 25)         # startval = maxval / 25
    assert max(vals) == vals[5] == pytest.approx(1.0)  # the peak right after the warm-up
    assert all(a < b for a, b in itertools.pairwise(vals[:6]))
    assert all(a > b for a, b in itertools.pairwise(vals[5:20]))
    assert vals[20:] == [1.0 / 1e5] * 5                 # endval after nsteps
    # the warm-up is a half cosine from startval to maxval
    assert vals[2] == pytest.approx(0.04 + 0.96 * (1 - math.cos(pi * 2 / 5)) / 2)
    custom = OneCycle(10, 2.0, startval=0.5, endval=0.1, percent_start=0.3)
    assert custom(1) == 0.5 and custom(11) == 0.1 and custom(4) == pytest.approx(2.0)


def test_sequence_starts_each_schedule_at_its_own_t1():
    warm = Triangle(l0=0.0, l1=0.1, period=10)
    decay = Exp(start=0.1, decay=0.5)
    s = Sequence([warm, decay], [5, 10])
    assert [s(t) for t in range(1, 6)] == [warm(t) for t in range(1, 6)]
    assert [s(t) for t in range(6, 30)] == [decay(t) for t in range(1, 25)]  # the last goes on
    numbers = Sequence([0.5, 0.1], [2, 1])
    assert [numbers(t) for t in range(1, 5)] == [0.5, 0.5, 0.1, 0.1]
    assert numbers.schedules == (Constant(0.5), Constant(0.1))


def test_t_must_be_a_positive_integer():
    for bad in (0, -1, 1.5, True):
        with pytest.raises(ValueError, match="t must be an integer >= 1"):
            Exp(start=1.0, decay=0.5)(bad)


EXAMPLES = [s for s, _ in FORMULAS] + [
    Step(start=1.0, decay=0.5, step_sizes=[2, 3]),
    Step(start=1.0, decay=0.5, step_sizes=7),
    OneCycle(100, 0.1, percent_start=0.3),
    Sequence([Triangle(l0=0.0, l1=0.1, period=10), 0.05, Interpolator(Exp(0.1, 0.9), 5)],
             [5, 3, 100]),
    ReduceOnPlateau(0.1, factor=0.5, patience=2, mode="max", metric="val_accuracy"),
]


def test_every_schedule_has_an_example():
    assert {type(s).__name__ for s in EXAMPLES} == set(SCHEDULES)


@pytest.mark.parametrize("schedule", EXAMPLES, ids=lambda s: type(s).__name__)
def test_spec_round_trip(schedule):
    spec = schedule.to_spec()
    text = json.dumps(spec)
    back = Schedule.from_spec(json.loads(text), "job.schedule")
    assert back == schedule
    assert back.to_spec() == spec
    assert [back(t) for t in range(1, 30)] == [schedule(t) for t in range(1, 30)]


@pytest.mark.parametrize("spec, path, words", [
    ({"type": "Exp", "start": 0.1, "decay": -1}, "s.decay", "(0.0, inf]"),
    ({"type": "Exp", "start": 0.1}, "s.decay", "is required"),
    ({"type": "Exp", "start": 0.1, "decay": 0.5, "lr": 1}, "s.lr", "unknown field"),
    ({"type": "Nope"}, "s.type", "must be one of"),
    ({"start": 0.1}, "s.type", "is required"),
    ({"type": "Exp", "start": "0.1", "decay": 0.5}, "s.start", "finite number"),
    ({"type": "CosAnneal", "l0": 1, "l1": 0, "period": 0}, "s.period", "positive integer"),
    ({"type": "CosAnneal", "l0": 1, "l1": 0, "period": 3, "restart": 1}, "s.restart",
     "true or false"),
    ({"type": "Step", "start": 1, "decay": 0.5, "step_sizes": [2, 0]}, "s.step_sizes[1]",
     "positive integer"),
    ({"type": "Step", "start": 1, "decay": 0.5, "step_sizes": []}, "s.step_sizes", "non-empty"),
    ({"type": "OneCycle", "nsteps": 10, "maxval": 1, "percent_start": 1.0},
     "s.percent_start", "(0, 1)"),
    ({"type": "Sequence", "schedules": [0.1, {"type": "Exp", "start": 1, "decay": 0}],
      "step_sizes": [1, 1]}, "s.schedules[1].decay", "(0.0, inf]"),
    ({"type": "Sequence", "schedules": [0.1, "fast"], "step_sizes": [1, 1]}, "s.schedules[1]",
     "schedule spec"),
    ({"type": "Sequence", "schedules": [0.1, 0.2], "step_sizes": [3]}, "s.step_sizes",
     "one entry per schedule"),
    ({"type": "Shifted", "schedule": {"type": "Exp", "start": 1}, "offset": 2},
     "s.schedule.decay", "is required"),
    ({"type": "Interpolator", "schedule": {"type": "Constant", "value": 1}, "rate": 0},
     "s.rate", "(0.0, inf]"),
    ({"type": "ReduceOnPlateau", "start": 0.1, "mode": "lowest"}, "s.mode", "must be one of"),
    ({"type": "ReduceOnPlateau", "start": 0.1, "factor": 2}, "s.factor", "(0, 1)"),
    ("Exp", "s", "schedule spec"),
])
def test_spec_errors_name_the_field(spec, path, words):
    with pytest.raises(SpecError) as info:
        Schedule.from_spec(spec, "s")
    assert info.value.path == path
    assert words in str(info.value)


def test_python_construction_checks_the_same_way():
    with pytest.raises(SpecError, match=r"^Exp\.decay: .*got -2"):
        Exp(start=1.0, decay=-2)
    with pytest.raises(SpecError, match=r"^Sequence\.step_sizes: must have one entry"):
        Sequence([0.1, 0.2], [3])
    with pytest.raises(SpecError, match=r"^Shifted\.schedule: must be a schedule spec"):
        Shifted(0.1, offset=2)


def test_reduce_on_plateau_waits_patience_then_cools_down():
    s = ReduceOnPlateau(1.0, factor=0.5, patience=2, cooldown=1, min_value=0.2)
    seen = []
    for metric in [5, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 3]:
        seen.append((s.observe(metric), s(1)))
    reduced_at = [i for i, (hit, _) in enumerate(seen) if hit]
    # 3 epochs without improvement (> patience) -> halve; the cooldown epoch does not count
    assert reduced_at == [4, 8]
    assert [v for _, v in seen] == [1, 1, 1, 1, .5, .5, .5, .5, .25, .25, .25, .25, .25]
    s2 = ReduceOnPlateau(1.0, factor=0.1, patience=0, min_value=0.2)
    s2.observe(1.0)
    assert s2.observe(1.0) and s2(5) == 0.2      # floored at min_value
    assert not s2.observe(1.0) and s2(6) == 0.2  # and no "reduction" below it


def test_reduce_on_plateau_modes_threshold_and_state():
    up = ReduceOnPlateau(1.0, patience=0, mode="max", threshold=0.1)
    up.observe(1.0)
    assert not up.observe(1.2)  # 20% better than the best: an improvement
    assert up.observe(1.25)     # only ~4% better: counts as no improvement
    down = ReduceOnPlateau(1.0, patience=0)
    down.observe(1.0)
    assert down.observe(float("nan"))  # a non-finite metric is never an improvement
    fresh = ReduceOnPlateau(1.0, patience=0)
    fresh.load_state(json.loads(json.dumps(down.state())))
    assert fresh.state() == down.state() and fresh(1) == down(1) == pytest.approx(0.1)
    with pytest.raises(SpecError, match=r"state\.bad_epochs"):
        fresh.load_state({**down.state(), "bad_epochs": -1})
