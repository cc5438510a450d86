"""The canonical encoding that command and acknowledgement signatures are computed over.

A signed message is first turned into a JSON object (as on the wire), the ``sig`` member is
removed, and the rest is written as *canonical JSON*:

* object members sorted by key, comparing keys by Unicode code point;
* no whitespace at all: ``,`` between items, ``:`` between key and value;
* integers in plain decimal (``-`` for negatives, no leading zeros, no exponent);
  numbers with a fraction or exponent are not allowed;
* ``true``, ``false``, ``null`` as themselves;
* strings in double quotes with ``"`` written ``\\"`` and ``\\`` written ``\\\\``; the control
  characters U+0008, U+0009, U+000A, U+000C, U+000D written ``\\b \\t \\n \\f \\r``; every other
  character below U+0020 and every character above U+007E written ``\\u`` with four lowercase
  hex digits (characters beyond U+FFFF as a UTF-16 surrogate pair); U+007F and everything else
  written as itself.

The result is pure ASCII; a signature is HMAC-SHA256 over a domain prefix followed by it.
"""

from __future__ import annotations

import json
from typing import Any

from protocol.errors import RemoteProtocolError


def _check(value: Any, path: str) -> None:
    if isinstance(value, float):
        raise RemoteProtocolError(
            "numbers with a fraction cannot be signed", code="invalid_field", path=path
        )
    if isinstance(value, dict):
        for key, item in value.items():
            _check(item, f"{path}.{key}" if path else str(key))
    elif isinstance(value, list):
        for i, item in enumerate(value):
            _check(item, f"{path}[{i}]")


def canonical_json(value: Any) -> bytes:
    """Return the canonical encoding of a JSON value (dicts, lists, str, int, bool, None).

    Raises :class:`RemoteProtocolError` (``invalid_field``) if it holds a float.
    """
    _check(value, "")
    text = json.dumps(
        value, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False
    )
    # json.dumps writes DEL as itself already; non-ASCII is escaped lowercase.
    return text.encode("ascii")
