"""Configuration: every variable of the README's table, read once into a frozen Struct.

A bad value raises :class:`SettingsError` whose message is one line naming the
variable and what was wrong; the ``concord`` command prints it and exits 2.
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TypeVar
from urllib.parse import urlsplit

import msgspec

T = TypeVar("T")


class SettingsError(Exception):
    """A configuration value is missing or invalid (message: one line, names the variable)."""


class Settings(msgspec.Struct, frozen=True, kw_only=True):
    """Process configuration. ``None`` URLs mean: start the embedded service."""

    database_url: str | None = None
    nats_url: str | None = None
    host: str = "127.0.0.1"
    port: int = 8000
    data_dir: Path = Path(".concord")
    secret_key: str | None = None
    admin_token: str | None = None
    access_token_ttl: int = 900
    refresh_token_ttl: int = 2_592_000
    auth_grace: int = 300
    reminder_max_lateness: int = 86_400
    scheduler_sweep_interval: int = 300
    production: bool = False
    log_level: str = "info"
    nats_prefix: str = "concord"
    #: The cap of the JetStream stream of the log; JetStream reserves it up front.
    nats_stream_max_bytes: int = 1 << 30
    webhook_url: str | None = None
    webhook_secret: str | None = None
    #: Peers whose ``X-Forwarded-For`` is believed (addresses and networks, normalised);
    #: empty: none, the TCP peer is the client.
    trusted_proxies: tuple[str, ...] = ()
    #: The live sandbox (``/sandbox`` and ``/v1/sandbox/*``, docs/sandbox.md). None: the
    #: command decides (``concord dev`` turns it on, ``concord gateway`` leaves it off).
    sandbox: bool | None = None
    #: WebSocket permessage-deflate (RFC 7692) offered by a device is accepted only when
    #: on: Concord's frames are small, where compression costs more CPU and memory per
    #: socket than it saves (docs/websocket.md).
    ws_compression: bool = False
    #: How much ``concord projector`` lowers its own CPU priority (``nice``, 0..19): it
    #: catches up whatever it could not apply during a burst, so the gateway and the
    #: database, which devices wait on, come first when the cores are busy.
    projector_nice: int = 10
    #: Seconds between the projector's ticks, which find lagging spaces by scanning every
    #: space's head (docs/projector.md): a dropped stream message costs at most a tick.
    projector_tick_seconds: int = 1

    def require_secret_key(self) -> str:
        """The signing key; settings loading guarantees it in production and dev fills it."""
        if not self.secret_key:
            raise SettingsError("CONCORD_SECRET_KEY: required (set it, or run `concord dev`)")
        return self.secret_key


def _int(name: str, raw: str, *, lo: int, hi: int) -> int:
    try:
        value = int(raw, 10)
    except ValueError:
        raise SettingsError(f"{name}: {raw!r} is not an integer") from None
    if not lo <= value <= hi:
        raise SettingsError(f"{name}: {value} is out of range ({lo}..{hi})")
    return value


def _bool(name: str, raw: str) -> bool:
    lowered = raw.strip().lower()
    if lowered in {"1", "true", "yes", "on"}:
        return True
    if lowered in {"0", "false", "no", "off", ""}:
        return False
    raise SettingsError(f"{name}: {raw!r} is not a boolean (use true or false)")


def redact_url(url: str) -> str:
    """``url`` with its credentials (``user:password@``, ``token@``) replaced by ``***@``,
    for log lines and error messages. Everything before the last ``@`` goes, so a
    password with an unescaped ``/`` or ``@`` in it cannot leak either."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        scheme, rest = "", url
    if "@" not in rest:
        return url
    return f"{scheme}{sep}***@{rest.rpartition('@')[2]}"


def _url(name: str, raw: str, schemes: tuple[str, ...]) -> str:
    if not raw.startswith(tuple(f"{s}://" for s in schemes)):
        allowed = ", ".join(f"{s}://" for s in schemes)
        raise SettingsError(f"{name}: {redact_url(raw)!r} must start with one of {allowed}")
    return raw


def _nats_url(name: str, raw: str) -> str:
    """A ``nats://`` or ``tls://`` URL whose host and port parse (the client would fail
    on them later, over and over, instead of stopping the start)."""
    _url(name, raw, ("nats", "tls"))
    try:
        parts = urlsplit(raw)
        valid = bool(parts.hostname) and (parts.port is None or parts.port >= 0)
    except ValueError:  # a port that is not a number, or out of range
        valid = False
    if not valid:
        raise SettingsError(f"{name}: {redact_url(raw)!r} has no valid host and port")
    return raw


def _networks(name: str, raw: str) -> tuple[str, ...]:
    """A comma-separated list of addresses and CIDR networks, normalised."""
    found: list[str] = []
    for item in (part.strip() for part in raw.split(",")):
        if not item:
            continue
        if item == "*":
            raise SettingsError(
                f"{name}: '*' would let any client choose its address; "
                "list the proxies' addresses or networks"
            )
        try:
            network = ipaddress.ip_network(item, strict=True)
        except ValueError as exc:
            raise SettingsError(
                f"{name}: {item!r} is not an IP address or CIDR network ({exc})"
            ) from None
        text = str(network.network_address) if network.num_addresses == 1 else str(network)
        if text not in found:
            found.append(text)
    return tuple(found)


_POSITIVE = {"lo": 1, "hi": 10**9}

_PARSERS: dict[str, tuple[str, Callable[[str, str], object]]] = {
    "CONCORD_DATABASE_URL": (
        "database_url",
        lambda n, v: _url(n, v, ("postgres", "postgresql")),
    ),
    "CONCORD_NATS_URL": ("nats_url", _nats_url),
    "CONCORD_HOST": ("host", lambda n, v: v),
    "CONCORD_PORT": ("port", lambda n, v: _int(n, v, lo=0, hi=65535)),
    "CONCORD_DATA_DIR": ("data_dir", lambda n, v: Path(v)),
    "CONCORD_SECRET_KEY": ("secret_key", lambda n, v: v),
    "CONCORD_ADMIN_TOKEN": ("admin_token", lambda n, v: v),
    "CONCORD_ACCESS_TOKEN_TTL": ("access_token_ttl", lambda n, v: _int(n, v, **_POSITIVE)),
    "CONCORD_REFRESH_TOKEN_TTL": ("refresh_token_ttl", lambda n, v: _int(n, v, **_POSITIVE)),
    "CONCORD_AUTH_GRACE": ("auth_grace", lambda n, v: _int(n, v, lo=0, hi=10**9)),
    "CONCORD_REMINDER_MAX_LATENESS": (
        "reminder_max_lateness",
        lambda n, v: _int(n, v, lo=0, hi=10**9),
    ),
    "CONCORD_SCHEDULER_SWEEP_INTERVAL": (
        "scheduler_sweep_interval",
        lambda n, v: _int(n, v, **_POSITIVE),
    ),
    "CONCORD_PRODUCTION": ("production", _bool),
    "CONCORD_LOG_LEVEL": ("log_level", lambda n, v: _log_level(n, v)),
    "CONCORD_NATS_PREFIX": ("nats_prefix", lambda n, v: _subject_token(n, v)),
    "CONCORD_NATS_STREAM_MAX_BYTES": (
        "nats_stream_max_bytes",
        lambda n, v: _int(n, v, lo=1 << 20, hi=1 << 50),
    ),
    "CONCORD_WEBHOOK_URL": ("webhook_url", lambda n, v: _url(n, v, ("http", "https"))),
    "CONCORD_WEBHOOK_SECRET": ("webhook_secret", lambda n, v: v),
    "CONCORD_TRUSTED_PROXIES": ("trusted_proxies", _networks),
    "CONCORD_SANDBOX": ("sandbox", _bool),
    "CONCORD_WS_COMPRESSION": ("ws_compression", _bool),
    "CONCORD_PROJECTOR_NICE": ("projector_nice", lambda n, v: _int(n, v, lo=0, hi=19)),
    "CONCORD_PROJECTOR_TICK_SECONDS": (
        "projector_tick_seconds",
        lambda n, v: _int(n, v, lo=1, hi=3600),
    ),
}

#: The flags of ``concord`` commands, each overriding the variable of the same name.
ENV_NAMES: tuple[str, ...] = tuple(_PARSERS)


def _log_level(name: str, raw: str) -> str:
    level = raw.lower()
    if level not in {"debug", "info", "warning", "error"}:
        raise SettingsError(f"{name}: {raw!r} is not one of debug, info, warning, error")
    return level


def _subject_token(name: str, raw: str) -> str:
    if not raw or any(c in raw for c in " .*>\t"):
        raise SettingsError(f"{name}: {raw!r} must be one NATS subject token (no spaces, . * >)")
    return raw


def load_settings(
    environ: Mapping[str, str] | None = None, overrides: Mapping[str, str] | None = None
) -> Settings:
    """Read every ``CONCORD_*`` variable once; ``overrides`` (command flags) win."""
    env = dict(os.environ if environ is None else environ)
    env.update(overrides or {})
    values: dict[str, object] = {}
    for name, (attr, parse) in _PARSERS.items():
        raw = env.get(name)
        if raw is None or (raw == "" and attr not in {"host"}):
            continue
        values[attr] = parse(name, raw)
    settings = Settings(**values)  # type: ignore[arg-type]
    if settings.production:
        for name, attr in (
            ("CONCORD_SECRET_KEY", "secret_key"),
            ("CONCORD_ADMIN_TOKEN", "admin_token"),
            ("CONCORD_DATABASE_URL", "database_url"),
            ("CONCORD_NATS_URL", "nats_url"),
        ):
            if not getattr(settings, attr):
                raise SettingsError(f"{name}: required when CONCORD_PRODUCTION is true")
        if settings.sandbox:
            raise SettingsError(
                "CONCORD_SANDBOX: not allowed when CONCORD_PRODUCTION is true (the sandbox "
                "signs up throwaway users and hands out short-lived tokens on demand)"
            )
        if settings.webhook_url and not settings.webhook_secret:
            raise SettingsError(
                "CONCORD_WEBHOOK_SECRET: required when CONCORD_WEBHOOK_URL is set and "
                "CONCORD_PRODUCTION is true (receivers could not tell Concord's requests "
                "from forgeries)"
            )
    if settings.secret_key is not None and len(settings.secret_key) < 32:
        raise SettingsError("CONCORD_SECRET_KEY: must be at least 32 characters")
    return settings


def environment_of(settings: Settings) -> dict[str, str]:
    """``settings`` as the ``CONCORD_*`` variables that ``load_settings`` reads back to
    the same values (what a supervisor hands its child processes); unset ones left out."""
    env: dict[str, str] = {}
    for name, (attr, _) in _PARSERS.items():
        value = getattr(settings, attr)
        if value is None:
            continue
        if isinstance(value, bool):
            env[name] = "true" if value else "false"
        elif isinstance(value, tuple):
            env[name] = ",".join(value)
        else:
            env[name] = str(value)
    return env


def with_overrides(settings: Settings, **changes: object) -> Settings:
    """A copy of ``settings`` with some attributes replaced (settings are frozen)."""
    return msgspec.structs.replace(settings, **changes)
