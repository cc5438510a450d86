"""A locker's configuration as a device shadow: the rules, without any I/O.

The configuration is every field of the protocol's ``set_config`` command but its version
(:data:`FIELDS`); its ranges are the protocol's own, checked by building the command
(:func:`merge`), so the controller can never desire what a locker would refuse. Version 0 is
the locker's factory configuration (:data:`FACTORY`): nothing has been desired yet, and the
locker keeps what it has.

A desired version and the version the locker reports are compared by :func:`sync_state`::

    desired 0                       → unmanaged  (nothing desired; nothing is sent)
    reported unknown or < desired   → pending    (a set_config is owed to the locker)
    reported == desired             → in_sync
    reported > desired              → ahead      (configured elsewhere; never rolled back)

A new desired version is above both the old desired and the reported one
(:func:`next_version`), because a locker ignores a configuration older than the one in force.
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Mapping

from controller.domain.errors import InvalidRequest
from protocol.messages import SetConfig

FIELDS: tuple[str, ...] = tuple(
    f.name for f in dataclasses.fields(SetConfig) if f.name != "config_version"
)
"""The settings a configuration holds, in the protocol's order."""

FACTORY: dict[str, int] = {name: getattr(SetConfig(config_version=1), name) for name in FIELDS}
"""The protocol's defaults: what version 0 stands for when a locker reports it."""


class InvalidConfig(InvalidRequest):
    """A desired configuration the protocol does not allow (says which field and why)."""

    code = "invalid_config"


class SyncState(enum.StrEnum):
    UNMANAGED = "unmanaged"
    PENDING = "pending"
    IN_SYNC = "in_sync"
    AHEAD = "ahead"


def merge(current: Mapping[str, int], changes: Mapping[str, object]) -> dict[str, int]:
    """Return ``current`` with ``changes`` applied, checked against the protocol.

    Raises :class:`InvalidConfig` for no changes, an unknown field, or a value (or a
    combination, such as a chilled range upside down) that ``set_config`` does not allow.
    """
    if not changes:
        raise InvalidConfig(f"nothing to change: give one or more of {', '.join(FIELDS)}")
    unknown = sorted(set(changes) - set(FIELDS))
    if unknown:
        raise InvalidConfig(
            f"unknown setting {', '.join(unknown)}: a locker knows {', '.join(FIELDS)}"
        )
    merged: dict[str, object] = {**current, **changes}
    try:
        SetConfig(config_version=1, **merged)  # type: ignore[arg-type]
    except (ValueError, TypeError) as exc:
        raise InvalidConfig(str(exc)) from None
    return {name: int(merged[name]) for name in FIELDS}  # type: ignore[call-overload]


def command(version: int, settings: Mapping[str, int]) -> SetConfig:
    """The ``set_config`` arguments that carry ``settings`` as ``version``."""
    return SetConfig(config_version=version, **{name: settings[name] for name in FIELDS})


def next_version(desired: int, reported: int | None) -> int:
    """The version of a new desired configuration: above what is desired and reported."""
    return max(desired, reported or 0) + 1


def sync_state(desired: int, reported: int | None) -> SyncState:
    """Where the locker stands against what is desired (see the module docstring)."""
    if desired == 0:
        return SyncState.UNMANAGED
    if reported is None or reported < desired:
        return SyncState.PENDING
    return SyncState.IN_SYNC if reported == desired else SyncState.AHEAD
