"""An amqtt authentication plugin that admits only known username/password pairs.

amqtt with ``allow_anonymous`` drops persistent sessions' offline messages, so the fallback
broker authenticates every client instead: the controller and each locker with the
credentials the demo issued.
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass, field

from amqtt.plugins.base import BaseAuthPlugin
from amqtt.session import Session


class CredentialsAuthPlugin(BaseAuthPlugin):  # type: ignore[misc]
    @dataclass
    class Config:
        credentials: dict[str, str] = field(default_factory=dict)

    async def authenticate(self, *, session: Session) -> bool:
        username, password = session.username, session.password
        if not username or password is None:
            return False
        expected = self.config.credentials.get(username)
        given = password.decode() if isinstance(password, bytes) else str(password)
        return expected is not None and hmac.compare_digest(expected, given)
