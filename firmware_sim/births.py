"""Encoding births cheaply: each compartment state's JSON is written once, not once per birth.

A birth lists every compartment (12-60 of them, 1.5-6 KB of JSON), and the
:class:`~protocol.messages.CompartmentState` values in it are shared between lockers and
births (:mod:`firmware_sim.compartments` builds each distinct state once; a locker nothing has
happened to reports one tuple shared by its whole layout). Encoding those lists again for each
of ten thousand births was most of the CPU that connecting cost the simulator.

:func:`encode_birth` returns exactly the bytes of :func:`protocol.codec.encode` of the birth
(the birth is built and validated as before; only the encoding is shared): the birth is
encoded by the codec with an empty compartments list, and the list is put in its place, made
of each state's JSON as the codec's :func:`~protocol.codec.encode_object` writes it (kept per
state object) or, for a shared tuple, of the whole list's (kept per tuple object). Items of a
JSON array are joined by ``,`` in the codec's compact form, so the result is the codec's
output; the tests compare the two for every model.
"""

from __future__ import annotations

import dataclasses

from protocol.codec import MAX_PAYLOAD_BYTES, encode, encode_object
from protocol.fields import to_wire
from protocol.messages import Birth, CompartmentState

_KEY = b'"compartments":'
_EMPTY = _KEY + b"[]"
_MAX_KEPT = 32_768
"""Cached fragments kept at most (then forgotten, and remade as births need them)."""

_FIELDS = tuple(f.name for f in dataclasses.fields(Birth))

_states: dict[int, tuple[CompartmentState, bytes]] = {}
"""id of a state -> (the state, kept alive so that its id is not reused; its JSON)."""
_lists: dict[int, tuple[tuple[CompartmentState, ...], bytes]] = {}
"""id of a shared tuple of states -> (the tuple, kept alive; the list's JSON)."""


def share(compartments: tuple[CompartmentState, ...]) -> None:
    """Keep the JSON of ``compartments``, a tuple many births report as the same object."""
    if len(_lists) >= _MAX_KEPT:
        _lists.clear()
    _lists[id(compartments)] = (compartments, _list_json(compartments))


def _state_json(state: CompartmentState) -> bytes:
    entry = _states.get(id(state))
    if entry is not None and entry[0] is state:
        return entry[1]
    fragment = encode_object(to_wire(state))
    if len(_states) >= _MAX_KEPT:
        _states.clear()
    _states[id(state)] = (state, fragment)
    return fragment


def _list_json(compartments: tuple[CompartmentState, ...]) -> bytes:
    return b"[" + b",".join([_state_json(state) for state in compartments]) + b"]"


def _without_compartments(birth: Birth) -> Birth:
    """A copy of ``birth`` with no compartments, to be encoded and nothing else (not validated
    again: every other field is the validated birth's own value)."""
    light = object.__new__(Birth)
    for name in _FIELDS:
        object.__setattr__(light, name, () if name == "compartments" else getattr(birth, name))
    return light


def encode_birth(birth: Birth) -> bytes:
    """Return ``encode(birth)``, byte for byte, from the states' JSON made once.

    Raises :class:`~protocol.errors.LocalProtocolError` as :func:`~protocol.codec.encode` does.
    """
    compartments = birth.compartments
    if not compartments:
        return encode(birth)
    body = encode(_without_compartments(birth))
    at = body.find(_EMPTY)  # the key's only occurrence: a quote in a string is escaped
    if at < 0:
        return encode(birth)
    shared = _lists.get(id(compartments))
    if shared is not None and shared[0] is compartments:
        items = shared[1]
    else:
        items = _list_json(compartments)
    at += len(_KEY)
    payload = body[:at] + items + body[at + 2 :]
    if len(payload) > MAX_PAYLOAD_BYTES:
        return encode(birth)  # raises the codec's own error
    return payload
