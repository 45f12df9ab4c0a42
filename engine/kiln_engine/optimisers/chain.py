"""OptimiserChain: rules composed in order, itself a rule whose apply is a fold."""

from __future__ import annotations

from typing import Any

from ._rule import Rule

__all__ = ["OptimiserChain"]


class OptimiserChain(Rule):
    """``OptimiserChain(r1, r2, ...)``: each rule transforms the step the previous one made.

    ``OptimiserChain(ClipGrad(1.0), WeightDecay(1e-4), Adam(1e-3))`` clips, adds decay, then
    takes an Adam step. Its state is the tuple of the members' states. An empty chain
    subtracts the raw gradient (like ``Descent(1)``). A member returning no step (AccumGrad
    between accumulations) ends the fold: the later members and the parameter wait.
    ``adjust(tree, member=i, ...)`` targets one member; without ``member`` a hyper-parameter
    goes to every member that has it.
    """

    def __init__(self, *rules: Rule) -> None:
        if len(rules) == 1 and isinstance(rules[0], (list, tuple)):
            rules = tuple(rules[0])
        for i, r in enumerate(rules):
            if not isinstance(r, Rule):
                raise TypeError(f"OptimiserChain: member {i} must be a rule such as Adam() or "
                                f"ClipGrad(); got {type(r).__name__}")
        object.__setattr__(self, "rules", tuple(rules))

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError("OptimiserChain is immutable; use adjust() on the state tree")

    @classmethod
    def hypernames(cls) -> tuple[str, ...]:
        return ()

    def hyperparameters(self) -> dict[str, Any]:
        return {}

    def refuses_complex(self) -> str | None:
        for r in self.rules:
            why = r.refuses_complex()
            if why is not None:
                return f"its member {type(r).__name__}: {why}"
        return None

    def init(self, x: Any) -> tuple:
        return tuple(r.init(x) for r in self.rules)

    def apply(self, state: tuple, x: Any, dx: Any) -> tuple[tuple, Any]:
        new = list(state)
        for i, r in enumerate(self.rules):
            if dx is None:
                break
            new[i], dx = r.apply(state[i], x, dx)
        return tuple(new), dx

    def __eq__(self, other: object) -> bool:
        return isinstance(other, OptimiserChain) and self.rules == other.rules

    def __hash__(self) -> int:
        return hash(self.rules)

    def __len__(self) -> int:
        return len(self.rules)

    def __getitem__(self, i: int) -> Rule:
        return self.rules[i]

    def __repr__(self) -> str:
        return f"OptimiserChain({', '.join(repr(r) for r in self.rules)})"
