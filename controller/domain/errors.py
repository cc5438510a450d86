"""Domain errors: what went wrong, in the domain's words, with a stable machine code.

The HTTP layer maps each class to a status code (:mod:`controller.api.errors`); nothing below
the API knows about HTTP.
"""

from __future__ import annotations


class DomainError(Exception):
    """Base class; ``code`` is stable and machine-readable, the message is for people."""

    code = "domain_error"

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message)
        if code is not None:
            self.code = code

    @property
    def message(self) -> str:
        return str(self.args[0])


class NotFound(DomainError):
    code = "not_found"


class NotAllowed(DomainError):
    """The caller may not do this (role or scope)."""

    code = "not_allowed"


class Conflict(DomainError):
    """The thing is not in a state that allows this."""

    code = "conflict"


class InvalidRequest(DomainError):
    code = "invalid_request"


class NoFreeCompartment(Conflict):
    code = "no_free_compartment"


class ConsentRequired(Conflict):
    code = "consent_required"


class QuotaExceeded(Conflict):
    code = "carrier_quota_exceeded"


class LockerUnavailable(Conflict):
    code = "locker_unavailable"


class LockedOut(DomainError):
    """Too many wrong codes: try again after ``retry_after_s``."""

    code = "locked_out"

    def __init__(self, message: str, retry_after_s: int) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class WrongCode(DomainError):
    code = "wrong_code"

    def __init__(self, message: str, attempts_left: int) -> None:
        super().__init__(message)
        self.attempts_left = attempts_left


class RateLimited(DomainError):
    code = "rate_limited"

    def __init__(self, message: str, retry_after_s: int) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class RemoteOpenRefused(DomainError):
    """A remote door opening refused by the fleet's defences against mass opening.

    ``request`` says, in plain values, what was asked (locker, compartment, parcel, purpose)
    and why it was refused, for the audit log.
    """

    code = "remote_open_refused"

    def __init__(self, message: str, *, request: dict[str, object] | None = None) -> None:
        super().__init__(message)
        self.request: dict[str, object] = dict(request or {})


class FleetLockedDown(RemoteOpenRefused):
    """An admin has locked the fleet down: no remote openings until it is lifted."""

    code = "fleet_lockdown"


class OpenLimitExceeded(RemoteOpenRefused):
    """Too many remote openings this minute for a user, a carrier or the whole fleet."""

    code = "open_limit_exceeded"

    def __init__(
        self, message: str, retry_after_s: int, *, request: dict[str, object] | None = None
    ) -> None:
        super().__init__(message, request=request)
        self.retry_after_s = retry_after_s
