"""Registries of strategies, engines and verifiers, with typed parameters.

Each entry declares its parameters as a frozen dataclass (defaults and help text in one place);
the CLI, recipes and the server list and validate them from the same source.
"""

from __future__ import annotations

import dataclasses
import importlib
import json
import types
import typing
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from ttscale.core.errors import ConfigError

T = TypeVar("T")


def param(default: Any, help: str, **kw: Any) -> Any:
    """A dataclass field with help text for the registry listing."""
    if isinstance(default, list | dict):
        return dataclasses.field(default_factory=lambda: default, metadata={"help": help, **kw})
    return dataclasses.field(default=default, metadata={"help": help, **kw})


def check_template(name: str, template: str, keys: Iterable[str]) -> None:
    """``ValueError`` naming the parameter when a ``str.format`` template uses a placeholder
    outside ``keys`` or has unbalanced braces (fewer placeholders are fine)."""
    keys = tuple(keys)
    try:
        template.format(**{k: "" for k in keys})
    except (KeyError, IndexError, ValueError) as e:
        fields = ", ".join("{" + k + "}" for k in keys)
        raise ValueError(f"{name} may use only the placeholders {fields}, got {name}={template!r} ({e!r}); "
                         "double literal braces as {{ }}") from e


def parse_kv(items: list[str] | None, what: str) -> dict[str, Any]:
    """``["n=8", "x=0.5"]`` -> ``{"n": "8", "x": "0.5"}`` (values are converted by ``make_params``)."""
    out: dict[str, Any] = {}
    for item in items or []:
        if "=" not in item:
            raise ConfigError(f"{what} {item!r} must look like key=value")
        k, v = item.split("=", 1)
        out[k.strip()] = v.strip()
    return out


@dataclass(frozen=True)
class NoParams:
    """An entry that takes no parameters."""


def _coerce(name: str, value: Any, tp: Any, owner: str) -> Any:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if value is None or (isinstance(value, str) and value.lower() in ("none", "null")):
            return None
        last: Exception | None = None
        for a in args:
            try:
                return _coerce(name, value, a, owner)
            except ConfigError as e:
                last = e
        raise last or ConfigError(f"{owner}: bad value {value!r} for {name}")
    if origin is typing.Literal:
        allowed = typing.get_args(tp)
        if value not in allowed:
            raise ConfigError(f"{owner}: {name}={value!r} is not one of {', '.join(map(str, allowed))}")
        return value
    try:
        if tp is bool:
            if isinstance(value, bool):
                return value
            s = str(value).lower()
            if s in ("1", "true", "yes", "on"):
                return True
            if s in ("0", "false", "no", "off"):
                return False
            raise ValueError(value)
        if tp is int:
            if isinstance(value, float) and not value.is_integer():
                raise ValueError(value)
            return int(value)
        if tp is float:
            return float(value)
        if tp is str:
            return str(value)
        if origin in (list, tuple) or tp in (list, tuple):
            if isinstance(value, str):
                value = json.loads(value) if value.strip().startswith("[") else value.split(",")
            (inner,) = typing.get_args(tp)[:1] or (str,)
            items = [_coerce(name, v, inner, owner) for v in value]
            return tuple(items) if (origin or tp) is tuple else items
    except (TypeError, ValueError, json.JSONDecodeError) as e:
        raise ConfigError(f"{owner}: parameter {name}={value!r} is not a valid {getattr(tp, '__name__', tp)}") from e
    return value


def type_label(tp: Any) -> str:
    """A parameter type for listings: ``int``, ``float | None``, ``list[str]``, and a ``Literal`` as
    its allowed values (``last|min|prod|mean``)."""
    origin = typing.get_origin(tp)
    if origin is typing.Literal:
        return "|".join(map(str, typing.get_args(tp)))
    if origin in (typing.Union, types.UnionType):
        return " | ".join(type_label(a) for a in typing.get_args(tp))
    if tp is type(None):
        return "None"
    if origin is not None:
        args = ", ".join(type_label(a) for a in typing.get_args(tp) if a is not Ellipsis)
        return f"{getattr(origin, '__name__', str(origin))}[{args}]"
    return getattr(tp, "__name__", str(tp).replace("typing.", ""))


@dataclass(frozen=True)
class Entry(Generic[T]):
    """One registered thing: its name, summary, parameter dataclass and factory/function."""

    name: str
    summary: str
    params_cls: type
    target: T
    kind: str

    def fields(self) -> list[dataclasses.Field[Any]]:
        return list(dataclasses.fields(self.params_cls))

    def make_params(self, values: Mapping[str, Any] | None = None) -> Any:
        """Validate and convert ``values`` (strings from the CLI are fine) into the params object."""
        values = dict(values or {})
        hints = typing.get_type_hints(self.params_cls)
        names = {f.name for f in self.fields()}
        unknown = sorted(set(values) - names)
        if unknown:
            known = ", ".join(sorted(names)) or "(none)"
            raise ConfigError(f"{self.kind} {self.name!r} has no parameter {', '.join(unknown)}; known: {known}")
        owner = f"{self.kind} {self.name!r}"
        conv = {k: _coerce(k, v, hints[k], owner) for k, v in values.items()}
        try:
            return self.params_cls(**conv)
        except (TypeError, ValueError) as e:
            raise ConfigError(f"{owner}: {e}") from e

    def describe(self) -> list[dict[str, Any]]:
        hints = typing.get_type_hints(self.params_cls)
        out = []
        for f in self.fields():
            default = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]
            tp = hints[f.name]
            out.append({
                "name": f.name,
                "type": type_label(tp),
                "default": default,
                "help": f.metadata.get("help", ""),
            })
        return out


class Registry(Generic[T]):
    """Name → entry, with a clear error for unknown names."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, Entry[T]] = {}
        self._imported: set[str] = set()

    def load_modules(self, package: str, modules: Iterable[str]) -> Registry[T]:
        """Import ``package.module`` for each module not imported yet (each registers its entries
        when imported) and return this registry."""
        for m in modules:
            name = f"{package}.{m}"
            if name not in self._imported:
                importlib.import_module(name)
                self._imported.add(name)
        return self

    def register(self, name: str, params: type = NoParams, summary: str = "") -> Callable[[T], T]:
        def deco(target: T) -> T:
            doc = summary or (getattr(target, "__doc__", "") or "").strip().split("\n")[0]
            if name in self._entries:
                raise ValueError(f"{self.kind} {name!r} registered twice")
            self._entries[name] = Entry(name, doc, params, target, self.kind)
            return target

        return deco

    def get(self, name: str) -> Entry[T]:
        if name not in self._entries:
            raise ConfigError(f"unknown {self.kind} {name!r}; available: {', '.join(sorted(self._entries))}")
        return self._entries[name]

    def names(self) -> list[str]:
        return sorted(self._entries)

    def entries(self) -> Iterable[Entry[T]]:
        return (self._entries[n] for n in self.names())

    def __contains__(self, name: str) -> bool:
        return name in self._entries

