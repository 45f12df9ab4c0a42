"""Rules to and from JSON specs, with errors that name the path of the bad field.

``{"rule": "Adam", "eta": 0.001, "beta": [0.9, 0.999], "epsilon": 1e-8}`` is
``Adam(0.001)``; a chain is ``{"rule": "OptimiserChain", "rules": [...]}``. Fields left out
take their defaults; an infinite ClipNorm ``p`` is the string ``"inf"`` (JSON has no
infinity). A bad field raises SpecError at its path: ``optimiser.rules[1].eta: must be
>= 0; got -1``.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

from .._spec import SpecError, check_keys, get_choice, join
from ._rule import CHECKS, HyperError, Rule
from .chain import OptimiserChain
from .modifiers import AccumGrad, ClipGrad, ClipNorm, SignDecay, WeightDecay
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

__all__ = ["RULES", "hyper_from_json", "rule_from_spec", "rule_to_spec"]

# JSON spells a hyper-parameter as Optimisers.jl does; Python needs a trailing underscore
# where that name is a keyword (``lambda`` -> ``lambda_``).
_TO_PYTHON = {"lambda": "lambda_"}
_TO_JSON = {v: k for k, v in _TO_PYTHON.items()}


def hyper_from_json(hyper: dict[str, Any]) -> dict[str, Any]:
    """Hyper-parameters named as in JSON (``{"lambda": 1e-4}``) as ``adjust`` takes them."""
    return {_TO_PYTHON.get(k, k): v for k, v in hyper.items()}

#: Every rule by name, as specs spell it.
RULES: dict[str, type[Rule]] = {cls.__name__: cls for cls in (
    Descent, Momentum, Nesterov, Rprop, RMSProp, Adam, AdamW, RAdam, AdaMax, OAdam, AdaGrad,
    AdaDelta, AMSGrad, NAdam, AdaBelief, Lion,
    WeightDecay, SignDecay, ClipGrad, ClipNorm, AccumGrad, OptimiserChain,
)}


def _json(v: Any) -> Any:
    if isinstance(v, tuple):
        return [_json(e) for e in v]
    if isinstance(v, float) and math.isinf(v):
        return "inf" if v > 0 else "-inf"
    return v


def rule_to_spec(rule: Rule) -> dict[str, Any]:
    """The JSON spec of ``rule`` (plain dicts, lists, numbers, strings and booleans)."""
    if isinstance(rule, OptimiserChain):
        return {"rule": "OptimiserChain", "rules": [rule_to_spec(r) for r in rule.rules]}
    if not isinstance(rule, Rule):
        raise TypeError(f"rule_to_spec: expected a rule such as Adam(); got {type(rule).__name__}")
    return {"rule": type(rule).__name__,
            **{_TO_JSON.get(k, k): _json(v) for k, v in rule.hyperparameters().items()}}


def rule_from_spec(spec: Any, path: str = "optimiser") -> Rule:
    """The rule a JSON spec describes; SpecError names the bad field's path."""
    if not isinstance(spec, dict):
        raise SpecError(path, f"must be an object such as {{\"rule\": \"Adam\"}}; got "
                              f"{type(spec).__name__}")
    cls = get_choice(spec, "rule", path, RULES)
    if cls is OptimiserChain:
        check_keys(spec, path, {"rule", "rules"}, required=("rules",))
        members = spec["rules"]
        if not isinstance(members, list):
            raise SpecError(join(path, "rules"), f"must be a list of rules; got "
                                                 f"{type(members).__name__}")
        return OptimiserChain(*(rule_from_spec(m, join(join(path, "rules"), i))
                                for i, m in enumerate(members)))
    fields = dataclasses.fields(cls)
    names = {_TO_JSON.get(f.name, f.name): f.name for f in fields}
    required = tuple(k for k, f in zip(names, fields) if f.default is dataclasses.MISSING)
    check_keys(spec, path, {"rule", *names}, required=required)
    kwargs = {}
    for key, name in names.items():
        if key in spec:
            try:
                kwargs[name] = CHECKS[name](spec[key])
            except HyperError as e:
                raise SpecError(join(path, key), str(e)) from None
    return cls(**kwargs)
