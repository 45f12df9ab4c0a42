"""The optimiser state as flat arrays plus JSON metadata, for checkpoints, and back.

``arrays, meta = export_state(opt_state)`` gives ``{key: numpy array}`` (host copies, safe
to write after later updates) and JSON-able ``meta``: the tree's shape, each leaf's rule
spec, frozen flag and state skeleton (step counters, running powers of beta as exact
scalars of their dtype, array keys). ``restore_state(arrays, meta, model=model)`` rebuilds
the very same tree: same rules, same flags, same ties, bit-identical state, so training
resumes as if it had never stopped. Array keys are ``<leaf path>.state.<i>``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .._backend import device_of, to_device
from .._tree import children, is_array
from .interface import Leaf, StateTree, _refuse_complex, leaf_paths, parameter_of, setup
from .rules import Descent
from .spec import rule_from_spec, rule_to_spec

__all__ = ["FORMAT", "export_state", "restore_state"]

#: The ``format`` tag of the metadata; ``version`` changes when the layout does.
FORMAT = "kiln-optimiser-state"
_VERSION = 1


def _encode(state: Any, key: str, arrays: dict[str, Any]) -> Any:
    """The JSON skeleton of a rule's state; its arrays go into ``arrays`` under ``key.i``."""
    if state is None or isinstance(state, (bool, int, str)):
        return state
    if isinstance(state, tuple):
        return [_encode(s, key, arrays) for s in state]
    if is_array(state):
        name = f"{key}.{len(arrays)}"
        arrays[name] = np.array(to_device(state, "cpu"), copy=True)
        return {"array": name}
    if isinstance(state, np.generic):
        return {"scalar": state.item(), "dtype": state.dtype.name}
    if isinstance(state, float):
        return {"scalar": state, "dtype": "float"}
    raise TypeError(f"export_state: cannot encode a {type(state).__name__} in an optimiser state")


def export_state(opt_state: Any) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """``(arrays, meta)``: every state array by key, and JSON-able metadata to rebuild it all."""
    if not isinstance(opt_state, (StateTree, Leaf)):
        raise TypeError(f"export_state: expected the optimiser state from setup(); got "
                        f"{type(opt_state).__name__}")
    index: dict[int, int] = {}
    leaves: list[dict[str, Any]] = []

    def node(t: Any, path: str) -> dict[str, Any]:
        if isinstance(t, Leaf):
            if id(t) not in index:
                index[id(t)] = len(leaves)
                key = f"{path}.state" if path else "state"
                local: dict[str, Any] = {}
                skeleton = _encode(t.state, key, local)
                arrays.update(local)
                leaves.append({"path": path, "rule": rule_to_spec(t.rule), "frozen": t.frozen,
                               "state": skeleton})
            return {"leaf": index[id(t)]}
        return {"kind": t.kind, "children": {
            k: node(c, f"{path}.{k}" if path else k) for k, c in children(t)}}

    arrays: dict[str, np.ndarray] = {}
    tree = node(opt_state, "")
    return arrays, {"format": FORMAT, "version": _VERSION, "tree": tree, "leaves": leaves}


def _decode(skel: Any, arrays: dict[str, Any], where: str) -> Any:
    if isinstance(skel, list):
        return tuple(_decode(s, arrays, where) for s in skel)
    if isinstance(skel, dict) and "array" in skel:
        if skel["array"] not in arrays:
            raise ValueError(f"restore_state: {where} needs array {skel['array']!r}, which is "
                             f"missing from the arrays")
        return arrays[skel["array"]]
    if isinstance(skel, dict) and "scalar" in skel:
        return skel["scalar"] if skel["dtype"] == "float" else np.dtype(skel["dtype"]).type(
            skel["scalar"])
    return skel


def _fit(s: Any, x: Any, path: str) -> Any:
    """A leaf's state checked against its parameter ``x`` and moved to ``x``'s device."""
    if isinstance(s, tuple):
        return tuple(_fit(e, x, path) for e in s)
    if is_array(s):
        if s.shape != x.shape or s.dtype != x.dtype:
            raise ValueError(f"restore_state: the state at {path!r} holds a {s.dtype} array of "
                             f"shape {tuple(s.shape)}; the parameter is {x.dtype} "
                             f"{tuple(x.shape)}")
        return to_device(s, device_of(x))
    return s


def _check_against(model: Any, tree: Any) -> None:
    """The tree has a leaf exactly where setup(model) would, one leaf where the model ties
    arrays (the same array, or views of one); each leaf's state fits the array it steps."""
    want = [tuple(paths) for _, paths in leaf_paths(setup(Descent(), model))]
    have = leaf_paths(tree)
    at = {p for _, paths in have for p in paths}
    params = {p for paths in want for p in paths}
    extra, missing = sorted(at - params), sorted(params - at)
    if extra or missing:
        raise ValueError(f"restore_state: the state does not fit the model: leaves at "
                         f"{extra} have no parameter, parameters at {missing} have no leaf; "
                         f"was the checkpoint taken from another model?")
    if set(want) != {tuple(paths) for _, paths in have}:
        raise ValueError("restore_state: the state's tied leaves differ from the model's tied "
                         "arrays")
    for leaf, paths in have:
        path, x = parameter_of(model, paths)
        _refuse_complex("restore_state", leaf.rule, x, path)
        leaf.state = _fit(leaf.state, x, path)


def restore_state(arrays: dict[str, Any], meta: dict[str, Any], *, model: Any = None) -> Any:
    """The state tree ``export_state`` described; with ``model``, checked against it.

    With a model, every leaf's arrays must match its parameter's shape and dtype and are
    moved to the parameter's device; without one they stay numpy arrays.
    """
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise ValueError(f"restore_state: metadata is not a {FORMAT!r} record")
    if meta.get("version") != _VERSION:
        raise ValueError(f"restore_state: metadata version {meta.get('version')!r} is not "
                         f"supported (expected {_VERSION})")
    leaves = []
    for i, info in enumerate(meta["leaves"]):
        rule = rule_from_spec(info["rule"], f"leaves[{i}].rule")
        state = _decode(info["state"], arrays, f"the leaf at {info['path']!r}")
        leaves.append(Leaf(rule, state, bool(info["frozen"])))

    def build(n: dict[str, Any]) -> Any:
        if "leaf" in n:
            return leaves[n["leaf"]]
        return StateTree(n["kind"], {k: build(c) for k, c in n["children"].items()})

    for leaf in leaves:  # never alias the caller's arrays: updates write into them
        leaf.state = _copy(leaf.state)
    tree = build(meta["tree"])
    if model is not None:
        _check_against(model, tree)
    return tree


def _copy(s: Any) -> Any:
    if isinstance(s, tuple):
        return tuple(_copy(e) for e in s)
    return s.copy() if is_array(s) else s
