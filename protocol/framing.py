"""Serial framing for the bench link: COBS frames with a CRC-32, delimited by zero bytes.

::

    +------+-----------------------------------------------------------------+------+
    | 0x00 | COBS( payload: 1..16384 bytes of UTF-8 JSON || CRC-32, 4 bytes BE ) | 0x00 |
    +------+-----------------------------------------------------------------+------+

COBS (Consistent Overhead Byte Stuffing) removes every zero byte from the frame body, so the
``0x00`` bytes delimit frames and nothing else. A frame is sent with a zero byte before and
after it, so garbage on the line (noise, a half-sent frame from before a reset) can only ever
spoil itself, never the next frame. The CRC is CRC-32/ISO-HDLC (the one of zlib,
Ethernet and PNG: reflected polynomial 0xEDB88320, initial value and final XOR 0xFFFFFFFF;
``"123456789"`` gives ``0xCBF43926``), sent most significant byte first.

:class:`FrameDecoder` takes bytes in any chunking and returns whole payloads. It never raises on
what it receives: garbage, a bad COBS code, a CRC mismatch, a payload over 16 KiB or an
over-long run without a delimiter are skipped, counted in :class:`FrameStats`, and decoding
resumes at the next zero byte. Empty frames (two zeros in a row, as between two frames) are
ignored.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass

from protocol.codec import MAX_PAYLOAD_BYTES
from protocol.errors import LocalProtocolError

CRC_BYTES = 4
DELIMITER = 0
MAX_ENCODED_FRAME = MAX_PAYLOAD_BYTES + CRC_BYTES + (MAX_PAYLOAD_BYTES + CRC_BYTES) // 254 + 1
"""The longest run of non-zero bytes a valid frame can be."""


def crc32(data: bytes) -> int:
    """Return CRC-32/ISO-HDLC of ``data``."""
    return zlib.crc32(data) & 0xFFFFFFFF


def cobs_encode(data: bytes) -> bytes:
    """Return ``data`` COBS-encoded (no zero bytes in the result; no delimiter added)."""
    out = bytearray()
    block = bytearray()
    for byte in data:
        if byte == 0:
            out.append(len(block) + 1)
            out += block
            block.clear()
        else:
            block.append(byte)
            if len(block) == 254:
                out.append(255)
                out += block
                block.clear()
    out.append(len(block) + 1)
    out += block
    return bytes(out)


def cobs_decode(data: bytes) -> bytes | None:
    """Return the decoded bytes, or ``None`` if ``data`` is not valid COBS."""
    out = bytearray()
    i, n = 0, len(data)
    while i < n:
        code = data[i]
        if code == 0:
            return None
        end = i + code
        if end > n:
            return None
        chunk = data[i + 1 : end]
        if 0 in chunk:
            return None
        out += chunk
        i = end
        if code != 255 and i < n:
            out.append(0)
    return bytes(out)


def encode_frame(payload: bytes) -> bytes:
    """Return the on-wire frame for ``payload``, delimiter included.

    Raises :class:`LocalProtocolError` if ``payload`` is empty or larger than 16 KiB.
    """
    if not 0 < len(payload) <= MAX_PAYLOAD_BYTES:
        raise LocalProtocolError(
            f"frame payload must be 1..{MAX_PAYLOAD_BYTES} bytes", code="too_large"
        )
    return b"\x00" + cobs_encode(payload + crc32(payload).to_bytes(CRC_BYTES, "big")) + b"\x00"


@dataclass
class FrameStats:
    """What a decoder accepted and what it dropped, for the link-health report.

    ``frames`` counts payloads returned; each other counter counts runs (the bytes between two
    delimiters) dropped for that reason: ``bad_cobs``, ``bad_crc``, ``too_short`` (nothing
    but a CRC, or less), ``oversize`` (a run longer than the longest valid frame, or a payload
    over 16 KiB). ``bytes_dropped`` counts the bytes of all dropped runs, delimiters excluded.
    """

    frames: int = 0
    bad_cobs: int = 0
    bad_crc: int = 0
    too_short: int = 0
    oversize: int = 0
    bytes_dropped: int = 0

    @property
    def dropped(self) -> int:
        return self.bad_cobs + self.bad_crc + self.too_short + self.oversize


class FrameDecoder:
    """Incremental decoder: ``feed(chunk)`` returns the payloads completed by that chunk."""

    def __init__(self, max_frame: int = MAX_ENCODED_FRAME) -> None:
        self._buffer = bytearray()
        self._discarding = False
        self._max = max_frame
        self.stats = FrameStats()

    def feed(self, data: bytes) -> list[bytes]:
        """Add received bytes; return every whole, valid payload they complete, in order."""
        payloads: list[bytes] = []
        start = 0
        while start <= len(data):
            end = data.find(b"\x00", start)
            if end < 0:
                self._append(data[start:])
                break
            self._append(data[start:end])
            payload = self._finish_frame()
            if payload is not None:
                payloads.append(payload)
            start = end + 1
        return payloads

    def _append(self, chunk: bytes) -> None:
        if self._discarding:
            self.stats.bytes_dropped += len(chunk)
            return
        self._buffer += chunk
        if len(self._buffer) > self._max:
            self.stats.oversize += 1
            self.stats.bytes_dropped += len(self._buffer)
            self._buffer.clear()
            self._discarding = True

    def _finish_frame(self) -> bytes | None:
        if self._discarding:
            self._discarding = False
            return None
        raw = bytes(self._buffer)
        self._buffer.clear()
        if not raw:
            return None
        decoded = cobs_decode(raw)
        if decoded is None:
            self.stats.bad_cobs += 1
            self.stats.bytes_dropped += len(raw)
            return None
        if len(decoded) <= CRC_BYTES:
            self.stats.too_short += 1
            self.stats.bytes_dropped += len(raw)
            return None
        payload, received = decoded[:-CRC_BYTES], decoded[-CRC_BYTES:]
        if crc32(payload).to_bytes(CRC_BYTES, "big") != received:
            self.stats.bad_crc += 1
            self.stats.bytes_dropped += len(raw)
            return None
        if len(payload) > MAX_PAYLOAD_BYTES:
            self.stats.oversize += 1
            self.stats.bytes_dropped += len(raw)
            return None
        self.stats.frames += 1
        return payload
