"""What a pass is, and the registry passes join by name.

A pass is a class with a registered `name`, a docstring whose first line describes it, a
`kind` (lossless or lossy), an `Options` dataclass of typed options with defaults, and one
method `run(model, ctx) -> PassResult` that rewrites the model in place.
"""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

from effc.errors import EffcError


@dataclass
class PassResult:
    """What a pass reports: whether it changed the model, counters, and an optional report (JSON-able)."""

    changed: bool
    stats: dict[str, int | float | str] = field(default_factory=dict)
    report: Any = None


@dataclass
class NoOptions:
    pass


class Pass:
    """Base class of every pass. Subclasses set `name`, `kind`, `Options`, and implement `run`."""

    name: ClassVar[str] = ""
    kind: ClassVar[Literal["lossless", "lossy"]] = "lossless"
    # Context features the pass needs ("calibration"), checked before any pass of the pipeline runs.
    requires: ClassVar[tuple[str, ...]] = ()
    Options: ClassVar[type] = NoOptions

    def __init__(self, options: Any = None, /, **kwargs: Any):
        if options is not None and kwargs:
            raise TypeError("give an Options object or keyword options, not both")
        if options is None:
            options = build_options(type(self), kwargs)
        elif not isinstance(options, self.Options):
            raise TypeError(f"{self.name}: expected {self.Options.__name__}")
        self.options = options
        self.explicit: dict[str, Any] = dict(kwargs)  # what the user set, in order; printed back by the spec
        validate = getattr(options, "validate", None)
        if validate is not None:
            try:
                validate()
            except ValueError as exc:
                raise EffcError(f"pass {self.name}: {exc}") from None

    def run(self, model, ctx) -> PassResult:  # pragma: no cover - abstract
        raise NotImplementedError

    def check_context(self, ctx) -> None:
        """Raise EffcError if the context lacks something this pass needs. Called before the pipeline starts."""
        if "calibration" in self.requires and ctx.calibration is None and not ctx.allow_random_calibration:
            raise EffcError(f"pass {self.name} needs calibration data: give --calib DATA.npz (or a folder of .npy files)")

    def check_model(self, model) -> None:
        """Raise EffcError if the options do not fit the input model (a node name that is not there). Called before
        the pipeline starts, so no pass has run when a typo is reported."""

    @classmethod
    def description(cls) -> str:
        return (cls.__doc__ or "").strip().splitlines()[0] if cls.__doc__ else ""

    def spec(self) -> str:
        from effc.pipeline.spec import format_value

        if not self.explicit:
            return self.name
        args = ",".join(f"{k}={format_value(v)}" for k, v in self.explicit.items())
        return f"{self.name}({args})"

    def __str__(self) -> str:
        return self.spec()

    def __repr__(self) -> str:
        return f"<pass {self.spec()}>"


_REGISTRY: dict[str, type[Pass]] = {}


def register_pass(cls: type[Pass]) -> type[Pass]:
    """Class decorator: make a pass available by its name. Raises on a duplicate name."""
    if not cls.name:
        raise ValueError(f"{cls.__name__} has no name")
    if cls.name in _REGISTRY and _REGISTRY[cls.name] is not cls:
        raise ValueError(f"a pass named {cls.name!r} is already registered ({_REGISTRY[cls.name].__module__})")
    if not dataclasses.is_dataclass(cls.Options):
        raise ValueError(f"{cls.name}: Options must be a dataclass")
    _REGISTRY[cls.name] = cls
    return cls


def unregister_pass(name: str) -> None:
    _REGISTRY.pop(name, None)


def registered_passes() -> dict[str, type[Pass]]:
    _load_builtin_passes()
    return dict(sorted(_REGISTRY.items()))


def get_pass(name: str) -> type[Pass]:
    passes = registered_passes()
    if name not in passes:
        raise EffcError(f"unknown pass {name!r}; known passes: {', '.join(passes) or 'none'}")
    return passes[name]


_PLUGINS_LOADED = False


def _load_builtin_passes() -> None:
    """Register the built-in passes, then those of installed plugins (entry-point group `effc.passes`)."""
    global _PLUGINS_LOADED
    import effc.passes  # noqa: F401  (importing registers the built-in passes)

    if _PLUGINS_LOADED:
        return
    _PLUGINS_LOADED = True
    from importlib.metadata import entry_points

    for entry in entry_points(group="effc.passes"):
        try:
            entry.load()  # a plugin module registers its passes with @register_pass when imported
        except Exception as exc:  # a broken plugin must not take the CLI down
            import logging

            logging.getLogger("effc").warning("pass plugin %s failed to load: %s", entry.name, exc)


@dataclass(frozen=True)
class OptionInfo:
    name: str
    type: str
    default: Any
    help: str
    choices: tuple | None


def option_infos(cls: type[Pass]) -> list[OptionInfo]:
    hints = typing.get_type_hints(cls.Options)
    infos = []
    for f in dataclasses.fields(cls.Options):
        hint = hints[f.name]
        default = f.default if f.default is not dataclasses.MISSING else (f.default_factory() if f.default_factory is not dataclasses.MISSING else None)
        choices = typing.get_args(hint) if typing.get_origin(hint) is Literal else None
        infos.append(OptionInfo(f.name, _type_name(hint), default, f.metadata.get("help", ""), choices))
    return infos


def build_options(cls: type[Pass], values: dict[str, Any]) -> Any:
    """Options from user values (strings from a spec, or Python values), converted to the declared types."""
    hints = typing.get_type_hints(cls.Options)
    fields = {f.name for f in dataclasses.fields(cls.Options)}
    converted = {}
    for key, value in values.items():
        if key not in fields:
            valid = ", ".join(sorted(fields)) or "none"
            raise EffcError(f"pass {cls.name} has no option {key!r}; its options: {valid}")
        try:
            converted[key] = convert(value, hints[key])
        except (TypeError, ValueError) as exc:
            raise EffcError(f"pass {cls.name}: option {key}: {exc}") from None
    return cls.Options(**converted)


def convert(value: Any, hint: Any) -> Any:
    """Convert a spec value (string, list, dict) to the type `hint`; raise ValueError with a reason."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is Literal:
        text = value if isinstance(value, str) else str(value).lower() if isinstance(value, bool) else value
        for choice in args:
            if text == choice or str(choice) == str(text):
                return choice
        raise ValueError(f"{value!r} is not one of {', '.join(map(str, args))}")
    if origin in (typing.Union, getattr(__import__("types"), "UnionType", None)):
        if value is None or (isinstance(value, str) and value.lower() in ("none", "null")):
            if type(None) in args:
                return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return convert(value, arg)
            except (TypeError, ValueError) as exc:
                errors.append(str(exc))
        raise ValueError("; ".join(errors))
    if origin in (tuple, list):
        items = value if isinstance(value, (list, tuple)) else [v for v in str(value).split(";") if v] if value != "" else []
        inner = args[0] if args else str
        return tuple(convert(v, inner) for v in items)
    if origin is dict:
        if not isinstance(value, dict):
            raise ValueError(f"expected a mapping like {{name:value}}, got {value!r}")
        key_t, val_t = args or (str, str)
        return {convert(k, key_t): convert(v, val_t) for k, v in value.items()}
    if hint is bool:
        if isinstance(value, bool):
            return value
        text = str(value).lower()
        if text in ("true", "1", "yes", "on"):
            return True
        if text in ("false", "0", "no", "off"):
            return False
        raise ValueError(f"expected true or false, got {value!r}")
    if hint is int:
        if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
            raise ValueError(f"expected an integer, got {value!r}")
        try:
            return int(value)
        except ValueError:
            raise ValueError(f"expected an integer, got {value!r}") from None
    if hint is float:
        if isinstance(value, bool):
            raise ValueError(f"expected a number, got {value!r}")
        try:
            return float(value)
        except ValueError:
            raise ValueError(f"expected a number, got {value!r}") from None
    if hint is str:
        if isinstance(value, (list, dict)):
            raise ValueError(f"expected a string, got {value!r}")
        return str(value)
    raise TypeError(f"unsupported option type {hint!r}")


def _type_name(hint: Any) -> str:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is Literal:
        return "|".join(map(str, args))
    if origin in (tuple, list):
        return f"list[{_type_name(args[0]) if args else 'str'}]"
    if origin is dict:
        return f"dict[{_type_name(args[0])}, {_type_name(args[1])}]"
    if args:
        return " | ".join(_type_name(a) for a in args if a is not type(None)) + (" | none" if type(None) in args else "")
    return getattr(hint, "__name__", str(hint))
