"""The append-only log in PostgreSQL and everything that touches it: migrations
(``eventstore/sql``), append with dedup and group commit, membership and server events
under the space lock, reads, replay, hash-chain verification, audits. See
docs/eventstore.md. ``eventstore.postgres.PostgresEventStore`` is the adapter of
``core.ports.EventStore``.

May import: ``core``, ``crdt``, asyncpg. Imported by ``projector``, ``scheduler``,
``gateway`` and ``concord``.
"""
