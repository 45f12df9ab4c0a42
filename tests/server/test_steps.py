"""A job's step losses, downsampled by the server for charts: each point is a run of
``stride`` consecutive steps with their mean, lowest and highest finite loss, so a spike
in 100,000 steps still shows in 1,000 points. Checked against a plain-Python reference
over steps posted through the worker API of a real server."""

from __future__ import annotations

import math
import random

import pytest

from .test_worker_api import claimed  # noqa: F401  (a fixture)

N_STEPS = 100_000
#: Steps per log post: a post stays well under the test server's body limit.
PER_POST = 10_000


def _series() -> list[float | None]:
    """Noisy losses with a few skipped steps, one spike, one low outlier and a whole
    run of skipped steps (a point with nothing finite in it)."""
    rng = random.Random(7)
    losses: list[float | None] = [2.0 / (1 + i / 5000) + rng.random() * 0.1
                                  for i in range(N_STEPS)]
    for i in rng.sample(range(N_STEPS), 50):
        losses[i] = None
    losses[12_345] = 50.0
    losses[67_890] = -3.0
    losses[40_000:40_400] = [None] * 400
    return losses


def _reference(losses: list[float | None], max_points: int) -> dict:
    stride = max(1, math.ceil(len(losses) / max_points))
    out: dict = {"steps": [], "losses": [], "min": [], "max": [], "stride": stride,
                 "count": len(losses)}
    for i in range(0, len(losses), stride):
        finite = [v for v in losses[i:i + stride] if v is not None]
        out["steps"].append(i + 1)
        out["losses"].append(sum(finite) / len(finite) if finite else None)
        out["min"].append(min(finite) if finite else None)
        out["max"].append(max(finite) if finite else None)
    return out


def _post(worker, job_id, lease, losses: list[float | None]) -> None:
    for first in range(0, len(losses), PER_POST):
        r = worker.post(f"/v1/worker/jobs/{job_id}/logs", headers=lease, json={
            "steps": {"epoch": 1, "first_step": first + 1,
                      "losses": losses[first:first + PER_POST]}})
        assert r.status_code == 204, r.text


def _same(got: dict, want: dict) -> None:
    assert {k: got[k] for k in ("steps", "min", "max", "stride", "count")} == \
        {k: want[k] for k in ("steps", "min", "max", "stride", "count")}
    assert [m is None for m in got["losses"]] == [m is None for m in want["losses"]]
    assert [m for m in got["losses"] if m is not None] == \
        pytest.approx([m for m in want["losses"] if m is not None], rel=1e-12)


def test_downsampled_points_keep_each_runs_mean_and_extremes(user, worker,
                                                             claimed):  # noqa: F811
    job_id, lease, _, _ = claimed
    losses = _series()
    _post(worker, job_id, lease, losses)
    for max_points in (1000, 1500, 2000):  # 1500: the last point stands for fewer steps
        got = user.get(f"/v1/jobs/{job_id}/steps", params={"max_points": max_points}).json()
        _same(got, _reference(losses, max_points))
    few = user.get(f"/v1/jobs/{job_id}/steps", params={"max_points": 1000}).json()
    assert max(v for v in few["max"] if v is not None) == 50.0
    assert few["losses"][123] < 5.0 and few["max"][123] == 50.0  # the spike's run
    assert few["min"][678] == -3.0
    assert few["losses"][400] is None and few["min"][400] is None  # steps 40,001-40,100
    # More points than the server's cap (max_step_points, 2000) are not given.
    assert user.get(f"/v1/jobs/{job_id}/steps",
                    params={"max_points": 10**6}).json()["stride"] == 50
    assert user.get(f"/v1/jobs/{job_id}/steps").json()["stride"] == 50


def test_without_downsampling_each_point_is_a_step_and_its_own_extremes(user, worker,
                                                                        claimed):  # noqa: F811
    job_id, lease, _, _ = claimed
    losses = [1.5, None, 0.25, 3.0]
    _post(worker, job_id, lease, losses)
    got = user.get(f"/v1/jobs/{job_id}/steps").json()
    assert got == {"steps": [1, 2, 3, 4], "losses": losses, "min": losses, "max": losses,
                   "stride": 1, "count": 4}
    halves = user.get(f"/v1/jobs/{job_id}/steps", params={"max_points": 2}).json()
    assert halves == {"steps": [1, 3], "losses": [1.5, 1.625], "min": [1.5, 0.25],
                      "max": [1.5, 3.0], "stride": 2, "count": 4}


def test_a_job_without_steps_has_no_points(user, worker, claimed):  # noqa: F811
    job_id, _, _, _ = claimed
    assert user.get(f"/v1/jobs/{job_id}/steps").json() == {
        "steps": [], "losses": [], "min": [], "max": [], "stride": 1, "count": 0}


@pytest.mark.parametrize("bad", [0, -1, "many"])
def test_a_bad_max_points_is_a_422_naming_it(user, worker, claimed, bad):  # noqa: F811
    job_id, _, _, _ = claimed
    r = user.get(f"/v1/jobs/{job_id}/steps", params={"max_points": bad})
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["query", "max_points"]
