"""One locker on a serial line over a pseudo-terminal pair, with the host end of the bench tool.

What must hold afterwards: everything the locker sent reached the host (after CRC checks and
resending), acknowledged messages are gone from the locker's buffer and its state file, and
mistakes with ports are one clear line.
"""

from __future__ import annotations

from collections.abc import Iterator
from functools import partial
from pathlib import Path

import pytest

from firmware_sim.faults import Fault, FaultKind
from firmware_sim.outbox import OutboxLimits
from firmware_sim.serial_link import (
    PtyPair,
    SerialHost,
    SerialLocker,
    SerialPortError,
    open_port,
)
from firmware_sim.settings import Settings
from firmware_sim.spec import LockerSpec
from firmware_sim.store import JsonFileStore
from protocol.messages import (
    Birth,
    CommandResult,
    Event,
    OpenCompartment,
    OpenPurpose,
    Outcome,
    Presence,
    Telemetry,
)
from tests.firmware_sim.support import Signer, slam, wait_for

pytestmark = pytest.mark.serial


@pytest.fixture
def pair() -> Iterator[PtyPair]:
    with PtyPair() as made:
        yield made


def start_locker(spec: LockerSpec, pair: PtyPair, state: Path) -> SerialLocker:
    return SerialLocker(
        spec,
        pair.path,
        JsonFileStore(state),
        settings=Settings(heartbeat_s=1),
        limits=OutboxLimits(retransmit_ms=300, retransmit_max_ms=600),
    ).start()


def acknowledge(host: SerialHost, signer: Signer, spec: LockerSpec) -> None:
    """Ack every birth, event and result the host has received so far."""
    for message in host.received:
        if isinstance(message, Birth | Event | CommandResult):
            host.send(signer.ack(spec.locker_id, message.boot_id, [message.seq]))


def test_a_serial_locker_answers_a_session_obeys_a_command_and_drops_what_is_acked(
    spec: LockerSpec, pair: PtyPair, tmp_path: Path
) -> None:
    signer = Signer()
    locker = start_locker(spec, pair, tmp_path / "state.json")
    host = SerialHost(pair.host_port())
    try:
        host.hello()
        assert host.wait_for(lambda m: isinstance(m, Birth), 10) is not None
        command = signer.command(spec.locker_id, OpenCompartment("A02", OpenPurpose.SERVICE))
        host.send(command)
        result = host.wait_for(lambda m: isinstance(m, CommandResult), 10)
        assert isinstance(result, CommandResult) and result.outcome is Outcome.OPENED
        assert host.wait_for(lambda m: isinstance(m, Telemetry), 10) is not None
        acknowledge(host, signer, spec)
        wait_for(lambda: locker.view().pending_events == 0, 10, "the acks to be applied")
        # Afterwards: exactly one lock released, the state file agrees the buffer is empty.
        assert locker.view().released == ["A02"]
    finally:
        locker.stop()
        host.close()
    saved = JsonFileStore(tmp_path / "state.json").load()
    assert saved is not None and saved.outbox == {} and saved.boot_id == 1
    kinds = {type(m) for m in host.received}
    assert {Presence, Birth, CommandResult, Telemetry} <= kinds


def test_corrupted_bytes_are_dropped_by_the_crc_and_resending_delivers_everything(
    spec: LockerSpec, pair: PtyPair, tmp_path: Path
) -> None:
    signer = Signer()
    locker = start_locker(spec, pair, tmp_path / "state.json")
    host = SerialHost(pair.host_port())
    try:
        assert locker.inject(Fault(FaultKind.SERIAL_CORRUPTION, duration_ms=3_000, corruption=0.5))
        host.hello()
        for label in ("A01", "A02", "A03", "A04"):
            locker.run(partial(slam(label), locker.locker))

        def delivered() -> set[tuple[int, int]]:
            host.poll(0.2)
            acknowledge(host, signer, spec)
            return {(m.boot_id, m.seq) for m in host.received if isinstance(m, Birth | Event)}

        def complete() -> bool:
            taken = locker.view().seq  # every number the locker took in this boot
            return delivered() >= {(1, n) for n in range(1, taken + 1)} and taken >= 9

        def acknowledged() -> bool:
            delivered()  # acks again: one spoiled on the line must be sent once more
            return locker.view().pending_events == 0

        wait_for(complete, 30, "every message through the noisy line")
        wait_for(acknowledged, 30, "every ack through the line")
        # Afterwards: frames were spoiled and dropped on the way, yet nothing is missing.
        assert locker.run(lambda: locker.counts["corrupted_chunks"]) > 0
        assert host.decoder.stats.dropped + host.undecodable > 0
        seqs = sorted(seq for boot, seq in delivered() if boot == 1)
        assert seqs == list(range(1, len(seqs) + 1))
    finally:
        locker.stop()
        host.close()


def test_the_state_file_carries_the_buffer_into_the_next_run(
    spec: LockerSpec, tmp_path: Path
) -> None:
    state = tmp_path / "state.json"
    with PtyPair() as pair:
        locker = start_locker(spec, pair, state)
        locker.run(lambda: slam("B01")(locker.locker))
        locker.stop()  # nobody listened: the birth and two door events stay buffered
    with PtyPair() as pair:
        locker = start_locker(spec, pair, state)
        host = SerialHost(pair.host_port())
        try:
            host.hello()

            def numbers() -> set[tuple[int, int]]:
                host.poll(0.2)
                return {(m.boot_id, m.seq) for m in host.received if isinstance(m, Birth | Event)}

            wait_for(lambda: {(1, 1), (1, 2), (1, 3), (2, 1)} <= numbers(), 10)
            # Afterwards: the second run is boot 2, and it replayed all of boot 1 first.
            assert locker.view().boot_id == 2
        finally:
            locker.stop()
            host.close()


def test_port_mistakes_are_one_clear_line(pair: PtyPair, tmp_path: Path) -> None:
    with pytest.raises(SerialPortError, match="does not exist"):
        open_port(str(tmp_path / "ttyNOPE"))
    first = open_port(pair.path)
    try:
        with pytest.raises(SerialPortError, match="busy"):
            open_port(pair.path)
    finally:
        first.close()
