"""The HTTP and WebSocket gateway (a Litestar app, ``gateway.app.create_app``): auth
and sessions, spaces and invitations, sync over HTTP and WebSocket with live fan-out,
reads, diagnostics and the sandbox. See docs/http-api.md and docs/websocket.md.

May import: ``core``, ``crdt``, ``eventstore``, and of ``projector``/``scheduler`` only
their read interfaces (``projector.readmodel``, ``scheduler.queries``). Imported by
``concord`` only.
"""
