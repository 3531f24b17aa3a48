"""Gateway tunables that are not part of the README's configuration table.

Production runs with the defaults. Tests shorten windows and loosen throttles through
one test-only variable, ``CONCORD_TEST_GATEWAY_OPTIONS``: a JSON object with any of the
fields below (``{"refresh_grace_seconds": 1.5}``), read when ``create_app`` is called
without explicit options. Nothing reads it at import time.
"""

from __future__ import annotations

from collections.abc import Mapping

import msgspec

from core.settings import SettingsError
from core.wire import DEFAULT_LIMITS, Limits

TEST_OPTIONS_ENV = "CONCORD_TEST_GATEWAY_OPTIONS"


class GatewayOptions(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Internal knobs of the HTTP gateway (see docs/auth.md and docs/http-api.md)."""

    #: docs/protocol.md section 6: a just-spent refresh token may be presented again this long.
    refresh_grace_seconds: float = 30.0
    #: Login throttling (docs/auth.md, "Throttling"). Failed logins per account and
    #: client address within the window, then 429 for that pair only.
    login_pair_failures: int = 10
    login_pair_window: float = 900.0
    #: Failed logins per account, from any address, that cost nothing within the window;
    #: past them every attempt on the account first waits base * 2^(failures - free)
    #: seconds, capped (never a 429: the owner gets in at most the cap later).
    login_account_failures: int = 5
    login_account_window: float = 900.0
    login_delay_base_seconds: float = 0.25
    login_delay_max_seconds: float = 3.0
    #: Login and register attempts allowed per client address within the window, then 429.
    login_address_attempts: int = 30
    login_address_window: float = 60.0
    #: Per-device push token bucket: sustained pushes per second and burst size.
    push_rate: float = 20.0
    push_burst: int = 60
    #: argon2id cost (RFC 9106 low-memory profile by default) and its worker pool.
    argon2_time_cost: int = 3
    argon2_memory_cost: int = 65_536
    argon2_parallelism: int = 4
    hash_workers: int = 2
    hash_queue: int = 32
    #: Revoked sessions are re-read from PostgreSQL at most this often.
    revocation_refresh_seconds: float = 1.0
    #: WebSocket: messages queued per connection, and how long a full queue may stay
    #: full before the device is closed 4429 (docs/websocket.md).
    ws_send_queue: int = 256
    ws_send_timeout: float = 10.0
    #: Fault hook for tests: False makes the gateway behave as if it died after every
    #: COMMIT and before publishing the space hint (the relay and the feed's head check
    #: must still deliver). Always True in production.
    publish_hints: bool = True
    #: Seconds between the feed's head checks while NATS is up (the safety net for lost
    #: hints; while NATS is down the feed checks every second).
    feed_safety_interval: float = 5.0
    #: Published limits (``welcome.limits``), enforced here and by the store.
    limits: Limits = DEFAULT_LIMITS


def options_from_env(environ: Mapping[str, str]) -> GatewayOptions:
    """The options named by ``CONCORD_TEST_GATEWAY_OPTIONS``, or the defaults."""
    raw = environ.get(TEST_OPTIONS_ENV)
    if not raw:
        return GatewayOptions()
    try:
        return msgspec.json.decode(raw, type=GatewayOptions)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise SettingsError(f"{TEST_OPTIONS_ENV}: {exc}") from None
