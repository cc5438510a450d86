"""Provisioning on the technician's bench: ``lockerfleet bench`` on one end of a pseudo-terminal,
an unprovisioned simulated locker on the other, the controller's HTTP API served for real.

The locker asks with its token, the bench tool redeems it over HTTP and answers with the sealed
credentials; the locker keeps them and comes back on the line as a provisioned locker. A reused
or expired token is refused: the locker gets an authentic refusal and no credentials, the
technician one clear line, and the audit log the refusal.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import threading
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import Future
from pathlib import Path
from select import select as readable

import pytest
from sqlalchemy import select

from controller.bench import BenchError, provision_on_bench
from controller.cli import main
from controller.clock import ManualClock
from controller.db.models import AuditEntry
from controller.runtime import Runtime
from controller.services.context import Actor, Role
from controller.services.provisioning import InvalidProvisioningToken
from controller.testing.fleet import locker_spec
from controller.testing.http import serve_http
from controller.testing.seed import DEFAULT_LAYOUT, Seeded
from firmware_sim.provisioning import (
    CredentialStore,
    ProvisioningRefused,
    Unprovisioned,
    provision_over_serial,
)
from firmware_sim.serial_link import FdPort, PtyPair, SerialLocker
from firmware_sim.spec import LockerSpec
from firmware_sim.store import JsonFileStore

pytestmark = [pytest.mark.serial, pytest.mark.slow]


class BenchLocker:
    """An unprovisioned locker on the far end of a pty: it provisions, then runs as a
    :class:`SerialLocker` on the same line until stopped (in a thread of its own)."""

    def __init__(self, pair: PtyPair, locker: Unprovisioned, directory: Path) -> None:
        self.pair, self.locker = pair, locker
        self.store = CredentialStore(directory / f"{locker.locker_id}.credentials.json")
        self.state = JsonFileStore(directory / f"{locker.locker_id}.state.json")
        self.outcome: Future[LockerSpec] = Future()
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        port = FdPort(self.pair.master)
        try:
            spec = provision_over_serial(self.locker, port.fileno(), store=self.store, timeout=30)
        except Exception as exc:
            self.outcome.set_exception(exc)
            return
        self.outcome.set_result(spec)
        with SerialLocker(spec, port, self.state):
            self.stop.wait(60)

    def __enter__(self) -> BenchLocker:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(20)


@pytest.fixture
async def api(runtime: Runtime) -> AsyncIterator[str]:
    async with serve_http(runtime) as base:
        yield base


@pytest.fixture
def pair() -> Iterator[PtyPair]:
    with PtyPair() as made:
        yield made


async def issue(runtime: Runtime, seeded: Seeded, locker_id: str) -> str:
    technician = Actor(seeded.user_ids["technician"], Role.TECHNICIAN)
    return (await runtime.services.provisioning.issue_token(technician, locker_id)).token


def unprovisioned(seeded: Seeded, locker_id: str, token: str) -> Unprovisioned:
    layout = locker_spec(seeded.lockers[locker_id], DEFAULT_LAYOUT).compartments
    return Unprovisioned(locker_id, token, layout, model="LF-12")


async def audit(runtime: Runtime, action: str) -> list[AuditEntry]:
    async with runtime.db.reader() as session:
        query = select(AuditEntry).where(AuditEntry.action == action).order_by(AuditEntry.id)
        return list(await session.scalars(query))


async def test_the_bench_tool_provisions_a_locker_on_a_serial_line(
    runtime: Runtime, seeded: Seeded, api: str, pair: PtyPair, tmp_path: Path
) -> None:
    """Afterwards: the locker keeps exactly its controller-derived credentials, it came back on
    the line as a provisioned locker (its presence), the token is spent, and the audit log
    says it was provisioned over HTTP."""
    locker_id = sorted(seeded.lockers)[0]
    token = await issue(runtime, seeded, locker_id)
    with BenchLocker(pair, unprovisioned(seeded, locker_id, token), tmp_path) as locker:
        result = await asyncio.to_thread(provision_on_bench, pair.path, api, timeout=20)
        spec = locker.outcome.result(30)
    assert (result.locker_id, result.confirmed) == (locker_id, True)
    expected = seeded.lockers[locker_id]
    assert spec.command_key.hex() == expected.command_key_hex
    assert spec.password == expected.mqtt_password
    kept = locker.store.load()
    assert kept is not None and kept.code_key == expected.code_key_hex
    (provisioned,) = await audit(runtime, "provisioned")
    assert (provisioned.locker_id, provisioned.detail["via"]) == (locker_id, "http")
    with pytest.raises(InvalidProvisioningToken):
        await runtime.services.provisioning.redeem(token)


async def test_a_reused_or_expired_token_is_refused_on_the_bench_in_one_line(
    runtime: Runtime,
    seeded: Seeded,
    api: str,
    tmp_path: Path,
    clock: ManualClock,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Afterwards: each refused locker received an authentic refusal and holds no credentials,
    the technician read one line saying the token was refused (exit status 2), and both
    refusals are audited with their reasons."""
    first, second = sorted(seeded.lockers)
    reused = await issue(runtime, seeded, first)
    await runtime.services.provisioning.redeem(reused)  # someone used it already
    expired = await issue(runtime, seeded, second)
    clock.advance(minutes=31)

    for number, (locker_id, token) in enumerate(((first, reused), (second, expired))):
        with PtyPair() as line:
            directory = tmp_path / str(number)
            with BenchLocker(line, unprovisioned(seeded, locker_id, token), directory) as locker:
                argv = ["bench", "--port", line.path, "--api", api, "--timeout", "20"]
                status = await asyncio.to_thread(main, argv)
                with pytest.raises(ProvisioningRefused):
                    locker.outcome.result(30)
            assert locker.store.load() is None
        assert status == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and f"refused the token of locker {locker_id}" in err

    refusals = await audit(runtime, "provisioning_refused")
    assert [(r.locker_id, r.detail["reason"], r.detail["via"]) for r in refusals] == [
        (first, "used", "http"),
        (second, "expired", "http"),
    ]


async def test_the_bench_tool_says_so_when_nothing_answers(pair: PtyPair) -> None:
    """A silent line (no locker, wrong baud rate) is one clear error, not a hang."""
    with pytest.raises(BenchError, match="no locker answered"):
        await asyncio.to_thread(provision_on_bench, pair.path, "http://127.0.0.1:9", timeout=1)


@pytest.mark.parametrize(
    ("argv", "says"),
    [
        (["--port", "/dev/no-such-port", "--api", "http://127.0.0.1:9"], "does not exist"),
        (["--port", "/dev/no-such-port", "--api", "127.0.0.1:8000"], "--api must be"),
    ],
)
def test_bench_mistakes_are_one_line(
    argv: list[str], says: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["bench", *argv]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and says in err


class Cable:
    """Two pseudo-terminals joined back to back, like a USB-serial cable between two
    machines: whatever is written on one end's path is read on the other's. Both ends are
    device paths, so both programs open them as they would a real port."""

    def __init__(self) -> None:
        self.ends = (PtyPair(), PtyPair())
        self.stop = threading.Event()
        self.threads = [
            threading.Thread(target=self._copy, args=(a.master, b.master), daemon=True)
            for a, b in (self.ends, self.ends[::-1])
        ]

    def _copy(self, source: int, sink: int) -> None:
        while not self.stop.is_set():
            ready, _, _ = readable([source], [], [], 0.1)
            if not ready:
                continue
            try:
                os.write(sink, os.read(source, 4096))
            except OSError:
                return

    def __enter__(self) -> Cable:
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(5)
        for end in self.ends:
            end.close()


async def test_locker_sim_serial_with_a_token_is_provisioned_by_the_bench_tool(
    runtime: Runtime, seeded: Seeded, api: str, tmp_path: Path
) -> None:
    """The two programs a technician runs, as processes, on the two ends of a cable:
    ``locker-sim serial --token`` and ``lockerfleet bench``. Afterwards: the locker's
    credentials file (owner-only) holds exactly its controller-derived keys, the bench tool
    saw the locker back on the line, and the token is spent."""
    locker_id = sorted(seeded.lockers)[0]
    token = await issue(runtime, seeded, locker_id)
    credentials = tmp_path / "locker.credentials.json"
    with Cable() as cable:
        locker = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "firmware_sim.cli", "serial", "--port", cable.ends[0].path,
            "--locker-id", locker_id, "--token", token, "--model", "LF-12",
            "--credentials", str(credentials), "--state", str(tmp_path / "state.json"),
            "--duration", "30", stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        try:
            result = await asyncio.to_thread(
                provision_on_bench, cable.ends[1].path, api, timeout=20
            )
        finally:
            locker.send_signal(signal.SIGINT)
            _, raw = await asyncio.wait_for(locker.communicate(), 20)
    err = raw.decode()
    assert (result.locker_id, result.confirmed) == (locker_id, True), err
    assert locker.returncode in (0, 130), err
    kept = CredentialStore(credentials).load()
    expected = seeded.lockers[locker_id]
    assert kept is not None
    assert kept.command_key == expected.command_key_hex
    assert kept.code_key == expected.code_key_hex
    assert credentials.stat().st_mode & 0o077 == 0, "nobody but the owner can read it"
    with pytest.raises(InvalidProvisioningToken):
        await runtime.services.provisioning.redeem(token)
