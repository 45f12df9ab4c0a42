"""The worker's kept datasets: kept by hash, least recently used dropped past the bound,
read-only so that no job can change the next one's data."""

from __future__ import annotations

import numpy as np
import pytest
from kiln_server.worker.datasets import LoadedDatasets


def _loader(n: int, calls: list[int]):
    def load() -> dict[str, np.ndarray]:
        calls.append(n)
        return {"x": np.zeros(n, np.uint8)}
    return load


def test_a_kept_dataset_is_loaded_once():
    kept, calls = LoadedDatasets(100), []
    a = kept.get("a", _loader(10, calls))
    assert kept.get("a", _loader(10, calls)) is a
    assert calls == [10]
    assert "a" in kept and kept.nbytes == 10


def test_the_least_recently_used_go_first_past_the_bound():
    kept, calls = LoadedDatasets(100), []
    kept.get("a", _loader(40, calls))
    kept.get("b", _loader(40, calls))
    kept.get("a", _loader(40, calls))  # a is now the most recently used
    kept.get("c", _loader(40, calls))  # 120 bytes: b goes
    assert ("a" in kept, "b" in kept, "c" in kept) == (True, False, True)
    assert kept.nbytes == 80 and calls == [40, 40, 40]


def test_a_dataset_larger_than_the_bound_is_used_but_not_kept():
    kept, calls = LoadedDatasets(100), []
    kept.get("a", _loader(40, calls))
    assert kept.get("big", _loader(200, calls))["x"].nbytes == 200
    assert "big" not in kept and "a" in kept  # nothing was dropped for it


def test_a_bound_of_zero_keeps_nothing():
    kept, calls = LoadedDatasets(0), []
    kept.get("a", _loader(1, calls))
    kept.get("a", _loader(1, calls))
    assert calls == [1, 1] and kept.nbytes == 0


def test_kept_arrays_are_read_only():
    x = LoadedDatasets(100).get("a", _loader(4, []))["x"]
    with pytest.raises(ValueError, match="read-only"):
        x[0] = 1


def test_a_negative_bound_is_refused():
    with pytest.raises(ValueError, match="max_bytes"):
        LoadedDatasets(-1)
