"""setup and update: the optimiser state is a tree of leaves shaped like the model.

``setup(rule, model)`` wraps every trainable floating-point array of the model in a mutable
:class:`Leaf` holding the rule, the rule's state and a frozen flag. An array used in two
places (tied weights), and an array with its views (a decoder holding ``enc.weight.T``),
are one parameter: one leaf, seen at each path, with its state shaped like the array the
others view (``_ties.py``). Non-trainable fields (BatchNorm's running statistics) and
integer arrays get no leaf; subtrees without a leaf are left out of the state tree.
Complex arrays get a leaf unless the rule refuses them (ClipGrad, Rprop): an error naming
the path.

``update(opt_state, model, grads)`` walks the state, the model and the gradient tree in
parallel, driven by the state tree, and changes the model's arrays in place. A None
gradient (nothing flowed) skips its leaf and leaves its state as it was; frozen leaves are
skipped too. A leaf seen at several paths takes one step with the sum of their gradients
(a view's mapped into the shape of the array it views) whatever the model holds there:
one array, views of it, or copies of it (arrays sharing no memory with it: a tie broken
by copying the model, or a tree built by hand), from each of which the same step is
subtracted. :func:`describe_state` lists the leaves: path, rule, hyper-parameters, frozen.
"""

from __future__ import annotations

from typing import Any, NamedTuple

from .._tree import Node, PathError, _is_trainable, children, getpath, is_array, leaves
from ._fused import step_all
from ._rule import Rule
from ._ties import as_parent_gradient, memory_groups, parent
from .chain import OptimiserChain

__all__ = ["Leaf", "LeafInfo", "StateTree", "describe_state", "hyper_of", "leaf_paths",
           "leaves_of", "parameter_of", "setup", "update"]


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

    def _shared(self) -> list[tuple[Leaf, list[str]]]:
        """The leaves seen at more than one path, with their paths. A tree's shape and its
        leaves' identities never change once built, so this is worked out once."""
        shared = self.__dict__.get("_shared_leaves")
        if shared is None:
            shared = [(leaf, paths) for leaf, paths in leaf_paths(self) if len(paths) > 1]
            self.__dict__["_shared_leaves"] = shared
        return shared

    def __getattr__(self, name: str) -> Any:
        entries = self.__dict__.get("_entries")
        if entries is None:  # copy and pickle look up methods on an instance not yet filled
            raise AttributeError(name)
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


def _distinct(arrays: list[tuple[str, Any]]) -> list[tuple[str, Any]]:
    """Each array once, at the first of its paths."""
    first: dict[int, tuple[str, Any]] = {}
    for path, x in arrays:
        first.setdefault(id(x), (path, x))
    return list(first.values())


def _refuse_complex(fn: str, rule: Rule, x: Any, path: str) -> None:
    if x.dtype.kind == "c":
        why = rule.refuses_complex()
        if why is not None:
            raise ValueError(f"{fn}: {rule!r} cannot step the complex parameter "
                             f"{_where(path)} ({x.dtype}): {why}")


def setup(rule: Rule, model: Any) -> Any:
    """The optimiser state for ``model``: a :class:`StateTree` of :class:`Leaf` shaped like it.

    ``opt_state = setup(Adam(1e-3), model)``; a bare array gets a bare Leaf.
    """
    if not isinstance(rule, Rule):
        raise TypeError(f"setup(rule, model): rule must be an optimisation rule such as "
                        f"Adam(); got {type(rule).__name__}")
    if not (is_array(model) or children(model) or isinstance(model, Node)):
        raise TypeError(f"setup(rule, model): model must be a layer, an array or a container "
                        f"of them; got {type(model).__name__}")
    leaf_of: dict[int, Leaf] = {}
    for group in memory_groups(_distinct([(p, x) for p, x in leaves(model)
                                          if _trainable_array(x)])):
        try:
            path, x = parent(group)
        except ValueError as e:
            raise ValueError(f"setup: {e}") from None
        _refuse_complex("setup", rule, x, path)
        leaf = Leaf(rule, rule.init(x))
        for _, y in group:
            leaf_of[id(y)] = leaf

    def go(node: Any) -> Any:
        if is_array(node):
            return leaf_of.get(id(node))
        entries = {}
        for key, child in children(node):
            if _is_trainable(node, key):
                sub = go(child)
                if sub is not None:
                    entries[key] = sub
        return StateTree(_kind(node), entries) if entries else None

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


def leaf_paths(tree: Any) -> list[tuple[Leaf, list[str]]]:
    """Every leaf of a state tree once, with all the paths it is seen at, depth first."""
    by_leaf: dict[int, tuple[Leaf, list[str]]] = {}
    for path, leaf in leaves_of(tree):
        by_leaf.setdefault(id(leaf), (leaf, []))[1].append(path)
    return list(by_leaf.values())


def hyper_of(rule: Rule) -> dict[str, Any]:
    """``{name: value}`` of a rule's hyper-parameters; in a chain, each name's value in the
    first member that has it (what a schedule of that name reads)."""
    if isinstance(rule, OptimiserChain):
        out: dict[str, Any] = {}
        for member in rule.rules:
            for k, v in hyper_of(member).items():
                out.setdefault(k, v)
        return out
    return rule.hyperparameters()


class LeafInfo(NamedTuple):
    """One row of :func:`describe_state`."""

    path: str
    rule: Rule
    hyper: dict[str, Any]  # as hyper_of(rule); each member's own: rule[i].hyperparameters()
    frozen: bool
    tied_to: str | None  # the first path of the same leaf, at its later paths


def describe_state(tree: Any) -> list[LeafInfo]:
    """Every leaf of an optimiser state (or of a part of it) with its path, rule,
    hyper-parameters and frozen flag, depth first; a tied leaf at each of its paths."""
    if not isinstance(tree, (StateTree, Leaf)):
        raise TypeError(f"describe_state: expected the optimiser state from setup(), or a "
                        f"part of it; got {type(tree).__name__}")
    first: dict[int, str] = {}
    out = []
    for path, leaf in leaves_of(tree):
        tied = first.setdefault(id(leaf), path)
        out.append(LeafInfo(path, leaf.rule, hyper_of(leaf.rule), leaf.frozen,
                            tied if tied != path else None))
    return out


def _where(path: str) -> str:
    return f"at {path!r}" if path else "at the root"


def _collect(st: Any, x: Any, g: Any, path: str, out: list[list], shared: set[int],
             got: dict[int, dict[str, tuple[Any, Any]]]) -> None:
    """Gather [leaf, x, gradient, path, no copies] per leaf, skipping None gradients and
    frozen leaves; for a leaf in ``shared`` (seen at several paths), ``got[leaf][path] =
    (x, gradient)`` instead."""
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
        if shared and id(st) in shared:
            got.setdefault(id(st), {})[path] = (x, g)
        else:
            out.append([st, x, g, path, ()])
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
        _collect(sub, xs[key], gs.get(key), where, out, shared, got)


def _array_at(model: Any, path: str) -> Any:
    x = getpath(model, path)
    if not is_array(x):
        raise ValueError(f"update: the model holds {type(x).__name__} {_where(path)}, where "
                         f"the optimiser state has a leaf; was the state set up for another "
                         f"model?")
    return x


def _layout(model: Any, paths: list[str], got: dict[str, tuple[Any, Any]]) -> tuple[list, list]:
    """The arrays at a leaf's paths grouped by memory, and each group's parent (the array
    the others view); the first group holds the first path's array."""
    arrays = [(p, got[p][0] if p in got else _array_at(model, p)) for p in paths]
    groups = memory_groups(_distinct(arrays))
    return groups, [parent(group) for group in groups]


def parameter_of(model: Any, paths: list[str]) -> tuple[str, Any]:
    """``(path, array)``: the array of ``model`` that a leaf seen at ``paths`` steps (and
    shapes its state), where the model holds it, its views or copies of it."""
    return _layout(model, paths, {})[1][0]


def _shared_entry(leaf: Leaf, paths: list[str], model: Any,
                  got: dict[str, tuple[Any, Any]]) -> list:
    """One step for a leaf seen at several paths: [leaf, parent, summed gradient, path,
    copies], each view's gradient mapped into its parent's shape."""
    try:
        groups, parents = _layout(model, paths, got)
    except ValueError as e:
        raise ValueError(f"update: {e}") from None
    (path, x), copies = parents[0], parents[1:]
    for where, c in copies:
        if c.shape != x.shape or c.dtype != x.dtype:
            raise ValueError(f"update: one optimiser leaf is at {path!r} and {where!r}, but the "
                             f"model holds arrays there that share no memory and differ "
                             f"({x.dtype} {tuple(x.shape)} and {c.dtype} {tuple(c.shape)}); "
                             f"was the state set up for another model?")
    parent_of = {id(y): p for group, (_, p) in zip(groups, parents) for _, y in group}
    total = None
    for y, g in got.values():
        g = as_parent_gradient(parent_of[id(y)], y, g)
        total = g if total is None else total + g
    return [leaf, x, total, path, [c for _, c in copies]]


def update(opt_state: Any, model: Any, grads: Any) -> tuple[Any, Any]:
    """Step every parameter of ``model`` in place by its rule; returns ``(opt_state, model)``.

    ``grads`` is the gradient of the model from ``gradient()``: a tree of Tangent/Layers
    records (or arrays, tuples, dicts) shaped like the model, None where nothing flowed.
    """
    if not isinstance(opt_state, (StateTree, Leaf)):
        raise TypeError(f"update(opt_state, model, grads): opt_state must come from setup(); "
                        f"got {type(opt_state).__name__}")
    shared = opt_state._shared() if isinstance(opt_state, StateTree) else []
    entries: list[list] = []
    got: dict[int, dict[str, tuple[Any, Any]]] = {}
    _collect(opt_state, model, grads, "", entries, {id(leaf) for leaf, _ in shared}, got)
    entries += [_shared_entry(leaf, paths, model, got[id(leaf)])
                for leaf, paths in shared if id(leaf) in got]
    step_all(entries)
    return opt_state, model
