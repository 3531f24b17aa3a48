"""Every end-to-end workload, one after the other, each in a process of its own.

    .venv/bin/python -m bench.e2e.all [--quick] [--record] [--dsn ...] [--nats ...]

Options after the workload list are passed to each workload (``--only ingest,peer`` to
run a few). A failed workload does not stop the others; the exit status says if any
failed. At full size the whole suite takes about 20 minutes on two cores.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time

WORKLOADS = ("ingest", "fanout", "catchup", "connections", "hotspace", "reminders", "peer")


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.e2e.all", description=__doc__)
    parser.add_argument("--only", default=",".join(WORKLOADS), help="workloads, comma-separated")
    args, passthrough = parser.parse_known_args()
    failed = []
    for name in args.only.split(","):
        if name not in WORKLOADS:
            parser.error(f"unknown workload {name!r} (one of {', '.join(WORKLOADS)})")
        print(f"== bench.e2e.{name}", flush=True)
        began = time.monotonic()
        code = subprocess.call([sys.executable, "-m", f"bench.e2e.{name}", *passthrough])
        print(
            f"== bench.e2e.{name}: exit {code} after {time.monotonic() - began:.0f} s", flush=True
        )
        if code:
            failed.append(name)
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
