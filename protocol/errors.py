"""The protocol's own errors.

Blame is split the h11 way: :class:`RemoteProtocolError` means the peer sent something that
breaks the contract (a malformed payload, an unknown message type); :class:`LocalProtocolError`
means our own code tried to build a message the contract forbids. Every error carries a stable,
machine-readable ``code`` and, where it applies, the dotted ``path`` of the offending field, so a
receiver can log or report it without parsing the human text.
"""

from __future__ import annotations


class ProtocolError(Exception):
    """Base class of every error raised by :mod:`protocol`."""

    code: str = "protocol_error"

    def __init__(self, message: str, *, code: str | None = None, path: str = "") -> None:
        super().__init__(message)
        if code is not None:
            self.code = code
        self.path = path

    @property
    def message(self) -> str:
        return str(self.args[0]) if self.args else ""

    def __str__(self) -> str:
        text = self.message
        return f"{self.path}: {text}" if self.path else text


class RemoteProtocolError(ProtocolError):
    """The peer sent bytes that do not follow the contract.

    Codes: ``too_large``, ``malformed_json``, ``not_an_object``, ``unsupported_version``,
    ``unknown_type``, ``missing_field``, ``invalid_field``, ``invalid_topic``,
    ``topic_mismatch``.
    """

    code = "malformed"


class LocalProtocolError(ProtocolError):
    """Our own code tried to build or send something the contract forbids."""

    code = "local_error"
