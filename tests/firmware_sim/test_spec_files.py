"""Locker specs and generated fleets, and the fleet file a person writes."""

from __future__ import annotations

from pathlib import Path

import pytest

from firmware_sim.files import dump_fleet, load_fleet
from firmware_sim.spec import (
    MAX_COMPARTMENTS,
    MODELS,
    CompartmentSpec,
    InvalidSpec,
    LockerSpec,
    code_key_for,
    command_key_for,
    generate_fleet,
    model_layout,
    mqtt_password_for,
)
from protocol.codec import encode
from protocol.messages import (
    Birth,
    CodeStaging,
    CompartmentState,
    DoorState,
    LockState,
    SizeClass,
    TemperatureClass,
)
from tests.firmware_sim.support import derived_key


def test_a_generated_fleet_is_the_same_for_the_same_seed_and_keys_follow_the_recipe() -> None:
    first, again, other = generate_fleet(50, 7), generate_fleet(50, 7), generate_fleet(50, 8)
    assert first == again and first != other
    assert [s.locker_id for s in first[:2]] == ["SIM-00001", "SIM-00002"]
    spec = first[9]
    assert (
        spec.command_key
        == derived_key(7, spec.locker_id, "command")
        == command_key_for(7, spec.locker_id)
    )
    assert (
        spec.code_key == derived_key(7, spec.locker_id, "code") == code_key_for(7, spec.locker_id)
    )
    assert spec.password == mqtt_password_for(7, spec.locker_id) and spec.username == "SIM-00010"
    assert len({s.model for s in first}) > 3  # a mix of models
    assert generate_fleet(3, 7, prefix="HB-")[2].locker_id == "HB-00003"


def test_every_model_births_fit_in_one_message() -> None:
    for model in MODELS:
        layout = model_layout(model)
        state = [
            CompartmentState(
                c.id, c.size, c.temperature, DoorState.CLOSED, LockState.LOCKED, True, True, -125
            )
            for c in layout
        ]
        birth = Birth("X" * 64, 1, 1, 0, "1.4.2", "M" * 64, 1, 1, 1, 2000, tuple(state))
        assert encode(birth)


def test_the_largest_locker_the_simulator_accepts_still_has_a_birth_that_fits() -> None:
    big = tuple(
        CompartmentSpec(f"C{n:07d}", SizeClass.XL, TemperatureClass.CHILLED)
        for n in range(MAX_COMPARTMENTS)
    )
    state = [
        CompartmentState(
            c.id, c.size, c.temperature, DoorState.CLOSED, LockState.RELEASED, False, False, -500
        )
        for c in big
    ]
    most = 2**53 - 1
    staging = CodeStaging(most, 10, tuple(range(1, 11)))
    birth = Birth("X" * 64, 2**32 - 1, most, most, "1.4.2-rc.1", "M" * 64, most, most, most,
                  most, tuple(state), staging)  # fmt: skip
    assert encode(birth)


def test_bad_specs_say_what_is_wrong() -> None:
    good = generate_fleet(1, 1)[0]
    with pytest.raises(InvalidSpec, match="locker id"):
        LockerSpec("bad/id", good.command_key, good.code_key, "u", "p", good.compartments)
    with pytest.raises(InvalidSpec, match="16 bytes"):
        LockerSpec("OK-1", b"short", good.code_key, "u", "p", good.compartments)
    with pytest.raises(InvalidSpec, match="unique"):
        LockerSpec("OK-1", good.command_key, good.code_key, "u", "p", good.compartments * 2)
    with pytest.raises(InvalidSpec, match="compartment id"):
        CompartmentSpec("A-01", SizeClass.S)
    with pytest.raises(InvalidSpec, match="unknown locker model"):
        model_layout("LF-999")


def test_a_fleet_file_round_trips_and_a_short_hand_written_one_loads(tmp_path: Path) -> None:
    fleet = generate_fleet(5, 11)
    path = tmp_path / "fleet.toml"
    path.write_text(dump_fleet(fleet))
    assert load_fleet(path) == fleet
    path.write_text(
        "seed = 11\n"
        '[[locker]]\nlocker_id = "SIM-00001"\nmodel = "LF-12"\n'
        '[[locker]]\nlocker_id = "VILLAGE-7"\ncommand_key = "' + "ab" * 32 + '"\n'
        'password = "s3cret"\ncompartments = [{ id = "A1", size = "XL" }]\n'
    )
    first, second = load_fleet(path)
    assert first.command_key == command_key_for(11, "SIM-00001") and len(first.compartments) == 12
    assert second.command_key == bytes.fromhex("ab" * 32) and second.password == "s3cret"
    assert second.compartments == (CompartmentSpec("A1", SizeClass.XL),)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[[locker]]\nmodel = 'LF-12'\n", "locker_id"),
        ("[[locker]]\nlocker_id = 'A1'\n", "command_key is missing"),
        ("seed = 1\n[[locker]]\nlocker_id = 'A1'\ncommand_key = 'zz'\n", "not hexadecimal"),
        ("seed = 1\n[[locker]]\nlocker_id = 'A1'\nmodel = 'nope'\n", "unknown locker model"),
        ("seed = 1\n[[locker]]\nlocker_id = 'A1'\n[[locker]]\nlocker_id = 'A1'\n", "unique"),
        ("seed = 1\nlocker = 3\n", "no [[locker]]"),
        ("this is = not toml =\n", "not valid TOML"),
    ],
)
def test_fleet_file_mistakes_are_one_line_naming_the_place(
    tmp_path: Path, text: str, message: str
) -> None:
    path = tmp_path / "fleet.toml"
    path.write_text(text)
    with pytest.raises(ValueError, match=r"fleet\.toml") as caught:
        load_fleet(path)
    assert message in str(caught.value) and "\n" not in str(caught.value)
