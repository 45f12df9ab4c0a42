"""DataLoader: mini-batches of arrays, batch first, as Flux's ``DataLoader``.

    loader = DataLoader((X, Y), batchsize=32, shuffle=True, rng=0)
    for x, y in loader:          # one epoch; the next loop re-shuffles
        ...

Each epoch draws one permutation of the indices (n integers) from the loader's own
generator and fancy-indexes one batch at a time, so the data set is never copied whole;
without shuffling the batches are views. The generator's state and the position within
the epoch can be saved with :meth:`DataLoader.state` and restored with
:meth:`DataLoader.load_state`, so a run resumed mid-epoch sees the same batches.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np

from ._backend import array_module
from ._spec import SpecError, check_keys, get_int
from ._tree import is_array
from .random import default_rng

__all__ = ["DataLoader"]


def _arrays(data: Any) -> list[tuple[str, Any]]:
    """(name, array) for each array of ``data``, named as a user would write it."""
    if isinstance(data, tuple):
        named = [(f"data[{i}]", x) for i, x in enumerate(data)]
    elif isinstance(data, Mapping):
        named = [(f"data[{k!r}]", x) for k, x in data.items()]
    else:
        named = [("data", data)]
    if not named:
        raise ValueError("DataLoader: data must hold at least one array; got an empty "
                         f"{type(data).__name__}")
    for name, x in named:
        if not is_array(x):
            raise TypeError(f"DataLoader: {name} must be a numpy or cupy array (batch first); "
                            f"got {type(x).__name__}")
        if x.ndim == 0:
            raise ValueError(f"DataLoader: {name} is a 0-d array; every array needs a first "
                             "(batch) dimension")
    return named


class DataLoader:
    """``DataLoader(data, batchsize=1, *, shuffle=False, partial=True, rng=None)``.

    ``data`` is an array, a tuple of arrays or a dict of arrays, all with the same first
    (observation) dimension; each batch has the same form. ``partial=False`` drops a last
    batch smaller than ``batchsize``. ``len(loader)`` is the number of batches per epoch.
    ``rng`` is a seed or a ``numpy.random.Generator`` (used only by this loader); without
    one the loader seeds its own generator from ``kiln_engine.random``'s.
    """

    def __init__(self, data: Any, batchsize: int = 1, *, shuffle: bool = False,
                 partial: bool = True, rng: int | np.random.Generator | None = None) -> None:
        named = _arrays(data)
        sizes = {name: x.shape[0] for name, x in named}
        if len(set(sizes.values())) > 1:
            listed = ", ".join(f"{name} has {n}" for name, n in sizes.items())
            raise ValueError("DataLoader: every array needs the same number of observations "
                             f"(first dimension); {listed}")
        if not isinstance(batchsize, (int, np.integer)) or isinstance(batchsize, bool) \
                or batchsize < 1:
            raise ValueError(f"DataLoader: batchsize must be a positive integer; got "
                             f"{batchsize!r}")
        for name, flag in (("shuffle", shuffle), ("partial", partial)):
            if not isinstance(flag, bool):
                raise TypeError(f"DataLoader: {name} must be True or False; got {flag!r}")
        self.nobs = named[0][1].shape[0]
        if self.nobs == 0:
            raise ValueError("DataLoader: the data has no observations (first dimension 0)")
        if not partial and batchsize > self.nobs:
            raise ValueError(f"DataLoader: batchsize {batchsize} is larger than the "
                             f"{self.nobs} observations and partial=False, so there would be "
                             "no batch at all")
        self.data = data
        self.batchsize = int(batchsize)
        self.shuffle = shuffle
        self.partial = partial
        if isinstance(rng, np.random.Generator):
            self.rng = rng
        elif rng is None:
            self.rng = np.random.default_rng(default_rng().integers(2**63))
        elif isinstance(rng, (int, np.integer)) and not isinstance(rng, bool):
            self.rng = np.random.default_rng(int(rng))
        else:
            raise TypeError(f"DataLoader: rng must be a seed or a numpy.random.Generator; got "
                            f"{type(rng).__name__}")
        self._epoch_start: dict | None = None  # generator state before this epoch's shuffle
        self._position: int | None = None      # batches taken in this epoch; None: between
        self._resume: tuple[dict, int] | None = None  # set by load_state for the next epoch

    def __len__(self) -> int:
        """Batches per epoch."""
        full, rest = divmod(self.nobs, self.batchsize)
        return full + (1 if rest and self.partial else 0)

    def _order(self) -> np.ndarray | None:
        return self.rng.permutation(self.nobs) if self.shuffle else None

    def _batch(self, order: np.ndarray | None, i: int) -> Any:
        lo = i * self.batchsize
        hi = min(lo + self.batchsize, self.nobs)
        if order is None:
            take = lambda x: x[lo:hi]
        else:
            idx = order[lo:hi]
            take = lambda x: x[idx] if array_module(x) is np else x[array_module(x).asarray(idx)]
        if isinstance(self.data, tuple):
            return tuple(take(x) for x in self.data)
        if isinstance(self.data, Mapping):
            return {k: take(x) for k, x in self.data.items()}
        return take(self.data)

    def __iter__(self) -> Iterator[Any]:
        """One epoch of batches: a fresh shuffle, or the rest of the epoch restored by
        :meth:`load_state`. Iterate one epoch at a time: the position is the loader's."""
        if self._resume is not None:  # replay the saved epoch's shuffle, skip what was taken
            self.rng.bit_generator.state, start = self._resume
            self._resume = None
        else:
            start = 0
        self._epoch_start = copy.deepcopy(self.rng.bit_generator.state)
        self._position = start
        return self._batches(self._order(), start)

    def _batches(self, order: np.ndarray | None, start: int) -> Iterator[Any]:
        n = len(self)
        for i in range(start, n):
            self._position = i + 1 if i + 1 < n else None  # the last batch ends the epoch
            yield self._batch(order, i)

    @property
    def position(self) -> int | None:
        """Batches already taken in the epoch under way, or None between epochs."""
        return self._position

    def state(self) -> dict[str, Any]:
        """The generator's state and the position within the epoch, as JSON."""
        if self._resume is not None:
            rng, position = self._resume
        elif self._position is None:
            rng, position = self.rng.bit_generator.state, None
        else:
            rng, position = self._epoch_start, self._position
        return {"nobs": self.nobs, "batchsize": self.batchsize, "shuffle": self.shuffle,
                "partial": self.partial, "position": position, "rng": copy.deepcopy(rng)}

    def load_state(self, state: Any, path: str = "loader") -> None:
        """Restore :meth:`state`; the next iteration goes on from the saved position.

        Raises SpecError naming the field when the state was saved by a loader over
        other data or with other settings.
        """
        keys = ("nobs", "batchsize", "shuffle", "partial", "position", "rng")
        check_keys(state, path, set(keys), keys)
        for key in ("nobs", "batchsize", "shuffle", "partial"):
            if state[key] != getattr(self, key):
                raise SpecError(f"{path}.{key}", f"the saved loader had {key}={state[key]!r}, "
                                f"this one has {getattr(self, key)!r}")
        position = state["position"]
        if position is not None:
            position = get_int(state, "position", path, minimum=0)
            if position >= len(self):
                raise SpecError(f"{path}.position", f"must be below {len(self)} (batches per "
                                f"epoch) or null; got {position}")
        rng = state["rng"]
        name = type(self.rng.bit_generator).__name__
        if not isinstance(rng, dict) or rng.get("bit_generator") != name:
            raise SpecError(f"{path}.rng", f"must be the state of a {name} generator; got "
                            f"{rng!r:.80}")
        probe = type(self.rng.bit_generator)()
        try:
            probe.state = copy.deepcopy(rng)
        except (TypeError, ValueError, KeyError) as e:
            raise SpecError(f"{path}.rng", f"is not a valid {name} state: {e}") from None
        if position is None:
            self.rng.bit_generator.state = probe.state
            self._resume = None
        else:
            self._resume = (probe.state, position)
        self._position = None

    def __repr__(self) -> str:
        kind = type(self.data).__name__
        return (f"DataLoader({kind} of {self.nobs} observations, batchsize={self.batchsize}, "
                f"shuffle={self.shuffle}, partial={self.partial})")
