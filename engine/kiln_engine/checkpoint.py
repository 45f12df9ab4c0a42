"""Checkpoints of a :class:`~kiln_engine.training.Trainer`: one safetensors file.

The tensors are the model's arrays (``model/<dotted path>``, a tied array once) and the
optimiser state's arrays (``optimiser/<leaf path>.state.<i>``). The header's metadata
holds one JSON document (key ``kiln_checkpoint``): the optimiser tree with each leaf's
rule, hyper-parameters and frozen flag; the trainer's counters, running sums, history,
stop-criteria counts and the schedules in force; the DataLoader's generator and position
within the epoch; and the states of ``kiln_engine.random``'s generator and of every
generator a layer holds (Dropout's ``rng``).

Loading into a trainer built the same way (same model architecture, loss, data and
settings) and going on gives, on the CPU, bit for bit what never stopping would have.
Loading checks everything and, on any mismatch, raises an error naming it (a weight
whose shape differs, by path) and leaves the trainer as it was.
"""

from __future__ import annotations

import copy
import json
import os
import struct
from typing import Any

import numpy as np
import safetensors
import safetensors.numpy

from . import random as kiln_random
from ._backend import to_device
from ._spec import SpecError, check_keys, join
from ._tree import Layers, Node, children
from .optimisers import export_state, leaves_of, restore_state
from .serialise.weights import WeightsError, load_state_dict, state_dict
from .training import Trainer

__all__ = ["CheckpointError", "checkpoint_from_bytes", "checkpoint_to_bytes",
           "load_checkpoint", "save_checkpoint"]

FORMAT = "kiln-checkpoint"
VERSION = 1
_META_KEY = "kiln_checkpoint"


class CheckpointError(ValueError):
    """A file that is not a Kiln checkpoint, or one that does not fit the trainer."""


def _generators(model: Any) -> dict[str, np.random.Generator]:
    """Every numpy Generator a layer holds, by ``<layer path>.<attribute>``."""
    out: dict[str, np.random.Generator] = {}

    def go(node: Any, path: str) -> None:
        if isinstance(node, Node) and not isinstance(node, Layers):
            for key, value in vars(node).items():
                if isinstance(value, np.random.Generator):
                    out[join(path, key)] = value
        for key, child in children(node):
            go(child, join(path, key))

    go(model, "")
    return out


def _capture(trainer: Trainer) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Everything a checkpoint holds, as (tensors, metadata); arrays are host copies."""
    tensors: dict[str, np.ndarray] = {}
    stored: dict[int, str] = {}
    tied: dict[str, str] = {}
    for path, x in state_dict(trainer.model).items():
        if id(x) in stored:
            tied[path] = stored[id(x)]
        else:
            stored[id(x)] = path
            tensors[f"model/{path}"] = np.array(to_device(x, "cpu"), copy=True)
    opt_arrays, opt_meta = export_state(trainer.opt_state)
    tensors.update({f"optimiser/{k}": v for k, v in opt_arrays.items()})
    meta = {
        "format": FORMAT, "version": VERSION,
        "model": {"tied": tied},
        "optimiser": opt_meta,
        "trainer": trainer.state(),
        "rng": {"kiln": copy.deepcopy(kiln_random.default_rng().bit_generator.state),
                "layers": {p: copy.deepcopy(g.bit_generator.state)
                           for p, g in _generators(trainer.model).items()}},
    }
    return tensors, meta


def _apply(trainer: Trainer, tensors: dict[str, np.ndarray], meta: Any) -> None:
    """Put a captured checkpoint into ``trainer``. The model's arrays are checked (and
    a mismatch reported by path) before anything changes; a later error may leave the
    trainer half loaded, which :func:`checkpoint_from_bytes` undoes."""
    check_keys(meta, "checkpoint", {"format", "version", "model", "optimiser", "trainer", "rng"},
               ("format", "version", "model", "optimiser", "trainer", "rng"))
    if meta["format"] != FORMAT or meta["version"] != VERSION:
        raise CheckpointError(f"not a {FORMAT} version {VERSION} file: it says format "
                              f"{meta['format']!r} version {meta['version']!r}")
    weights = {k[len("model/"):]: v for k, v in tensors.items() if k.startswith("model/")}
    for alias, target in meta["model"]["tied"].items():
        if target not in weights:
            raise CheckpointError(f"the checkpoint ties model path {alias!r} to {target!r}, "
                                  "which it does not hold")
        weights[alias] = weights[target]
    load_state_dict(trainer.model, weights)  # checks every path, shape and dtype first
    opt_arrays = {k[len("optimiser/"):]: v for k, v in tensors.items()
                  if k.startswith("optimiser/")}
    try:
        restored = dict(leaves_of(restore_state(opt_arrays, meta["optimiser"],
                                                model=trainer.model)))
    except (KeyError, TypeError, ValueError) as e:
        raise CheckpointError(f"the optimiser state does not fit this trainer: {e}") from e
    current = dict(leaves_of(trainer.opt_state))
    if set(current) != set(restored):
        raise CheckpointError(f"the optimiser state has leaves at {sorted(restored)}; this "
                              f"trainer's has them at {sorted(current)}")
    generators = _generators(trainer.model)
    saved_rngs = meta["rng"]["layers"]
    if set(saved_rngs) != set(generators):
        raise CheckpointError(f"the checkpoint has layer generators at {sorted(saved_rngs)}; "
                              f"this model has them at {sorted(generators)}")
    done: set[int] = set()
    for path, leaf in current.items():  # in place: references to the state stay valid
        if id(leaf) not in done:
            done.add(id(leaf))
            new = restored[path]
            leaf.rule, leaf.state, leaf.frozen = new.rule, new.state, new.frozen
    trainer.load_state(meta["trainer"], "checkpoint.trainer")
    kiln_random.default_rng().bit_generator.state = meta["rng"]["kiln"]
    for path, g in generators.items():
        g.bit_generator.state = saved_rngs[path]


def checkpoint_to_bytes(trainer: Trainer) -> bytes:
    """The trainer's checkpoint as the bytes of a safetensors file."""
    if not isinstance(trainer, Trainer):
        raise TypeError(f"checkpoint_to_bytes needs a Trainer; got {type(trainer).__name__}")
    tensors, meta = _capture(trainer)
    return safetensors.numpy.save(tensors, metadata={_META_KEY: json.dumps(meta,
                                                                           allow_nan=False)})


def save_checkpoint(trainer: Trainer, path: str | os.PathLike) -> None:
    """Write the trainer's checkpoint to ``path`` (atomically: a reader never sees half)."""
    blob = checkpoint_to_bytes(trainer)
    tmp = f"{os.fspath(path)}.tmp"
    with open(tmp, "wb") as f:
        f.write(blob)
    os.replace(tmp, path)


def _read(blob: bytes) -> tuple[dict[str, np.ndarray], Any]:
    try:
        tensors = safetensors.numpy.load(blob)
    except safetensors.SafetensorError as e:
        raise CheckpointError(f"not a readable checkpoint ({len(blob):,} bytes; expected "
                              f"safetensors): {e}") from e
    (n,) = struct.unpack("<Q", blob[:8])  # safetensors checked it: length, then JSON header
    text = (json.loads(blob[8:8 + n]).get("__metadata__") or {}).get(_META_KEY)
    if text is None:
        raise CheckpointError("a safetensors file without Kiln checkpoint metadata (weights "
                              "only? load those with load_weights)")
    return tensors, json.loads(text)


def checkpoint_from_bytes(trainer: Trainer, blob: bytes) -> None:
    """Load a checkpoint (the bytes of the file) into ``trainer``; see the module doc."""
    tensors, meta = _read(blob)
    backup = _capture(trainer)
    try:
        _apply(trainer, tensors, meta)
    except (KeyError, TypeError, ValueError) as e:
        _apply(trainer, *backup)
        if isinstance(e, (CheckpointError, SpecError, WeightsError)):
            raise
        raise CheckpointError(f"the checkpoint does not fit this trainer: {e!r}") from e


def load_checkpoint(trainer: Trainer, path: str | os.PathLike) -> None:
    """Load the checkpoint file at ``path`` into ``trainer``, built like the one saved."""
    with open(path, "rb") as f:
        checkpoint_from_bytes(trainer, f.read())
