"""The least-privilege database role for Concord's processes (docs/eventstore.md).

Migrations run as the owner of the tables; the processes connect as a role that may
read and append events but never change or remove them: with no UPDATE, DELETE or
TRUNCATE privilege on ``events`` and without owning it (so it cannot disable the
triggers either), the log is append-only twice over.
"""

from __future__ import annotations

import re

_NAME = re.compile(r"[a-z_][a-z0-9_]{0,62}")

_ALL = "SELECT, INSERT, UPDATE, DELETE"

#: table -> privileges of the application role, for every table of every migration
#: (a test fails when a migration adds a table missing here). ``concord projector
#: rebuild`` renames tables, so it runs as the tables' owner, not as this role.
GRANTS: dict[str, str] = {
    # 0001: the log
    "events": "SELECT, INSERT",
    "spaces": "SELECT, INSERT, UPDATE",
    "members": _ALL,
    "outbox": "SELECT, INSERT, DELETE",
    "outbox_cursors": "SELECT, INSERT, UPDATE",
    "schema_migrations": "SELECT",
    # 0002: accounts and sessions
    "users": "SELECT, INSERT, UPDATE",
    "devices": "SELECT, INSERT, UPDATE",
    "auth_sessions": "SELECT, INSERT, UPDATE",
    "refresh_tokens": _ALL,
    "token_revocations": "SELECT, INSERT, DELETE",
    "invitations": _ALL,
    # 0003: read models
    "entity_states": _ALL,
    "projector_checkpoints": "SELECT, INSERT, UPDATE",
    # 0004: reminders and jobs
    "reminders": _ALL,
    "reminder_tasks": _ALL,
    "reminder_cursors": "SELECT, INSERT, UPDATE",
    "job_runs": _ALL,
    # 0006: events the projector set aside (a rebuild clears and refills them)
    "projector_quarantine": _ALL,
    # 0008: the heads of each field, kept by the append
    "field_heads": "SELECT, INSERT, UPDATE",
}


def least_privilege_sql(role: str, database: str, password: str | None = None) -> str:
    """SQL (run by the tables' owner) creating ``role`` with just what Concord needs."""
    if not _NAME.fullmatch(role) or not _NAME.fullmatch(database):
        raise ValueError("role and database must be plain lowercase identifiers")
    login = "LOGIN" if password is None else "LOGIN PASSWORD '" + password.replace("'", "''") + "'"
    lines = [
        f"CREATE ROLE {role} {login};",
        f"GRANT CONNECT ON DATABASE {database} TO {role};",
        f"GRANT USAGE ON SCHEMA public TO {role};",
    ]
    lines += [f"GRANT {privileges} ON {table} TO {role};" for table, privileges in GRANTS.items()]
    return "\n".join(lines) + "\n"
