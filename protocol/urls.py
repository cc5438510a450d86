"""Broker URLs as users write them: ``mqtt://user:pass@host:port`` (or ``mqtts://``).

Pure parsing, shared by the controller and the simulator so both accept the same strings and
reject bad ones with the same one-line message.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import unquote, urlsplit


@dataclass(frozen=True, slots=True)
class BrokerAddress:
    host: str
    port: int
    username: str | None = None
    password: str | None = None
    tls: bool = False

    def url(self, *, with_password: bool = False) -> str:
        """Return the URL again; the password is shown as *** unless asked for."""
        scheme = "mqtts" if self.tls else "mqtt"
        auth = ""
        if self.username is not None:
            secret = self.password if with_password else "***"
            auth = self.username + (f":{secret}" if self.password is not None else "") + "@"
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{scheme}://{auth}{host}:{self.port}"


def parse_broker_url(url: str) -> BrokerAddress:
    """Return the address in an ``mqtt://`` or ``mqtts://`` URL.

    Raises :class:`ValueError` with a message fit to show a user as is.
    """
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise ValueError(f"invalid broker URL {url!r}: {exc}") from None
    if parts.scheme not in ("mqtt", "mqtts"):
        raise ValueError(f"invalid broker URL {url!r}: the scheme must be mqtt:// or mqtts://")
    if not parts.hostname:
        raise ValueError(f"invalid broker URL {url!r}: no host")
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise ValueError(f"invalid broker URL {url!r}: expected mqtt://[user[:pass]@]host[:port]")
    tls = parts.scheme == "mqtts"
    return BrokerAddress(
        host=parts.hostname,
        port=port if port is not None else (8883 if tls else 1883),
        username=unquote(parts.username) if parts.username is not None else None,
        password=unquote(parts.password) if parts.password is not None else None,
        tls=tls,
    )
