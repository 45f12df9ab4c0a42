"""Optimisers: Optimisers.jl's rules and its state-tree interface, in Python.

    opt_state = setup(Adam(1e-3), model)
    grads = gradient(loss, model)[0]
    update(opt_state, model, grads)          # in place
    adjust(opt_state.layers.enc, 1e-4)       # steer a subtree mid-run
    freeze(opt_state.layers.enc); thaw(opt_state)
"""

from .adjust import adjust, freeze, thaw
from .chain import OptimiserChain
from .destructure import Restructure, destructure, trainables
from .interface import Leaf, StateTree, setup, update
from .rules import Adam, Descent

__all__ = [
    "Adam", "Descent", "Leaf", "OptimiserChain", "Restructure", "StateTree", "adjust",
    "destructure", "freeze", "setup", "thaw", "trainables", "update",
]
