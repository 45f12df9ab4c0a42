"""kiln_engine: Flux's explicit training API in Python, on NumPy (CPU) or CuPy (GPU).

    from kiln_engine import Chain, Dense, relu, losses, withgradient
    model = Chain(Dense(4, 16, relu), Dense(16, 3))
    val, grads = withgradient(lambda m: losses.logitcrossentropy(m(x), y), model)
"""

from . import activations, init, losses, random
from ._backend import DeviceError
from ._grad import GradientError, gradient, withgradient
from ._onehot import onecold, onehot
from ._tree import Layers, PathError, Tangent, getpath, leaves, params, paths
from .activations import (
    celu,
    elu,
    gelu,
    hardsigmoid,
    hardtanh,
    identity,
    leakyrelu,
    logsigmoid,
    logsoftmax,
    relu,
    relu6,
    selu,
    sigmoid,
    softmax,
    softplus,
    softsign,
    swish,
    tanh,
)
from .layers import Chain, Dense, Layer, ShapeError
from .optimisers import (
    Adam,
    Descent,
    OptimiserChain,
    adjust,
    destructure,
    freeze,
    setup,
    thaw,
    trainables,
    update,
)
from .optimisers import (
    Adam,
    Descent,
    OptimiserChain,
    adjust,
    destructure,
    freeze,
    setup,
    thaw,
    trainables,
    update,
)

__all__ = [
    "Adam", "Descent", "OptimiserChain", "adjust", "destructure", "freeze", "setup", "thaw",
    "trainables", "update",
    "Adam", "Descent", "OptimiserChain", "adjust", "destructure", "freeze", "setup", "thaw",
    "trainables", "update",
    "Chain", "Dense", "DeviceError", "GradientError", "Layer", "Layers", "PathError",
    "ShapeError", "Tangent", "activations", "celu", "elu", "gelu", "getpath", "gradient",
    "hardsigmoid", "hardtanh", "identity", "init", "leakyrelu", "leaves", "logsigmoid",
    "logsoftmax", "losses", "onecold", "onehot",
    "params", "paths", "random", "relu", "relu6", "selu", "sigmoid", "softmax",
    "softplus", "softsign", "swish", "tanh", "withgradient",
]
