"""Input normalisation: emails, passwords, names, ids, cursors, page sizes."""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from core.errors import BadMessage, NotFound
from core.ids import canonical_id, keyset_cursor, parse_keyset_cursor
from core.settings import SettingsError
from core.wire import DEVICE_NAME_PATTERN, EMAIL_PATTERN, NAME_PATTERN
from gateway.options import GatewayOptions, options_from_env
from gateway.params import (
    ENTITY_CURSOR,
    KEYSET_AFTER,
    SPACE_CURSOR,
    given_cursor,
    keyset_after,
    normalise_email,
    page_size,
    path_entity_id,
    path_uuid,
    storable,
    valid_email,
    valid_name,
    valid_password,
)

UUID = "0D8C8E2A-1B2C-4D5E-8F90-123456789ABC"


def test_emails_are_trimmed_lowercased_and_checked() -> None:
    assert valid_email("  Ada@Example.COM ") == "ada@example.com"
    for bad in (
        "",
        "ada",
        "ada@",
        "@example.com",
        "a b@example.com",
        "ada@example",
        "x" * 250 + "@e.co",
    ):
        with pytest.raises(BadMessage):
            valid_email(bad)


def test_text_postgresql_cannot_store_is_refused() -> None:
    assert storable("plain ü text")
    assert not storable("nul\x00inside")
    assert not storable("lone \ud800 surrogate")
    with pytest.raises(BadMessage):
        normalise_email("a\x00@b.cd")
    with pytest.raises(BadMessage):
        valid_password("surrogate \ud800 here", registering=False)
    for registering in (True, False):
        with pytest.raises(BadMessage):
            valid_password("nul \x00 inside", registering=registering)
    for name in ("nul\x00name", "lone \udfff"):
        with pytest.raises(BadMessage):
            valid_name(name, "device_name", default="device")


def test_passwords() -> None:
    assert valid_password("12345678", registering=True) == "12345678"
    assert valid_password("short", registering=False) == "short"
    with pytest.raises(BadMessage):
        valid_password("1234567", registering=True)
    with pytest.raises(BadMessage):
        valid_password("x" * 1025, registering=False)


def test_names() -> None:
    assert valid_name("  Work  ", "name") == "Work"
    assert valid_name("   ", "device_name", default="Unnamed") == "Unnamed"
    for bad in ("", "x" * 201, "tab\there"):
        with pytest.raises(BadMessage):
            valid_name(bad, "name")


def test_ids_in_paths_that_name_nothing_are_404() -> None:
    assert canonical_id(UUID) == UUID.lower()
    # docs/protocol.md section 2: any spelling uuid.UUID takes names the one canonical id.
    plain = "0d8c8e2a1b2c4d5e8f90123456789abc"
    canonical = "0d8c8e2a-1b2c-4d5e-8f90-123456789abc"
    for spelling in (plain, plain.upper(), "{" + canonical + "}", "urn:uuid:" + canonical):
        assert canonical_id(spelling) == canonical
    for bad in ("", "0d8c8e2a", plain + "0", "not-a-uuid", "\uff10" * 32):
        assert canonical_id(bad) is None
    assert path_uuid(UUID, "space") == UUID.lower()
    with pytest.raises(NotFound):
        path_uuid("zzz", "space")
    assert path_entity_id("t-1:a.b_c") == "t-1:a.b_c"
    for bad in ("", "x" * 129, "a b", "a/b"):
        with pytest.raises(NotFound):
            path_entity_id(bad)


def test_cursors_and_page_sizes() -> None:
    assert page_size(None) == 100
    assert page_size(5) == 5
    assert page_size(10**9) == 1000
    assert page_size(None, default=500, cap=1000) == 500


def test_options_from_env() -> None:
    assert options_from_env({}) == GatewayOptions()
    chosen = options_from_env({"CONCORD_TEST_GATEWAY_OPTIONS": '{"refresh_grace_seconds": 2}'})
    assert chosen.refresh_grace_seconds == 2.0
    with pytest.raises(SettingsError, match="CONCORD_TEST_GATEWAY_OPTIONS"):
        options_from_env({"CONCORD_TEST_GATEWAY_OPTIONS": '{"no_such_knob": 1}'})


#: Text with what the patterns care about: whitespace, controls, NUL, @ and dots.
_TEXT = st.text(
    alphabet=st.sampled_from(list(" \t\n\x0b\x0c\r\x00\x1f\x7f\x85\x9f\xa0\u3000@.aZ9é_-/")),
    max_size=12,
) | st.text(max_size=220)


def _accepts(check: object, raw: str) -> bool:
    try:
        check(raw)  # type: ignore[operator]
    except BadMessage:
        return False
    return True


@given(_TEXT)
def test_the_document_states_exactly_what_the_checks_accept(raw: str) -> None:
    """docs/http-api.md: a name or email the OpenAPI pattern admits is accepted, one it
    refuses is 400, under JSON Schema's reading (the whole string) and msgspec's
    (``re.search``, whose ``$`` may end before a final newline) alike."""
    for pattern, check in (
        (NAME_PATTERN, lambda v: valid_name(v, "name")),
        (DEVICE_NAME_PATTERN, lambda v: valid_name(v, "device_name", default="x")),
        (EMAIL_PATTERN, valid_email),
    ):
        stated = re.fullmatch(pattern, raw) is not None
        assert stated == (re.search(pattern, raw) is not None), (pattern, raw)
        if pattern is EMAIL_PATTERN:
            stated = stated and len(raw) <= 254
        assert stated == _accepts(check, raw), (pattern, raw)


def test_names_and_emails_are_trimmed_of_ascii_whitespace_only() -> None:
    assert valid_name("\t Work \r\n", "name") == "Work"
    assert valid_name("\u3000Work", "name") == "\u3000Work"
    assert valid_email(" Ada@Example.com\n") == "ada@example.com"
    # Only ASCII whitespace separates: U+0085 is a character of the address like any other.
    assert valid_email("a\x85b@example.com") == "a\x85b@example.com"
    with pytest.raises(BadMessage):
        valid_email("a b@example.com")


def test_keyset_cursors() -> None:
    at = datetime(2026, 11, 23, 10, 0, 0, 123456, tzinfo=UTC)
    rid = "0d8c8e2a-1b2c-4d5e-8f90-123456789abc"
    cursor = keyset_cursor(at, rid)
    assert parse_keyset_cursor(cursor) == (at, rid)
    assert keyset_after(cursor) == (at, rid)
    assert keyset_after(None) is None
    # Every cursor the pattern admits names a position, beyond datetime's range too.
    assert parse_keyset_cursor(f"-999999999999999999.{rid}") == (
        datetime.min.replace(tzinfo=UTC),
        rid,
    )
    assert parse_keyset_cursor(f"999999999999999999.{rid}") == (
        datetime.max.replace(tzinfo=UTC),
        rid,
    )
    for bad in (
        "",
        "x",
        f"1.{rid.upper()}",
        f"{cursor}\n",
        f"1.{rid}x",
        f"1x.{rid}",
        "1." + rid[:-1],
    ):
        assert parse_keyset_cursor(bad) is None
        with pytest.raises(BadMessage):
            keyset_after(bad)


def test_cursor_patterns_are_matched_whole() -> None:
    rid = "0d8c8e2a-1b2c-4d5e-8f90-123456789abc"
    assert given_cursor(rid, SPACE_CURSOR) == rid
    assert given_cursor("task/t-1", ENTITY_CURSOR) == "task/t-1"
    assert given_cursor(f"12.{rid}", KEYSET_AFTER) == f"12.{rid}"
    for raw, pattern in (
        (rid + "\n", SPACE_CURSOR),
        ("task/t-1\n", ENTITY_CURSOR),
        ("0", ENTITY_CURSOR),
        ("", SPACE_CURSOR),
        (rid.upper(), SPACE_CURSOR),
    ):
        with pytest.raises(BadMessage):
            given_cursor(raw, pattern)


def refusal(check: Callable[[], object], error: type[Exception] = BadMessage) -> str:
    """The message ``check`` is refused with."""
    with pytest.raises(error) as refused:
        check()
    return str(refused.value)


def test_each_refusal_says_what_is_wrong_at_its_exact_bound() -> None:
    email = "x" * 240 + "@example.com"  # 252 characters
    assert valid_email(email + "xx") == email + "xx"  # 254: the limit
    assert refusal(lambda: valid_email(email + "xxx")) == "email: not a valid email address"
    assert refusal(lambda: valid_email("nul\x00@example.com")) == "email: not a valid email address"
    # Sign-in only normalises (what was never registered just does not match): it refuses
    # only what cannot be stored, or is over four times the limit.
    assert normalise_email("X" * 1016) == "x" * 1016
    assert refusal(lambda: normalise_email("x" * 1017)) == "email: not a valid email address"
    assert refusal(lambda: normalise_email("a\ud800")) == "email: not a valid email address"
    assert normalise_email("\u3000Ada@Example.com\t") == "\u3000ada@example.com"

    assert valid_password("x" * 1024, registering=True) == "x" * 1024
    assert refusal(lambda: valid_password("x" * 1025, registering=False)) == (
        "password: at most 1024 characters"
    )
    assert refusal(lambda: valid_password("nul \x00 inside", registering=False)) == (
        "password: must not contain NUL or an unpaired surrogate"
    )
    assert refusal(lambda: valid_password("1234567", registering=True)) == (
        "password: at least 8 characters"
    )
    assert refusal(lambda: valid_name("tab\there", "device_name")) == (
        "device_name: 1 to 200 characters, no control character"
    )
    assert refusal(lambda: path_entity_id("a b"), NotFound) == "no such entity"
    assert refusal(lambda: path_uuid("zzz", "space"), NotFound) == "no such space"
