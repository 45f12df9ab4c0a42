"""setup and update: the optimiser state is a tree of leaves shaped like the model.

``setup(rule, model)`` wraps every trainable floating-point array of the model in a mutable
:class:`Leaf` holding the rule, the rule's state and a frozen flag. Leaves are cached by
the array's identity, so an array used in two places (tied weights) has one leaf, seen at
both paths, and is stepped once with the sum of its gradients. Non-trainable fields
(BatchNorm's running statistics) and integer arrays get no leaf; subtrees without a leaf
are left out of the state tree.

``update(opt_state, model, grads)`` walks the state, the model and the gradient tree in
parallel, driven by the state tree, and changes the model's arrays in place. A None
gradient (nothing flowed) skips its leaf and leaves its state as it was; frozen leaves are
skipped too.
"""

from __future__ import annotations

from typing import Any

from .._tree import Node, PathError, _is_trainable, children, getpath, is_array
from ._fused import step_all
from ._rule import Rule

__all__ = ["Leaf", "StateTree", "leaves_of", "setup", "update"]


class Leaf:
    """The optimiser state of one parameter array: its rule, the rule's state, a frozen flag.

    Mutable on purpose: ``update`` replaces ``state``, ``adjust`` replaces ``rule``,
    ``freeze`` sets ``frozen``; every path that shares the leaf sees the change.
    """

    __slots__ = ("frozen", "rule", "state")

    def __init__(self, rule: Rule, state: Any, frozen: bool = False) -> None:
        self.rule = rule
        self.state = state
        self.frozen = frozen

    def __repr__(self) -> str:
        return f"Leaf({self.rule!r}{', frozen=True' if self.frozen else ''})"


class StateTree(Node):
    """A node of the optimiser state, mirroring one node of the model.

    Children are reached by attribute (``opt_state.layers.enc``), by key or position
    (``opt_state.layers[0]``) or by dotted path (``opt_state["layers.enc.weight"]``).
    """

    def __init__(self, kind: str, entries: dict[str, Any]) -> None:
        self.__dict__["_kind"] = kind
        self.__dict__["_entries"] = dict(entries)

    def _children(self) -> list[tuple[str, Any]]:
        return list(self._entries.items())

    def _replace(self, new: dict[str, Any]) -> StateTree:
        return StateTree(self._kind, {**self._entries, **new})

    @property
    def kind(self) -> str:
        """The type name of the model node this state mirrors (``Chain``, ``Dense``, ``dict``)."""
        return self._kind

    def keys(self) -> list[str]:
        """The children's keys, in the model's field order."""
        return list(self._entries)

    def __getattr__(self, name: str) -> Any:
        entries = self.__dict__["_entries"]
        if name in entries:
            return entries[name]
        raise AttributeError(f"the optimiser state of this {self._kind} has no child {name!r}; "
                             f"it has {list(entries)}")

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError("the state tree's shape is fixed by setup(); change a Leaf's rule "
                             "with adjust() and its flag with freeze()/thaw()")

    def __getitem__(self, key: str | int) -> Any:
        if isinstance(key, int) and not isinstance(key, bool):
            key = str(key)
        if not isinstance(key, str):
            raise PathError(f"index the optimiser state with a dotted path or a position; "
                            f"got {key!r}")
        return getpath(self, key)

    def __len__(self) -> int:
        return len(self._entries)

    def __iter__(self) -> Any:
        return iter(self._entries.values())

    def __repr__(self) -> str:
        lines = [f"  {path}: {leaf!r}" for path, leaf in leaves_of(self)]
        return f"StateTree[{self._kind}](\n" + "\n".join(lines) + "\n)" if lines else \
            f"StateTree[{self._kind}]()"


def _kind(node: Any) -> str:
    return type(node).__name__


def _trainable_array(x: Any) -> bool:
    return is_array(x) and x.dtype.kind in "fc"


def setup(rule: Rule, model: Any) -> Any:
    """The optimiser state for ``model``: a :class:`StateTree` of :class:`Leaf` shaped like it.

    ``opt_state = setup(Adam(1e-3), model)``; a bare array gets a bare Leaf.
    """
    if not isinstance(rule, Rule):
        raise TypeError(f"setup(rule, model): rule must be an optimisation rule such as "
                        f"Adam(); got {type(rule).__name__}")
    cache: dict[int, Leaf] = {}

    def go(node: Any) -> Any:
        if is_array(node):
            if not _trainable_array(node):
                return None
            leaf = cache.get(id(node))
            if leaf is None:
                leaf = cache[id(node)] = Leaf(rule, rule.init(node))
            return leaf
        entries = {}
        for key, child in children(node):
            if _is_trainable(node, key):
                sub = go(child)
                if sub is not None:
                    entries[key] = sub
        return StateTree(_kind(node), entries) if entries else None

    if not (is_array(model) or children(model) or isinstance(model, Node)):
        raise TypeError(f"setup(rule, model): model must be a layer, an array or a container "
                        f"of them; got {type(model).__name__}")
    tree = go(model)
    return tree if tree is not None else StateTree(_kind(model), {})


def leaves_of(tree: Any, prefix: str = "") -> list[tuple[str, Leaf]]:
    """Every (path, leaf) of a state tree, depth first; a tied leaf appears at each path."""
    if isinstance(tree, Leaf):
        return [(prefix, tree)]
    out = []
    for key, child in children(tree):
        out.extend(leaves_of(child, f"{prefix}.{key}" if prefix else key))
    return out


def _where(path: str) -> str:
    return f"at {path!r}" if path else "at the root"


def _collect(st: Any, x: Any, g: Any, path: str, out: dict[int, list]) -> None:
    """Gather [leaf, x, summed gradient, path] per leaf, skipping None and frozen leaves."""
    if g is None:
        return
    if isinstance(st, Leaf):
        if st.frozen:
            return
        if not is_array(g):
            raise ValueError(f"update: the gradient {_where(path)} must be an array like the "
                             f"parameter; got {type(g).__name__}")
        if not is_array(x):
            raise ValueError(f"update: the model {_where(path)} holds {type(x).__name__}, not "
                             f"an array; was the state set up for another model?")
        if g.shape != x.shape:
            raise ValueError(f"update: the gradient {_where(path)} has shape {tuple(g.shape)} "
                             f"but the parameter has shape {tuple(x.shape)}")
        entry = out.get(id(st))
        if entry is None:
            out[id(st)] = [st, x, g, path]
        else:  # a tied array: one step with the summed gradient
            entry[2] = entry[2] + g
        return
    if is_array(g):
        raise ValueError(f"update: the gradient {_where(path)} is an array but the model has a "
                         f"{st.kind} there")
    xs = dict(children(x))
    gs = dict(children(g))
    for key, sub in st._entries.items():
        where = f"{path}.{key}" if path else key
        if key not in xs:
            raise ValueError(f"update: the model has nothing at {where!r}, where the optimiser "
                             f"state has a leaf; was the state set up for another model?")
        _collect(sub, xs[key], gs.get(key), where, out)


def update(opt_state: Any, model: Any, grads: Any) -> tuple[Any, Any]:
    """Step every parameter of ``model`` in place by its rule; returns ``(opt_state, model)``.

    ``grads`` is the gradient of the model from ``gradient()``: a tree of Tangent/Layers
    records (or arrays, tuples, dicts) shaped like the model, None where nothing flowed.
    """
    if not isinstance(opt_state, (StateTree, Leaf)):
        raise TypeError(f"update(opt_state, model, grads): opt_state must come from setup(); "
                        f"got {type(opt_state).__name__}")
    pending: dict[int, list] = {}
    _collect(opt_state, model, grads, "", pending)
    step_all(list(pending.values()))
    return opt_state, model
