"""A birth encoded with a shared compartments list is byte for byte the codec's own encoding."""

from __future__ import annotations

import dataclasses

import pytest

from firmware_sim.births import encode_birth
from firmware_sim.clock import ManualClock
from firmware_sim.locker import Locker
from firmware_sim.spec import MODELS, generate_fleet, generated_spec
from protocol.codec import decode_device_message, encode
from protocol.messages import Birth, CodeStaging


@pytest.mark.parametrize("model", sorted(MODELS))
def test_an_untouched_lockers_birth_is_the_codecs_encoding(model: str) -> None:
    clock = ManualClock()
    lockers = [
        Locker(generated_spec(f"SPLICE-{model[:8]}-{i}", 7, model=model), clock) for i in range(3)
    ]
    chilled = any(c.temperature.value == "chilled" for c in lockers[0].spec.compartments)
    for i, locker in enumerate(lockers):
        clock.advance(60_000)  # chilled compartments report another temperature
        birth = locker._birth(i + 1, clock.now_ms() + i, i)
        # the shared tuple of the layout, unless temperatures are reported
        assert (birth.compartments is lockers[0].doors.untouched) is not chilled
        payload = encode_birth(birth)
        assert payload == encode(birth)
        assert decode_device_message(payload) == birth


def test_every_other_field_is_kept_exactly_even_strange_strings_and_staging() -> None:
    clock = ManualClock()
    locker = Locker(generate_fleet(1, 3)[0], clock)
    birth = locker._birth(5, clock.now_ms(), 0)
    encode_birth(birth)
    odd = dataclasses.replace(
        birth,
        model='x","compartments":[],"模型\\',
        firmware="1.2.3-rc.1",
        code_staging=CodeStaging(3, 4, (1, 2)),
    )
    assert encode_birth(odd) == encode(odd)
    assert decode_device_message(encode_birth(odd)) == odd


def test_a_touched_lockers_birth_is_encoded_in_full() -> None:
    clock = ManualClock()
    locker = Locker(generate_fleet(1, 4)[0], clock)
    first = locker.spec.compartments[0].id
    locker.open_door(first)  # forced open: this locker's states are its own now
    birth = locker._birth(2, clock.now_ms(), 0)
    assert birth.compartments is not locker.doors.untouched
    assert encode_birth(birth) == encode(birth)
    assert isinstance(decode_device_message(encode_birth(birth)), Birth)
