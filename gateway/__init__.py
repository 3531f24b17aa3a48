"""The HTTP and WebSocket gateway (a Litestar app, ``gateway.app.create_app``): auth
and sessions, spaces and invitations, sync over HTTP and WebSocket with live fan-out,
reads, diagnostics and the sandbox. See docs/http-api.md and docs/websocket.md.

Resources (the pool, the NATS bus, the event store, sessions, tokens, limits, the
WebSocket registry...) are built and closed by the app's lifespan (``gateway.app``).
Each handler gets the ones it uses, and only those, by Litestar's dependency injection:
it declares them as parameters named after them, ``store: Resource[ReadStore]``, and
one provider per resource, registered once at app level, hands them over
(``gateway.context``). Nothing else reads the app's state.

May import: ``core``, ``crdt``, ``eventstore``, and of ``projector``/``scheduler`` only
their read interfaces (``projector.readmodel``, ``scheduler.queries``). Imported by
``concord`` only.
"""
