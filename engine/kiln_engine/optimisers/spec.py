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
import re
from typing import Any

from .._spec import (
    SpecError,
    check_keys,
    described,
    get_choice,
    join,
    object_schema,
    ref,
    summary,
    union,
)
from ._rule import CHECKS, DESCRIPTIONS, HyperError, Rule
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

__all__ = ["ALIASES", "RULES", "hyper_from_json", "rule_from_spec", "rule_schemas",
           "rule_to_spec"]

# JSON spells a hyper-parameter as Optimisers.jl does; Python needs a trailing underscore
# where that name is a keyword (``lambda`` -> ``lambda_``).
_TO_PYTHON = {"lambda": "lambda_"}
_TO_JSON = {v: k for k, v in _TO_PYTHON.items()}


def json_names(text: str) -> str:
    """``text`` (an error message naming hyper-parameters, or a rule's repr) with each
    name spelled as JSON spells it (``lambda_`` -> ``lambda``), for a JSON request."""
    for python, json in _TO_JSON.items():
        text = re.sub(rf"\b{python}\b", json, text)
    return text


def hyper_from_json(hyper: dict[str, Any]) -> dict[str, Any]:
    """Hyper-parameters named as in JSON (``{"lambda": 1e-4}``) as ``adjust`` takes them."""
    return {_TO_PYTHON.get(k, k): v for k, v in hyper.items()}

#: Every rule by name, as specs spell it.
RULES: dict[str, type[Rule]] = {cls.__name__: cls for cls in (
    Descent, Momentum, Nesterov, Rprop, RMSProp, Adam, AdamW, RAdam, AdaMax, OAdam, AdaGrad,
    AdaDelta, AMSGrad, NAdam, AdaBelief, Lion,
    WeightDecay, SignDecay, ClipGrad, ClipNorm, AccumGrad, OptimiserChain,
)}

#: Other libraries' names for a rule (lower case), suggested when a spec names one:
#: ``{"rule": "SGD"}`` gets "did you mean 'Descent'?". Names that differ only in case
#: (``RMSprop``, ``Adagrad``) need no entry.
ALIASES: dict[str, str] = {"sgd": "Descent"}


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
    cls = get_choice(spec, "rule", path, RULES, aliases=ALIASES)
    if cls is OptimiserChain:
        check_keys(spec, path, {"rule", "rules"}, required=("rules",))
        members = spec["rules"]
        if not isinstance(members, list):
            raise SpecError(join(path, "rules"), f"must be a list of rules; got "
                                                 f"{type(members).__name__}")
        return OptimiserChain(*(rule_from_spec(m, join(join(path, "rules"), i))
                                for i, m in enumerate(members)))
    fields = _hyper_fields(cls)
    required = tuple(k for k, f in fields.items() if f.default is dataclasses.MISSING)
    check_keys(spec, path, {"rule", *fields}, required=required)
    kwargs = {}
    for key, f in fields.items():
        if key in spec:
            try:
                kwargs[f.name] = CHECKS[f.name](spec[key])
            except HyperError as e:
                raise SpecError(join(path, key), str(e)) from None
    return cls(**kwargs)


def _hyper_fields(cls: type[Rule]) -> dict[str, dataclasses.Field]:
    """A rule's hyper-parameters by their JSON names."""
    return {_TO_JSON.get(f.name, f.name): f for f in dataclasses.fields(cls)}


def rule_schemas() -> dict[str, dict[str, Any]]:
    """The JSON Schema definitions of an optimiser spec, from ``RULES`` and ``CHECKS``:
    ``OptimiserSpec`` (one of the ``<Rule>Rule`` definitions, by ``rule``). References
    are to ``#/$defs/<name>``."""
    rules = {name: f"{name}Rule" for name in RULES}
    out = {"OptimiserSpec": union("rule", rules, "An optimisation rule, {\"rule\": \"Adam\", "
                                  "\"eta\": 0.001}; hyper-parameters left out take their "
                                  "defaults. OptimiserChain applies several in turn.")}
    for name, cls in RULES.items():
        if cls is OptimiserChain:
            props = {"rules": {"type": "array", "items": ref("OptimiserSpec"), "description":
                               "each rule transforms the step the previous one made"}}
            required = ["rules"]
        else:
            fields = _hyper_fields(cls)
            props = {key: described(CHECKS[f.name].schema, DESCRIPTIONS[f.name],
                                    ... if f.default is dataclasses.MISSING else _json(f.default))
                     for key, f in fields.items()}
            required = [k for k, f in fields.items() if f.default is dataclasses.MISSING]
        out[rules[name]] = object_schema("rule", name, props, required, summary(cls))
    return out
