"""Provisioning responses: sealed with a key only the token holder and the controller know.

An unprovisioned locker connects with the fleet-wide *provisioning identity* (docs/protocol.md
§3.5), which every technician's tool and factory image holds, so anyone holding it can read
every provisioning response. A response is therefore sealed with keys derived from the
one-time token, which only the locker (and the technician who typed it in) and the controller
know (standard library only: HMAC-SHA256 everywhere)::

    K      = HMAC-SHA256(key = token as ASCII,
                         msg = "lockerfleet/v1/provision\\n" + locker_id + "\\n" + request_id)
    K_enc  = HMAC-SHA256(K, "enc")
    K_mac  = HMAC-SHA256(K, "mac")
    block i (i = 0, 1, ...) = HMAC-SHA256(K_enc, nonce (16 bytes) || i as 4 bytes big-endian)
    sealed = plaintext XOR (block 0 || block 1 || ...)[:len(plaintext)]
    mac    = HMAC-SHA256(K_mac, "lockerfleet/v1/provision_response\\n"
                                + canonical JSON of the response without "mac")

The plaintext is the canonical JSON (:mod:`protocol.canonical`) of
:class:`~protocol.messages.LockerCredentials`. Encrypt-then-MAC: the MAC covers the ciphertext
and every other field (locker id, request id, status, nonce, timestamp, reason), so a refusal is
authenticated too and nobody without the token can forge or alter a response. The request id
(chosen by the locker, fresh for every request) binds a response to one request; the nonce
(chosen by the controller) makes every keystream fresh even if a locker repeats a request id.

:func:`seal_credentials` and :func:`refusal` build responses (controller, bench tool);
:func:`open_response` is the locker's side: it returns the credentials, the refusal reason, or
``None`` for a response that is not for this request or does not verify, which the locker
ignores.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from dataclasses import replace

from protocol.canonical import canonical_json
from protocol.codec import message_to_object
from protocol.errors import RemoteProtocolError
from protocol.fields import from_wire, to_wire
from protocol.messages import (
    LockerCredentials,
    ProvisionRefusal,
    ProvisionResponse,
    ProvisionStatus,
)

KEY_LABEL = b"lockerfleet/v1/provision\n"
RESPONSE_DOMAIN = b"lockerfleet/v1/provision_response\n"
NONCE_BYTES = 16
BLOCK_BYTES = 32


def _hmac(key: bytes, message: bytes) -> bytes:
    return hmac.new(key, message, hashlib.sha256).digest()


def response_keys(token: str, locker_id: str, request_id: str) -> tuple[bytes, bytes]:
    """Return ``(K_enc, K_mac)`` for one request."""
    base = _hmac(token.encode("ascii"), KEY_LABEL + f"{locker_id}\n{request_id}".encode("ascii"))
    return _hmac(base, b"enc"), _hmac(base, b"mac")


def keystream(enc_key: bytes, nonce: bytes, length: int) -> bytes:
    """Return ``length`` bytes of HMAC-SHA256 in counter mode under ``enc_key`` and ``nonce``."""
    blocks = (length + BLOCK_BYTES - 1) // BLOCK_BYTES
    stream = b"".join(_hmac(enc_key, nonce + i.to_bytes(4, "big")) for i in range(blocks))
    return stream[:length]


def _xor(data: bytes, stream: bytes) -> bytes:
    return bytes(a ^ b for a, b in zip(data, stream, strict=True))


def credentials_plaintext(credentials: LockerCredentials) -> bytes:
    """Return the bytes that are sealed: the canonical JSON of ``credentials``."""
    return canonical_json(to_wire(credentials))


def mac_input(response: ProvisionResponse) -> bytes:
    """Return the exact bytes the response MAC is computed over."""
    body = {k: v for k, v in message_to_object(response).items() if k != "mac"}
    return RESPONSE_DOMAIN + canonical_json(body)


def _with_mac(response: ProvisionResponse, mac_key: bytes) -> ProvisionResponse:
    return replace(response, mac=_hmac(mac_key, mac_input(response)).hex())


def seal_credentials(
    credentials: LockerCredentials,
    *,
    token: str,
    locker_id: str,
    request_id: str,
    nonce: bytes,
    ts: int,
) -> ProvisionResponse:
    """Return the ``ok`` response carrying ``credentials`` sealed for this request.

    ``nonce`` must be 16 fresh random bytes (``secrets.token_bytes(16)``).
    """
    if len(nonce) != NONCE_BYTES:
        raise ValueError(f"the nonce must be {NONCE_BYTES} bytes")
    enc_key, mac_key = response_keys(token, locker_id, request_id)
    plaintext = credentials_plaintext(credentials)
    sealed = _xor(plaintext, keystream(enc_key, nonce, len(plaintext)))
    unsigned = ProvisionResponse(
        locker_id=locker_id, request_id=request_id, status=ProvisionStatus.OK,
        nonce=nonce.hex(), ts=ts, mac="0" * 64, sealed=sealed.hex(),
    )  # fmt: skip
    return _with_mac(unsigned, mac_key)


def refusal(
    reason: ProvisionRefusal,
    *,
    token: str,
    locker_id: str,
    request_id: str,
    nonce: bytes,
    ts: int,
) -> ProvisionResponse:
    """Return a ``refused`` response, authenticated with the key of the token presented."""
    if len(nonce) != NONCE_BYTES:
        raise ValueError(f"the nonce must be {NONCE_BYTES} bytes")
    _, mac_key = response_keys(token, locker_id, request_id)
    unsigned = ProvisionResponse(
        locker_id=locker_id, request_id=request_id, status=ProvisionStatus.REFUSED,
        nonce=nonce.hex(), ts=ts, mac="0" * 64, reason=reason,
    )  # fmt: skip
    return _with_mac(unsigned, mac_key)


def open_response(
    response: ProvisionResponse, *, token: str, locker_id: str, request_id: str
) -> LockerCredentials | ProvisionRefusal | None:
    """Return what a response says to the locker that sent request ``request_id``.

    The credentials for ``ok``, the reason for ``refused``; ``None`` if the response is for
    another locker or request, or its MAC does not verify (the locker ignores it). Raises
    :class:`RemoteProtocolError` (``invalid_field``) if a response that verifies carries
    sealed bytes that are not credentials (a controller bug, not an attack).
    """
    if response.locker_id != locker_id or response.request_id != request_id:
        return None
    enc_key, mac_key = response_keys(token, locker_id, request_id)
    expected = _hmac(mac_key, mac_input(response)).hex()
    if not hmac.compare_digest(expected, response.mac):
        return None
    if response.status is ProvisionStatus.REFUSED:
        assert response.reason is not None  # the message checks it
        return response.reason
    assert response.sealed is not None
    sealed = bytes.fromhex(response.sealed)
    plaintext = _xor(sealed, keystream(enc_key, bytes.fromhex(response.nonce), len(sealed)))
    try:
        data = json.loads(plaintext.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise RemoteProtocolError(
            "sealed credentials are not JSON", code="invalid_field", path="sealed"
        ) from None
    return from_wire(LockerCredentials, data, "sealed")
