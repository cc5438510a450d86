"""The locker's configuration: factory defaults, replaced as a whole by a ``set_config`` command.

Version 0 is the factory configuration a locker starts with (a simulator may choose other
factory values, e.g. a short heartbeat in tests). A ``set_config`` command carries the complete
desired configuration with a version of at least 1; the locker keeps it in non-volatile memory.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from protocol.messages import SetConfig


@dataclass(frozen=True, slots=True)
class Settings:
    """Every setting the firmware acts on. Defaults are those of :class:`SetConfig`."""

    config_version: int = 0
    heartbeat_s: int = 30
    door_open_alarm_s: int = 120
    lock_release_s: int = 8
    keypad_max_attempts: int = 5
    keypad_lockout_s: int = 60
    chilled_min_deci_celsius: int = 20
    chilled_max_deci_celsius: int = 60

    def __post_init__(self) -> None:
        if min(self.heartbeat_s, self.door_open_alarm_s, self.lock_release_s) < 1:
            raise ValueError("heartbeat_s, door_open_alarm_s and lock_release_s must be >= 1")
        if self.keypad_max_attempts < 1 or self.keypad_lockout_s < 1:
            raise ValueError("keypad_max_attempts and keypad_lockout_s must be >= 1")
        if self.chilled_min_deci_celsius >= self.chilled_max_deci_celsius:
            raise ValueError("chilled_min_deci_celsius must be below chilled_max_deci_celsius")

    @classmethod
    def from_command(cls, config: SetConfig) -> Settings:
        """Return the settings a ``set_config`` command asks for."""
        return cls(**{f.name: getattr(config, f.name) for f in dataclasses.fields(cls)})

    def to_dict(self) -> dict[str, int]:
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Settings:
        """Return settings from :meth:`to_dict` output; unknown keys are ignored."""
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: int(v) for k, v in data.items() if k in known})
