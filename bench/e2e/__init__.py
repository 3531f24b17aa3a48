"""End-to-end benchmarks: the whole system, as devices see it.

Each workload is one command (``python -m bench.e2e.<workload>``) that starts what it
needs on loopback (its own ``concord gateway`` process or processes, the projector and
the scheduler as separate processes, on a scratch database), drives it from separate
driver processes, prints a table with its ratios, and with ``--record`` appends the
result to docs/benchmarks.md. See docs/benchmarks.md, "The whole system (end to end)".
"""
