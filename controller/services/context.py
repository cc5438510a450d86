"""What every service needs, built once per process, and who is asking."""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Protocol

from controller.clock import Clock
from controller.db.session import Database
from controller.domain.lockout import LockoutPolicy
from controller.keys import KeyRing
from controller.settings import Settings
from protocol.topics import TopicLayout


class Role(enum.StrEnum):
    ADMIN = "admin"
    TECHNICIAN = "technician"
    COURIER = "courier"
    AGENT = "agent"
    OPERATOR = "operator"


@dataclass(frozen=True)
class Actor:
    """The authenticated caller of a service."""

    user_id: int
    role: Role
    name: str = ""
    carrier_id: int | None = None
    village_ids: frozenset[int] = frozenset()
    token_id: int | None = None

    @property
    def kind(self) -> str:
        return self.role.value


SYSTEM = Actor(user_id=0, role=Role.ADMIN, name="system")


def _no_op() -> None:
    return None


class Publisher(Protocol):
    """What services need of the MQTT bridge to publish signed commands themselves."""

    def ready(self) -> bool:
        """Whether it is connected now (a publish may still fail; retries cover that)."""
        ...

    def publish_commands(self, messages: list[tuple[str, bytes]]) -> None:
        """Publish (topic, payload) pairs at QoS 1 in the background."""
        ...


@dataclass
class Context:
    """Shared dependencies of the services."""

    db: Database
    settings: Settings
    keys: KeyRing
    clock: Clock
    topics: TopicLayout
    wake_dispatcher: Callable[[], None] = field(default=_no_op)
    """Called after a transaction that created commands commits, so they go out at once."""
    publisher: Publisher | None = None
    """This replica's connection to the broker, for commands published straight after the
    commit that created them (see :func:`controller.services.commands.send_at_commit`)."""

    @property
    def storage_window(self) -> timedelta:
        return timedelta(hours=self.settings.storage_window_hours)

    @property
    def lockout_policy(self) -> LockoutPolicy:
        s = self.settings
        return LockoutPolicy(
            max_attempts=s.code_lockout_attempts,
            base=timedelta(seconds=s.code_lockout_base_s),
            ceiling=timedelta(seconds=s.code_lockout_max_s),
        )
