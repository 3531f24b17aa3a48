"""Scheduler tunables that are not part of the README's configuration table.

Production runs with the defaults. Operators and tests may override any of them through
one variable, ``CONCORD_SCHEDULER_OPTIONS``: a JSON object with any of the fields below
(``{"webhook_max_attempts": 4, "backoff_base_seconds": 0.2}``), read when the scheduler
starts. Nothing reads it at import time. The fault hook for crash tests is a separate
variable, ``CONCORD_TEST_FAULT`` (see :mod:`scheduler.faults`).
"""

from __future__ import annotations

from collections.abc import Mapping

import msgspec

from core.settings import SettingsError

OPTIONS_ENV = "CONCORD_SCHEDULER_OPTIONS"


class SchedulerOptions(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Internal knobs of the scheduler (docs/scheduler.md, "Configuration")."""

    #: A claim on a reminder lasts this long; an instance that crashed or hung mid-firing
    #: loses it after that, and another instance (or the restarted one) takes over.
    lease_seconds: float = 30.0
    #: Reminders claimed per round: they fire as one batch (one append of all their
    #: events). ``fire_concurrency`` sizes the firing and append pools.
    claim_batch: int = 500
    fire_concurrency: int = 8
    #: Date jobs are kept for reminders due within this many sweep intervals.
    window_sweeps: float = 2.0
    #: Webhook: per-attempt timeout (whole request), attempts before ``dead``, and the
    #: exponential backoff between attempts: base * 2^(n-1), capped, plus up to
    #: ``backoff_jitter`` of itself at random.
    webhook_timeout_seconds: float = 10.0
    webhook_max_attempts: int = 8
    webhook_concurrency: int = 8
    backoff_base_seconds: float = 2.0
    backoff_max_seconds: float = 3600.0
    backoff_jitter: float = 0.5
    #: Circuit breaker per webhook endpoint: opens after this many consecutive failures,
    #: stays open this long, then lets one probe through.
    breaker_threshold: int = 5
    breaker_cooldown_seconds: float = 60.0
    #: Periodic jobs other than the sweep (whose interval is CONCORD_SCHEDULER_SWEEP_INTERVAL).
    backlog_interval_seconds: float = 15.0
    retention_interval_seconds: float = 3600.0
    #: A job run longer than this is cut and recorded as ``timeout``.
    sweep_timeout_seconds: float = 240.0
    backlog_timeout_seconds: float = 10.0
    retention_timeout_seconds: float = 600.0
    #: Retention: settled reminders no longer current for their task, job runs, and
    #: spent refresh tokens (once also expired), older than this many days.
    reminder_retention_days: float = 30.0
    job_run_retention_days: float = 14.0
    refresh_token_retention_days: float = 30.0

    def __post_init__(self) -> None:
        positive = ("lease_seconds", "webhook_timeout_seconds", "backoff_base_seconds")
        for name in positive:
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive")
        for name in ("claim_batch", "fire_concurrency", "webhook_concurrency"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1")
        if self.webhook_max_attempts < 1 or self.breaker_threshold < 1:
            raise ValueError("webhook_max_attempts and breaker_threshold must be at least 1")


def options_from_env(environ: Mapping[str, str]) -> SchedulerOptions:
    """The options named by ``CONCORD_SCHEDULER_OPTIONS``, or the defaults."""
    raw = environ.get(OPTIONS_ENV)
    if not raw:
        return SchedulerOptions()
    try:
        return msgspec.json.decode(raw, type=SchedulerOptions)
    except (msgspec.DecodeError, msgspec.ValidationError, ValueError) as exc:
        raise SettingsError(f"{OPTIONS_ENV}: {exc}") from None
