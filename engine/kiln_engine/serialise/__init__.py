"""Models to and from files: the architecture as a JSON spec, the weights as safetensors
or .npz. Nothing is ever pickled or unpickled.

    spec = model_to_spec(model)                       # JSON-ready dict
    fresh = model_from_spec(spec, max_parameters=10**8)
    load_weights(fresh, weights_to_bytes(model))      # same outputs as model
"""

from . import layer_specs as _layer_specs  # noqa: F401  (fills LAYER_SPECS)
from .spec import count_parameters, estimate_bytes, model_from_spec, model_to_spec
from .weights import (
    WeightsError,
    load_state_dict,
    load_weights,
    save_weights,
    state_dict,
    weights_from_bytes,
    weights_to_bytes,
)

__all__ = [
    "WeightsError",
    "count_parameters",
    "estimate_bytes",
    "load_state_dict",
    "load_weights",
    "model_from_spec",
    "model_to_spec",
    "save_weights",
    "state_dict",
    "weights_from_bytes",
    "weights_to_bytes",
]
