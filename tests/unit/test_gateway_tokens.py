"""Access tokens (JWT HS256), refresh tokens (HMACs of their id) and their digests."""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
import uuid

import jwt
import pytest

from core.errors import Unauthenticated
from gateway.tokens import (
    AccessTokens,
    RefreshTokens,
    iso_utc,
    plausible_refresh_token,
    refresh_digest,
)
from tests.conftest import local_zone

KEY = b"k" * 32


def _issue(tokens: AccessTokens, now: float = 1_000_000.0) -> str:
    token, exp = tokens.issue(user_id="u", device_id="d", session_id="s", generation="g", now=now)
    assert exp == int(now) + tokens.ttl
    return token


def test_round_trip_and_expiry_is_reported_not_raised() -> None:
    tokens = AccessTokens(KEY, 900)
    token = _issue(tokens)
    claims = tokens.verify(token, now=1_000_100.0)
    assert (claims.user_id, claims.device_id, claims.session_id, claims.generation) == (
        "u", "d", "s", "g",
    )  # fmt: skip
    assert claims.expired is False
    assert claims.expires_at == 1_000_900
    assert tokens.verify(token, now=1_000_900.0).expired is True


@pytest.mark.parametrize(
    "token",
    [
        "",
        "x" * 5000,
        "not.a.jwt",
        jwt.encode({"sub": "u", "exp": 2_000_000_000}, "other" * 10, algorithm="HS256"),
        jwt.encode({"typ": "concord.access", "sub": "u", "device": "d", "session": "s",
                    "gen": "g", "iat": 1, "exp": 2_000_000_000}, b"o" * 32, algorithm="HS256"),
        jwt.encode({"typ": "other", "sub": "u", "device": "d", "session": "s", "gen": "g",
                    "iat": 1, "exp": 2_000_000_000}, KEY, algorithm="HS256"),
        jwt.encode({"typ": "concord.access", "sub": "u", "exp": 2_000_000_000}, KEY, "HS256"),
    ],
)  # fmt: skip
def test_foreign_or_malformed_tokens_are_unauthenticated(token: str) -> None:
    with pytest.raises(Unauthenticated, match=r"^no valid access token$"):
        AccessTokens(KEY, 900).verify(token, now=1_000_000.0)


def _padded(size: int) -> str:
    """A token of ours, validly signed, ``size`` characters long (an extra claim pads it)."""
    claims = {"typ": "concord.access", "sub": "u", "device": "d", "session": "s", "gen": "g",
              "iat": 1, "exp": 2_000_000_000}  # fmt: skip
    for pad in range(size):
        token = jwt.encode({**claims, "pad": "x" * pad}, KEY, algorithm="HS256")
        if len(token) >= size:
            assert len(token) == size, "choose a size the encoding can reach"
            return token
    raise AssertionError("unreachable")


def test_a_token_over_the_size_limit_is_refused_even_when_validly_signed() -> None:
    tokens = AccessTokens(KEY, 900)
    assert tokens.verify(_padded(4096), now=1_000_000.0).user_id == "u"
    with pytest.raises(Unauthenticated, match=r"^no valid access token$"):
        tokens.verify(_padded(4097), now=1_000_000.0)


def test_a_token_issued_ahead_of_this_clock_is_accepted() -> None:
    """Gateways decide expiry with their own clock and nothing else: a token whose ``iat``
    is ahead of it (another gateway's clock runs fast) is valid, not refused."""
    tokens = AccessTokens(KEY, 900)
    ahead = time.time() + 3600.0  # ahead of the real clock too, which PyJWT would read
    claims = tokens.verify(_issue(tokens, now=ahead), now=ahead - 60.0)
    assert claims.expired is False


def test_a_tampered_token_is_refused() -> None:
    tokens = AccessTokens(KEY, 900)
    head, body, sig = _issue(tokens).split(".")
    forged = ".".join([head, body, sig[:-2] + ("AA" if sig[-2:] != "AA" else "BB")])
    with pytest.raises(Unauthenticated):
        tokens.verify(forged, now=1_000_000.0)


def test_the_same_claims_sign_to_the_same_bytes() -> None:
    tokens = AccessTokens(KEY, 900)
    token, exp = tokens.issue(user_id="u", device_id="d", session_id="s", generation="g", now=7.9)
    again = tokens.sign(
        user_id="u", device_id="d", session_id="s", generation="g", issued_at=7, expires_at=exp
    )
    assert again == token
    other = tokens.sign(
        user_id="u", device_id="d", session_id="s", generation="g", issued_at=8, expires_at=exp
    )
    assert other != token


def test_a_token_of_the_legacy_key_is_only_ever_expired() -> None:
    legacy = b"the root secret, as used before keys were separated"
    before = AccessTokens(legacy, 900)
    token = _issue(before)
    after = AccessTokens(KEY, 900, legacy_key=legacy)
    claims = after.verify(token, now=1_000_000.0)  # unexpired by its own exp
    assert claims.expired is True
    assert claims.session_id == "s"
    with pytest.raises(Unauthenticated):
        AccessTokens(KEY, 900).verify(token, now=1_000_000.0)


def test_refresh_tokens_are_hmacs_of_their_id_and_stored_as_digests() -> None:
    tokens = RefreshTokens(b"r" * 32)
    token = tokens.token("5b0f2d1e-8c1a-4c55-9a55-2f0d7b8e1c01")
    assert token == tokens.token("5b0f2d1e-8c1a-4c55-9a55-2f0d7b8e1c01")
    assert token != tokens.token("5b0f2d1e-8c1a-4c55-9a55-2f0d7b8e1c02")
    assert token != RefreshTokens(b"q" * 32).token("5b0f2d1e-8c1a-4c55-9a55-2f0d7b8e1c01")
    assert len(token) == 43
    assert set(token) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")
    digest = refresh_digest(token)
    assert len(digest) == 32
    assert digest != refresh_digest(token[:-1])
    assert plausible_refresh_token(token)
    assert not plausible_refresh_token("")
    assert not plausible_refresh_token("x" * 500)
    # the bounds: one character to 128
    assert plausible_refresh_token("x")
    assert plausible_refresh_token("x" * 128)
    assert not plausible_refresh_token("x" * 129)


def test_a_refresh_token_is_the_unpadded_base64_of_its_hmac() -> None:
    """Exactly that, for any id (a token is made again from its id, byte for byte):
    whatever its last characters, only the padding is stripped."""
    key = b"r" * 32
    tokens = RefreshTokens(key)
    for n in range(300):
        token_id = str(uuid.UUID(int=n, version=4))
        mac = hmac.new(key, token_id.encode(), hashlib.sha256).digest()
        assert tokens.token(token_id) == base64.urlsafe_b64encode(mac).decode()[:43]


def test_a_refresh_token_with_an_unpaired_surrogate_has_a_digest() -> None:
    # a JSON string may carry one ("\\ud800"): it matches no token, and must not raise
    assert len(refresh_digest("\ud800")) == 32
    assert refresh_digest("\ud800") != refresh_digest("\ud801")


def test_iso_utc() -> None:
    assert iso_utc(0) == "1970-01-01T00:00:00Z"
    with local_zone("America/New_York"):  # whatever the server's own time zone
        assert iso_utc(0) == "1970-01-01T00:00:00Z"
