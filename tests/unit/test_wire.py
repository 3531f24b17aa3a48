"""Wire types: every message and body of docs/protocol.md round-trips through JSON and MessagePack,
and malformed input is ``bad_message``, never a bare exception."""

from __future__ import annotations

import contextlib
import math
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from core import wire
from core.errors import BadMessage, ErrorBody
from tests.conftest import local_zone

_JSON_SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(-(2**53) + 1, 2**53 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20)
)
_JSON = st.recursive(
    _JSON_SCALARS,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3)
    ),
    max_leaves=8,
)


#: What clients may send in strings (docs/protocol.md section 2): no NUL, no surrogate.
_PLAIN_TEXT = st.text(st.characters(codec="utf-8", exclude_characters="\x00"), max_size=30)


def strategy_for(t: msgspec.inspect.Type, plain: bool = False) -> st.SearchStrategy[Any]:
    """A Hypothesis strategy for any type msgspec can describe (used for every wire type);
    ``plain``: the strings of a struct clients send, which must be plain text."""
    mi = msgspec.inspect
    if isinstance(t, mi.AnyType):
        return _JSON
    if isinstance(t, mi.NoneType):
        return st.none()
    if isinstance(t, mi.BoolType):
        return st.booleans()
    if isinstance(t, mi.IntType):
        return st.integers(-(2**53) + 1, 2**53 - 1)
    if isinstance(t, mi.Metadata):
        return strategy_for(t.type)
    if isinstance(t, mi.StrType):
        if t.pattern is not None:
            low, high = t.min_length or 0, t.max_length
            return st.from_regex(t.pattern, fullmatch=True).filter(
                lambda s: low <= len(s) and (high is None or len(s) <= high)
            )
        if plain:
            return _PLAIN_TEXT
        return st.text(max_size=min(30, t.max_length or 30))
    if isinstance(t, mi.LiteralType):
        return st.sampled_from(t.values)
    if isinstance(t, mi.ListType):
        return st.lists(strategy_for(t.item_type, plain), max_size=3)
    if isinstance(t, mi.DictType):
        keys, values = strategy_for(t.key_type, plain), strategy_for(t.value_type, plain)
        return st.dictionaries(keys, values, max_size=3)
    if isinstance(t, mi.UnionType):
        return st.one_of(*(strategy_for(u, plain) for u in t.types))
    if isinstance(t, mi.StructType):
        sent = issubclass(t.cls, wire._Sent)
        fields = {f.name: strategy_for(f.type, sent) for f in t.fields}
        return st.builds(t.cls, **fields)
    raise NotImplementedError(repr(t))  # a new kind of field: teach this test about it


def _all_wire_structs() -> list[type[msgspec.Struct]]:
    found = [
        obj
        for obj in vars(wire).values()
        if isinstance(obj, type)
        and issubclass(obj, msgspec.Struct)
        and obj.__module__ == wire.__name__
        and not obj.__name__.startswith("_")
    ]
    return [*found, ErrorBody]


ALL_TYPES = _all_wire_structs()


def test_every_message_of_the_protocol_is_typed() -> None:
    tags = {c.__struct_config__.tag for c in ALL_TYPES if c.__struct_config__.tag}
    assert {"hello", "push", "subscribe", "unsubscribe", "auth", "ping"} <= tags
    assert {
        "welcome", "push_result", "events", "caught_up", "notification",
        "auth_ok", "auth_expiring", "error", "pong",
    } <= tags  # fmt: skip


def _same(a: Any, b: Any) -> bool:
    """Equality that treats -0.0 == 0.0 and compares floats exactly otherwise."""
    if isinstance(a, float) and isinstance(b, float):
        return a == b or (math.isnan(a) and math.isnan(b))
    return bool(a == b)


@pytest.mark.parametrize("cls", ALL_TYPES, ids=lambda c: c.__name__)
@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_round_trip_json_and_msgpack(cls: type[msgspec.Struct], data: st.DataObject) -> None:
    value = data.draw(strategy_for(msgspec.inspect.type_info(cls)))
    for encode, decode in (
        (msgspec.json.encode, msgspec.json.decode),
        (msgspec.msgpack.encode, msgspec.msgpack.decode),
    ):
        back = decode(encode(value), type=cls, strict=True)
        assert _same(back, value)


@given(data=st.data())
@settings(max_examples=200, deadline=None)
def test_client_union_round_trips(data: st.DataObject) -> None:
    msg = data.draw(strategy_for(msgspec.inspect.type_info(wire.ClientMessage)))
    assert wire.decode_client(wire.encode(msg)) == msg
    assert wire.decode_client(wire.encode(msg, msgpack=True), msgpack=True) == msg


@given(data=st.data())
@settings(max_examples=200, deadline=None)
def test_server_union_round_trips(data: st.DataObject) -> None:
    msg = data.draw(strategy_for(msgspec.inspect.type_info(wire.ServerMessage)))
    assert _same(wire.decode_server(wire.encode(msg)), msg)
    assert _same(wire.decode_server(wire.encode(msg, msgpack=True), msgpack=True), msg)


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"not json",
        b"[]",
        b"{}",
        b'{"type": "nope"}',
        b'{"type": "hello"}',
        b'{"type": "hello", "token": 5}',
        b'{"type": "push", "batch_id": "b"}',
        b'{"type": "subscribe", "space_id": "s", "after": "x"}',
        b'{"type": "ping", "nonce": [1]}',
        b"\xff\xfe\x00",
    ],
)
def test_malformed_client_input_is_bad_message(raw: bytes) -> None:
    with pytest.raises(BadMessage):
        wire.decode_client(raw)
    with pytest.raises(BadMessage):
        wire.decode_client(raw, msgpack=True)


CLIENT_MESSAGES_WITH_TEXT: list[dict[str, Any]] = [
    {"type": "hello", "token": "{}"},
    {"type": "hello", "token": "t", "subscriptions": [{"space_id": "{}"}]},
    {"type": "push", "batch_id": "{}", "ops": []},
    {"type": "subscribe", "space_id": "{}"},
    {"type": "unsubscribe", "space_id": "{}"},
    {"type": "auth", "token": "{}"},
    {"type": "ping", "nonce": "{}"},
]


@pytest.mark.parametrize("message", CLIENT_MESSAGES_WITH_TEXT, ids=lambda m: m["type"])
@pytest.mark.parametrize("text", ["a\x00b", "\x00"])
def test_nul_in_any_string_of_a_client_message_is_bad_message(
    message: dict[str, Any], text: str
) -> None:
    filled = msgspec.json.decode(msgspec.json.encode(message).replace(b"{}", _escaped(text)))
    with pytest.raises(BadMessage, match="must not contain NUL or an unpaired surrogate"):
        wire.decode_client(msgspec.json.encode(filled))
    with pytest.raises(BadMessage, match="must not contain NUL or an unpaired surrogate"):
        wire.decode_client(msgspec.msgpack.encode(filled), msgpack=True)


def _escaped(text: str) -> bytes:
    return msgspec.json.encode(text)[1:-1]


@pytest.mark.parametrize("message", CLIENT_MESSAGES_WITH_TEXT, ids=lambda m: m["type"])
def test_a_lone_surrogate_escape_outside_ops_is_bad_message(message: dict[str, Any]) -> None:
    raw = msgspec.json.encode(message).replace(b"{}", b"a\\ud800b")
    with pytest.raises(BadMessage, match="must not contain NUL or an unpaired surrogate"):
        wire.decode_client(raw)


def test_nul_or_a_lone_surrogate_in_ops_is_left_to_each_op() -> None:
    # msgspec refuses the unpaired escape; lenient_json turns it into a NUL, which every
    # op check refuses (invalid_op), while paired escapes stay one character.
    raw = b'{"type":"push","batch_id":"b","ops":[{"v":"a\\u0000","w":"\\udc00x"},"\\ud83d\\ude00"]}'
    message = wire.decode_client(raw)
    assert isinstance(message, wire.Push)
    assert message.ops == [{"v": "a\x00", "w": "\x00x"}, "\U0001f600"]
    as_text = wire.decode_client(raw.decode())
    assert isinstance(as_text, wire.Push)
    assert as_text.ops == message.ops
    keys = wire.decode_client(b'{"type":"push","batch_id":"b","ops":[{"\\ud800":1}]}')
    assert isinstance(keys, wire.Push)
    assert keys.ops == [{"\x00": 1}]


@pytest.mark.parametrize(
    "raw",
    [
        b'{"type":"push","batch_id":"b","ops":["\\ud800"],"x":NaN}',
        b'{"type":"push","batch_id":"b","ops":["\\ud800",1e400]}',
        b'{"type":"push","batch_id":"b","ops":["\\ud800"]',
        b'{"type":"push","batch_id":"b","ops":[' + b"[" * 3000 + b'"\\ud800"' + b"]" * 3000 + b"]}",
        b'{"type":"push","batch_id":"b","ops":[' + b"[" * 3000 + b"1" + b"]" * 3000 + b"]}",
        b'{"type":"push","batch_id":"b","ops":"\\ud800"}',
        b'{"type":"nope","x":"\\ud800"}',
    ],
)
def test_lenient_decoding_refuses_what_msgspec_would(raw: bytes) -> None:
    with pytest.raises(BadMessage):
        wire.decode_client(raw)


def test_lenient_json_is_only_for_surrogate_escapes() -> None:
    with pytest.raises(BadMessage):
        wire.lenient_json(b'{"a": NaN}')
    with pytest.raises(BadMessage):  # ill-formed UTF-8 is never repaired
        wire.lenient_json(b'["\\ud800", "\xff"]')
    assert wire.lenient_json('["\\ud800", "\\\\ud800"]') == ["\x00", "\\ud800"]


def test_lone_surrogates_in_msgpack_are_bad_message() -> None:
    # MessagePack text is UTF-8; a surrogate's bytes are not: no lenient way there.
    raw = msgspec.msgpack.encode({"type": "push", "batch_id": "b", "ops": ["zzz"]})
    raw = raw.replace(b"\xa3zzz", b"\xa3\xed\xa0\x80")
    with pytest.raises(BadMessage):
        wire.decode_client(raw, msgpack=True)


def test_the_published_lamport_headroom_is_two_to_the_twenty() -> None:
    assert wire.DEFAULT_LIMITS.lamport_headroom == 2**20


def test_text_frame_on_msgpack_is_bad_message() -> None:
    with pytest.raises(BadMessage, match="binary frames"):
        wire.decode_client('{"type":"ping"}', msgpack=True)


@given(st.binary(max_size=64))
@settings(max_examples=300, deadline=None)
def test_garbage_never_escapes_as_a_bare_exception(raw: bytes) -> None:
    for as_msgpack in (False, True):
        with contextlib.suppress(BadMessage):
            wire.decode_client(raw, msgpack=as_msgpack)


def test_event_omits_absent_optional_fields() -> None:
    event = wire.Event(
        seq=1, op_id="o", space_id="s", entity_type="_member", entity_id="u", kind="member_added",
        value={"user_id": "u"}, lamport=0, device_id=wire.SERVER_DEVICE_ID, user_id=None,
        recorded_at="2026-11-23T10:00:00Z", schema_version=1,
    )  # fmt: skip
    body = msgspec.json.decode(wire.encode(event))
    assert "field" not in body
    assert "pred" not in body
    assert body["user_id"] is None


_OPS: list[Any] = [{"op_id": "o", "lamport": 1}]
_RESULTS = [wire.OpResult(op_id="o", status="applied", seq=3)]


def test_a_push_is_its_http_body_plus_the_tag_byte_for_byte() -> None:
    """The WebSocket ``push`` and ``push_result`` frames are the bodies of
    ``POST /v1/sync/push`` with ``type`` first (docs/protocol.md): JSON and MessagePack."""
    result = {"type": "push_result"}
    frames = [
        (wire.Push(batch_id="b", ops=_OPS), {"type": "push"}),
        (wire.PushResult(batch_id="b", server_lamport=5, results=_RESULTS), result),
        (wire.PushResult(batch_id=None, server_lamport=0, results=[]), result),
    ]
    bodies = [
        wire.PushRequest(batch_id="b", ops=_OPS),
        wire.PushResponse(batch_id="b", server_lamport=5, results=_RESULTS),
        wire.PushResponse(batch_id=None, server_lamport=0, results=[]),
    ]
    for (frame, tag), body in zip(frames, bodies, strict=True):
        as_dict = msgspec.to_builtins(body)
        assert wire.encode(frame) == msgspec.json.encode({**tag, **as_dict})
        assert wire.encode(frame, msgpack=True) == msgspec.msgpack.encode({**tag, **as_dict})
    assert wire.encode(frames[1][0]) == (
        b'{"type":"push_result","batch_id":"b","server_lamport":5,'
        b'"results":[{"op_id":"o","status":"applied","seq":3}]}'
    )
    assert wire.encode(bodies[0]) == b'{"batch_id":"b","ops":[{"op_id":"o","lamport":1}]}'


def test_batch_id_is_bounded_over_http_only() -> None:
    """docs/protocol.md: ``batch_id`` is a string, at most 200 characters over HTTP; the
    WebSocket frame takes any length (NUL refused both ways, section 2)."""
    long = "b" * (wire.BATCH_ID_MAX + 1)
    frame = wire.decode_client(msgspec.json.encode({"type": "push", "batch_id": long, "ops": []}))
    assert isinstance(frame, wire.Push)
    assert frame.batch_id == long
    body = msgspec.json.encode({"batch_id": long, "ops": []})
    with pytest.raises(msgspec.ValidationError, match="length <= 200"):
        msgspec.json.decode(body, type=wire.PushRequest)
    at_most = msgspec.json.encode({"batch_id": long[1:], "ops": []})
    assert msgspec.json.decode(at_most, type=wire.PushRequest).batch_id == long[1:]


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (b'{"type": ', "not a valid client message: Input data was truncated"),
        (b'{"type": "hello"}', "not a valid client message: Object missing required field `token`"),
        # msgspec refused it, and it holds no surrogate escape: msgspec's reason is given
        (
            b'{"type":"ping","nonce":1e999}',
            "not a valid client message: Number out of range - at `$.nonce`",
        ),
    ],
)
def test_a_refused_client_message_says_why(raw: bytes, message: str) -> None:
    with pytest.raises(BadMessage) as refused:
        wire.decode_client(raw)
    assert refused.value.message == message


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (b'["\\ud800", 1e999]', "not valid JSON: number out of range"),
        (b'["\\ud800", NaN]', "not valid JSON: NaN is not JSON"),
        (b'["\\ud800", -Infinity]', "not valid JSON: -Infinity is not JSON"),
        (b'{"a": 1}', "not valid JSON: no surrogate escape"),
    ],
)
def test_lenient_json_says_why_it_refuses(raw: bytes, message: str) -> None:
    """What an HTTP body holding a lone surrogate escape is answered (gateway/params.py)."""
    with pytest.raises(BadMessage) as refused:
        wire.lenient_json(raw)
    assert refused.value.message == message


def test_a_refused_server_message_says_why() -> None:
    with pytest.raises(BadMessage) as text_frame:
        wire.decode_server('{"type":"pong"}', msgpack=True)
    assert text_frame.value.message == "binary frames expected for concord.v1.msgpack"
    with pytest.raises(BadMessage) as client_text_frame:
        wire.decode_client('{"type":"ping"}', msgpack=True)
    assert client_text_frame.value.message == text_frame.value.message
    with pytest.raises(BadMessage) as unknown:
        wire.decode_server(b'{"type": "nope"}')
    assert unknown.value.message == "not a valid server message: Invalid value 'nope' - at `$.type`"


def test_a_refused_msgpack_client_message_says_why() -> None:
    with pytest.raises(BadMessage) as refused:
        wire.decode_client(b"\xc1", msgpack=True)
    malformed = "MessagePack data is malformed: invalid opcode '\\xc1' (byte 0)"
    assert refused.value.message == f"not a valid client message: {malformed}"


def test_times_are_written_in_utc_with_microseconds() -> None:
    """Whatever the process's local time zone (here UTC+9)."""
    with local_zone("Asia/Tokyo"):
        plus_two = timezone(timedelta(hours=2))
        at = datetime(2026, 1, 2, 3, 4, 5, 6, tzinfo=plus_two)
        assert wire.format_time(at) == "2026-01-02T01:04:05.000006Z"
        midnight = datetime(2026, 12, 7, 0, 0, tzinfo=UTC)
        assert wire.format_time(midnight) == "2026-12-07T00:00:00.000000Z"
