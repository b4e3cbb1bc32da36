"""Storage throughput: room messages committed through the server's Database, per backend.

    python scripts/bench_db.py chatd-bench.sqlite3
    python scripts/bench_db.py postgresql://chatd@127.0.0.1:5432/bench

Queues ``--messages`` room messages from ``--senders`` senders over ``--rooms``
rooms, ``--window`` at a time per sender (as sessions pipeline them), through
``chatd.storage.backends.make_database`` (the server's own writer thread and
batching), and prints messages per second, commits, and the p50/p99 time
from ``write`` to its Deferred firing. The database must be empty or
disposable: the script writes to it.
"""

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from twisted.internet import defer, reactor, task

from chatd.storage import backends, transactions


@defer.inlineCallbacks
def run(args) -> defer.Deferred:
    """Fill the queue, wait for every commit, print the figures."""
    database = backends.make_database(args.db, reactor)
    yield database.open()
    rooms = []
    for number in range(args.rooms):
        room_id, _, _ = yield database.write(transactions.open_room, f"#bench{number}", 0, 50)
        rooms.append(room_id)
    latencies: list[float] = []
    per_sender = args.messages // args.senders
    batches_before = database.batches_committed

    @defer.inlineCallbacks
    def sender(number: int):
        room_id = rooms[number % len(rooms)]
        for start in range(0, per_sender, args.window):
            started = time.perf_counter()
            writes = [
                database.write(
                    transactions.add_room_message, room_id, f"s{number}", "x" * 100, sent, "say",
                    f"{number:08x}{sent:012x}",
                )
                for sent in range(start, min(start + args.window, per_sender))
            ]
            yield defer.gatherResults(writes)
            latencies.extend([time.perf_counter() - started] * len(writes))

    started = time.perf_counter()
    yield defer.gatherResults([sender(number) for number in range(args.senders)])
    seconds = time.perf_counter() - started
    commits = database.batches_committed - batches_before
    yield database.close()
    latencies.sort()
    total = len(latencies)
    print(
        f"{backends.display_name(args.db)}: {total} messages in {seconds:.2f}s ="
        f" {total / seconds:,.0f}/s, {commits} commits ({total / max(commits, 1):.1f} a commit),"
        f" write-to-commit p50 {latencies[total // 2] * 1000:.1f} ms,"
        f" p99 {latencies[int(total * 0.99)] * 1000:.1f} ms"
    )


def main() -> None:
    """Parse the arguments and run the benchmark on the reactor."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("db", help="an SQLite file or a postgresql:// URL (written to)")
    parser.add_argument("--messages", type=int, default=20_000)
    parser.add_argument("--senders", type=int, default=100)
    parser.add_argument("--rooms", type=int, default=10)
    parser.add_argument("--window", type=int, default=8, help="writes in flight per sender")
    args = parser.parse_args()
    task.react(lambda _reactor: run(args))


if __name__ == "__main__":
    main()
