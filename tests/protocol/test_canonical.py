"""The canonical encoding that signatures cover, checked against the rules of docs/protocol.md.

``spec_canonical`` below implements §8.2 of the document literally, character by character, as
firmware would; hypothesis checks it agrees with :func:`protocol.canonical.canonical_json`.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from protocol.canonical import canonical_json
from protocol.errors import RemoteProtocolError
from tests.protocol.protocol_strategies import THOROUGH

SHORT_ESCAPES = {'"': '\\"', "\\": "\\\\", "\b": "\\b", "\t": "\\t", "\n": "\\n", "\f": "\\f"}
SHORT_ESCAPES["\r"] = "\\r"


def spec_string(text: str) -> str:
    out = ['"']
    for char in text:
        if char in SHORT_ESCAPES:
            out.append(SHORT_ESCAPES[char])
        elif 0x20 <= ord(char) <= 0x7E:
            out.append(char)
        elif ord(char) > 0xFFFF:
            high = 0xD800 + ((ord(char) - 0x10000) >> 10)
            low = 0xDC00 + ((ord(char) - 0x10000) & 0x3FF)
            out.append(f"\\u{high:04x}\\u{low:04x}")
        else:
            out.append(f"\\u{ord(char):04x}")
    out.append('"')
    return "".join(out)


def spec_canonical(value: Any) -> str:
    if value is True:
        return "true"
    if value is False:
        return "false"
    if value is None:
        return "null"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        return spec_string(value)
    if isinstance(value, list):
        return "[" + ",".join(spec_canonical(v) for v in value) + "]"
    if isinstance(value, dict):
        items = sorted(value.items(), key=lambda kv: [ord(c) for c in kv[0]])
        return "{" + ",".join(spec_string(k) + ":" + spec_canonical(v) for k, v in items) + "}"
    raise TypeError(value)


json_without_floats: st.SearchStrategy[Any] = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**53), max_value=2**53)
    | st.text(max_size=12),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4)
    ),
    max_leaves=25,
)


@given(json_without_floats)
@THOROUGH
def test_the_implementation_follows_the_documented_rules(value: Any) -> None:
    encoded = canonical_json(value)
    assert encoded == spec_canonical(value).encode("ascii")
    assert json.loads(encoded) == value
    assert canonical_json(json.loads(encoded)) == encoded


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ({"b": 1, "a": [True, False, None]}, '{"a":[true,false,null],"b":1}'),
        ({"a": 1, "B": 2, "_": 3, "é": 4, "Z": 5}, '{"B":2,"Z":5,"_":3,"a":1,"\\u00e9":4}'),
        ({"\U0001f600": 1, "\uffff": 2}, '{"\\uffff":2,"\\ud83d\\ude00":1}'),
        (-0, "0"),
        (-42, "-42"),
        (2**53 - 1, "9007199254740991"),
        ('say "hi" \\ /', '"say \\"hi\\" \\\\ /"'),
        ("\b\t\n\f\r", '"\\b\\t\\n\\f\\r"'),
        ("\x00\x01\x1f\x7f", '"\\u0000\\u0001\\u001f\\u007f"'),
        ("~ é 请 \U0001f600", '"~ \\u00e9 \\u8bf7 \\ud83d\\ude00"'),
        ("\u00ab\u0100\uabcd", '"\\u00ab\\u0100\\uabcd"'),
        ([], "[]"),
        ({}, "{}"),
    ],
)
def test_examples_of_each_rule(value: Any, expected: str) -> None:
    assert canonical_json(value) == expected.encode("ascii")


def test_code_point_order_is_not_utf16_order() -> None:
    # U+FFFF sorts before U+1F600 by code point, after it in UTF-16 (0xD83D < 0xFFFF)
    assert canonical_json({"\U0001f600": 0, "\uffff": 0}).index(b"uffff") < 5


@pytest.mark.parametrize(
    ("value", "path"),
    [(1.5, ""), ({"a": 1.0}, "a"), ({"a": {"b": [0, 2.5]}}, "a.b[1]"), ([0, [1e3]], "[1][0]")],
)
def test_numbers_with_a_fraction_cannot_be_encoded(value: Any, path: str) -> None:
    with pytest.raises(RemoteProtocolError) as info:
        canonical_json(value)
    assert (info.value.code, info.value.path) == ("invalid_field", path)


def test_deep_nesting_is_an_error_not_a_crash() -> None:
    value: Any = 0
    for _ in range(100_000):
        value = [value]
    with pytest.raises(RemoteProtocolError) as info:
        canonical_json(value)
    assert info.value.code == "malformed_json"
