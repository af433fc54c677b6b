"""Pipeline spec strings and TOML recipes.

Grammar:  pipeline := step ("," step)*
          step     := NAME ["(" key=value ("," key=value)* ")"] | "fixpoint" "[" pipeline "]"
          value    := "[" values "]" | "{" key:value, ... "}" | 'quoted' | "quoted" | bare
A spec parses into steps that print back to the same text (`format_step`).
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from effc.errors import EffcError

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_.\-]*")


@dataclass
class StepSpec:
    """One parsed step: a pass or named pipeline with its options, or a fixpoint group of steps."""

    name: str
    options: dict[str, Any] = field(default_factory=dict)
    children: list["StepSpec"] | None = None  # set for fixpoint groups


def parse_spec(text: str) -> list[StepSpec]:
    parser = _Parser(text)
    steps = parser.pipeline()
    parser.skip_space()
    if parser.pos != len(text):
        parser.fail("unexpected text")
    if not steps:
        raise EffcError("empty pipeline spec")
    return steps


def load_recipe(path: str | Path) -> list[StepSpec]:
    """A TOML recipe: either `pipeline = "spec"` or `[[pass]]` tables with `name` and options."""
    path = Path(path)
    if not path.exists():
        raise EffcError(f"{path}: no such recipe file")
    try:
        data = tomllib.loads(path.read_text())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise EffcError(f"{path}: not valid TOML ({exc})") from None
    if "pipeline" in data and "pass" not in data:
        if not isinstance(data["pipeline"], str):
            raise EffcError(f"{path}: 'pipeline' must be a spec string")
        return parse_spec(data["pipeline"])
    tables = data.get("pass")
    if not isinstance(tables, list) or not tables:
        raise EffcError(f"{path}: a recipe needs `pipeline = \"...\"` or at least one [[pass]] table")
    steps = []
    for i, table in enumerate(tables):
        table = dict(table)
        name = table.pop("name", None)
        if not isinstance(name, str):
            raise EffcError(f"{path}: [[pass]] number {i + 1} has no name")
        steps.append(StepSpec(name, table))
    return steps


def format_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(format_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ",".join(f"{k}:{format_value(v)}" for k, v in value.items()) + "}"
    if isinstance(value, float):
        return repr(value)
    text = str(value)
    if text == "" or re.search(r"[\s,()\[\]{}:=\"']", text):
        return '"' + text.replace('"', '\\"') + '"'
    return text


def format_steps(steps: list[StepSpec]) -> str:
    return ",".join(format_step(s) for s in steps)


def format_step(step: StepSpec) -> str:
    if step.children is not None:
        return f"{step.name}[{format_steps(step.children)}]"
    if not step.options:
        return step.name
    return f"{step.name}(" + ",".join(f"{k}={format_value(v)}" for k, v in step.options.items()) + ")"


class _Parser:
    def __init__(self, text: str):
        self.text = text
        self.pos = 0

    def fail(self, what: str) -> None:
        raise EffcError(f"bad pipeline spec at column {self.pos + 1}: {what}: {self.text!r}")

    def skip_space(self) -> None:
        while self.pos < len(self.text) and self.text[self.pos].isspace():
            self.pos += 1

    def peek(self) -> str:
        self.skip_space()
        return self.text[self.pos] if self.pos < len(self.text) else ""

    def expect(self, char: str) -> None:
        if self.peek() != char:
            self.fail(f"expected {char!r}")
        self.pos += 1

    def name(self) -> str:
        self.skip_space()
        match = _NAME.match(self.text, self.pos)
        if not match:
            self.fail("expected a pass name")
        self.pos = match.end()
        return match.group()

    def pipeline(self) -> list[StepSpec]:
        steps = [self.step()]
        while self.peek() == ",":
            self.pos += 1
            steps.append(self.step())
        return steps

    def step(self) -> StepSpec:
        name = self.name()
        if self.peek() == "[":
            self.pos += 1
            children = self.pipeline()
            self.expect("]")
            return StepSpec(name, {}, children)
        options: dict[str, Any] = {}
        if self.peek() == "(":
            self.pos += 1
            if self.peek() != ")":
                while True:
                    key = self.name()
                    if key in options:
                        self.fail(f"option {key!r} given twice")
                    self.expect("=")
                    options[key] = self.value()
                    if self.peek() != ",":
                        break
                    self.pos += 1
            self.expect(")")
        return StepSpec(name, options)

    def value(self) -> Any:
        char = self.peek()
        if char == "[":
            self.pos += 1
            items = []
            if self.peek() != "]":
                items.append(self.value())
                while self.peek() == ",":
                    self.pos += 1
                    items.append(self.value())
            self.expect("]")
            return items
        if char == "{":
            self.pos += 1
            mapping = {}
            if self.peek() != "}":
                while True:
                    key = self.value()
                    self.expect(":")
                    mapping[key] = self.value()
                    if self.peek() != ",":
                        break
                    self.pos += 1
            self.expect("}")
            return mapping
        if char in ("'", '"'):
            end = self.pos + 1
            out = []
            while end < len(self.text) and self.text[end] != char:
                if self.text[end] == "\\" and end + 1 < len(self.text):
                    end += 1
                out.append(self.text[end])
                end += 1
            if end >= len(self.text):
                self.fail("unterminated string")
            self.pos = end + 1
            return "".join(out)
        start = self.pos
        while self.pos < len(self.text) and self.text[self.pos] not in ",()[]{}:=" and not self.text[self.pos].isspace():
            self.pos += 1
        if self.pos == start:
            self.fail("expected a value")
        return self.text[start:self.pos]
