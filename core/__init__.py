"""What every Concord component shares: the wire types (``core.wire``), error codes
(``core.errors``), settings, ids at the boundary, keys, the NATS contract
(``core.events``) and the bus adapter (``core.natsbus``), ops from rows, metrics, and
the ports (``core.ports``: the Protocols the adapters implement).

May import: ``crdt`` (and third-party libraries). Imported by every other package.
"""
