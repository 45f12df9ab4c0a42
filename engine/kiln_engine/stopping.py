"""Flux's early-stopping helpers: ``patience``, ``early_stopping`` and ``plateau``.

Each returns a callable that takes whatever its function takes (an epoch record, say)
and returns True when training should stop::

    es = early_stopping(lambda rec: rec.metrics["val_loss"], 3)
    trainer = Trainer(..., stop=[es])

They are small objects rather than closures so a checkpoint can save what they have
counted (:meth:`Patience.state`).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from ._backend import to_float
from ._spec import check_keys, get_float, get_int

__all__ = ["Patience", "early_stopping", "patience", "plateau"]

Distance = Callable[[float, float], float]


def _minus(best: float, score: float) -> float:
    return best - score


class Patience:
    """True once ``predicate`` has held on ``wait`` calls in a row (Flux's ``patience``)."""

    def __init__(self, predicate: Callable[..., bool], wait: int) -> None:
        if not callable(predicate):
            raise TypeError(f"patience: predicate must be callable; got "
                            f"{type(predicate).__name__}")
        if not isinstance(wait, int) or isinstance(wait, bool) or wait < 1:
            raise ValueError(f"patience: wait must be a positive integer; got {wait!r}")
        self.predicate = predicate
        self.wait = wait
        self.count = 0

    def __call__(self, *args: Any, **kwargs: Any) -> bool:
        self.count = self.count + 1 if self.predicate(*args, **kwargs) else 0
        return self.count >= self.wait

    def state(self) -> dict[str, Any]:
        """The count so far, and the predicate's own state where it has one (JSON)."""
        inner = getattr(self.predicate, "state", None)
        return {"count": self.count, "predicate": inner() if callable(inner) else None}

    def load_state(self, state: dict[str, Any], path: str = "stop") -> None:
        """Restore :meth:`state`."""
        check_keys(state, path, {"count", "predicate"}, ("count", "predicate"))
        self.count = get_int(state, "count", path, minimum=0)
        if state["predicate"] is not None:
            self.predicate.load_state(state["predicate"], f"{path}.predicate")


def patience(predicate: Callable[..., bool], wait: int) -> Patience:
    """A function returning True once ``predicate(...)`` has been True ``wait`` times in a
    row; a False resets the count."""
    return Patience(predicate, wait)


class _Score:
    """Tracks one reference score of ``f(...)``: the best so far, or the last one."""

    def __init__(self, f: Callable[..., float], distance: Distance, init_score: float,
                 min_dist: float, *, track_best: bool) -> None:
        if not callable(f):
            raise TypeError(f"f must be callable (it returns the score); got {type(f).__name__}")
        self.f, self.distance, self.min_dist = f, distance, min_dist
        self.score = float(init_score)
        self.track_best = track_best

    def __call__(self, *args: Any, **kwargs: Any) -> bool:
        score = to_float(self.f(*args, **kwargs))
        delta = self.distance(self.score, score)
        if self.track_best:  # early_stopping: keep the best; stalled when delta < min_dist
            if not delta < 0:
                self.score = score
            return delta < self.min_dist
        self.score = score  # plateau: compare with the last score
        return abs(delta) < self.min_dist

    def state(self) -> dict[str, Any]:
        return {"score": self.score if math.isfinite(self.score) else repr(self.score)}

    def load_state(self, state: dict[str, Any], path: str) -> None:
        check_keys(state, path, {"score"}, ("score",))
        v = state["score"]
        self.score = float(v) if v in ("inf", "-inf", "nan") else get_float(state, "score", path)


def early_stopping(f: Callable[..., float], delay: int, *, distance: Distance = _minus,
                   init_score: float = math.inf, min_dist: float = 0.0) -> Patience:
    """True once ``f(...)`` (a loss: lower is better) has not improved on its best by at
    least ``min_dist`` for ``delay`` calls in a row.

    As Flux's ``early_stopping``, with one difference: ``init_score`` defaults to +inf,
    not 0 (with 0, a positive loss never counts as an improvement and training stops
    after ``delay`` calls whatever happens). For a score where higher is better (an
    accuracy) pass ``distance=lambda best, score: score - best, init_score=-math.inf``.
    """
    return Patience(_Score(f, distance, init_score, min_dist, track_best=True), delay)


def plateau(f: Callable[..., float], width: int, *, distance: Distance = _minus,
            init_score: float = 0.0, min_dist: float = 1e-6) -> Patience:
    """True once ``f(...)`` has moved by less than ``min_dist`` from one call to the next
    ``width`` times in a row (Flux's ``plateau``)."""
    return Patience(_Score(f, distance, init_score, min_dist, track_best=False), width)
