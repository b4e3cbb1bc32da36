"""What the Redis fan-out costs per room message: one node alone against two through Redis.

    python scripts/cluster_cost.py [--messages N] [--per-turn K]

Starts a private redis-server (it must be installed), then runs alice and bob
in #lobby twice in this one process, on one in-memory database: once on one
node (``LocalFanout``) and once with alice on one node and bob on another,
each with its own ``RedisFanout``. alice posts N messages, K per reactor
turn; the run ends when bob was delivered all of them. It prints the CPU
time per message (both nodes together, as they share the process) and the
wall time. K=1 is the worst case for the bus (one announcement per message);
under load the writer commits in batches and K is large. Results are in
docs/cluster.md.
"""

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from twisted.internet import defer, reactor

from chatd.cluster.redis import RedisFanout
from chatd.core.service import ChatService
from chatd.storage import transactions
from tests.services import start_redis
from tests.support import InlineDatabase, RecordingClient


class Counting(RecordingClient):
    """A mind that counts room messages and fires ``done`` at ``expected``."""

    def __init__(self, expected: int) -> None:
        super().__init__()
        self.expected = expected
        self.seen = 0
        self.done: defer.Deferred = defer.Deferred()

    def deliver(self, event) -> None:
        self.seen += event.count
        if self.seen >= self.expected and not self.done.called:
            self.done.callback(None)


async def run(clustered: bool, url: str | None, messages: int, per_turn: int) -> tuple:
    """One run; (CPU seconds, wall seconds)."""
    database = InlineDatabase(":memory:")
    for name in ("alice", "bob"):
        database.write(transactions.create_user, name, "x", 0)
    nodes = []
    for _ in range(2 if clustered else 1):
        fanout = RedisFanout(url, reactor) if clustered else None
        chat = ChatService(database, reactor, account_poll_seconds=3600, fanout=fanout)
        chat.startService()
        if fanout is not None:
            fanout.start()
            await fanout.when_ready()
        nodes.append((chat, fanout))
    alice = await nodes[0][0].start_session("alice", RecordingClient())
    bob_sees = Counting(messages)
    await nodes[-1][0].start_session("bob", bob_sees)
    cpu, wall = time.process_time(), time.perf_counter()
    for number in range(messages):
        alice.say(f"message {number}")
        if number % per_turn == per_turn - 1:
            turn: defer.Deferred = defer.Deferred()
            reactor.callLater(0, turn.callback, None)
            await turn
    await bob_sees.done.addTimeout(300, reactor)
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    for chat, fanout in nodes:
        chat.stopService()
        if fanout is not None:
            await fanout.stop()
    return cpu, wall


async def main(arguments) -> None:
    redis = start_redis(Path(tempfile.mkdtemp(prefix="chatd-bench-redis-")))
    try:
        for clustered in (False, True):
            cpu, wall = await run(clustered, redis.url, arguments.messages, arguments.per_turn)
            label = "two nodes, Redis" if clustered else "one node alone "
            print(
                f"{label}: {arguments.messages} messages, {arguments.per_turn} a turn:"
                f" {cpu / arguments.messages * 1e6:.0f} us CPU per message, wall {wall:.2f} s"
            )
    finally:
        redis.process.kill()
        redis.process.wait()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=5000)
    parser.add_argument("--per-turn", type=int, default=100)
    options = parser.parse_args()
    finished = defer.ensureDeferred(main(options))
    finished.addErrback(lambda failure: failure.printTraceback())
    finished.addBoth(lambda _: reactor.stop())
    reactor.run()
