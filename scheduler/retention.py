"""The retention job: delete what nobody needs any more, in small batches.

* Settled reminders (fired and delivered, cancelled, skipped, dead) older than
  ``reminder_retention_days`` **that are no longer their task's current reminder**.
  The current one stays whatever its age: it is what stops a later change of the task
  (a title edit re-sends its state) from scheduling that reminder again. A superseded
  reminder can never become current again (a winner's order key only grows).
* ``job_runs`` older than ``job_run_retention_days``.
* Spent refresh tokens (the gateway's ``refresh_tokens``, when that table exists) spent
  more than ``refresh_token_retention_days`` ago and expired by now: an expired token
  is refused whatever its history, so its row no longer serves reuse detection.

The events table is never touched (it is append-only by design and by trigger).
"""

from __future__ import annotations

from datetime import datetime, timedelta

import asyncpg

from scheduler.options import SchedulerOptions

BATCH = 5000

_REMINDERS = """
DELETE FROM reminders WHERE reminder_id IN (
    SELECT r.reminder_id FROM reminders r
    WHERE r.status IN ('fired', 'cancelled', 'skipped', 'dead')
      AND r.next_attempt_at IS NULL AND r.updated_at < $1
      AND NOT EXISTS (
          SELECT 1 FROM reminder_tasks t
          WHERE t.space_id = r.space_id AND t.entity_type = r.entity_type
            AND t.entity_id = r.entity_id AND t.reminder_id = r.reminder_id)
    LIMIT $2)
"""

_JOB_RUNS = """
DELETE FROM job_runs WHERE run_id IN (
    SELECT run_id FROM job_runs WHERE started_at < $1 LIMIT $2)
"""

_REFRESH_TOKENS = """
DELETE FROM refresh_tokens WHERE token_id IN (
    SELECT token_id FROM refresh_tokens
    WHERE spent_at IS NOT NULL AND spent_at < $1 AND expires_at < $3 LIMIT $2)
"""


async def _delete_all(pool: asyncpg.Pool, sql: str, *args: object) -> int:
    total = 0
    while True:
        async with pool.acquire() as conn:
            status: str = await conn.execute(sql, args[0], BATCH, *args[1:])
        deleted = int(status.rsplit(" ", 1)[-1])
        total += deleted
        if deleted < BATCH:
            return total


def _days_before(now: datetime, days: float) -> datetime:
    return now - timedelta(days=days)


async def run_retention(pool: asyncpg.Pool, now: datetime, options: SchedulerOptions) -> int:
    """Delete everything past its retention; the number of rows deleted."""
    total = await _delete_all(pool, _REMINDERS, _days_before(now, options.reminder_retention_days))
    total += await _delete_all(pool, _JOB_RUNS, _days_before(now, options.job_run_retention_days))
    async with pool.acquire() as conn:
        has_tokens = await conn.fetchval("SELECT to_regclass('refresh_tokens') IS NOT NULL")
    if has_tokens:
        cutoff = _days_before(now, options.refresh_token_retention_days)
        total += await _delete_all(pool, _REFRESH_TOKENS, cutoff, now)
    return total
