#!/usr/bin/env python3
"""Measure what 200 clients that never read cost the real server.

Runs the flood of ``tests/test_slow_readers_e2e.py`` (200 non-readers in
#lobby, two writers posting 1000-byte messages in batches of 50, an
observer reading along) against the real ``twistd -ny chatd.tac`` and
prints the server's RSS before the flood, its peak (VmHWM) and RSS after,
and the observer's slowest batch. docs/security.md records the figures.

    python scripts/slow_readers.py [--batches 80] [--send-queue-limit 1M]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.serverproc import ServerProcess  # noqa: E402
from tests.test_slow_readers_e2e import NON_READERS, flood  # noqa: E402


def memory(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM (peak RSS) of a process, in bytes, from /proc."""
    found = {}
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            name, _, value = line.partition(":")
            if name in ("VmRSS", "VmHWM"):
                found[name] = int(value.split()[0]) * 1024
    return found


def main() -> int:
    """Run the flood once and print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batches", type=int, default=80, help="batches of 50 (default 80)")
    parser.add_argument("--send-queue-limit", help="CHATD_SEND_QUEUE_LIMIT (default: shipped)")
    args = parser.parse_args()
    env = {}
    if args.send_queue_limit:
        env["CHATD_SEND_QUEUE_LIMIT"] = args.send_queue_limit
    with tempfile.TemporaryDirectory() as directory:
        server = ServerProcess(Path(directory), env=env).start()
        sockets = []
        figures: dict[str, float] = {"slowest": 0.0}
        try:
            def flooding() -> None:
                figures["before"] = memory(server.pid)["VmRSS"]
                figures["started"] = time.monotonic()

            def batch_done(_batch: int) -> None:
                now = time.monotonic()
                figures["slowest"] = max(figures["slowest"], now - figures["started"])
                figures["started"] = now

            _, _, sockets = flood(
                server, batches=args.batches, flooding=flooding, batch_done=batch_done
            )
            after = memory(server.pid)
            dropped = sum(
                ": slow-reader" in line and "closed connection of idle" in line
                for line in server.output
            )
        finally:
            for connected in sockets:
                connected.close()
            server.stop()
    mib = 2**20
    print(
        f"{args.batches * 50} messages of 1000 bytes; RSS before {figures['before'] / mib:.1f} MiB,"
        f" peak {after['VmHWM'] / mib:.1f} MiB, after {after['VmRSS'] / mib:.1f} MiB,"
        f" peak growth {(after['VmHWM'] - figures['before']) / mib:.1f} MiB;"
        f" slowest batch {figures['slowest']:.2f} s;"
        f" {dropped} of {NON_READERS} non-readers dropped so far"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
