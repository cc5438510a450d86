"""The locker's non-volatile memory, and where it is kept.

:class:`NonVolatile` holds what must survive a reboot or a power cut: the boot counter, the
anti-replay window (with the ids of the commands it took), the pickup-code cache, the
configuration, the event buffer (every birth, event and result not yet acknowledged), the
record of overflowed events not yet reported, and the compartments taken out of service by a
jam.

The firmware changes it in place and calls :meth:`NvStore.commit` after each change, as real
firmware writes flash. Two stores:

* :class:`MemoryStore` for fleets: the object itself *is* the memory and commit costs nothing;
  a reboot of the simulated board keeps the same object (only volatile state is lost).
* :class:`JsonFileStore` for the serial locker: one JSON file, rewritten atomically on commit,
  so the state also survives the simulator process.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from firmware_sim.settings import Settings
from protocol.auth import ReplayWindow
from protocol.codes import CodeCache
from protocol.fields import from_wire, to_wire
from protocol.messages import CodeEntry
from protocol.topics import Channel


@dataclass(slots=True)
class Buffered:
    """One sequenced message kept until the controller acknowledges it."""

    boot_id: int
    seq: int
    channel: Channel
    payload: bytes


@dataclass(slots=True)
class DropRecord:
    """Sequenced messages of one boot that did not fit in the buffer, not yet reported."""

    boot_id: int
    count: int
    first_seq: int
    last_seq: int


@dataclass(slots=True)
class NonVolatile:
    """Everything the locker keeps across reboots."""

    boot_id: int = 0
    replay: ReplayWindow = field(default_factory=ReplayWindow)
    codes: CodeCache = field(default_factory=CodeCache)
    settings: Settings | None = None
    """The last configuration applied by set_config; ``None``: factory settings."""
    outbox: dict[tuple[int, int], Buffered] = field(default_factory=dict)
    dropped: DropRecord | None = None
    events_dropped_total: int = 0
    out_of_service: frozenset[str] = frozenset()
    """Labels taken out of service by a jam (replaced, not changed in place: the empty one is
    shared by every locker instead of an empty set each)."""


class NvStore(Protocol):
    """Where a locker's :class:`NonVolatile` lives."""

    def load(self) -> NonVolatile | None:
        """Return the stored memory, or ``None`` for a factory-fresh locker."""
        ...

    def commit(self, state: NonVolatile) -> None:
        """Make ``state`` durable."""
        ...


class MemoryStore:
    """Non-volatile memory that lives as long as the simulator process."""

    __slots__ = ("state",)

    def __init__(self) -> None:
        self.state: NonVolatile | None = None

    def load(self) -> NonVolatile | None:
        return self.state

    def commit(self, state: NonVolatile) -> None:
        self.state = state


class JsonFileStore:
    """Non-volatile memory in one JSON file (written to a temporary file, then renamed)."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)

    def load(self) -> NonVolatile | None:
        """Return the memory in the file, or ``None`` if there is no file.

        Raises :class:`ValueError` if the file exists but is not a locker's memory.
        """
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return None
        try:
            return state_from_json(json.loads(text))
        except (ValueError, KeyError, TypeError) as exc:
            raise ValueError(f"{self.path} is not a locker state file: {exc}") from None

    def commit(self, state: NonVolatile) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=self.path.name, dir=self.path.parent)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as out:
                json.dump(state_to_json(state), out, ensure_ascii=False)
            os.replace(tmp, self.path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise


def state_to_json(state: NonVolatile) -> dict[str, Any]:
    """Return ``state`` as JSON-ready data."""
    codes = state.codes
    return {
        "boot_id": state.boot_id,
        "replay": {
            "highest": state.replay.highest,
            "seen": state.replay.seen,
            "recent": state.replay.recent,
        },
        "codes": {
            "version": codes.version,
            "entries": [to_wire(e) for e in codes.entries.values()],
            "staging_version": codes.staging_version,
            "staging_pages": codes.staging_pages,
            "staged": {str(p): [to_wire(e) for e in page] for p, page in codes.staged.items()},
        },
        "settings": state.settings.to_dict() if state.settings else None,
        "outbox": [
            [b.boot_id, b.seq, b.channel.value, b.payload.decode("utf-8")]
            for b in state.outbox.values()
        ],
        "dropped": (
            None
            if state.dropped is None
            else [
                state.dropped.boot_id,
                state.dropped.count,
                state.dropped.first_seq,
                state.dropped.last_seq,
            ]
        ),
        "events_dropped_total": state.events_dropped_total,
        "out_of_service": sorted(state.out_of_service),
    }


def state_from_json(data: dict[str, Any]) -> NonVolatile:
    """Return the :class:`NonVolatile` that :func:`state_to_json` wrote.

    Raises :class:`ValueError`, :class:`KeyError` or :class:`TypeError` on damaged data.
    """
    codes_data = data["codes"]
    codes = CodeCache(
        version=int(codes_data["version"]),
        entries={e["hash"]: from_wire(CodeEntry, e) for e in codes_data["entries"]},
        staging_version=codes_data["staging_version"],
        staging_pages=int(codes_data["staging_pages"]),
        staged={
            int(p): tuple(from_wire(CodeEntry, e) for e in page)
            for p, page in codes_data["staged"].items()
        },
    )
    outbox: dict[tuple[int, int], Buffered] = {}
    for boot_id, seq, channel, payload in data["outbox"]:
        outbox[(int(boot_id), int(seq))] = Buffered(
            int(boot_id), int(seq), Channel(channel), payload.encode("utf-8")
        )
    dropped = data["dropped"]
    return NonVolatile(
        boot_id=int(data["boot_id"]),
        replay=ReplayWindow(
            int(data["replay"]["highest"]),
            int(data["replay"]["seen"]),
            {str(k): int(v) for k, v in data["replay"]["recent"].items()},
        ),
        codes=codes,
        settings=Settings.from_dict(data["settings"]) if data["settings"] else None,
        outbox=outbox,
        dropped=DropRecord(*map(int, dropped)) if dropped else None,
        events_dropped_total=int(data["events_dropped_total"]),
        out_of_service=frozenset(data["out_of_service"]),
    )
