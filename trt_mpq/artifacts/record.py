"""Records that serialise themselves: JSON by field name, read back by the fields' types.

A frozen dataclass that derives from ``Record`` writes each field under its own name and reads it back with the
type its annotation gives (nested records, enums, ``Plan``, tuples, mappings keyed by ``Precision``), so a new
field is one line in the class. Field metadata shapes the JSON where a file format needs it:
``omit`` (a predicate: leave the key out when it holds), ``round`` (digits), ``key`` (another JSON name),
``flatten`` (a nested record's or a mapping's keys written beside the record's own, and read back from the keys
no other field claims).
Keys a record derives (a digest, a margin) may be added by overriding ``to_json``; ``from_json`` ignores them."""

from __future__ import annotations

import dataclasses
import enum
import types
import typing
from collections.abc import Mapping
from typing import Any, ClassVar

from ..precision import Plan


def empty(value: Any) -> bool:
    """``omit`` predicate: None, 0, False, an empty string or collection."""
    return not value


def none(value: Any) -> bool:
    """``omit`` predicate: None only."""
    return value is None


def always(value: Any) -> bool:
    """``omit`` predicate: never written under its own name (the record writes it its own way)."""
    return True


def keep(omit: typing.Callable[[Any], bool] | None = None, key: str | None = None, round: int | None = None,
         flatten: bool = False, default: Any = dataclasses.MISSING, default_factory: Any = dataclasses.MISSING
         ) -> Any:
    """A dataclass field with JSON metadata (see the module docstring)."""
    meta = {k: v for k, v in (("omit", omit), ("key", key), ("round", round), ("flatten", flatten or None))
            if v is not None}
    return dataclasses.field(default=default, default_factory=default_factory, metadata=meta)


def encode(value: Any) -> Any:
    """A record field's value as JSON."""
    if isinstance(value, Record | Plan):
        return value.to_json()
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, Mapping):
        return {encode(k): encode(v) for k, v in value.items()}
    if isinstance(value, tuple | list):
        return [encode(v) for v in value]
    return value


def decode(kind: Any, value: Any) -> Any:
    """``value`` read from JSON as ``kind`` (a type annotation)."""
    if value is None or kind is Any:
        return value
    origin, args = typing.get_origin(kind), typing.get_args(kind)
    if origin in (typing.Union, types.UnionType):
        inner = [a for a in args if a is not type(None)]
        return decode(inner[0], value) if len(inner) == 1 else value
    if origin is tuple:
        item = args[0] if args else Any
        return tuple(decode(item, v) for v in value)
    if origin is not None and issubclass(origin, Mapping):
        key, item = args if args else (Any, Any)
        return {decode(key, k): decode(item, v) for k, v in value.items()}
    if isinstance(kind, type):
        if issubclass(kind, Record):
            return kind.from_json(value)
        if kind is Plan:
            return Plan.of(value)
        if issubclass(kind, enum.Enum):
            return kind(value)
        if kind in (int, float, bool, str):
            return kind(value)
    return value


def _rounded(value: Any, digits: int) -> Any:
    if isinstance(value, dict):
        return {k: _rounded(v, digits) for k, v in value.items()}
    return None if value is None else round(value, digits)


class Record:
    """Base of the frozen dataclasses that cross a stage and are written to disk."""

    JSON_ORDER: ClassVar[tuple[str, ...]] = ()  # keys written first, in this order (a file format's layout)

    def fields_json(self) -> dict[str, Any]:
        out = {}
        for f in dataclasses.fields(self):  # type: ignore[arg-type]
            value = getattr(self, f.name)
            omit = f.metadata.get("omit")
            if omit is not None and omit(value):
                continue
            value = encode(value)
            if "round" in f.metadata:
                value = _rounded(value, f.metadata["round"])
            if f.metadata.get("flatten"):
                out.update(value)
            else:
                out[f.metadata.get("key", f.name)] = value
        first = {k: out.pop(k) for k in self.JSON_ORDER if k in out}
        return {**first, **out}

    def to_json(self) -> dict[str, Any]:
        return self.fields_json()

    @classmethod
    def from_json(cls, d: Mapping[str, Any]):  # noqa: ANN206 - the subclass
        """The record from its JSON: fields by name, typed by their annotations; absent keys take the
        field's default; keys the record does not have (derived figures) are ignored."""
        hints, kwargs = typing.get_type_hints(cls), {}
        fields = dataclasses.fields(cls)  # type: ignore[arg-type]
        claimed = {f.metadata.get("key", f.name) for f in fields if not f.metadata.get("flatten")}
        for f in fields:
            key = f.metadata.get("key", f.name)
            if f.metadata.get("flatten"):
                kwargs[f.name] = decode(hints[f.name], {k: v for k, v in d.items() if k not in claimed})
            elif key in d:
                kwargs[f.name] = decode(hints[f.name], d[key])
        return cls(**kwargs)
