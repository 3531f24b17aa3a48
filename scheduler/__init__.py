"""Reminders and every other background job, on APScheduler 3 with its durable state in
our own PostgreSQL tables (docs/scheduler.md). Run it with ``concord scheduler`` (one
of the processes ``concord dev`` supervises). Reads for the gateway:
:mod:`scheduler.queries`.

May import: ``core``, ``crdt``, ``eventstore`` (only the adapter the service builds,
``eventstore.postgres``, and the driver-error translation, ``eventstore.errors``: the
log itself is reached through ``core.ports.EventStore``). Imported by ``concord`` (and
the gateway's read interface).
"""
