"""The rule → kernel registry: which fused kernel steps a rule, and with which scalars.

Rules register themselves where they are defined: a *core* rule (Descent, Momentum,
Adam, AdamW in ``rules.py``) with a planner that, given the parameter and the leaf's
state, names its kernel (``kernels/optimisers.py``), the state arrays the kernel updates
in place, its scalars and the leaf's next state; a *stage* (ClipGrad, WeightDecay in
``modifiers.py``) with the ``(kind, value)`` a kernel applies to the gradient first. An
OptimiserChain of up to two stages and then a core rule has a plan too. The update
(``_fused.py``) asks :func:`plan` for each leaf and runs the plan's kernel, numba's build
on the CPU and the CUDA one on a GPU, so neither path nor the generic optimiser
interface names a concrete rule. No plan (another rule, float16 or complex arrays): the
rule's own ``apply`` runs.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import numpy as np

from ..kernels import Elementwise
from ..kernels.optimisers import stage_args
from ._rule import Rule
from .chain import OptimiserChain

__all__ = ["Plan", "plan", "register_core", "register_stage"]

#: A core rule's planner: ``(rule, x, state) -> (kernel, state arrays, scalars, next state)``.
Planner = Callable[[Any, Any, Any], tuple[Elementwise, tuple, tuple, Any]]

_CORES: dict[type[Rule], Planner] = {}
_STAGES: dict[type[Rule], Callable[[Any], tuple[int, float]]] = {}
_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


class Plan(NamedTuple):
    """One leaf's fused step: run ``kernel`` over ``(g, x, *arrays)`` with ``scalars`` (the
    stages' and then the core rule's), then set the leaf's state to ``state``."""

    kernel: Elementwise
    arrays: tuple
    scalars: tuple
    state: Any


def register_core(rule: type[Rule], planner: Planner) -> None:
    """Let ``planner`` step ``rule`` with a fused kernel."""
    _CORES[rule] = planner


def register_stage(rule: type[Rule], stage: Callable[[Any], tuple[int, float]]) -> None:
    """Let a kernel apply ``rule`` to the gradient first: ``stage(rule) -> (kind, value)``."""
    _STAGES[rule] = stage


def plan(rule: Rule, x: Any, state: Any) -> Plan | None:
    """The fused step of ``rule`` for the parameter ``x`` with its leaf's ``state``, or None
    where no kernel does what ``rule.apply`` does."""
    if x.dtype not in _DTYPES:
        return None
    stages: list[tuple[int, float]] = []
    core, core_state = rule, state
    if type(rule) is OptimiserChain:
        if not 1 <= len(rule) <= 3:
            return None
        *before, core = rule.rules
        for r in before:
            stage = _STAGES.get(type(r))
            if stage is None:
                return None
            stages.append(stage(r))
        core_state = state[-1]
    planner = _CORES.get(type(core))
    if planner is None:
        return None
    kernel, arrays, scalars, new = planner(core, x, core_state)
    if core is not rule:
        new = (*state[:-1], new)
    return Plan(kernel, arrays, stage_args(x, stages) + scalars, new)
