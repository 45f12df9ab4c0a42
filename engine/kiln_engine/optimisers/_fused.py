"""Applying the rules to the collected leaves: per leaf, or fused for the common rules.

The per-leaf path calls ``rule.apply`` and subtracts the step. It is the reference.
"""

from __future__ import annotations

from typing import Any

from .modifiers import NonFiniteError

__all__ = ["step_all", "step_leaf"]


def step_leaf(leaf: Any, x: Any, g: Any) -> None:
    """One leaf's step by its rule: ``x -= apply(state, x, g)``, the state replaced."""
    if g.dtype != x.dtype:
        g = g.astype(x.dtype)
    leaf.state, dx = leaf.rule.apply(leaf.state, x, g)
    if dx is not None:
        x -= dx


def step_all(entries: list[list]) -> None:
    """Step every ``[leaf, x, g, path]`` collected by ``update``."""
    for leaf, x, g, path in entries:
        try:
            step_leaf(leaf, x, g)
        except NonFiniteError as e:
            e.path = path
            raise
