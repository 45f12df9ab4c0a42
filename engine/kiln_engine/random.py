"""Kiln's global random generator, used by initialisers, Dropout and DataLoader by default.

Like Flux's default RNG: ``kiln_engine.random.seed(0)`` makes model construction and
training reproducible; anything that takes ``rng=`` accepts its own generator instead.
"""

from __future__ import annotations

import numpy as np

__all__ = ["default_rng", "seed"]

_rng = np.random.default_rng()


def default_rng() -> np.random.Generator:
    """The generator used where no ``rng`` is given."""
    return _rng


def seed(value: int) -> np.random.Generator:
    """Reseed the default generator (returns it)."""
    global _rng
    _rng = np.random.default_rng(value)
    return _rng
