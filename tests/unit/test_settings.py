"""Settings: every variable of the README's table, defaults, and one clear line per bad value."""

from __future__ import annotations

from pathlib import Path

import pytest

from core.settings import ENV_NAMES, Settings, SettingsError, load_settings, redact_url


def test_defaults_match_design() -> None:
    s = load_settings({})
    assert (s.database_url, s.nats_url) == (None, None)
    assert (s.host, s.port, s.data_dir) == ("127.0.0.1", 8000, Path(".concord"))
    assert (s.access_token_ttl, s.refresh_token_ttl, s.auth_grace) == (900, 2_592_000, 300)
    assert (s.reminder_max_lateness, s.scheduler_sweep_interval) == (86_400, 300)


def test_every_design_variable_is_read() -> None:
    design = {
        "CONCORD_DATABASE_URL", "CONCORD_NATS_URL", "CONCORD_HOST", "CONCORD_PORT",
        "CONCORD_DATA_DIR", "CONCORD_SECRET_KEY", "CONCORD_ADMIN_TOKEN",
        "CONCORD_ACCESS_TOKEN_TTL", "CONCORD_REFRESH_TOKEN_TTL", "CONCORD_AUTH_GRACE",
        "CONCORD_REMINDER_MAX_LATENESS", "CONCORD_SCHEDULER_SWEEP_INTERVAL",
    }  # fmt: skip
    assert design <= set(ENV_NAMES)


def test_values_are_parsed() -> None:
    s = load_settings(
        {
            "CONCORD_DATABASE_URL": "postgresql://u@h/db",
            "CONCORD_NATS_URL": "nats://h:4222",
            "CONCORD_PORT": "8001",
            "CONCORD_ACCESS_TOKEN_TTL": "2",
            "CONCORD_DATA_DIR": "/tmp/x",
        }
    )
    assert s.database_url == "postgresql://u@h/db"
    assert s.port == 8001
    assert s.access_token_ttl == 2
    assert s.data_dir == Path("/tmp/x")


def test_overrides_win_over_environment() -> None:
    s = load_settings({"CONCORD_PORT": "8001"}, overrides={"CONCORD_PORT": "8002"})
    assert s.port == 8002


@pytest.mark.parametrize(
    ("name", "value", "fragment"),
    [
        ("CONCORD_PORT", "70000", "CONCORD_PORT: 70000 is out of range"),
        ("CONCORD_PORT", "http", "CONCORD_PORT: 'http' is not an integer"),
        ("CONCORD_ACCESS_TOKEN_TTL", "0", "CONCORD_ACCESS_TOKEN_TTL: 0 is out of range"),
        ("CONCORD_PROJECTOR_NICE", "20", "CONCORD_PROJECTOR_NICE: 20 is out of range (0..19)"),
        ("CONCORD_PROJECTOR_NICE", "-1", "CONCORD_PROJECTOR_NICE: -1 is out of range (0..19)"),
        (
            "CONCORD_PROJECTOR_TICK_SECONDS",
            "0",
            "CONCORD_PROJECTOR_TICK_SECONDS: 0 is out of range (1..3600)",
        ),
        ("CONCORD_PROJECTOR_TICK_SECONDS", "0.5", "CONCORD_PROJECTOR_TICK_SECONDS: '0.5' is not"),
        ("CONCORD_DATABASE_URL", "mysql://x", "CONCORD_DATABASE_URL: 'mysql://x' must start"),
        ("CONCORD_NATS_URL", "http://x", "CONCORD_NATS_URL"),
        ("CONCORD_SECRET_KEY", "short", "CONCORD_SECRET_KEY: must be at least 32"),
        ("CONCORD_PRODUCTION", "maybe", "CONCORD_PRODUCTION: 'maybe' is not a boolean"),
        ("CONCORD_LOG_LEVEL", "loud", "CONCORD_LOG_LEVEL"),
        ("CONCORD_NATS_PREFIX", "a.b", "CONCORD_NATS_PREFIX"),
        ("CONCORD_NATS_STREAM_MAX_BYTES", "1000", "CONCORD_NATS_STREAM_MAX_BYTES: 1000 is out"),
    ],
)
def test_bad_values_name_the_variable(name: str, value: str, fragment: str) -> None:
    with pytest.raises(SettingsError) as info:
        load_settings({name: value})
    message = str(info.value)
    assert fragment in message
    assert "\n" not in message


def test_production_requires_secrets_and_urls() -> None:
    with pytest.raises(SettingsError, match="CONCORD_SECRET_KEY: required"):
        load_settings({"CONCORD_PRODUCTION": "true"})


def test_settings_are_frozen() -> None:
    s = Settings()
    with pytest.raises(AttributeError):
        s.port = 1  # type: ignore[misc]


def test_require_secret_key() -> None:
    with pytest.raises(SettingsError, match="CONCORD_SECRET_KEY"):
        Settings().require_secret_key()
    assert Settings(secret_key="k" * 32).require_secret_key() == "k" * 32


def test_trusted_proxies_are_parsed_and_normalised() -> None:
    assert load_settings({}).trusted_proxies == ()
    s = load_settings(
        {"CONCORD_TRUSTED_PROXIES": " 10.0.0.0/8, 127.0.0.1 ,::1, 192.168.1.7/32,127.0.0.1"}
    )
    assert s.trusted_proxies == ("10.0.0.0/8", "127.0.0.1", "::1", "192.168.1.7")
    assert "CONCORD_TRUSTED_PROXIES" in ENV_NAMES  # so `--trusted-proxies` exists too


@pytest.mark.parametrize(
    ("value", "fragment"),
    [
        ("proxy.internal", "'proxy.internal' is not an IP address or CIDR network"),
        ("10.0.0.1/8", "'10.0.0.1/8' is not an IP address or CIDR network"),
        ("10.0.0.0/33", "'10.0.0.0/33' is not an IP address"),
        ("*", "'*' would let any client choose its address"),
    ],
)
def test_bad_trusted_proxies_stop_the_start(value: str, fragment: str) -> None:
    with pytest.raises(SettingsError) as info:
        load_settings({"CONCORD_TRUSTED_PROXIES": value})
    message = str(info.value)
    assert message.startswith("CONCORD_TRUSTED_PROXIES: ")
    assert fragment in message
    assert "\n" not in message


_PRODUCTION = {
    "CONCORD_PRODUCTION": "true",
    "CONCORD_SECRET_KEY": "s" * 40,
    "CONCORD_ADMIN_TOKEN": "admin",
    "CONCORD_DATABASE_URL": "postgresql://u@h/db",
    "CONCORD_NATS_URL": "nats://h:4222",
}


def test_production_refuses_a_webhook_url_without_a_secret() -> None:
    with pytest.raises(SettingsError) as info:
        load_settings({**_PRODUCTION, "CONCORD_WEBHOOK_URL": "https://hooks.example/x"})
    assert str(info.value).startswith("CONCORD_WEBHOOK_SECRET: required when CONCORD_WEBHOOK_URL")
    signed = load_settings(
        {
            **_PRODUCTION,
            "CONCORD_WEBHOOK_URL": "https://hooks.example/x",
            "CONCORD_WEBHOOK_SECRET": "w",
        }
    )
    assert signed.webhook_secret == "w"
    # Development may leave it out (requests are then signed with a derived key).
    dev = load_settings({"CONCORD_WEBHOOK_URL": "https://hooks.example/x"})
    assert dev.webhook_secret is None


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("nats://alice:s3cret@nats.internal:4222", "nats://***@nats.internal:4222"),
        ("nats://s3cret@nats.internal:4222", "nats://***@nats.internal:4222"),
        ("tls://alice:s3/cr@et@nats.internal", "tls://***@nats.internal"),
        ("alice:s3cret@nats.internal", "***@nats.internal"),
        ("nats://nats.internal:4222", "nats://nats.internal:4222"),
        (
            "postgresql://u:s3cret@db/concord?sslmode=require",
            "postgresql://***@db/concord?sslmode=require",
        ),
    ],
)
def test_redact_url(url: str, shown: str) -> None:
    assert redact_url(url) == shown


def test_a_bad_url_is_named_without_its_credentials() -> None:
    with pytest.raises(SettingsError) as info:
        load_settings({"CONCORD_NATS_URL": "nat://alice:s3cret@h:4222"})
    assert "s3cret" not in str(info.value)
    assert "alice" not in str(info.value)
    assert str(info.value).startswith("CONCORD_NATS_URL: 'nat://***@h:4222' must start")


def test_sandbox_is_left_to_the_command_and_refused_in_production() -> None:
    assert load_settings({}).sandbox is None  # concord dev: on; concord gateway: off
    assert load_settings({"CONCORD_SANDBOX": "true"}).sandbox is True
    assert load_settings({"CONCORD_SANDBOX": "false"}).sandbox is False
    assert load_settings({**_PRODUCTION, "CONCORD_SANDBOX": "false"}).sandbox is False
    with pytest.raises(SettingsError) as info:
        load_settings({**_PRODUCTION, "CONCORD_SANDBOX": "true"})
    assert str(info.value).startswith("CONCORD_SANDBOX: not allowed when CONCORD_PRODUCTION")
    with pytest.raises(SettingsError, match="CONCORD_SANDBOX: 'maybe' is not a boolean"):
        load_settings({"CONCORD_SANDBOX": "maybe"})


def test_projector_tick_defaults_to_one_second() -> None:
    assert load_settings({}).projector_tick_seconds == 1
    assert load_settings({"CONCORD_PROJECTOR_TICK_SECONDS": "30"}).projector_tick_seconds == 30


def test_projector_nice_defaults_to_ten() -> None:
    assert load_settings({}).projector_nice == 10
    assert load_settings({"CONCORD_PROJECTOR_NICE": "0"}).projector_nice == 0
    assert load_settings({"CONCORD_PROJECTOR_NICE": "19"}).projector_nice == 19
