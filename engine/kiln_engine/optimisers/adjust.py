"""adjust, freeze and thaw: steering a running optimiser through its state tree.

All three act in place on any subtree of the state from ``setup`` (``opt_state.layers.enc``
or ``opt_state["layers.enc"]``), keep every leaf's state, and act on a tied leaf wherever it
appears. Unlike Optimisers.jl, a hyper-parameter that no rule in the subtree has is an
error naming the valid ones, and nothing changes when any leaf refuses.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from ._rule import Rule
from .chain import OptimiserChain
from .interface import Leaf, StateTree, leaf_paths

__all__ = ["adjust", "freeze", "thaw"]


def _unique_leaves(tree: Any, fn: str) -> list[Leaf]:
    if not isinstance(tree, (StateTree, Leaf)):
        raise TypeError(f"{fn}() must be given the optimiser state from setup(), or a part of "
                        f"it such as opt_state.layers.enc, not the model; got "
                        f"{type(tree).__name__}")
    return [leaf for leaf, _ in leaf_paths(tree)]


def _names(rule: Rule) -> set[str]:
    if isinstance(rule, OptimiserChain):
        return set().union(*(_names(r) for r in rule.rules)) if rule.rules else set()
    return set(rule.hypernames())


def _adjust_rule(rule: Rule, hyper: dict[str, Any]) -> Rule:
    """``rule`` with ``hyper`` replaced; a chain passes each name to the members that have it."""
    if isinstance(rule, OptimiserChain):
        valid = _names(rule)
        unknown = sorted(set(hyper) - valid)
        if unknown:
            raise ValueError(f"adjust: no member of {rule!r} has a hyper-parameter "
                             f"{unknown[0]!r}; valid names are {sorted(valid)}")
        return OptimiserChain(*(
            _adjust_rule(r, {k: v for k, v in hyper.items() if k in _names(r)})
            if _names(r) & set(hyper) else r
            for r in rule.rules
        ))
    valid = rule.hypernames()
    for k in hyper:
        if k not in valid:
            raise ValueError(f"adjust: {type(rule).__name__} has no hyper-parameter {k!r}; "
                             f"valid names are {list(valid)}")
        if k in rule.fixed:
            raise ValueError(f"adjust: {type(rule).__name__}'s {k!r} cannot change during "
                             f"training, as it decides the shape of the state")
    return dataclasses.replace(rule, **hyper)


def _member(rule: Rule, member: int | str) -> list[int]:
    """Indices of the chain members that ``member`` (a position or a rule name) selects."""
    if not isinstance(rule, OptimiserChain):
        raise ValueError(f"adjust: member={member!r} selects a member of an OptimiserChain, "
                         f"but the rule is {rule!r}")
    n = len(rule.rules)
    if isinstance(member, int) and not isinstance(member, bool):
        if not -n <= member < n:
            raise ValueError(f"adjust: member={member} is out of range for {rule!r} "
                             f"({n} members)")
        return [member % n]
    hits = [i for i, r in enumerate(rule.rules) if type(r).__name__ == member]
    if not hits:
        raise ValueError(f"adjust: no member of {rule!r} is a {member!r}; members are "
                         f"{[type(r).__name__ for r in rule.rules]}")
    return hits


def adjust(tree: Any, eta: float | None = None, /, *, member: int | str | None = None,
           **hyper: Any) -> None:
    """Change hyper-parameters of every leaf in ``tree`` in place, keeping their state.

    ``adjust(opt_state, 1e-4)`` sets the learning rate ``eta``;
    ``adjust(opt_state.layers.enc, beta=(0.8, 0.99))`` changes any hyper-parameter by name.
    In an OptimiserChain a name goes to every member that has it; ``member=`` (a position
    or a rule name such as ``"WeightDecay"``) targets one member only.
    """
    if eta is not None:
        if "eta" in hyper:
            raise TypeError("adjust: give the learning rate once, either positionally or as eta=")
        hyper = {"eta": eta, **hyper}
    if not hyper:
        raise TypeError("adjust: nothing to change; give a learning rate or hyper-parameters "
                        "by name, e.g. adjust(opt_state, 1e-3) or adjust(opt_state, beta=...)")
    leaves = _unique_leaves(tree, "adjust")
    new_rules = []
    for leaf in leaves:  # compute every new rule first: a refusal changes nothing
        rule = leaf.rule
        if member is None:
            new_rules.append(_adjust_rule(rule, hyper))
        else:
            picked = set(_member(rule, member))
            new_rules.append(OptimiserChain(*(
                _adjust_rule(r, hyper) if i in picked else r for i, r in enumerate(rule.rules)
            )))
    for leaf, rule in zip(leaves, new_rules):
        leaf.rule = rule


def freeze(tree: Any) -> None:
    """Stop updating every parameter in ``tree`` (any subtree of the state); state is kept."""
    for leaf in _unique_leaves(tree, "freeze"):
        leaf.frozen = True


def thaw(tree: Any) -> None:
    """Undo :func:`freeze` for every leaf in ``tree``; on the whole state it clears every freeze."""
    for leaf in _unique_leaves(tree, "thaw"):
        leaf.frozen = False
