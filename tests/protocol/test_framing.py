"""Serial framing: COBS, CRC-32, and a decoder that survives any chunking, garbage and damage."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from protocol.codec import MAX_PAYLOAD_BYTES
from protocol.errors import LocalProtocolError
from protocol.framing import (
    CRC_BYTES,
    MAX_ENCODED_FRAME,
    FrameDecoder,
    FrameStats,
    cobs_decode,
    cobs_encode,
    crc32,
    encode_frame,
)
from tests.protocol.protocol_strategies import FAST, THOROUGH

payloads = st.binary(min_size=1, max_size=600)


def feed_in_chunks(decoder: FrameDecoder, data: bytes, cuts: list[int]) -> list[bytes]:
    out: list[bytes] = []
    start = 0
    for cut in sorted(set(cuts)):
        out += decoder.feed(data[start:cut])
        start = cut
    out += decoder.feed(data[start:])
    return out


# ---------------------------------------------------------------------------------------------
# CRC and COBS
# ---------------------------------------------------------------------------------------------


def test_crc32_is_iso_hdlc() -> None:
    assert crc32(b"123456789") == 0xCBF43926
    assert crc32(b"") == 0


@pytest.mark.parametrize(
    ("raw", "encoded"),
    [
        (b"", b"\x01"),
        (b"\x00", b"\x01\x01"),
        (b"\x11\x22\x00\x33", b"\x03\x11\x22\x02\x33"),
        (bytes(range(1, 255)), b"\xff" + bytes(range(1, 255)) + b"\x01"),
        (bytes(range(1, 256)), b"\xff" + bytes(range(1, 255)) + b"\x02\xff"),
        (bytes(range(0, 255)), b"\x01\xff" + bytes(range(1, 255)) + b"\x01"),
    ],
)
def test_cobs_known_encodings(raw: bytes, encoded: bytes) -> None:
    assert cobs_encode(raw) == encoded
    assert cobs_decode(encoded) == raw


def test_cobs_decodes_a_final_full_block_without_its_empty_successor() -> None:
    assert cobs_decode(b"\xff" + bytes(range(1, 255))) == bytes(range(1, 255))


@pytest.mark.parametrize("bad", [b"\x00", b"\x05\x01\x02", b"\x03\x01\x00", b"\x03"])
def test_cobs_rejects_invalid_input(bad: bytes) -> None:
    assert cobs_decode(bad) is None


@given(st.binary(max_size=2000))
@THOROUGH
def test_cobs_round_trips_and_removes_every_zero(data: bytes) -> None:
    encoded = cobs_encode(data)
    assert 0 not in encoded
    assert len(encoded) <= len(data) + len(data) // 254 + 1
    assert cobs_decode(encoded) == data


# ---------------------------------------------------------------------------------------------
# Frames
# ---------------------------------------------------------------------------------------------


def test_a_frame_is_delimited_and_carries_a_big_endian_crc() -> None:
    frame = encode_frame(b"hello")
    assert frame[0] == 0
    assert frame[-1] == 0
    assert 0 not in frame[1:-1]
    decoded = cobs_decode(frame[1:-1])
    assert decoded == b"hello" + crc32(b"hello").to_bytes(CRC_BYTES, "big")


def test_payload_size_limits() -> None:
    largest = bytes([0x41]) * MAX_PAYLOAD_BYTES
    frame = encode_frame(largest)
    assert len(frame) - 2 <= MAX_ENCODED_FRAME
    assert FrameDecoder().feed(frame) == [largest]
    with pytest.raises(LocalProtocolError):
        encode_frame(largest + b"A")
    with pytest.raises(LocalProtocolError):
        encode_frame(b"")


def test_the_longest_possible_frame_fits_the_decoders_limit() -> None:
    worst = bytes(range(1, 256)) * (MAX_PAYLOAD_BYTES // 255) + b"\x01" * (MAX_PAYLOAD_BYTES % 255)
    assert len(worst) == MAX_PAYLOAD_BYTES
    assert FrameDecoder().feed(encode_frame(worst)) == [worst]


@given(st.lists(payloads, min_size=1, max_size=5), st.data())
@THOROUGH
def test_any_chunking_yields_every_payload_in_order(
    frames: list[bytes], data: st.DataObject
) -> None:
    stream = b"".join(encode_frame(p) for p in frames)
    cuts = data.draw(st.lists(st.integers(min_value=0, max_value=len(stream)), max_size=20))
    decoder = FrameDecoder()
    assert feed_in_chunks(decoder, stream, cuts) == frames
    assert decoder.stats == FrameStats(frames=len(frames))


def test_byte_by_byte_feeding() -> None:
    frames = [b'{"v":1}', bytes(range(256)), b"\x00" * 10]
    stream = b"".join(encode_frame(p) for p in frames)
    decoder = FrameDecoder()
    out: list[bytes] = []
    for byte in stream:
        out += decoder.feed(bytes([byte]))
    assert out == frames
    assert decoder.stats.dropped == 0


@given(st.lists(payloads, min_size=1, max_size=4), st.lists(st.binary(max_size=80), max_size=5))
@THOROUGH
def test_garbage_between_frames_spoils_nothing(frames: list[bytes], garbage: list[bytes]) -> None:
    stream = bytearray()
    for i, payload in enumerate(frames):
        stream += garbage[i] if i < len(garbage) else b""
        stream += encode_frame(payload)
    stream += b"".join(garbage[len(frames) :])
    decoder = FrameDecoder()
    assert decoder.feed(bytes(stream)) == frames


@given(st.lists(payloads, min_size=2, max_size=5), st.data())
@THOROUGH
def test_a_corrupted_frame_is_dropped_and_every_other_frame_recovered(
    frames: list[bytes], data: st.DataObject
) -> None:
    encoded = [encode_frame(p) for p in frames]
    victim = data.draw(st.integers(min_value=0, max_value=len(frames) - 1))
    frame = bytearray(encoded[victim])
    position = data.draw(st.integers(min_value=1, max_value=len(frame) - 2))
    frame[position] ^= data.draw(st.integers(min_value=1, max_value=255))
    encoded[victim] = bytes(frame)
    stream = b"".join(encoded)
    cuts = data.draw(st.lists(st.integers(min_value=0, max_value=len(stream)), max_size=8))
    decoder = FrameDecoder()
    out = feed_in_chunks(decoder, stream, cuts)
    assert out == frames[:victim] + frames[victim + 1 :]
    assert decoder.stats.frames == len(frames) - 1
    assert decoder.stats.dropped >= 1
    assert decoder.stats.bytes_dropped >= 1


@given(st.lists(payloads, min_size=1, max_size=4), st.binary(min_size=1, max_size=64))
@FAST
def test_a_truncated_frame_followed_by_good_ones(frames: list[bytes], cut: bytes) -> None:
    half = encode_frame(b"x" * 40 + cut)[: 10 + len(cut) // 2]  # a reset mid-frame
    decoder = FrameDecoder()
    out = decoder.feed(half + b"".join(encode_frame(p) for p in frames))
    assert out == frames


# ---------------------------------------------------------------------------------------------
# Statistics
# ---------------------------------------------------------------------------------------------


def test_each_kind_of_damage_is_counted_exactly() -> None:
    good = encode_frame(b"ok")
    bad_crc = bytearray(encode_frame(b"payload"))
    bad_crc[3] ^= 0x01  # a payload byte: COBS stays valid, the CRC does not match
    bad_cobs = b"\x00\x09\x41\x42\x00"  # the code byte points past the end
    too_short = b"\x00" + cobs_encode(b"\x01\x02\x03\x04") + b"\x00"
    stream = good + bytes(bad_crc) + good + bad_cobs + too_short + b"\x00\x00\x00" + good

    decoder = FrameDecoder()
    assert decoder.feed(stream) == [b"ok", b"ok", b"ok"]
    stats = decoder.stats
    assert (stats.frames, stats.bad_crc, stats.bad_cobs, stats.too_short, stats.oversize) == (
        3,
        1,
        1,
        1,
        0,
    )
    assert stats.dropped == 3
    assert stats.bytes_dropped == (len(bad_crc) - 2) + 3 + (len(too_short) - 2)


def test_an_oversize_run_is_dropped_and_the_next_frame_recovered() -> None:
    run = b"\x41" * (MAX_ENCODED_FRAME + 100)
    good = encode_frame(b"after")
    for chunk in (len(run) + len(good) + 2, 1000, 7):
        decoder = FrameDecoder()
        stream = b"\x00" + run + good
        out: list[bytes] = []
        for i in range(0, len(stream), chunk):
            out += decoder.feed(stream[i : i + chunk])
        assert out == [b"after"]
        assert decoder.stats.oversize == 1
        assert decoder.stats.bytes_dropped == len(run)
        assert decoder.stats.frames == 1


def test_a_decoded_payload_over_the_limit_is_oversize() -> None:
    payload = b"\x00" * (MAX_PAYLOAD_BYTES + 10)  # zeros cost nothing in COBS
    body = cobs_encode(payload + crc32(payload).to_bytes(CRC_BYTES, "big"))
    assert len(body) <= MAX_ENCODED_FRAME
    decoder = FrameDecoder()
    assert decoder.feed(b"\x00" + body + b"\x00") == []
    assert decoder.stats.oversize == 1
    assert decoder.stats.bytes_dropped == len(body)


def test_a_smaller_limit_can_be_configured() -> None:
    decoder = FrameDecoder(max_frame=16)
    assert decoder.feed(encode_frame(b"x" * 40) + encode_frame(b"short")) == [b"short"]
    assert decoder.stats.oversize == 1


@given(st.binary(max_size=3000), st.lists(st.integers(min_value=0, max_value=3000), max_size=10))
@THOROUGH
def test_random_bytes_never_raise_and_every_byte_is_accounted_for(
    data: bytes, cuts: list[int]
) -> None:
    decoder = FrameDecoder()
    out = feed_in_chunks(decoder, data + b"\x00", cuts)  # the final zero flushes the last run
    stats = decoder.stats
    assert stats.frames == len(out)
    delivered = sum(len(cobs_encode(p + crc32(p).to_bytes(CRC_BYTES, "big"))) for p in out)
    delimiters = data.count(0) + 1
    assert stats.bytes_dropped + delivered + delimiters == len(data) + 1
