"""Reminders and every other background job (docs/scheduler.md).

Run it with ``concord scheduler`` (or inside ``concord dev``): :mod:`concord.scheduler`.
Reads for the gateway, injected by the composition root (the gateway may not import
this package): :mod:`scheduler.queries`.
"""
