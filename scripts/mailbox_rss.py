"""Measure the real server's memory while it delivers a large mailbox.

Stores 12,500 direct messages of 4 KB (51 MB) for bob straight into a fresh
database, starts ``twistd -ny chatd.tac`` on it, logs bob in with a client
that reads at full speed, and prints how many ``STORED`` lines arrived, how
long it took, and the server's RSS before (VmRSS) and at its peak (VmHWM),
from /proc. Run from the project root:

    python scripts/mailbox_rss.py [messages] [bytes]

docs/security.md records the figures. Not a test: measurements stay out of
the test suite.
"""

import pathlib
import sys
import tempfile
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))

from tests.serverproc import ServerProcess
from tests.test_delivery_e2e import fill_mailbox, log_in, prepare, stored_texts
from tests.test_slow_readers_e2e import memory


def main(count: int = 12_500, size: int = 4000) -> None:
    """Deliver ``count`` stored messages of ``size`` bytes and print what it cost."""
    directory = pathlib.Path(tempfile.mkdtemp(prefix="chatd-mailbox-"))
    connection = prepare(directory, ["alice", "bob"])
    texts = [f"{number:05d} " + "z" * size for number in range(count)]
    fill_mailbox(connection, "bob", texts)
    connection.close()
    server = ServerProcess(directory).start()
    try:
        # A first login starts the bcrypt workers: measure after it.
        alice, _lines = log_in(server, "alice")
        before = memory(server.pid)
        started = time.monotonic()
        bob, lines = log_in(server, "bob")
        took = time.monotonic() - started
        after = memory(server.pid)
        received = stored_texts(lines)
        print(f"{len(received)} of {count} STORED lines, {lines[-1]!r}, in {took:.2f} s")
        print(
            f"RSS before {before['VmRSS'] / 2**20:.1f} MiB, peak {after['VmHWM'] / 2**20:.1f} MiB,"
            f" growth {(after['VmHWM'] - before['VmRSS']) / 2**20:.1f} MiB"
        )
        bob.close()
        alice.close()
    finally:
        server.stop()


if __name__ == "__main__":
    main(*(int(argument) for argument in sys.argv[1:3]))
