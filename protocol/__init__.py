"""lockerfleet protocol v1: the contract between lockers and the controller.

Pure and sans-IO: bytes in, typed messages out, and back; nothing here opens a socket, reads a
clock or touches a file. The normative description is ``docs/protocol.md``; the machine-readable
one is ``docs/asyncapi.json``, generated from these modules by ``python -m protocol.asyncapi``.

Modules: :mod:`~protocol.messages` (every message, defined once), :mod:`~protocol.codec`
(JSON), :mod:`~protocol.topics` (MQTT layout, QoS, retain), :mod:`~protocol.auth` (signatures,
freshness, anti-replay), :mod:`~protocol.canonical` (what is signed), :mod:`~protocol.codes`
(pickup-code hashes and the versioned cache), :mod:`~protocol.framing` (serial frames),
:mod:`~protocol.sequence` (duplicates, gaps, ack ranges), :mod:`~protocol.errors`.
"""

from protocol.messages import PROTOCOL_VERSION

__all__ = ["PROTOCOL_VERSION"]
