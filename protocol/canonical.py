"""The canonical encoding that command and acknowledgement signatures are computed over.

A signed message is first turned into a JSON object (as on the wire), the ``sig`` member is
removed, and the rest is written as *canonical JSON*:

* object members sorted by key, comparing keys by Unicode code point;
* no whitespace at all: ``,`` between items, ``:`` between key and value;
* integers in plain decimal (``-`` for negatives, no leading zeros, no exponent);
  numbers with a fraction or exponent are not allowed;
* ``true``, ``false``, ``null`` as themselves;
* strings in double quotes: the printable ASCII characters U+0020..U+007E written as
  themselves, except ``"`` written ``\\"`` and ``\\`` written ``\\\\`` (``/`` is not escaped);
  U+0008, U+0009, U+000A, U+000C, U+000D written ``\\b \\t \\n \\f \\r``; every other
  character (the rest of U+0000..U+001F, U+007F, and everything above it) written ``\\u`` with
  four lowercase hex digits, characters beyond U+FFFF as a UTF-16 surrogate pair
  (U+1F600 is ``\\ud83d\\ude00``).

The result is pure ASCII; a signature is HMAC-SHA256 over a domain prefix followed by it.
"""

from __future__ import annotations

import json
from typing import Any

from protocol.errors import RemoteProtocolError


def _has_float(value: Any) -> bool:
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, float):
            return True
        if isinstance(item, dict):
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return False


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

    Raises :class:`RemoteProtocolError`: ``invalid_field`` if it holds a float,
    ``malformed_json`` if it nests too deeply to encode.
    """
    try:
        if _has_float(value):
            _check(value, "")  # raises, naming where the number is
        text = json.dumps(
            value, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False
        )
    except RecursionError:
        raise RemoteProtocolError("value nested too deeply", code="malformed_json") from None
    # ensure_ascii escapes exactly what is listed above, with lowercase hex digits.
    return text.encode("ascii")
