"""The least-privilege database role for Concord's processes (docs/eventstore.md).

Migrations run as the owner of the tables; the processes connect as a role that may
read and append events but never change or remove them: with no UPDATE, DELETE or
TRUNCATE privilege on ``events`` and without owning it (so it cannot disable the
triggers either), the log is append-only twice over.
"""

from __future__ import annotations

import re

_NAME = re.compile(r"[a-z_][a-z0-9_]{0,62}")

#: table -> privileges of the application role (tables of migration 0001).
GRANTS: dict[str, str] = {
    "events": "SELECT, INSERT",
    "spaces": "SELECT, INSERT, UPDATE",
    "members": "SELECT, INSERT, UPDATE, DELETE",
    "outbox": "SELECT, INSERT, DELETE",
    "outbox_cursors": "SELECT, INSERT, UPDATE",
    "schema_migrations": "SELECT",
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
