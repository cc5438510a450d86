"""Every secret the controller needs is derived from one master secret.

``LOCKERFLEET_SECRET_KEY`` never leaves the controller's configuration; the database holds no
key at all, only *generation numbers*. A locker's command key is
``HMAC-SHA256(master, "command-key\\n" + locker_id + "\\n" + generation)``: rotating it means
incrementing the generation and provisioning the locker again (the broker password shares
that generation). The code key (pickup-code hashes) is derived the same way from a generation
of its own, so rotating the credentials leaves the codes in a locker's offline cache valid.
The hashes of API tokens and provisioning tokens are derived with their own labels, so a
stolen database dump opens no door and yields no token.
"""

from __future__ import annotations

import hashlib
import hmac


class KeyRing:
    def __init__(self, master: bytes) -> None:
        if len(master) < 16:
            raise ValueError("the master secret must be at least 16 bytes")
        self._master = master

    def _derive(self, label: str, *parts: str) -> bytes:
        message = "\n".join((label, *parts)).encode("utf-8")
        return hmac.new(self._master, message, hashlib.sha256).digest()

    def command_key(self, locker_id: str, generation: int) -> bytes:
        """The 32-byte key a locker checks command signatures with."""
        return self._derive("command-key", locker_id, str(generation))

    def code_key(self, locker_id: str, generation: int) -> bytes:
        """The 32-byte key pickup codes are hashed with, on the locker and here."""
        return self._derive("code-key", locker_id, str(generation))

    def mqtt_password(self, locker_id: str, generation: int) -> str:
        """The locker's broker password."""
        return self._derive("mqtt-password", locker_id, str(generation)).hex()[:40]

    def provisioning_password(self) -> str:
        """The broker password of the fleet-wide provisioning identity (technicians' tools,
        factory images), which may only ask for provisioning (docs/protocol.md §3.5)."""
        return self._derive("provisioning-mqtt-password").hex()[:40]

    def token_hash(self, token: str) -> str:
        """The at-rest form of an API or provisioning token."""
        return self._derive("token", token).hex()
