"""Wire types of docs/protocol.md (v1): operations, events, WebSocket messages, HTTP bodies.

Every type is a frozen msgspec Struct; WebSocket messages are tagged by ``type`` and
grouped into two unions. Encoders and decoders are built once here. Evolve a Struct
only by adding fields with defaults.

Push ``ops`` are kept as raw JSON values (``list[Any]``): docs/protocol.md section 2 gives each
operation its own result, so a malformed op must become an ``invalid_op`` result for
that op, never a ``bad_message`` for the whole push. ``core.ops.parse_op`` does that.

Every other string a client sends (WebSocket messages, HTTP bodies) is checked as it is
decoded: a NUL or an unpaired surrogate makes the whole message ``bad_message``
(``_Sent``), before any handler, let alone SQL, sees it.

msgspec refuses JSON holding an unpaired surrogate escape (``"\ud800"``) outright, and
MessagePack holding a surrogate (ill-formed UTF-8) too. The latter is not MessagePack
text at all; the former is JSON by its grammar, so ``lenient_json`` decodes it again
with each unpaired surrogate turned into a NUL: an op holding one is then ``invalid_op``
like an op holding a NUL, and any other string ``bad_message``. No Python string with a
surrogate is ever made from client bytes.
"""

from __future__ import annotations

import json
import math
import re
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

import msgspec

from core.errors import BadMessage, ErrorBody
from crdt import DEFAULT_LAMPORT_HEADROOM, plain_text
from crdt.validate import UUID_PATTERN
from crdt.views import FieldView, Head

Role = Literal["owner", "editor", "reader"]
OpStatus = Literal["applied", "duplicate", "rejected"]

SERVER_DEVICE_ID = "00000000-0000-0000-0000-000000000000"


def format_time(at: datetime) -> str:
    """A time as the server writes it on the wire (an event's ``recorded_at``, a device's
    ``created_at``, an invitation's ``expires_at``): RFC 3339 in UTC with a ``Z`` suffix
    and microseconds (PostgreSQL's precision)."""
    return at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class _Frozen(msgspec.Struct, frozen=True, kw_only=True):
    """Base for wire values."""


class _Sent(_Frozen, frozen=True, kw_only=True):
    """Base for what clients send, but push ``ops``: every string field must be plain
    text (docs/protocol.md section 2: no NUL, no unpaired surrogate). msgspec turns the ValueError
    into a ValidationError, which is ``bad_message`` over HTTP and the WebSocket alike."""

    def __post_init__(self) -> None:
        for name in self.__struct_fields__:
            value = getattr(self, name)
            if type(value) is str and not plain_text(value):
                raise ValueError(f"{name}: must not contain NUL or an unpaired surrogate")


# --------------------------------------------------------------------------- ops, events


class Operation(_Frozen, frozen=True, kw_only=True, omit_defaults=True):
    """One intent from one device, as sent (docs/protocol.md section 2)."""

    op_id: str
    space_id: str
    entity_type: str
    entity_id: str
    kind: str
    field: str | None = None
    value: Any = None
    pred: list[str] = msgspec.field(default_factory=list)
    lamport: int
    client_time: str | None = None
    device_id: str | None = None


class Event(_Frozen, frozen=True, kw_only=True, omit_defaults=True):
    """An operation as stored: plus ``seq``, ``user_id``, ``device_id``, ``recorded_at``,
    ``schema_version``. Absent ``field``/``pred``/``value`` mean null/[]/null."""

    seq: int
    op_id: str
    space_id: str
    entity_type: str
    entity_id: str
    kind: str
    field: str | None = None
    value: Any = None
    pred: list[str] = msgspec.field(default_factory=list)
    lamport: int
    client_time: str | None = None
    device_id: str
    user_id: str | None
    recorded_at: str
    schema_version: int


class OpResult(_Frozen, frozen=True, kw_only=True, omit_defaults=True):
    """The result of one pushed operation, in the order sent (docs/protocol.md section 4)."""

    op_id: str | None
    status: OpStatus
    seq: int | None = None
    error: ErrorBody | None = None


class Limits(_Frozen, frozen=True, kw_only=True):
    """Published limits (``welcome.limits``)."""

    max_message_bytes: int = 1_048_576
    max_ops_per_push: int = 1000
    max_value_bytes: int = 65_536
    max_pred: int = 64
    max_subscriptions: int = 100
    max_pull_limit: int = 1000
    lamport_headroom: int = DEFAULT_LAMPORT_HEADROOM


DEFAULT_LIMITS = Limits()


class Subscription(_Sent, frozen=True, kw_only=True):
    space_id: str
    after: int = 0


class Notification(_Frozen, frozen=True, kw_only=True):
    id: str
    space_id: str
    entity_type: str
    entity_id: str
    kind: str
    fire_at: str
    fired_at: str


# --------------------------------------------------------------------------- push, both ways

# One definition per push body: ``POST /v1/sync/push`` takes ``PushRequest`` and answers
# ``PushResponse``; the WebSocket frames ``Push`` and ``PushResult`` derive from them and
# add only their ``type`` tag (and, for ``Push``, its looser ``batch_id``).

#: Any text but NUL (every string a client sends; unpaired surrogates cannot be JSON).
NO_NUL_PATTERN = r"^[^\x00]*$"
BATCH_ID_MAX = 200
BatchId = Annotated[str, msgspec.Meta(max_length=BATCH_ID_MAX, pattern=NO_NUL_PATTERN)]


class PushRequest(_Sent, frozen=True, kw_only=True):
    """The body of ``POST /v1/sync/push``."""

    batch_id: BatchId
    #: More than ``max_ops_per_push`` is 413 ``too_large``: stated in the document only
    #: (litestar reads ``extra`` as extra schema), checked by the route, not by msgspec.
    ops: Annotated[
        list[Any],
        msgspec.Meta(extra_json_schema={"extra": {"maxItems": DEFAULT_LIMITS.max_ops_per_push}}),
    ]


class PushResponse(_Frozen, frozen=True, kw_only=True):
    """The answer to a push, after COMMIT: one result per op, in the order sent."""

    batch_id: str | None
    server_lamport: int
    results: list[OpResult]


# --------------------------------------------------------------------------- client -> server


class Hello(_Sent, frozen=True, kw_only=True, tag_field="type", tag="hello"):
    token: str
    lamport: int = 0
    subscriptions: list[Subscription] = msgspec.field(default_factory=list)


class Push(PushRequest, frozen=True, kw_only=True, tag_field="type", tag="push"):
    """``PushRequest`` as a WebSocket frame: ``batch_id`` has no length bound here (the
    200 characters are HTTP's, docs/protocol.md); NUL is refused both ways (``_Sent``)."""

    batch_id: str


class Subscribe(_Sent, frozen=True, kw_only=True, tag_field="type", tag="subscribe"):
    space_id: str
    after: int = 0


class Unsubscribe(_Sent, frozen=True, kw_only=True, tag_field="type", tag="unsubscribe"):
    space_id: str


class Auth(_Sent, frozen=True, kw_only=True, tag_field="type", tag="auth"):
    token: str


class Ping(_Sent, frozen=True, kw_only=True, tag_field="type", tag="ping"):
    nonce: str | int | None = None


ClientMessage = Hello | Push | Subscribe | Unsubscribe | Auth | Ping


# --------------------------------------------------------------------------- server -> client


class Welcome(_Frozen, frozen=True, kw_only=True, tag_field="type", tag="welcome"):
    user_id: str
    device_id: str
    server_lamport: int
    token_expires_at: str
    limits: Limits


class PushResult(PushResponse, frozen=True, kw_only=True, tag_field="type", tag="push_result"):
    """``PushResponse`` as a WebSocket frame."""


class Events(_Frozen, frozen=True, kw_only=True, tag_field="type", tag="events"):
    space_id: str
    events: list[Event]
    head: int


class CaughtUp(_Frozen, frozen=True, kw_only=True, tag_field="type", tag="caught_up"):
    space_id: str
    seq: int


class NotificationMessage(_Frozen, frozen=True, kw_only=True, tag_field="type", tag="notification"):
    notification: Notification


class AuthOk(_Frozen, frozen=True, kw_only=True, tag_field="type", tag="auth_ok"):
    token_expires_at: str


class AuthExpiring(_Frozen, frozen=True, kw_only=True, tag_field="type", tag="auth_expiring"):
    expires_at: str


class Error(_Frozen, frozen=True, kw_only=True, tag_field="type", tag="error"):
    error: ErrorBody
    ref: str | None = None


class Pong(_Frozen, frozen=True, kw_only=True, tag_field="type", tag="pong"):
    nonce: str | int | None = None


ServerMessage = (
    Welcome
    | PushResult
    | Events
    | CaughtUp
    | NotificationMessage
    | AuthOk
    | AuthExpiring
    | Error
    | Pong
)


# --------------------------------------------------------------------------- HTTP bodies


# What the HTTP routes accept, stated as JSON Schema (the OpenAPI document) and enforced
# by msgspec with the same patterns as the bodies are decoded: a value the document
# admits is never refused as malformed, a value it refuses is 400 ``bad_message``.
# Patterns use no ``\s``, ``\d`` or ``\w`` (engines read them differently) and read the
# same under Python's ``re.search`` and ECMA-262: where ``$`` could end before a final
# newline, whitespace that takes the newline comes first. (The push bodies are above,
# beside the WebSocket frames made from them.)

#: What is trimmed from names and emails: ASCII whitespace (``TRIMMED`` as characters).
TRIMMED = " \t\n\x0b\x0c\r"
_WS = r" \t\n\x0b\x0c\r"
_CONTROL = r"\x00-\x1f\x7f-\x9f"
#: A display name: 1 to 200 characters once trimmed, no control character.
NAME_PATTERN = rf"^[{_WS}]*[^{_WS}{_CONTROL}](?:[^{_CONTROL}]{{0,198}}[^{_WS}{_CONTROL}])?[{_WS}]*$"
#: A device name: a display name, or only whitespace (then the server names it).
DEVICE_NAME_PATTERN = rf"^[{_WS}]*$|{NAME_PATTERN}"
EMAIL_MAX = 254
#: An email as sent: something@domain.tld, whitespace around it trimmed.
EMAIL_PATTERN = rf"^[{_WS}]*[^@{_WS}\x00]+@[^@{_WS}\x00]+\.[^@{_WS}.\x00]+[{_WS}]*$"
PASSWORD_MIN = 8
PASSWORD_MAX = 1024

PlainText = Annotated[str, msgspec.Meta(pattern=NO_NUL_PATTERN)]
Email = Annotated[
    str,
    msgspec.Meta(
        max_length=EMAIL_MAX,
        pattern=EMAIL_PATTERN,
        description="trimmed and lowercased before use",
        examples=["ada@example.com"],
    ),
]
#: At login any email may be tried (an unknown one is 401): only the bounds of storage.
LoginEmail = Annotated[str, msgspec.Meta(max_length=EMAIL_MAX * 4, pattern=NO_NUL_PATTERN)]
NewPassword = Annotated[
    str, msgspec.Meta(min_length=PASSWORD_MIN, max_length=PASSWORD_MAX, pattern=NO_NUL_PATTERN)
]
Password = Annotated[str, msgspec.Meta(max_length=PASSWORD_MAX, pattern=NO_NUL_PATTERN)]
DisplayName = Annotated[
    str,
    msgspec.Meta(
        pattern=NAME_PATTERN, description="trimmed; 1 to 200 characters, no control character"
    ),
]
DeviceName = Annotated[
    str,
    msgspec.Meta(
        pattern=DEVICE_NAME_PATTERN,
        description='trimmed; 1 to 200 characters, no control character; blank: "Unnamed device"',
    ),
]


class RegisterRequest(_Sent, frozen=True, kw_only=True):
    email: Email
    password: NewPassword
    device_name: DeviceName


class LoginRequest(_Sent, frozen=True, kw_only=True):
    email: LoginEmail
    password: Password
    device_name: DeviceName
    #: A device of this account to sign in again; anything else signs in a new device.
    device_id: PlainText | None = None


class RefreshRequest(_Sent, frozen=True, kw_only=True):
    refresh_token: PlainText


class AuthResponse(_Frozen, frozen=True, kw_only=True):
    user_id: str
    device_id: str
    access_token: str
    refresh_token: str
    access_expires_at: str
    personal_space_id: str


class DeviceInfo(_Frozen, frozen=True, kw_only=True):
    device_id: str
    name: str
    created_at: str
    last_seen_at: str | None
    current: bool
    revoked: bool


class DeviceList(_Frozen, frozen=True, kw_only=True):
    devices: list[DeviceInfo]
    next: str | None = None


class CreateSpaceRequest(_Sent, frozen=True, kw_only=True):
    name: DisplayName


class SpaceCreated(_Frozen, frozen=True, kw_only=True):
    space_id: str


class SpaceInfo(_Frozen, frozen=True, kw_only=True):
    space_id: str
    name: str
    role: Role
    personal: bool = False


class SpaceList(_Frozen, frozen=True, kw_only=True):
    spaces: list[SpaceInfo]
    next: str | None = None


class AddMemberRequest(_Sent, frozen=True, kw_only=True):
    email: Email
    role: Role


#: An invitation code: ``secrets.token_urlsafe(32)``, 43 characters of base64url.
INVITATION_CODE_PATTERN = "^[A-Za-z0-9_-]{43}$"
InvitationCode = Annotated[
    str,
    msgspec.Meta(
        min_length=43,
        max_length=43,
        pattern=INVITATION_CODE_PATTERN,
        description="the code an owner got when inviting, handed over out of band",
        examples=["kq0cJm8Z5o2v4b3QwN6eHf1TjLr9sUxYaPdBgIiK7Mc"],
    ),
]
#: A UUID in the canonical form the server answers with.
CanonicalUuid = Annotated[str, msgspec.Meta(pattern=f"^{UUID_PATTERN}$")]
#: A time as the server writes it: RFC 3339, UTC, ``Z``.
UtcTime = Annotated[
    str,
    msgspec.Meta(
        pattern=r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,6})?Z$",
        description="RFC 3339 in UTC with `Z`",
    ),
]


class MemberRole(_Frozen, frozen=True, kw_only=True):
    """``POST /v1/spaces/{space_id}/members`` for an email that is already a member: its
    role now (changed at once, ``member_role_changed``; unchanged when it was that)."""

    space_id: CanonicalUuid
    user_id: CanonicalUuid
    role: Role


class InvitationCreated(_Frozen, frozen=True, kw_only=True):
    """``202`` of ``POST /v1/spaces/{space_id}/members``: the code is shown only here."""

    invitation_id: CanonicalUuid
    code: InvitationCode
    expires_at: UtcTime


class AcceptInvitationRequest(_Sent, frozen=True, kw_only=True):
    """``POST /v1/invitations/accept``. A string that cannot be a code is 400
    ``bad_message``; any code that cannot be used is 404 ``not_found``."""

    code: InvitationCode


class InvitationAccepted(_Frozen, frozen=True, kw_only=True):
    """The space joined and the caller's role in it now."""

    space_id: CanonicalUuid
    role: Role


class InvitationInfo(_Frozen, frozen=True, kw_only=True):
    """A pending invitation as owners see it (never its code)."""

    invitation_id: CanonicalUuid
    email: Annotated[str, msgspec.Meta(max_length=254, description="trimmed, lowercased")]
    role: Role
    invited_by: CanonicalUuid
    created_at: UtcTime
    expires_at: UtcTime


class InvitationList(_Frozen, frozen=True, kw_only=True):
    invitations: list[InvitationInfo]
    next: str | None = None


class PullResponse(_Frozen, frozen=True, kw_only=True):
    events: list[Event]
    head: int


#: A field of an entity read, and one head of it: the merge's own view types
#: (``crdt.views``), sent as they are.
FieldState = FieldView
HeadView = Head


class EntityResponse(_Frozen, frozen=True, kw_only=True):
    entity_type: str
    entity_id: str
    seq: int
    deleted: bool
    edited_while_deleted: bool
    fields: dict[str, FieldState]


class EntityList(_Frozen, frozen=True, kw_only=True):
    entities: list[EntityResponse]
    seq: int
    next: str | None = None


class HistoryResponse(_Frozen, frozen=True, kw_only=True):
    events: list[Event]
    next: str | None = None


ReminderStatus = Literal["scheduled", "fired", "cancelled", "retrying", "dead", "skipped"]


class ReminderInfo(_Frozen, frozen=True, kw_only=True):
    reminder_id: str
    entity_type: str
    entity_id: str
    fire_at: str
    status: ReminderStatus
    attempts: int
    lateness_ms: int | None
    last_error: str | None


class ReminderList(_Frozen, frozen=True, kw_only=True):
    reminders: list[ReminderInfo]
    next: str | None = None


class ErrorResponse(_Frozen, frozen=True, kw_only=True):
    error: ErrorBody


class DependencyState(_Frozen, frozen=True, kw_only=True, omit_defaults=True):
    status: Literal["ok", "down", "degraded"]
    detail: str | None = None


class Readiness(_Frozen, frozen=True, kw_only=True):
    status: Literal["ok", "degraded", "down"]
    dependencies: dict[str, DependencyState]


# --------------------------------------------------------------------------- codecs (built once)

JSON_ENCODER = msgspec.json.Encoder()
MSGPACK_ENCODER = msgspec.msgpack.Encoder()
_CLIENT_JSON: msgspec.json.Decoder[ClientMessage] = msgspec.json.Decoder(ClientMessage)
_CLIENT_MSGPACK: msgspec.msgpack.Decoder[ClientMessage] = msgspec.msgpack.Decoder(ClientMessage)
_SERVER_JSON: msgspec.json.Decoder[ServerMessage] = msgspec.json.Decoder(ServerMessage)
_SERVER_MSGPACK: msgspec.msgpack.Decoder[ServerMessage] = msgspec.msgpack.Decoder(ServerMessage)


_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")
_SURROGATES = re.compile("[\ud800-\udfff]")


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError("number out of range")
    return value


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _nul_for_surrogates(value: Any) -> Any:
    """``value`` with each unpaired surrogate of its strings (keys too) replaced by NUL."""
    if isinstance(value, str):
        return _SURROGATES.sub("\x00", value)
    if isinstance(value, list):
        return [_nul_for_surrogates(v) for v in value]
    if isinstance(value, dict):
        return {_nul_for_surrogates(k): _nul_for_surrogates(v) for k, v in value.items()}
    return value


def lenient_json(data: bytes | str) -> Any:
    """Decode JSON that msgspec refused because of surrogate escapes: with the standard
    library, paired escapes joined, each unpaired surrogate turned into a NUL (which
    every check refuses where it stands). Anything else malformed is ``bad_message``, as
    msgspec would have it (NaN, numbers out of range and excessive nesting included)."""
    try:  # UnicodeDecodeError is a ValueError: ill-formed UTF-8 stays bad_message
        text = data if isinstance(data, str) else data.decode("utf-8")
        if _SURROGATE_ESCAPE.search(text) is None:
            raise ValueError("no surrogate escape")
        value = json.loads(text, parse_constant=_refuse_constant, parse_float=_finite)
        return _nul_for_surrogates(value)
    except (ValueError, RecursionError) as exc:
        raise BadMessage(f"not valid JSON: {exc}") from None


def decode_client(data: bytes | str, *, msgpack: bool = False) -> ClientMessage:
    """Strictly decode one client message; anything malformed is ``bad_message``."""
    try:
        if msgpack:
            if isinstance(data, str):
                raise BadMessage("binary frames expected for concord.v1.msgpack")
            return _CLIENT_MSGPACK.decode(data)
        return _CLIENT_JSON.decode(data)
    except (msgspec.ValidationError, RecursionError) as exc:  # nested beyond msgspec's depth
        raise BadMessage(f"not a valid client message: {exc}") from None
    except msgspec.DecodeError as exc:
        if msgpack:
            raise BadMessage(f"not a valid client message: {exc}") from None
        error = exc
    try:  # perhaps valid JSON that msgspec refuses: an unpaired surrogate escape
        message: ClientMessage = msgspec.convert(lenient_json(data), ClientMessage)
    except BadMessage:
        raise BadMessage(f"not a valid client message: {error}") from None
    except msgspec.ValidationError as exc:
        raise BadMessage(f"not a valid client message: {exc}") from None
    return message


def decode_server(data: bytes | str, *, msgpack: bool = False) -> ServerMessage:
    """Decode one server message (used by the SDK and the tests)."""
    try:
        if msgpack:
            if isinstance(data, str):
                raise BadMessage("binary frames expected for concord.v1.msgpack")
            return _SERVER_MSGPACK.decode(data)
        return _SERVER_JSON.decode(data)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise BadMessage(f"not a valid server message: {exc}") from None


def encode(message: msgspec.Struct, *, msgpack: bool = False) -> bytes:
    """Encode any wire Struct."""
    return MSGPACK_ENCODER.encode(message) if msgpack else JSON_ENCODER.encode(message)
