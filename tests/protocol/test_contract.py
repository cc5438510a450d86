"""The three descriptions of the protocol agree: docs/protocol.md, docs/asyncapi.json, protocol/.

Every ```json example block of the document validates against the JSON Schema of its type in
asyncapi.json and round-trips through the codec; asyncapi.json is exactly what
``protocol.asyncapi`` generates; the field tables of the document list exactly the fields of the
dataclasses; and the test vectors (blocks whose info string names ``vector:NAME``) are parsed
out of the document and recomputed here, so no constant is written twice.
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from jsonschema import Draft202012Validator  # type: ignore[import-untyped]

from protocol.asyncapi import asyncapi_document
from protocol.asyncapi import main as asyncapi_main
from protocol.auth import (
    ACK_DOMAIN,
    CLOCK_TOLERANCE_MS,
    COMMAND_DOMAIN,
    ReplayWindow,
    check_ack,
    check_command,
    sign_ack,
    sign_command,
    signing_input,
)
from protocol.codec import (
    ALL_MESSAGES,
    MAX_NESTING,
    MAX_PAYLOAD_BYTES,
    decode_any,
    encode,
    message_to_object,
)
from protocol.codes import code_hash
from protocol.framing import (
    MAX_ENCODED_FRAME,
    FrameDecoder,
    cobs_decode,
    cobs_encode,
    crc32,
    encode_frame,
)
from protocol.messages import (
    COMMAND_ARGS,
    EVENT_DATA,
    MAX_CODES_PER_PAGE,
    MAX_COMMAND_LIFETIME_MS,
    Ack,
    CodeEntry,
    CodeStaging,
    Command,
    CompartmentState,
    LockerCredentials,
    Outcome,
    ProvisionRefusal,
    ProvisionResponse,
    RequestRebirth,
    SeqRange,
)
from protocol.provisioning import mac_input, open_response, refusal, seal_credentials
from protocol.topics import CHANNEL_OF_TYPE, DELIVERY, PROVISIONING, Channel, TopicLayout
from tests.protocol.protocol_strategies import FAST, messages

ROOT = Path(__file__).resolve().parents[2]
DOC_PATH = ROOT / "docs" / "protocol.md"
ASYNCAPI_PATH = ROOT / "docs" / "asyncapi.json"
DOC = DOC_PATH.read_text(encoding="utf-8")
ASYNCAPI: dict[str, Any] = json.loads(ASYNCAPI_PATH.read_text(encoding="utf-8"))
SCHEMAS: dict[str, Any] = ASYNCAPI["components"]["schemas"]


@dataclass(frozen=True)
class Block:
    """A fenced code block of the document: ```lang tag tag ..."""

    lang: str
    tags: tuple[str, ...]
    text: str
    line: int

    @property
    def vector(self) -> str | None:
        names = [t.removeprefix("vector:") for t in self.tags if t.startswith("vector:")]
        return names[0] if names else None


def fenced_blocks(text: str) -> list[Block]:
    """Return every fenced block; its text is the lines between the fences joined by LF."""
    blocks: list[Block] = []
    lines = text.split("\n")
    i = 0
    while i < len(lines):
        opening = re.fullmatch(r"```(\S*)(.*)", lines[i])
        if opening is None:
            i += 1
            continue
        end = lines.index("```", i + 1)
        lang, tags = opening.group(1), tuple(opening.group(2).split())
        blocks.append(Block(lang, tags, "\n".join(lines[i + 1 : end]), i + 1))
        i = end + 1
    return blocks


BLOCKS = fenced_blocks(DOC)
EXAMPLES = [b for b in BLOCKS if b.lang == "json" and "example" in b.tags]
EXAMPLE_OBJECTS = [json.loads(b.text) for b in EXAMPLES]


def vector(name: str) -> str:
    """Return the text of the one block tagged ``vector:name``."""
    found = [b.text for b in BLOCKS if b.vector == name]
    assert len(found) == 1, f"expected one vector:{name} block, found {len(found)}"
    return found[0]


def key_values(text: str) -> dict[str, str]:
    """Parse ``name = value`` lines."""
    return {k.strip(): v.strip() for k, v in (line.split("=", 1) for line in text.splitlines())}


def arrows(text: str) -> list[tuple[str, str]]:
    """Parse ``left -> right`` lines."""
    return [(a.strip(), b.strip()) for a, b in (line.split("->") for line in text.splitlines())]


COMMAND_KEY = bytes.fromhex(vector("hmac-key"))


# ---------------------------------------------------------------------------------------------
# Examples
# ---------------------------------------------------------------------------------------------


def test_the_document_has_examples_and_every_block_is_closed() -> None:
    assert len(EXAMPLES) >= 40
    assert DOC.count("```") == 2 * len(BLOCKS)


@pytest.mark.parametrize("block", EXAMPLES, ids=lambda b: f"line{b.line}")
def test_example_validates_against_its_schema(block: Block) -> None:
    obj = json.loads(block.text)
    schema = SCHEMAS[obj["type"]]
    errors = [e.message for e in Draft202012Validator(schema).iter_errors(obj)]
    assert errors == []


@pytest.mark.parametrize("block", EXAMPLES, ids=lambda b: f"line{b.line}")
def test_example_round_trips_through_the_codec(block: Block) -> None:
    obj = json.loads(block.text)
    message = decode_any(block.text.encode("utf-8"))
    assert message_to_object(message) == obj
    assert decode_any(encode(message)) == message


@pytest.mark.parametrize(
    "block",
    [b for b in EXAMPLES if json.loads(b.text)["type"] in ("command", "ack")],
    ids=lambda b: f"line{b.line}",
)
def test_signed_examples_carry_valid_signatures_under_the_example_key(block: Block) -> None:
    obj = json.loads(block.text)
    if obj["type"] == "command":
        check = check_command(
            block.text.encode(),
            locker_id=obj["locker_id"],
            key=COMMAND_KEY,
            now_ms=obj["issued_at"],
            window=ReplayWindow(),
        )
        assert check.accepted, check.reason
    else:
        assert check_ack(block.text.encode(), locker_id=obj["locker_id"], key=COMMAND_KEY)


def test_every_message_type_event_kind_action_and_outcome_has_an_example() -> None:
    types = {o["type"] for o in EXAMPLE_OBJECTS}
    kinds = {o["event"] for o in EXAMPLE_OBJECTS if o["type"] == "event"}
    actions = {o["action"] for o in EXAMPLE_OBJECTS if o["type"] == "command"}
    outcomes = {o["outcome"] for o in EXAMPLE_OBJECTS if o["type"] == "result" and "outcome" in o}
    results_for = {o.get("action") for o in EXAMPLE_OBJECTS if o["type"] == "result"}
    assert types == set(SCHEMAS)
    assert kinds == set(EVENT_DATA)
    assert actions == set(COMMAND_ARGS)
    assert outcomes == {o.value for o in Outcome}
    assert set(COMMAND_ARGS) <= results_for


# ---------------------------------------------------------------------------------------------
# asyncapi.json
# ---------------------------------------------------------------------------------------------


def test_asyncapi_json_is_what_protocol_asyncapi_generates() -> None:
    """Regenerate with: .venv/bin/python -m protocol.asyncapi > docs/asyncapi.json"""
    assert asyncapi_document() == ASYNCAPI


def test_asyncapi_schemas_are_valid_json_schemas() -> None:
    for schema in SCHEMAS.values():
        Draft202012Validator.check_schema(schema)


def _refs(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "$ref":
                yield value
            else:
                yield from _refs(value)
    elif isinstance(node, list):
        for item in node:
            yield from _refs(item)


def test_every_reference_in_asyncapi_json_resolves() -> None:
    refs = list(_refs(ASYNCAPI))
    assert len(refs) > 20
    for ref in refs:
        assert ref.startswith("#/")
        node: Any = ASYNCAPI
        for part in ref[2:].split("/"):
            node = node[part.replace("~1", "/").replace("~0", "~")]


def test_asyncapi_bindings_match_the_topic_table_of_protocol_topics() -> None:
    for operation in ASYNCAPI["operations"].values():
        channel_id = operation["channel"]["$ref"].rsplit("/", 1)[1]
        if channel_id not in {c.value for c in Channel}:
            continue
        delivery = DELIVERY[Channel(channel_id)]
        assert operation["bindings"]["mqtt"]["qos"] == delivery.qos
        assert operation["bindings"]["mqtt"]["retain"] == delivery.retain


def test_the_topic_table_of_the_document_matches_protocol_topics() -> None:
    rows = re.findall(
        r"^\| `\{root\}/locker/\{locker_id\}/(\w+)` \| `(\w+)` \| locker (publishes|subscribes)"
        r" \| (\d) \| (yes|no)",
        DOC,
        flags=re.MULTILINE,
    )
    assert len(rows) == len(Channel)
    for channel_name, message_type, direction, qos, retain in rows:
        channel = Channel(channel_name)
        assert CHANNEL_OF_TYPE[message_type] is channel
        assert DELIVERY[channel].qos == int(qos)
        assert DELIVERY[channel].retain == (retain == "yes")
        assert (direction == "publishes") == (message_type not in ("command", "ack"))


@given(messages())
@FAST
def test_every_valid_message_validates_against_its_schema(message: Any) -> None:
    obj = message_to_object(message)
    errors = [e.message for e in Draft202012Validator(SCHEMAS[obj["type"]]).iter_errors(obj)]
    assert errors == []


# ---------------------------------------------------------------------------------------------
# Field tables
# ---------------------------------------------------------------------------------------------


def _table_classes() -> dict[str, type[Any]]:
    classes: dict[str, type[Any]] = dict(ALL_MESSAGES)
    classes.update({f"event/{kind}": cls for kind, cls in EVENT_DATA.items()})
    classes.update({f"command/{action}": cls for action, cls in COMMAND_ARGS.items()})
    classes.update(
        {
            "compartment": CompartmentState,
            "code_staging": CodeStaging,
            "code_entry": CodeEntry,
            "seq_range": SeqRange,
            "locker_credentials": LockerCredentials,
        }
    )
    return classes


def _documented_fields(marker: str) -> dict[str, str]:
    """Return {field: required column} of the table after ``<!-- fields:marker -->``."""
    start = DOC.index(f"<!-- fields:{marker} -->")
    section = DOC[start:].split("\n\n", 2)
    rows: dict[str, str] = {}
    if not section[1].startswith("| Field"):
        return rows  # no table: a message without fields
    for line in section[1].splitlines()[2:]:
        cells = [c.strip() for c in line.strip("|").split(" | ")]
        rows[cells[0].strip("`")] = cells[2]
    return rows


@pytest.mark.parametrize("marker", sorted(_table_classes()))
def test_field_table_lists_exactly_the_fields_of_the_dataclass(marker: str) -> None:
    cls = _table_classes()[marker]
    documented = _documented_fields(marker)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    assert list(documented) == list(fields)
    for name, required in documented.items():
        is_required = fields[name].default is dataclasses.MISSING
        assert (required == "yes") == is_required, name


def test_every_field_table_marker_is_known() -> None:
    markers = set(re.findall(r"<!-- fields:([\w/]+) -->", DOC))
    assert markers == set(_table_classes())


# ---------------------------------------------------------------------------------------------
# Test vectors
# ---------------------------------------------------------------------------------------------


def test_hmac_vector() -> None:
    command_obj = json.loads(vector("hmac-command"))
    documented_input = vector("hmac-signing-input").encode("ascii")
    documented_sig = vector("hmac-signature").strip()

    assert signing_input(COMMAND_DOMAIN, command_obj) == documented_input
    mac = hmac.new(COMMAND_KEY, documented_input, hashlib.sha256).hexdigest()
    assert mac == documented_sig == command_obj["sig"]
    command = decode_any(json.dumps(command_obj).encode())
    assert isinstance(command, Command)
    unsigned = dataclasses.replace(command, sig="")
    assert sign_command(unsigned, COMMAND_KEY).sig == documented_sig


def test_ack_vector() -> None:
    (ack_obj,) = [o for o in EXAMPLE_OBJECTS if o["type"] == "ack"]
    documented_input = vector("ack-signing-input").encode("ascii")
    documented_sig = vector("ack-signature").strip()

    assert signing_input(ACK_DOMAIN, ack_obj) == documented_input
    assert hmac.new(COMMAND_KEY, documented_input, hashlib.sha256).hexdigest() == documented_sig
    ack = decode_any(json.dumps(ack_obj).encode())
    assert isinstance(ack, Ack)
    assert sign_ack(dataclasses.replace(ack, sig=""), COMMAND_KEY).sig == documented_sig


def test_code_hash_vector() -> None:
    values = key_values(vector("code-hash"))
    key = bytes.fromhex(values["code_key"])
    assert code_hash(key, values["locker_id"], values["code"]) == values["hash"]
    pickups = [o["data"] for o in EXAMPLE_OBJECTS if o.get("event") == "pickup"]
    assert values["hash"] in {p["code_hash"] for p in pickups}


def test_crc_vector() -> None:
    cases = arrows(vector("crc32"))
    assert cases
    for text, expected in cases:
        assert crc32(text.encode("ascii")) == int(expected, 16)


def test_cobs_vector() -> None:
    cases = arrows(vector("cobs"))
    assert len(cases) >= 4
    for raw, encoded in cases:
        assert cobs_encode(bytes.fromhex(raw)) == bytes.fromhex(encoded)
        assert cobs_decode(bytes.fromhex(encoded)) == bytes.fromhex(raw)


def test_frame_vector() -> None:
    payload = vector("frame-payload").encode("utf-8")
    frame = bytes.fromhex(vector("frame"))
    assert encode_frame(payload) == frame
    assert FrameDecoder().feed(frame) == [payload]
    assert f"{crc32(payload):08x}" in DOC
    decode_any(payload)


def test_replay_window_vector() -> None:
    lines = vector("replay-window").splitlines()
    assert lines[0].split() == ["counter", "command_id", "verdict", "highest", "seen"]
    window = ReplayWindow()
    locker_id = EXAMPLE_OBJECTS[0]["locker_id"]
    for line in lines[1:]:
        counter, command_id, verdict, highest, seen = line.split()
        command = Command.of(locker_id, command_id, int(counter), 0, 60_000, RequestRebirth())
        check = check_command(
            encode(sign_command(command, COMMAND_KEY)),
            locker_id=locker_id,
            key=COMMAND_KEY,
            now_ms=0,
            window=window,
        )
        got = "accepted" if check.accepted else "repeat" if check.repeat else str(check.reason)
        assert (got, window.highest, window.seen) == (verdict, int(highest), int(seen, 16)), line


# ---------------------------------------------------------------------------------------------
# Numbers stated in the document
# ---------------------------------------------------------------------------------------------


def _h(key: bytes, message: bytes) -> bytes:
    return hmac.new(key, message, hashlib.sha256).digest()


def test_provisioning_vector_recomputed_from_the_formulas_of_the_document() -> None:
    """§8.8 by hand (no protocol.provisioning): keys, keystream, sealed bytes and MAC."""
    inputs = key_values(vector("provision-inputs"))
    keys = key_values(vector("provision-keys"))
    plaintext = vector("provision-plaintext").encode("ascii")
    response = json.loads(vector("provision-response"))
    token, locker_id, request_id = inputs["token"], inputs["locker_id"], inputs["request_id"]
    nonce = bytes.fromhex(inputs["nonce"])

    base = _h(token.encode(), f"lockerfleet/v1/provision\n{locker_id}\n{request_id}".encode())
    k_enc, k_mac = _h(base, b"enc"), _h(base, b"mac")
    assert (k_enc.hex(), k_mac.hex()) == (keys["K_enc"], keys["K_mac"])
    stream = b"".join(_h(k_enc, nonce + i.to_bytes(4, "big")) for i in range(9))
    sealed = bytes(p ^ k for p, k in zip(plaintext, stream, strict=False))
    assert len(plaintext) == 273 and sealed.hex() == response["sealed"]
    documented_input = vector("provision-mac-input").encode("ascii")
    body = {k: v for k, v in response.items() if k != "mac"}
    assert signing_input(b"lockerfleet/v1/provision_response\n", body) == documented_input
    assert _h(k_mac, documented_input).hex() == response["mac"]
    assert json.loads(plaintext)["command_key"] == vector("hmac-key").strip()


def test_provisioning_vector_is_what_the_reference_implementation_seals_and_opens() -> None:
    inputs = key_values(vector("provision-inputs"))
    token, locker_id = inputs["token"], inputs["locker_id"]
    documented = decode_any(vector("provision-response").encode())
    assert isinstance(documented, ProvisionResponse)
    credentials = open_response(
        documented, token=token, locker_id=locker_id, request_id=inputs["request_id"]
    )
    assert isinstance(credentials, LockerCredentials)
    assert mac_input(documented) == vector("provision-mac-input").encode("ascii")
    again = seal_credentials(
        credentials, token=token, locker_id=locker_id, request_id=inputs["request_id"],
        nonce=bytes.fromhex(inputs["nonce"]), ts=documented.ts,
    )  # fmt: skip
    assert again == documented

    refused = decode_any(vector("provision-refusal").encode())
    assert isinstance(refused, ProvisionResponse)
    assert refused == refusal(
        ProvisionRefusal.INVALID_TOKEN, token=token, locker_id=locker_id,
        request_id=refused.request_id, nonce=bytes.fromhex(refused.nonce), ts=refused.ts,
    )  # fmt: skip
    assert (
        open_response(refused, token=token, locker_id=locker_id, request_id=refused.request_id)
        is ProvisionRefusal.INVALID_TOKEN
    )


def test_the_provisioning_topic_table_of_the_document_matches_protocol_topics() -> None:
    rows = re.findall(
        r"^\| `\{root\}/provision/\{locker_id\}/(\w+)` \| `(\w+)` \| locker (\w+) \| (\d) \| (\w+)",
        DOC,
        flags=re.MULTILINE,
    )
    layout = TopicLayout("lf/v1")
    assert rows == [
        ("request", "provision_request", "publishes", str(PROVISIONING.qos), "no"),
        ("response", "provision_response", "subscribes", str(PROVISIONING.qos), "no"),
    ]
    assert layout.provision_request("x").endswith("/request") and not PROVISIONING.retain


def _spaced(n: int) -> str:
    return f"{n:,}".replace(",", " ")


def _limit(what: str) -> str:
    (value,) = re.findall(rf"^\| {re.escape(what)} \| (.+?) \|$", DOC, flags=re.MULTILINE)
    return str(value)


def test_the_limits_table_states_the_limits_of_the_code() -> None:
    assert _limit("Payload (MQTT or serial)").startswith(f"{_spaced(MAX_PAYLOAD_BYTES)} bytes")
    assert _limit("Encoded serial frame").startswith(f"{_spaced(MAX_ENCODED_FRAME)} bytes")
    assert _limit("Nesting of arrays and objects") == f"{MAX_NESTING} levels"
    assert _limit("Anti-replay window") == f"{ReplayWindow.SIZE} counters"
    assert _limit("Command lifetime (`expires_at − issued_at`)") == (
        f"{MAX_COMMAND_LIFETIME_MS // 3_600_000} hour"
    )
    assert _limit("Clock tolerance for `issued_at` in the future") == (
        f"{CLOCK_TOLERANCE_MS // 60_000} minutes"
    )
    assert _limit("Code entries per sync page").startswith(f"{MAX_CODES_PER_PAGE} (add)")
    assert f"{_spaced(MAX_ENCODED_FRAME)} bytes" in DOC.split("## 12. Serial link")[1]
    assert f"{ReplayWindow.SIZE}-bit mask" in DOC


# ---------------------------------------------------------------------------------------------
# protocol.asyncapi itself
# ---------------------------------------------------------------------------------------------


def test_asyncapi_document_follows_the_topic_root() -> None:
    document = asyncapi_document("test-1/v1")
    addresses = [c["address"] for c in document["channels"].values()]
    assert all(a.startswith("test-1/v1/") for a in addresses)
    assert "test-1/v1/locker/{locker_id}/cmd" in addresses
    with pytest.raises(ValueError, match="root"):
        asyncapi_document("bad root")


def test_running_the_module_prints_the_document(capsys: pytest.CaptureFixture[str]) -> None:
    asyncapi_main()
    assert json.loads(capsys.readouterr().out) == ASYNCAPI


def test_the_document_is_written_from_the_lockers_point_of_view() -> None:
    actions = {
        op["channel"]["$ref"].rsplit("/", 1)[1]: op["action"]
        for op in ASYNCAPI["operations"].values()
    }
    assert actions == {
        "presence": "send",
        "birth": "send",
        "event": "send",
        "result": "send",
        "telemetry": "send",
        "cmd": "receive",
        "ack": "receive",
        "controllerPresence": "receive",
        "provisionRequest": "send",
        "provisionResponse": "receive",
    }
