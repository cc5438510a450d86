"""Typed fields: constraints attached to annotations, and the wire conversion they drive.

Messages are frozen dataclasses whose annotations are the single definition of their fields.
Constraints ride along with ``typing.Annotated`` (``Annotated[int, Range(0, 100)]``). From those
annotations this module does three things, so they can never disagree:

* :func:`from_wire` turns a decoded JSON value into a typed value, raising
  :class:`~protocol.errors.RemoteProtocolError` with the path of the first bad field;
* :func:`to_wire` turns a typed value back into JSON-ready values (optional fields that are
  ``None`` omitted);
* :func:`json_schema` describes the same type as a JSON Schema (draft 2020-12).

Each direction is compiled once per class into a plan of per-field converters (built on first
use), so converting a message walks no annotations and calls no reflection.

Unknown object keys are ignored (forward compatibility); missing required keys, wrong types,
violated constraints and strings holding lone surrogates (which have no UTF-8 form) are
errors. Floating-point numbers never appear on the wire: every quantity is an integer in a
stated unit (milliseconds, tenths of a degree, dBm).

Supported annotations: ``int``, ``str``, ``bool``, ``StrEnum`` subclasses, ``X | None``,
``tuple[X, ...]``, nested dataclasses, ``Annotated`` with the constraints below, and
:class:`Discriminated` for a field whose dataclass is chosen by a sibling field.
"""

from __future__ import annotations

import dataclasses
import enum
import re
import threading
import types
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

from protocol.errors import RemoteProtocolError

T = TypeVar("T")

MAX_SAFE_INT = 2**53 - 1
"""Largest integer every JSON implementation represents exactly."""


@dataclass(frozen=True, slots=True)
class Range:
    """Inclusive bounds for an integer field."""

    minimum: int
    maximum: int


@dataclass(frozen=True, slots=True)
class Pattern:
    """A regular expression a string field must match in full."""

    regex: str
    compiled: re.Pattern[str] = dataclasses.field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "compiled", re.compile(self.regex))


@dataclass(frozen=True, slots=True)
class MaxLength:
    """Most characters in a string, or most items in a tuple."""

    limit: int


@dataclass(frozen=True, slots=True)
class Doc:
    """A description carried into the JSON Schema."""

    text: str


@dataclass(frozen=True, slots=True)
class Discriminated:
    """The field's dataclass is chosen by the value of a sibling field.

    ``registry`` maps each value of the sibling field (an enum member's value) to the
    dataclass of this field.
    """

    by: str
    registry: Mapping[str, type[Any]]


_HINTS: dict[type[Any], dict[str, Any]] = {}


def _hints(cls: type[Any]) -> dict[str, Any]:
    hints = _HINTS.get(cls)
    if hints is None:
        hints = _HINTS[cls] = typing.get_type_hints(cls, include_extras=True)
    return hints


def _fail(path: str, code: str, text: str) -> RemoteProtocolError:
    return RemoteProtocolError(text, code=code, path=path)


def _describe(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a number with a fraction (floats are not allowed)"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__


Convert = Callable[[Any, str], Any]
"""Turns a decoded JSON value (at a dotted path) into a typed value, or raises."""


@dataclass(frozen=True, slots=True)
class _FieldPlan:
    name: str
    required: bool
    from_json: Convert
    check: Convert
    valid: Callable[[Any], bool]
    """A quick test that passes only values ``check`` accepts unchanged (the common case);
    a value it does not pass goes to ``check``, which accepts it or says what is wrong."""
    discriminated: Discriminated | None


_PLANS: dict[type[Any], tuple[_FieldPlan, ...]] = {}
_LOCAL = threading.local()


def _plan(cls: type[Any]) -> tuple[_FieldPlan, ...]:
    """Return the compiled per-field converters of ``cls`` (built once per class)."""
    plan = _PLANS.get(cls)
    if plan is None:
        hints = _hints(cls)
        plan = tuple(
            _FieldPlan(
                name=f.name,
                required=f.default is dataclasses.MISSING
                and f.default_factory is dataclasses.MISSING,
                from_json=_compile(hints[f.name], wire=True),
                check=_compile(hints[f.name], wire=False),
                valid=_quick_check(hints[f.name]) or _never,
                discriminated=_metadata_of(hints[f.name], Discriminated),
            )
            for f in dataclasses.fields(cls)
            if f.init
        )
        _PLANS[cls] = plan
    return plan


def from_wire(cls: type[T], data: object, path: str = "") -> T:
    """Build dataclass ``cls`` from a decoded JSON object.

    Returns the instance. Raises :class:`RemoteProtocolError` (``missing_field``,
    ``invalid_field``, ``not_an_object``) naming the first offending field.
    """
    if not isinstance(data, dict):
        code = "invalid_field" if path else "not_an_object"
        raise _fail(path, code, f"expected an object, got {_describe(data)}")
    values: dict[str, Any] = {}
    for field in _plan(cls):
        sub = f"{path}.{field.name}" if path else field.name
        if field.name not in data:
            if field.required:
                raise _fail(sub, "missing_field", "required field is missing")
            continue
        if field.discriminated is not None:
            by = field.discriminated.by
            key = values.get(by, data.get(by))
            key = key.value if isinstance(key, enum.Enum) else key
            target = field.discriminated.registry.get(str(key)) if key is not None else None
            if target is None:
                raise _fail(sub, "invalid_field", f"no body is defined for {by}={key!r:.40}")
            values[field.name] = from_wire(target, data[field.name], sub)
        else:
            values[field.name] = field.from_json(data[field.name], sub)
    outer = getattr(_LOCAL, "trusted", False)
    _LOCAL.trusted = True
    try:
        return cls(**values)
    except (ValueError, TypeError) as exc:
        raise _fail(path, "invalid_field", str(exc)) from None
    finally:
        _LOCAL.trusted = outer


def validate(instance: object) -> None:
    """Check every field of a dataclass instance against its annotation and constraints.

    Messages call this from ``__post_init__`` so an invalid message cannot be constructed.
    Raises :class:`ValueError` naming the field. (Skipped when :func:`from_wire` is the one
    constructing, since it has checked the same things already.)
    """
    if getattr(_LOCAL, "trusted", False):
        return
    for field in _plan(type(instance)):
        value = getattr(instance, field.name)
        if field.valid(value):
            continue
        try:
            field.check(value, field.name)
        except RemoteProtocolError as exc:
            raise ValueError(str(exc)) from None


def _never(value: Any) -> bool:
    return False


def _quick_check(annotation: Any) -> Callable[[Any], bool] | None:
    """Return a predicate true only for values of ``annotation`` that the checker of
    :func:`_compile` (``wire=False``) would accept unchanged, or ``None`` if there is none.

    It tests exact types (so no subclass, no ``bool`` for ``int``), ASCII strings (which
    cannot hold a lone surrogate) and the constraints, in one call where it can.
    """
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        base, *meta = typing.get_args(annotation)
        discriminated = _metadata_of(annotation, Discriminated)
        if discriminated is not None:
            bodies = frozenset(discriminated.registry.values())
            return lambda value: type(value) in bodies
        ranges = [m for m in meta if isinstance(m, Range)]
        limits = [m.limit for m in meta if isinstance(m, MaxLength)]
        patterns = [m.compiled.fullmatch for m in meta if isinstance(m, Pattern)]
        if base is int and len(ranges) == len(meta) - sum(isinstance(m, Doc) for m in meta):
            low = max([-MAX_SAFE_INT, *(r.minimum for r in ranges)])
            high = min([MAX_SAFE_INT, *(r.maximum for r in ranges)])
            return lambda value: type(value) is int and low <= value <= high
        if base is str and not ranges and len(patterns) <= 1:
            longest = min(limits, default=MAX_SAFE_INT)
            if patterns:
                fullmatch = patterns[0]
                return lambda value: (
                    type(value) is str
                    and len(value) <= longest
                    and value.isascii()
                    and fullmatch(value) is not None
                )
            return lambda value: type(value) is str and len(value) <= longest and value.isascii()
        if typing.get_origin(base) is tuple and not ranges and not patterns:
            items = _quick_check(base)
            if items is None:
                return None
            items_ok: Callable[[Any], bool] = items
            limit = min(limits, default=MAX_SAFE_INT)
            return lambda value: items_ok(value) and len(value) <= limit
        if all(isinstance(m, Doc) for m in meta):
            return _quick_check(base)
        return None
    if origin in (typing.Union, types.UnionType):
        options = [a for a in typing.get_args(annotation) if a is not type(None)]
        inner = _quick_check(options[0]) if len(options) == 1 else None
        if inner is None:
            return None
        return lambda value: value is None or inner(value)
    if origin is tuple:
        item_type, ellipsis = typing.get_args(annotation)
        item = _quick_check(item_type) if ellipsis is Ellipsis else None
        if item is None:
            return None
        if isinstance(item_type, type) and item_type not in (bool, int, str):
            exact = item_type  # a dataclass or an enum: the item's type says it all
            return lambda value: type(value) is tuple and all(type(v) is exact for v in value)
        return lambda value: type(value) is tuple and all(map(item, value))
    if annotation is bool:
        return lambda value: type(value) is bool
    if annotation is int:
        return lambda value: type(value) is int and -MAX_SAFE_INT <= value <= MAX_SAFE_INT
    if annotation is str:
        return lambda value: type(value) is str and value.isascii()
    if isinstance(annotation, type) and (
        issubclass(annotation, enum.Enum) or dataclasses.is_dataclass(annotation)
    ):
        exact = annotation
        return lambda value: type(value) is exact
    return None


def _metadata_of(annotation: Any, kind: type[T]) -> T | None:
    if typing.get_origin(annotation) is typing.Annotated:
        for meta in annotation.__metadata__:
            if isinstance(meta, kind):
                return meta
    return None


def _compile(annotation: Any, *, wire: bool) -> Convert:
    """Return a converter for ``annotation``: from JSON when ``wire``, else a checker of
    Python values that returns them unchanged."""
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        base, *meta = typing.get_args(annotation)
        if any(isinstance(m, Discriminated) for m in meta):
            return _any_dataclass
        inner = _compile(base, wire=wire)
        checks = [c for c in map(_constraint, meta) if c is not None]

        def annotated(value: Any, path: str) -> Any:
            result = inner(value, path)
            for check in checks:
                check(result, path)
            return result

        return annotated
    if origin in (typing.Union, types.UnionType):
        options = [a for a in typing.get_args(annotation) if a is not type(None)]
        if len(options) != 1:
            raise TypeError(f"unsupported union {annotation!r}")
        inner = _compile(options[0], wire=wire)
        return lambda value, path: None if value is None else inner(value, path)
    if origin is tuple:
        item_type, ellipsis = typing.get_args(annotation)
        if ellipsis is not Ellipsis:
            raise TypeError(f"only tuple[X, ...] is supported, not {annotation!r}")
        item = _compile(item_type, wire=wire)
        container = list if wire else tuple

        def sequence(value: Any, path: str) -> Any:
            if not isinstance(value, container):
                raise _fail(path, "invalid_field", f"expected an array, got {_describe(value)}")
            return tuple(item(v, f"{path}[{i}]") for i, v in enumerate(value))

        return sequence
    if annotation is bool:
        return _boolean
    if annotation is int:
        return _integer
    if annotation is str:
        return _string
    if isinstance(annotation, type) and issubclass(annotation, enum.Enum):
        return _enum(annotation, wire=wire)
    if dataclasses.is_dataclass(annotation) and isinstance(annotation, type):
        cls = annotation
        if wire:
            return lambda value, path: from_wire(cls, value, path)

        def instance(value: Any, path: str) -> Any:
            if not isinstance(value, cls):
                raise _fail(path, "invalid_field", f"expected {cls.__name__}")
            return value

        return instance
    raise TypeError(f"unsupported annotation {annotation!r}")


def _any_dataclass(value: Any, path: str) -> Any:
    if not dataclasses.is_dataclass(value):
        raise _fail(path, "invalid_field", f"expected an object, got {_describe(value)}")
    return value


def _boolean(value: Any, path: str) -> Any:
    if not isinstance(value, bool):
        raise _fail(path, "invalid_field", f"expected a boolean, got {_describe(value)}")
    return value


def _integer(value: Any, path: str) -> Any:
    if not isinstance(value, int) or isinstance(value, bool):
        raise _fail(path, "invalid_field", f"expected an integer, got {_describe(value)}")
    if not -MAX_SAFE_INT <= value <= MAX_SAFE_INT:
        raise _fail(path, "invalid_field", "integer is outside the exactly representable range")
    return value


def _string(value: Any, path: str) -> Any:
    if not isinstance(value, str):
        raise _fail(path, "invalid_field", f"expected a string, got {_describe(value)}")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        # Only a lone UTF-16 surrogate (``"\\ud800"`` in JSON) gets here: it has no UTF-8 form.
        raise _fail(path, "invalid_field", "string holds a lone surrogate") from None
    return value


def _enum(cls: type[enum.Enum], *, wire: bool) -> Convert:
    by_value = {m.value: m for m in cls}
    allowed = ", ".join(map(str, by_value))

    def convert(value: Any, path: str) -> Any:
        if not wire and isinstance(value, cls):
            return value
        member = by_value.get(value) if isinstance(value, str) else None
        if member is None:
            raise _fail(path, "invalid_field", f"expected one of {allowed}; got {value!r:.40}")
        return member

    return convert


def _constraint(meta: Any) -> Callable[[Any, str], None] | None:
    if isinstance(meta, Range):
        low, high = meta.minimum, meta.maximum

        def in_range(value: Any, path: str) -> None:
            if value is not None and not low <= value <= high:
                raise _fail(path, "invalid_field", f"must be between {low} and {high}, got {value}")

        return in_range
    if isinstance(meta, MaxLength):
        limit = meta.limit

        def short_enough(value: Any, path: str) -> None:
            if value is not None and len(value) > limit:
                raise _fail(path, "invalid_field", f"longer than {limit}")

        return short_enough
    if isinstance(meta, Pattern):
        matcher, regex = meta.compiled.fullmatch, meta.regex

        def matches(value: Any, path: str) -> None:
            if value is not None and not matcher(value):
                raise _fail(path, "invalid_field", f"{value!r:.40} does not match {regex}")

        return matches
    return None


def to_wire(instance: object) -> dict[str, Any]:
    """Return the JSON-ready dict of a dataclass instance.

    A ``None`` field is left out when the field has a default (it is optional), and written as
    ``null`` when it has none (it is required but nullable, such as a result's ``command_id``),
    so that :func:`from_wire` reads back what was written. Enum members become their values,
    tuples lists, nested dataclasses dicts. Raises :class:`TypeError` if ``instance`` is not a
    dataclass instance.
    """
    plan = _WIRE_PLANS.get(type(instance))
    if plan is None:
        plan = _wire_plan(type(instance))
    out: dict[str, Any] = {}
    for name, keep_none, convert in plan:
        value = getattr(instance, name)
        if type(value) in _JSON_SCALARS:
            out[name] = value
        elif value is None:
            if keep_none:
                out[name] = None
        else:
            out[name] = convert(value)
    return out


ToWire = Callable[[Any], Any]
"""Turns a typed value (not ``None``, not a plain ``int``/``str``/``bool``) into a JSON value."""

_JSON_SCALARS = frozenset((int, str, bool))
"""Types whose values go on the wire as they are (exact types: not enums, not subclasses)."""

_WIRE_PLANS: dict[type[Any], tuple[tuple[str, bool, ToWire], ...]] = {}


def _wire_plan(cls: type[Any]) -> tuple[tuple[str, bool, ToWire], ...]:
    """Return ``(name, keep_none, convert)`` for every field of ``cls`` (built once per class).

    ``convert`` is specialised for the field's annotation; whatever value it meets that the
    annotation does not describe goes through :func:`_value_to_wire`, the general rule, so the
    plan never writes anything but what the general rule would.
    """
    fields = dataclasses.fields(cls)
    try:
        hints: dict[str, Any] = _hints(cls)
    except Exception:  # unresolvable annotations: the general rule for every field
        hints = {}
    plan = tuple((f.name, _required(f), _compile_to_wire(hints.get(f.name, Any))) for f in fields)
    _WIRE_PLANS[cls] = plan
    return plan


def _compile_to_wire(annotation: Any) -> ToWire:
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        discriminated = _metadata_of(annotation, Discriminated)
        if discriminated is not None:
            return _dataclass_to_wire(frozenset(discriminated.registry.values()))
        return _compile_to_wire(typing.get_args(annotation)[0])
    if origin in (typing.Union, types.UnionType):
        options = [a for a in typing.get_args(annotation) if a is not type(None)]
        return _compile_to_wire(options[0]) if len(options) == 1 else _value_to_wire
    if origin is tuple:
        args = typing.get_args(annotation)
        if len(args) != 2 or args[1] is not Ellipsis:
            return _value_to_wire
        item = _compile_to_wire(args[0])
        scalars = _JSON_SCALARS

        def sequence(value: Any) -> Any:
            if type(value) is not tuple:
                return _value_to_wire(value)
            return [v if type(v) in scalars or v is None else item(v) for v in value]

        return sequence
    if isinstance(annotation, type) and issubclass(annotation, enum.Enum):
        members = annotation

        def member(value: Any) -> Any:
            return value._value_ if type(value) is members else _value_to_wire(value)

        return member
    if dataclasses.is_dataclass(annotation) and isinstance(annotation, type):
        return _dataclass_to_wire(frozenset((annotation,)))
    return _value_to_wire


def _dataclass_to_wire(classes: frozenset[type[Any]]) -> ToWire:
    def nested(value: Any) -> Any:
        return to_wire(value) if type(value) in classes else _value_to_wire(value)

    return nested


def _required(field: dataclasses.Field[Any]) -> bool:
    return field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING


def _value_to_wire(value: Any) -> Any:
    """The general rule for one value: enum members by value, tuples as lists, dataclasses
    as dicts, anything else as it is."""
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, tuple):
        return [_value_to_wire(v) for v in value]
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return to_wire(value)
    return value


def json_schema(cls: type[Any]) -> dict[str, Any]:
    """Return a JSON Schema (draft 2020-12) for dataclass ``cls``.

    Required fields are those without a default; ``additionalProperties`` stays open because
    receivers ignore unknown fields. A :class:`Discriminated` field becomes ``oneOf`` with an
    ``if``/``then`` per value of its sibling.
    """
    hints = _hints(cls)
    properties: dict[str, Any] = {}
    required: list[str] = []
    conditionals: list[dict[str, Any]] = []
    for field in dataclasses.fields(cls):
        if not field.init:
            continue
        annotation = hints[field.name]
        discriminated = _metadata_of(annotation, Discriminated)
        if discriminated is not None:
            properties[field.name] = {"type": "object"}
            for key, target in sorted(discriminated.registry.items()):
                conditionals.append(
                    {
                        "if": {
                            "properties": {discriminated.by: {"const": key}},
                            "required": [discriminated.by],
                        },
                        "then": {"properties": {field.name: json_schema(target)}},
                    }
                )
        else:
            properties[field.name] = _value_schema(annotation)
        if field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING:
            required.append(field.name)
    schema: dict[str, Any] = {"type": "object", "properties": properties}
    if required:
        schema["required"] = required
    doc = (cls.__doc__ or "").strip().split("\n\n")[0].replace("\n", " ")
    if doc:
        schema["description"] = " ".join(doc.split())
    if conditionals:
        schema["allOf"] = conditionals
    return schema


def _value_schema(annotation: Any) -> dict[str, Any]:
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        base, *meta = typing.get_args(annotation)
        schema = dict(_value_schema(base))
        nullable = "anyOf" in schema
        target = schema["anyOf"][0] if nullable else schema
        for m in meta:
            if isinstance(m, Range):
                target["minimum"], target["maximum"] = m.minimum, m.maximum
            elif isinstance(m, Pattern):
                # JSON Schema patterns search; the codec matches in full, so anchor them.
                target["pattern"] = f"^(?:{m.regex})$"
            elif isinstance(m, MaxLength):
                target["maxItems" if target.get("type") == "array" else "maxLength"] = m.limit
            elif isinstance(m, Doc):
                schema["description"] = m.text
        return schema
    if origin in (typing.Union, types.UnionType):
        options = [a for a in typing.get_args(annotation) if a is not type(None)]
        return {"anyOf": [_value_schema(options[0]), {"type": "null"}]}
    if origin is tuple:
        return {"type": "array", "items": _value_schema(typing.get_args(annotation)[0])}
    if annotation is bool:
        return {"type": "boolean"}
    if annotation is int:
        return {"type": "integer"}
    if annotation is str:
        return {"type": "string"}
    if isinstance(annotation, type) and issubclass(annotation, enum.Enum):
        return {"type": "string", "enum": [m.value for m in annotation]}
    if dataclasses.is_dataclass(annotation) and isinstance(annotation, type):
        return json_schema(annotation)
    raise TypeError(f"unsupported annotation {annotation!r}")
