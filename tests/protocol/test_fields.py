"""The compiled conversions of ``protocol.fields`` agree with the rules they were compiled from.

``to_wire`` and ``validate`` run from plans built once per class (specialised per annotation,
with quick checks for the common case). These tests hold them to the general rules: the
reference ``to_wire`` below is the reflective walk the plan replaced, and ``validate`` must
refuse exactly what it refused before, with the same message.
"""

from __future__ import annotations

import dataclasses
import enum
from typing import Any

import pytest
from hypothesis import given

from protocol.fields import to_wire, validate
from protocol.messages import (
    Birth,
    CodeStaging,
    CompartmentState,
    DoorState,
    Event,
    LockState,
    PowerSource,
    SizeClass,
    Tamper,
    Telemetry,
    TemperatureClass,
    TemperatureReading,
)
from tests.protocol.protocol_strategies import THOROUGH, messages


def reference_to_wire(instance: Any) -> dict[str, Any]:
    """The general rule, walked by reflection on every call."""
    out: dict[str, Any] = {}
    for field in dataclasses.fields(instance):
        value = getattr(instance, field.name)
        if value is None:
            required = field.default is dataclasses.MISSING
            if required and field.default_factory is dataclasses.MISSING:
                out[field.name] = None
            continue
        out[field.name] = reference_value(value)
    return out


def reference_value(value: Any) -> Any:
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, tuple):
        return [reference_value(v) for v in value]
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return reference_to_wire(value)
    return value


def typed(value: Any) -> Any:
    """``value`` with the type of every leaf spelled out (so that ``"S"`` differs from
    ``SizeClass.S``, and ``1`` from ``True``)."""
    if isinstance(value, dict):
        return {k: typed(v) for k, v in value.items()}
    if isinstance(value, list):
        return [typed(v) for v in value]
    return (type(value), value)


@given(messages())
@THOROUGH
def test_the_compiled_plan_writes_what_the_general_rule_writes(message: Any) -> None:
    assert typed(to_wire(message)) == typed(reference_to_wire(message))


def state(**change: Any) -> CompartmentState:
    values: dict[str, Any] = {
        "id": "A01",
        "size": SizeClass.M,
        "temperature": TemperatureClass.CHILLED,
        "door": DoorState.CLOSED,
        "lock": LockState.LOCKED,
        "occupied": False,
        "in_service": True,
        "deci_celsius": 41,
    }
    return CompartmentState(**{**values, **change})


def test_values_outside_their_annotation_fall_back_to_the_general_rule() -> None:
    # Only reachable by going around validation; the plan must still write the same thing.
    odd = state()
    object.__setattr__(odd, "id", SizeClass.XL)  # an enum member in a str field
    object.__setattr__(odd, "size", "S")  # a plain string in an enum field
    object.__setattr__(odd, "occupied", 1)  # an int in a bool field
    object.__setattr__(odd, "deci_celsius", (TemperatureClass.AMBIENT, 3))  # a tuple
    assert typed(to_wire(odd)) == typed(reference_to_wire(odd))
    birth = Birth("L-1", 1, 1, 0, "1.0.0", "LF-12", 1, 0, 0, 0, (state(),), CodeStaging(1, 2, (1,)))
    object.__setattr__(birth, "compartments", [state(), state(id="A02")])  # a list, not a tuple
    object.__setattr__(birth, "code_staging", state())  # another dataclass
    assert typed(to_wire(birth)) == typed(reference_to_wire(birth))


def test_to_wire_refuses_what_is_not_a_dataclass_instance() -> None:
    with pytest.raises(TypeError):
        to_wire(object())


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"occupied": 1}, "occupied: expected a boolean, got an integer"),
        ({"deci_celsius": True}, "deci_celsius: expected an integer, got a boolean"),
        ({"deci_celsius": 1001}, "deci_celsius: must be between -500 and 1000, got 1001"),
        ({"deci_celsius": 2**60}, "deci_celsius: integer is outside the exactly representable"),
        ({"id": "A-1"}, "id: 'A-1' does not match"),
        ({"id": "\ud800"}, "id: string holds a lone surrogate"),
        ({"size": "XXL"}, "size: expected one of S, M, L, XL; got 'XXL'"),
        ({"door": LockState.LOCKED}, "door: expected one of open, closed"),
    ],
)
def test_validate_refuses_what_the_quick_checks_let_through_to_the_full_check(
    change: dict[str, Any], message: str
) -> None:
    with pytest.raises(ValueError, match="^" + message.replace("(", r"\(").replace("[", r"\[")):
        state(**change)


def test_subclasses_and_non_ascii_text_take_the_full_check_and_pass() -> None:
    class Label(str):
        pass

    class Number(int):
        pass

    validate(state(id=Label("A01"), deci_celsius=Number(40)))
    validate(Event.of("L-1", 1, 1, 0, Tamper("倾斜 tilt")))
    validate(Event.of("L-1", 1, 1, 0, Tamper("倾斜 tilt")))


def test_a_tuple_of_the_wrong_items_is_refused() -> None:
    readings = (TemperatureReading("A01", 40), state())
    with pytest.raises(ValueError, match=r"^temperatures\[1\]: expected TemperatureReading"):
        Telemetry("L-1", 1, 0, 0, 5, PowerSource.MAINS, 100, -70, 0, 0, 0, readings)  # type: ignore[arg-type]
