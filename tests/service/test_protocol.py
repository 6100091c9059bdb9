"""The wire format on its own (pinutil/service/protocol.py): every value type round
trips, every rule of the format is enforced on both sides, and a request that breaks
none still has to name a verb we serve with exactly its fields (verbs.parse_request).
The same decoder meets real sockets in test_hostile_clients.py and the fuzzer in
tests/fuzz/targets.py (pinutild_request)."""
from __future__ import annotations

import pytest

from pinutil.service import protocol, verbs
from pinutil.service.protocol import ProtocolError


def test_round_trip_of_every_type():
    fields = {"verb": "pin-check", "user": "jürgen", "pin": b"\x00\xff12", "n": None,
              "yes": True, "no": False, "small": -(1 << 63), "large": (1 << 63) - 1}
    frame = protocol.encode(fields)
    assert protocol.decode_frame(frame) == fields
    assert [type(v) for v in protocol.decode_frame(frame).values()] == \
        [type(v) for v in fields.values()]


def test_the_biggest_frame_fits_and_one_more_byte_does_not():
    base = len(protocol.encode({"pin": b""})) - protocol.HEADER_SIZE
    room = protocol.MAX_BODY - base
    assert protocol.decode_frame(protocol.encode({"pin": b"x" * room}))["pin"] == b"x" * room
    with pytest.raises(ProtocolError):
        protocol.encode({"pin": b"x" * (room + 1)})


@pytest.mark.parametrize("fields", [
    {"Verb": "x"}, {"": "x"}, {"1st": "x"}, {"a-b": "x"}, {"n" * 33: "x"},
    {"big": 1 << 63}, {"float": 1.5}, {"list": [1]},
    {f"f{i}": None for i in range(protocol.MAX_FIELDS + 1)},
])
def test_encode_refuses_what_the_format_cannot_say(fields):
    with pytest.raises(ProtocolError):
        protocol.encode(fields)


def test_a_header_out_of_bounds_is_refused_before_any_body():
    for length in (0, 1, protocol.MAX_BODY + 1, 0xFFFFFFFF):
        with pytest.raises(ProtocolError):
            protocol.body_length(length.to_bytes(4, "big"))
    with pytest.raises(ProtocolError):
        protocol.body_length(b"\x00\x01")


def test_a_frame_whose_length_differs_from_its_header():
    frame = protocol.encode({"verb": "pin-status", "user": "root"})
    for bad in (frame[:-1], frame + b"\x00"):
        with pytest.raises(ProtocolError):
            protocol.decode_frame(bad)


@pytest.mark.parametrize(("request_fields", "ok"), [
    ({"verb": "pin-status", "user": "root"}, True),
    ({"verb": "pin-check", "user": "root", "pin": b"1234"}, True),
    ({"verb": "pin-check", "user": "root", "pin": "1234"}, False),
    ({"verb": "pin-check", "user": "root"}, False),
    ({"verb": "pin-status", "user": "root", "uid": 0}, False),
    ({"verb": "pin-status", "user": True}, False),
    ({"verb": "status", "user": "root"}, False),
    ({"user": "root"}, False),
    ({"verb": b"pin-status", "user": "root"}, False),
])
def test_requests_name_a_verb_with_exactly_its_fields(request_fields, ok):
    if ok:
        function, _ = verbs.parse_request(request_fields)
        assert function is verbs.VERBS[request_fields["verb"]][0]
    else:
        with pytest.raises(verbs.BadRequest):
            verbs.parse_request(request_fields)
