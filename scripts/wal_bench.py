"""What bounding the write-ahead log costs: saturating writes with and without the bound.

    python scripts/wal_bench.py [--rows N] [--row-bytes B] [--in-flight K] [--limit-mib M]

Runs chatd's real ``Database`` (writer, reader and checkpointer threads) on
a fresh file in a temporary directory, keeps K room messages of B bytes in
flight until N are committed, once with the WAL bounded at M MiB (the
server's default, 64) and once unbounded (PASSIVE checkpoints only, as
before), and prints for each: rows committed per second, the largest WAL
file seen after a commit, the WAL left at the end, and the TRUNCATE
checkpoints (how many, and the longest, which is how long the writer was
held up at most). Results are in docs/benchmarks.md.
"""

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from twisted.internet import defer, reactor

from chatd.storage import transactions
from chatd.storage.sqlite import database as sqlite_database
from chatd.storage.sqlite import schema
from chatd.storage.sqlite.database import CHECKPOINT_SECONDS, Database


@defer.inlineCallbacks
def run(directory: str, rows: int, row_bytes: int, in_flight: int, limit: int):
    """One run; fire with a dict of what was measured."""
    path = os.path.join(directory, f"bench-{limit}.sqlite3")
    wal = path + "-wal"
    largest = [0]
    truncates: list[float] = []

    def committed(seconds: float, writes: int) -> None:
        largest[0] = max(largest[0], os.stat(wal).st_size)

    def checkpointed(mode: str, seconds: float, wal_bytes: int) -> None:
        if mode == "TRUNCATE":
            truncates.append(seconds)

    database = Database(
        path, reactor, on_commit=committed, on_checkpoint=checkpointed, wal_limit_bytes=limit
    )
    yield database.open()
    room_id, _, _ = yield database.write(transactions.open_room, "#bench", 0, 1)
    text = "x" * row_bytes
    sent = [0]
    running = [0]
    done: defer.Deferred = defer.Deferred()

    def one_more(_=None) -> None:
        if sent[0] < rows:
            sent[0] += 1
            running[0] += 1
            database.write(transactions.add_room_message, room_id, "bench", text, 0).addCallback(
                finished
            )
        elif running[0] == 0 and not done.called:
            done.callback(None)

    def finished(_) -> None:
        running[0] -= 1
        one_more()

    started = time.perf_counter()
    for _ in range(in_flight):
        one_more()
    yield done
    seconds = time.perf_counter() - started
    # Two checkpoint intervals of quiet: the bounded WAL empties itself.
    yield deferred_sleep(2.5 * CHECKPOINT_SECONDS)
    left = os.stat(wal).st_size
    yield database.close()
    return {
        "rows/s": rows / seconds,
        "largest WAL MiB": largest[0] / 2**20,
        "WAL left MiB": left / 2**20,
        "truncates": len(truncates),
        "longest truncate ms": 1000 * max(truncates, default=0.0),
    }


def deferred_sleep(seconds: float) -> defer.Deferred:
    """A Deferred that fires after ``seconds`` (a benchmark may wait on the clock)."""
    waiting: defer.Deferred = defer.Deferred()
    reactor.callLater(seconds, waiting.callback, None)
    return waiting


@defer.inlineCallbacks
def main(args) -> None:
    """Run bounded and unbounded, print a table row for each."""
    with tempfile.TemporaryDirectory() as directory:
        print(
            f"{args.rows} rows of {args.row_bytes} bytes, {args.in_flight} in flight,"
            f" WAL limit {args.limit_mib} MiB"
        )
        idle_bytes = sqlite_database.IDLE_WAL_BYTES
        for label, limit in (("bounded", args.limit_mib * 2**20), ("unbounded", 1 << 62)):
            # Unbounded is chatd before the bound: PASSIVE checkpoints only, even when idle.
            sqlite_database.IDLE_WAL_BYTES = idle_bytes if label == "bounded" else 1 << 62
            result = yield run(directory, args.rows, args.row_bytes, args.in_flight, limit)
            print(label, " ".join(f"{key}={value:.1f}" for key, value in result.items()))
    reactor.stop()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=400_000)
    parser.add_argument("--row-bytes", type=int, default=300)
    parser.add_argument("--in-flight", type=int, default=512)
    parser.add_argument("--limit-mib", type=int, default=schema.WAL_LIMIT_BYTES // 2**20)
    reactor.callWhenRunning(main, parser.parse_args())
    reactor.run()
