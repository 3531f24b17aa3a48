"""The optional webhook channel: a signed JSON POST per fired reminder.

Request (docs/scheduler.md, "Webhook"):

* body: :class:`WebhookBody` as JSON, identical on every attempt of one firing;
* ``Idempotency-Key``: the ``reminder_id``, stable across attempts and restarts, so a
  receiver drops repeats (a delivery is at least once);
* ``Concord-Timestamp``: Unix seconds when this attempt was signed;
* ``Concord-Signature``: ``v1=`` + hex HMAC-SHA256 under ``CONCORD_WEBHOOK_SECRET`` of
  ``f"{timestamp}."`` followed by the raw body bytes (see :func:`verify_signature`);
  without that secret (development only: production refuses to start), under the
  webhook key derived from ``CONCORD_SECRET_KEY`` (:func:`signing_secret`);
* ``Concord-Attempt``: 1 for the first attempt, 2 for the first retry, ...

Any 2xx answer is a success; anything else, a connection error or the timeout is a
failure, retried with exponential backoff and jitter until the attempts run out.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import random
from datetime import datetime

import httpx
import msgspec

from core.keys import Purpose, derive_text
from core.wire import Notification
from scheduler.options import SchedulerOptions

SIGNATURE_HEADER = "Concord-Signature"
TIMESTAMP_HEADER = "Concord-Timestamp"
ATTEMPT_HEADER = "Concord-Attempt"
IDEMPOTENCY_HEADER = "Idempotency-Key"

_ENCODER = msgspec.json.Encoder()


class WebhookBody(msgspec.Struct, frozen=True, kw_only=True):
    """What a webhook receives for one fired reminder."""

    type: str = "reminder_fired"
    notification: Notification
    lateness_ms: int
    #: seq of the ``reminder_fired`` event in the space's log.
    event_seq: int | None


class DeliveryFailed(Exception):
    """One attempt failed; the message is what ``last_error`` records."""


def signing_secret(webhook_secret: str | None, secret_key: str | None) -> str | None:
    """The secret webhook requests are signed with: ``CONCORD_WEBHOOK_SECRET`` as given
    (the receiver holds it), else the webhook key of ``core.keys`` in hex, so requests
    are signed even in development, and never with the root secret itself."""
    if webhook_secret:
        return webhook_secret
    return derive_text(secret_key, Purpose.WEBHOOK) if secret_key else None


def encode_body(body: WebhookBody) -> bytes:
    return _ENCODER.encode(body)


def sign(secret: str, timestamp: int, body: bytes) -> str:
    """The ``Concord-Signature`` value for ``body`` signed at ``timestamp``."""
    message = f"{timestamp}.".encode() + body
    return "v1=" + hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()


def verify_signature(
    secret: str, timestamp: str, body: bytes, signature: str, *, now: float, tolerance: float = 300
) -> bool:
    """What a receiver does: recompute, compare in constant time, refuse stale requests."""
    try:
        ts = int(timestamp)
    except ValueError:
        return False
    if abs(now - ts) > tolerance:
        return False
    return hmac.compare_digest(sign(secret, ts, body), signature)


def backoff_seconds(attempt: int, options: SchedulerOptions, rng: random.Random) -> float:
    """Delay after failed attempt ``attempt`` (1-based): base * 2^(attempt-1), capped at
    ``backoff_max_seconds``, plus up to ``backoff_jitter`` of that at random (so
    reminders that failed together do not all retry in the same instant)."""
    exponent = min(attempt - 1, 60)
    delay = min(options.backoff_base_seconds * (2.0**exponent), options.backoff_max_seconds)
    return delay * (1.0 + options.backoff_jitter * rng.random())


class WebhookSender:
    """POSTs to one configured URL with httpx; one client (connection pool) per process."""

    def __init__(self, url: str, secret: str | None, *, timeout: float) -> None:
        self.url = url
        self.secret = secret
        self.timeout = timeout
        self._client = httpx.AsyncClient(
            timeout=httpx.Timeout(timeout),
            follow_redirects=False,
            headers={"User-Agent": "concord-scheduler/1"},
        )

    async def close(self) -> None:
        await self._client.aclose()

    def headers(self, reminder_id: str, attempt: int, body: bytes, at: datetime) -> dict[str, str]:
        timestamp = int(at.timestamp())
        headers = {
            "Content-Type": "application/json",
            IDEMPOTENCY_HEADER: reminder_id,
            TIMESTAMP_HEADER: str(timestamp),
            ATTEMPT_HEADER: str(attempt),
        }
        if self.secret:
            headers[SIGNATURE_HEADER] = sign(self.secret, timestamp, body)
        return headers

    async def send(self, reminder_id: str, attempt: int, body: bytes, at: datetime) -> None:
        """One attempt; raises :class:`DeliveryFailed` unless the answer is 2xx."""
        headers = self.headers(reminder_id, attempt, body, at)
        try:
            # httpx timeouts bound each phase; this bounds the whole exchange (a server
            # trickling bytes would otherwise hold the slot indefinitely).
            async with asyncio.timeout(self.timeout):
                response = await self._client.post(self.url, content=body, headers=headers)
        except TimeoutError:
            raise DeliveryFailed(f"timeout after {self.timeout:g}s") from None
        except httpx.TimeoutException:
            raise DeliveryFailed(f"timeout after {self.timeout:g}s") from None
        except httpx.HTTPError as exc:
            raise DeliveryFailed(f"{type(exc).__name__}: {exc}"[:500]) from None
        if not 200 <= response.status_code < 300:
            raise DeliveryFailed(f"HTTP {response.status_code}")
