"""Accuracy budgets: `accuracy_drop<=0.01` (at most one point below the original) or `accuracy>=0.97`."""

from __future__ import annotations

import re
from dataclasses import dataclass

from effc.errors import EffcError

PATTERN = re.compile(r"\s*(accuracy_drop|accuracy)\s*(<=|>=)\s*([0-9]*\.?[0-9]+(?:e-?[0-9]+)?)\s*")


@dataclass(frozen=True)
class Budget:
    """What a point must keep: `kind` "drop" (quality >= original - value) or "floor" (quality >= value)."""

    kind: str
    value: float
    text: str

    def violation(self, quality: float, original: float) -> float:
        """How far `quality` is below what the budget allows (<= 0: within it)."""
        floor = original - self.value if self.kind == "drop" else self.value
        return floor - quality

    def __str__(self) -> str:
        return self.text


def parse_budget(text: str) -> Budget:
    match = PATTERN.fullmatch(text or "")
    if not match:
        raise EffcError(f"--budget {text!r}: expected accuracy_drop<=X (e.g. accuracy_drop<=0.01) or accuracy>=X")
    name, op, number = match.groups()
    value = float(number)
    if name == "accuracy_drop" and op != "<=" or name == "accuracy" and op != ">=":
        raise EffcError(f"--budget {text!r}: accuracy_drop takes <=, accuracy takes >=")
    if not 0.0 <= value <= 1.0:
        raise EffcError(f"--budget {text!r}: {value} is not a fraction in [0, 1] (0.01 is one point)")
    return Budget("drop" if name == "accuracy_drop" else "floor", value, f"{name}{op}{number}")
