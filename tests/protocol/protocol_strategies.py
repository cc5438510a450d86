"""Hypothesis strategies for every protocol message, derived from the dataclass annotations.

:func:`strategy_for` reads the same annotations the codec compiles (``Range``, ``Pattern``,
``MaxLength``, enums, optionals, tuples, nested dataclasses, ``Discriminated`` bodies), so a new
field is covered without touching the tests. Cross-field rules that the annotations cannot
express (``page <= pages``, ``expires_at > issued_at``, ...) are met by a few hand-written
strategies in :data:`OVERRIDES`. Arrays are kept short so that messages stay under 16 KiB.
"""

from __future__ import annotations

import dataclasses
import enum
import types
import typing
from typing import Any

from hypothesis import settings
from hypothesis import strategies as st

from protocol.fields import MAX_SAFE_INT, Discriminated, MaxLength, Pattern, Range
from protocol.messages import (
    COMMAND_ARGS,
    CONTROLLER_MESSAGES,
    DEVICE_MESSAGES,
    Action,
    Birth,
    Command,
    CommandResult,
    CompartmentState,
    ResultStatus,
    SeqRange,
    SetConfig,
    SyncCodes,
    SyncMode,
)

ALL_TYPES: dict[str, type[Any]] = {**DEVICE_MESSAGES, **CONTROLLER_MESSAGES}
MAX_ITEMS = 3
"""Longest array the generic strategies build."""

FAST = settings(max_examples=40, deadline=None)
THOROUGH = settings(max_examples=150, deadline=None)

JSON_SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**64), max_value=2**64)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20)
)
json_values: st.SearchStrategy[Any] = st.recursive(
    JSON_SCALARS,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=20,
)
"""Arbitrary JSON values (what a hostile peer might send)."""


def _metadata(annotation: Any) -> tuple[Any, list[Any]]:
    if typing.get_origin(annotation) is typing.Annotated:
        base, *meta = typing.get_args(annotation)
        return base, meta
    return annotation, []


def strategy_for(annotation: Any) -> st.SearchStrategy[Any]:
    """Return a strategy of valid Python values for a field annotation."""
    base, meta = _metadata(annotation)
    if any(isinstance(m, Discriminated) for m in meta):
        raise TypeError("a discriminated field is drawn by its dataclass")
    origin = typing.get_origin(base)
    if origin in (typing.Union, types.UnionType):
        (inner,) = [a for a in typing.get_args(base) if a is not type(None)]
        return st.none() | strategy_for(inner)
    ranges = [m for m in meta if isinstance(m, Range)]
    patterns = [m for m in meta if isinstance(m, Pattern)]
    limits = [m.limit for m in meta if isinstance(m, MaxLength)]
    if origin is tuple:
        item = typing.get_args(base)[0]
        size = min([MAX_ITEMS, *limits])
        return st.lists(strategy_for(item), max_size=size).map(tuple)
    if base is bool:
        return st.booleans()
    if base is int:
        if ranges:
            return st.integers(min_value=ranges[0].minimum, max_value=ranges[0].maximum)
        return st.integers(min_value=-MAX_SAFE_INT, max_value=MAX_SAFE_INT)
    if base is str:
        if patterns:
            return st.from_regex(patterns[0].regex, fullmatch=True)
        return st.text(max_size=min([40, *limits]))
    if isinstance(base, type) and issubclass(base, enum.Enum):
        return st.sampled_from(list(base))
    if dataclasses.is_dataclass(base) and isinstance(base, type):
        return dataclass_strategy(base)
    raise TypeError(f"no strategy for {annotation!r}")


_BUILT: dict[type[Any], st.SearchStrategy[Any]] = {}


def dataclass_strategy(cls: type[Any]) -> st.SearchStrategy[Any]:
    """Return a strategy of valid instances of a message (or nested) dataclass."""
    if cls in OVERRIDES:
        return OVERRIDES[cls]
    if cls not in _BUILT:
        _BUILT[cls] = _generic(cls)
    return _BUILT[cls]


def _generic(cls: type[Any]) -> st.SearchStrategy[Any]:
    hints = typing.get_type_hints(cls, include_extras=True)

    @st.composite
    def build(draw: st.DrawFn) -> Any:
        values: dict[str, Any] = {}
        for field in dataclasses.fields(cls):
            annotation = hints[field.name]
            _, meta = _metadata(annotation)
            chosen = next((m for m in meta if isinstance(m, Discriminated)), None)
            if chosen is not None:
                key = values[chosen.by]
                values[field.name] = draw(dataclass_strategy(chosen.registry[key]))
                continue
            has_default = field.default is not dataclasses.MISSING
            if has_default and draw(st.booleans()):
                continue  # exercise the default
            values[field.name] = draw(strategy_for(annotation))
        return cls(**values)

    return build()


def _hint(cls: type[Any], name: str) -> Any:
    return typing.get_type_hints(cls, include_extras=True)[name]


def _fields_except(cls: type[Any], *skip: str) -> st.SearchStrategy[dict[str, Any]]:
    """Valid values of every field of ``cls`` but ``skip``, each drawn independently."""
    hints = typing.get_type_hints(cls, include_extras=True)
    return st.fixed_dictionaries(
        {f.name: strategy_for(hints[f.name]) for f in dataclasses.fields(cls) if f.name not in skip}
    )


@st.composite
def _sync_codes(draw: st.DrawFn) -> SyncCodes:
    entry_type = typing.get_args(_metadata(_hint(SyncCodes, "add"))[0])[0]
    add = tuple(draw(st.lists(dataclass_strategy(entry_type), max_size=MAX_ITEMS)))
    if draw(st.booleans()):
        start = draw(st.integers(min_value=0, max_value=MAX_SAFE_INT - 1))
        to = draw(st.integers(min_value=start + 1, max_value=MAX_SAFE_INT))
        hashes = st.from_regex(r"[0-9a-f]{64}", fullmatch=True)
        remove = tuple(draw(st.lists(hashes, max_size=MAX_ITEMS)))
        return SyncCodes(SyncMode.DELTA, to, from_version=start, add=add, remove=remove)
    pages = draw(st.integers(min_value=1, max_value=10_000))
    page = draw(st.integers(min_value=1, max_value=pages))
    to = draw(st.integers(min_value=1, max_value=MAX_SAFE_INT))
    from_version = draw(st.none() | st.integers(min_value=0, max_value=MAX_SAFE_INT))
    return SyncCodes(SyncMode.FULL, to, from_version=from_version, page=page, pages=pages, add=add)


@st.composite
def _set_config(draw: st.DrawFn) -> SetConfig:
    values = draw(_fields_except(SetConfig, "chilled_min_deci_celsius", "chilled_max_deci_celsius"))
    low = draw(st.integers(min_value=-500, max_value=999))
    high = draw(st.integers(min_value=low + 1, max_value=1000))
    return SetConfig(**values, chilled_min_deci_celsius=low, chilled_max_deci_celsius=high)


@st.composite
def _seq_range(draw: st.DrawFn) -> SeqRange:
    first = draw(st.integers(min_value=0, max_value=MAX_SAFE_INT))
    last = draw(st.integers(min_value=first, max_value=MAX_SAFE_INT))
    return SeqRange(first, last)


@st.composite
def _command(draw: st.DrawFn) -> Command:
    issued = draw(st.integers(min_value=0, max_value=MAX_SAFE_INT - 1))
    expires = draw(st.integers(min_value=issued + 1, max_value=MAX_SAFE_INT))
    action = draw(st.sampled_from(list(Action)))
    args = draw(dataclass_strategy(COMMAND_ARGS[action]))
    return Command(
        locker_id=draw(strategy_for(_hint(Command, "locker_id"))),
        command_id=draw(strategy_for(_hint(Command, "command_id"))),
        counter=draw(strategy_for(_hint(Command, "counter"))),
        issued_at=issued,
        expires_at=expires,
        action=action,
        args=args,
        sig=draw(st.just("") | st.from_regex(r"[0-9a-f]{64}", fullmatch=True)),
    )


@st.composite
def _result(draw: st.DrawFn) -> CommandResult:
    values = draw(_fields_except(CommandResult))
    hints = typing.get_type_hints(CommandResult, include_extras=True)
    if values["status"] is ResultStatus.REFUSED and values["reason"] is None:
        values["reason"] = draw(st.sampled_from(list(typing.get_args(hints["reason"])[0])))
    if values["status"] is not ResultStatus.REFUSED and values["outcome"] is None:
        values["outcome"] = draw(st.sampled_from(list(typing.get_args(hints["outcome"])[0])))
    return CommandResult(**values)


@st.composite
def _birth(draw: st.DrawFn) -> Birth:
    values = draw(_fields_except(Birth, "compartments"))
    compartments = st.lists(
        dataclass_strategy(CompartmentState), max_size=MAX_ITEMS, unique_by=lambda c: c.id
    )
    return Birth(**values, compartments=tuple(draw(compartments)))


OVERRIDES: dict[type[Any], st.SearchStrategy[Any]] = {
    SeqRange: _seq_range(),
    Command: _command(),
    CommandResult: _result(),
    Birth: _birth(),
    SetConfig: _set_config(),
    SyncCodes: _sync_codes(),
}


def messages() -> st.SearchStrategy[Any]:
    """Return a strategy of valid messages of every type."""
    return st.one_of([dataclass_strategy(cls) for cls in ALL_TYPES.values()])
