"""Optimisers: Optimisers.jl's rules and its state-tree interface, in Python.

    opt_state = setup(Adam(1e-3), model)
    grads = gradient(loss, model)[0]
    update(opt_state, model, grads)          # in place
    adjust(opt_state.layers.enc, 1e-4)       # steer a subtree mid-run
    freeze(opt_state.layers.enc); thaw(opt_state)

A rule holds only hyper-parameters (``init(x) -> state``, ``apply(state, x, dx) ->
(state, step)``); the state tree holds a mutable :class:`Leaf` per parameter array
(one for an array and its views); ``describe_state(opt_state)`` lists them. Where Kiln
differs from Optimisers.jl on purpose, and why: engine/README.md.
"""

from ._rule import Rule
from .adjust import adjust, freeze, thaw
from .chain import OptimiserChain
from .destructure import Restructure, destructure, trainables
from .interface import Leaf, LeafInfo, StateTree, describe_state, leaves_of, setup, update
from .modifiers import AccumGrad, ClipGrad, ClipNorm, NonFiniteError, SignDecay, WeightDecay
from .rules import (
    AdaBelief,
    AdaDelta,
    AdaGrad,
    Adam,
    AdaMax,
    AdamW,
    AMSGrad,
    Descent,
    Lion,
    Momentum,
    NAdam,
    Nesterov,
    OAdam,
    RAdam,
    RMSProp,
    Rprop,
)
from .spec import RULES, rule_from_spec, rule_to_spec
from .state_io import export_state, restore_state

__all__ = [
    "RULES",
    "AMSGrad",
    "AccumGrad",
    "AdaBelief",
    "AdaDelta",
    "AdaGrad",
    "AdaMax",
    "Adam",
    "AdamW",
    "ClipGrad",
    "ClipNorm",
    "Descent",
    "Leaf",
    "LeafInfo",
    "Lion",
    "Momentum",
    "NAdam",
    "Nesterov",
    "NonFiniteError",
    "OAdam",
    "OptimiserChain",
    "RAdam",
    "RMSProp",
    "Restructure",
    "Rprop",
    "Rule",
    "SignDecay",
    "StateTree",
    "WeightDecay",
    "adjust",
    "describe_state",
    "destructure",
    "export_state",
    "freeze",
    "leaves_of",
    "restore_state",
    "rule_from_spec",
    "rule_to_spec",
    "setup",
    "thaw",
    "trainables",
    "update",
]
