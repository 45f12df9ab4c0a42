"""Steering a running optimiser: schedules bound to subtrees, and manual controls.

A schedule drives one hyper-parameter (``eta`` by default) of the leaves under a path of
the optimiser state. A manual ``adjust`` of the same field on a subtree takes those
leaves away from the schedule (a schedule on ``layers`` keeps driving ``layers.dec``
after an ``adjust`` of ``layers.enc``), so what is in force is always one of the two, and
:meth:`Controls.in_force` says which, leaf by leaf.

A schedule's ``t`` counts the steps since it was bound: bound before training, ``t`` is
the global step (1, 2, ...); bound at step 500, its first value is ``schedule(1)``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ._spec import SpecError, check_keys, get_int, join
from ._tree import PathError, children, getpath
from .optimisers import StateTree, adjust, freeze, thaw
from .optimisers.interface import Leaf, hyper_of, leaves_of
from .schedules import ReduceOnPlateau, Schedule

__all__ = ["Binding", "Controls", "hyper_value"]


def hyper_value(rule: Any, name: str) -> Any:
    """The value of hyper-parameter ``name`` in ``rule`` (the first chain member that has
    it), or None when no member has it."""
    return hyper_of(rule).get(name)


@dataclass(eq=False)
class Binding:
    """A schedule driving ``field`` of the leaves under ``path`` since step ``start``."""

    path: str
    field: str
    schedule: Schedule
    start: int
    last: float | None = field(default=None, repr=False)  # the value applied last
    targets: list[Leaf] | None = field(default=None, repr=False)  # the leaves it drives


class Controls:
    """The controls of one optimiser state: ``bind`` schedules, ``adjust``, ``freeze``,
    ``thaw``; ``apply(step)`` sets the scheduled values before each step."""

    def __init__(self, opt_state: Any) -> None:
        self.opt_state = opt_state
        self.bindings: list[Binding] = []
        # leaf path -> field -> the binding driving it there
        self._driver: dict[str, dict[str, Binding]] = {}

    def _leaves(self, path: str) -> list[tuple[str, Leaf]]:
        sub = getpath(self.opt_state, path)
        return leaves_of(sub, path)

    def bind(self, path: str, schedule: Schedule, field: str = "eta", *, steps_done: int = 0
             ) -> Binding:
        """Let ``schedule`` drive ``field`` under ``path`` from the next step on.

        The field is set to the schedule's first value at once, which checks that every
        leaf there has it; a bad path raises PathError, a bad field ValueError.
        """
        if not isinstance(schedule, Schedule):
            raise TypeError(f"bind: schedule must be a Schedule such as Exp(start=0.1, "
                            f"decay=0.9); got {type(schedule).__name__}")
        leaves = self._leaves(path)
        if not leaves:
            raise ValueError(f"bind: there is no parameter under {path!r} to schedule")
        binding = Binding(path, field, schedule, steps_done)
        self._set(binding, 1, [leaf for _, leaf in leaves])
        for p, _ in leaves:
            self._driver.setdefault(p, {})[field] = binding
        self.bindings.append(binding)
        self._prune()
        return binding

    def adjust(self, path: str, eta: float | None = None, /, **hyper: Any) -> None:
        """``optimisers.adjust`` on the subtree at ``path``; the fields set there leave
        any schedule that drove them."""
        adjust(getpath(self.opt_state, path), eta, **hyper)
        names = set(hyper) - {"member"} | ({"eta"} if eta is not None else set())
        for p, _ in self._leaves(path):
            for name in names:
                self._driver.get(p, {}).pop(name, None)
        self._prune()

    def freeze(self, path: str) -> None:
        """Stop updating the parameters under ``path``."""
        freeze(getpath(self.opt_state, path))

    def thaw(self, path: str) -> None:
        """Undo :meth:`freeze` under ``path``."""
        thaw(getpath(self.opt_state, path))

    def _prune(self) -> None:
        """After the driver map changed: drop bindings that drive nothing, forget targets."""
        live = {id(b) for fields in self._driver.values() for b in fields.values()}
        self.bindings = [b for b in self.bindings if id(b) in live]
        for b in self.bindings:
            b.targets = None

    def _set(self, binding: Binding, t: int, leaves: list[Leaf] | None = None) -> None:
        """Set the binding's value at ``t`` on its leaves, all or none (adjust checks every
        leaf before changing any). Leaves with equal rules share one adjusted rule, so a
        schedule over a model set up with one rule costs one ``adjust`` per step."""
        value = binding.schedule(t)
        if value == binding.last:
            return
        if leaves is None:
            if binding.targets is None:
                binding.targets = [leaf for p, leaf in leaves_of(self.opt_state)
                                   if self._driver.get(p, {}).get(binding.field) is binding]
            leaves = binding.targets
        groups: list[list[Leaf]] = []
        for leaf in leaves:
            group = next((g for g in groups if g[0].rule == leaf.rule), None)
            if group is None:
                groups.append([leaf])
            else:
                group.append(leaf)
        adjust(StateTree("scheduled", {str(i): g[0] for i, g in enumerate(groups)}),
               **{binding.field: value})
        for g in groups:
            for leaf in g[1:]:
                leaf.rule = g[0].rule
        binding.last = value

    def apply(self, step: int) -> None:
        """Set every scheduled value for global step ``step`` (1 for the first step)."""
        for b in self.bindings:
            self._set(b, step - b.start)

    def observe(self, metrics: dict[str, float]) -> list[Binding]:
        """Feed an epoch's metrics to every ReduceOnPlateau; the bindings that reduced."""
        hit = []
        for b in self.bindings:
            if isinstance(b.schedule, ReduceOnPlateau):
                name = b.schedule.metric
                if name not in metrics:
                    raise KeyError(f"ReduceOnPlateau at {b.path or 'the root'!r} watches "
                                   f"{name!r}, which the epoch does not record; it records "
                                   f"{sorted(metrics)}")
                if b.schedule.observe(metrics[name]):
                    hit.append(b)
        return hit

    def in_force(self) -> dict[str, dict[str, Any]]:
        """Per leaf path: its rule's hyper-parameters, its frozen flag, and for each
        scheduled field the path the schedule was bound at."""
        out = {}
        for p, leaf in leaves_of(self.opt_state):
            out[p] = {"rule": repr(leaf.rule), "frozen": leaf.frozen,
                      "scheduled": {f: b.path for f, b in self._driver.get(p, {}).items()}}
        return out

    def by_subtree(self, value: Callable[[Leaf], Any]) -> dict[str, Any]:
        """``value(leaf)`` summarised over the tree: a path appears where every leaf under
        it agrees, and its children are not listed (``{"": 0.001}`` for one learning
        rate everywhere). Leaves giving None are left out."""
        out: dict[str, Any] = {}

        def go(node: Any, path: str) -> None:
            vals = [value(leaf) for _, leaf in leaves_of(node)]
            known = [v for v in vals if v is not None]
            if not known:
                return
            if len(known) == len(vals) and all(_same(v, known[0]) for v in known):
                out[path] = known[0]
                return
            for key, child in children(node):
                go(child, join(path, key))

        go(self.opt_state, "")
        return out

    def hyper(self, name: str = "eta") -> dict[str, Any]:
        """``name``'s value per subtree (see :meth:`by_subtree`)."""
        return self.by_subtree(lambda leaf: hyper_value(leaf.rule, name))

    def frozen(self) -> list[str]:
        """The shortest paths under which every parameter is frozen."""
        return [p for p, v in self.by_subtree(lambda leaf: leaf.frozen).items() if v]

    def state(self) -> list[dict[str, Any]]:
        """The bindings as JSON: path, field, schedule spec, start, driven leaf paths and,
        for ReduceOnPlateau, what it has observed."""
        out = []
        for b in self.bindings:
            entry = {"path": b.path, "field": b.field, "schedule": b.schedule.to_spec(),
                     "start": b.start,
                     "drives": [p for p, fs in self._driver.items() if fs.get(b.field) is b]}
            if isinstance(b.schedule, ReduceOnPlateau):
                entry["observed"] = b.schedule.state()
            out.append(entry)
        return out

    def load_state(self, state: Any, path: str = "controls") -> None:
        """Restore :meth:`state` (after the rules themselves have been restored)."""
        if not isinstance(state, list):
            raise SpecError(path, f"must be a list of schedule bindings; got {state!r:.60}")
        known = {p for p, _ in leaves_of(self.opt_state)}
        bindings, driver = [], {}
        for i, entry in enumerate(state):
            where = join(path, i)
            check_keys(entry, where, {"path", "field", "schedule", "start", "drives", "observed"},
                       ("path", "field", "schedule", "start", "drives"))
            schedule = Schedule.from_spec(entry["schedule"], join(where, "schedule"))
            if isinstance(schedule, ReduceOnPlateau) and "observed" in entry:
                schedule.load_state(entry["observed"])
            try:
                getpath(self.opt_state, entry["path"])
            except PathError as e:
                raise SpecError(join(where, "path"), str(e)) from None
            if not isinstance(entry["field"], str) or not entry["field"]:
                raise SpecError(join(where, "field"), f"must be a hyper-parameter name such as "
                                f"'eta'; got {entry['field']!r}")
            b = Binding(entry["path"], entry["field"], schedule,
                        get_int(entry, "start", where, minimum=0))
            drives = entry["drives"]
            if not isinstance(drives, list) or not all(p in known for p in drives):
                missing = [p for p in drives if p not in known] if isinstance(drives, list) \
                    else drives
                raise SpecError(join(where, "drives"), f"names parameters this optimiser "
                                f"state does not have: {missing!r:.200}")
            for p in drives:
                driver.setdefault(p, {})[b.field] = b
            bindings.append(b)
        self.bindings, self._driver = bindings, driver


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, float) and isinstance(b, float):
        return a == b or (math.isnan(a) and math.isnan(b))
    return a == b
