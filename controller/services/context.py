"""What every service needs, built once per process, and who is asking."""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta

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
