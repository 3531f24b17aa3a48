"""Input normalisation: emails, passwords, names, ids, cursors, page sizes."""

from __future__ import annotations

import pytest

from core.errors import BadMessage, NotFound
from core.settings import SettingsError
from gateway.options import GatewayOptions, options_from_env
from gateway.params import (
    canonical_uuid,
    int_cursor,
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
    assert canonical_uuid(UUID) == UUID.lower()
    # docs/protocol.md section 2: any spelling uuid.UUID takes names the one canonical id.
    plain = "0d8c8e2a1b2c4d5e8f90123456789abc"
    canonical = "0d8c8e2a-1b2c-4d5e-8f90-123456789abc"
    for spelling in (plain, plain.upper(), "{" + canonical + "}", "urn:uuid:" + canonical):
        assert canonical_uuid(spelling) == canonical
    for bad in ("", "0d8c8e2a", plain + "0", "not-a-uuid", "\uff10" * 32):
        assert canonical_uuid(bad) is None
    assert path_uuid(UUID, "space") == UUID.lower()
    with pytest.raises(NotFound):
        path_uuid("zzz", "space")
    assert path_entity_id("t-1:a.b_c") == "t-1:a.b_c"
    for bad in ("", "x" * 129, "a b", "a/b"):
        with pytest.raises(NotFound):
            path_entity_id(bad)


def test_cursors_and_page_sizes() -> None:
    assert int_cursor(None) == 0
    assert int_cursor("17") == 17
    for bad in ("-1", "x", "1" * 19, "١٢"):
        with pytest.raises(BadMessage):
            int_cursor(bad)
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
