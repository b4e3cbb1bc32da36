"""How long one read full of empty lines holds the reactor (issue 9, item 12).

Feeds 16,384, 65,536 and 262,144 bare LFs in one ``dataReceived`` to
Twisted's ``LineReceiver`` (what chatd framed with before: it splits off one
line at a time, copying the rest of the buffer each time) and to chatd's
protocol with the limits off and with the shipped limits. Run from the
project root: ``PYTHONPATH=. python scripts/framing_bench.py``.
"""

import time

from twisted.protocols.basic import LineReceiver

from chatd.config import Config
from tests.support import ChatHarness


class SplittingReceiver(LineReceiver):
    """Twisted's framing with chatd's line limit, doing nothing with the lines."""

    delimiter = b"\n"
    MAX_LENGTH = 4097

    def lineReceived(self, line: bytes) -> None:
        """Nothing: only the framing is measured."""


def milliseconds(protocol, data: bytes) -> float:
    """How long ``protocol`` takes over one read of ``data``."""
    start = time.perf_counter()
    protocol.dataReceived(data)
    return (time.perf_counter() - start) * 1000


def main() -> None:
    """Print one line per size."""
    for count in (16384, 65536, 262144):
        data = b"\n" * count
        split = milliseconds(SplittingReceiver(), data)
        off = ChatHarness(Config(bcrypt_rounds=4, rate_limit=None)).client().protocol
        limited = ChatHarness(Config(bcrypt_rounds=4)).client().protocol
        unlimited, shipped = milliseconds(off, data), milliseconds(limited, data)
        print(
            f"{count} LFs: LineReceiver {split:.0f} ms; chatd, limits off"
            f" {unlimited:.0f} ms; shipped limits {shipped:.1f} ms"
        )


if __name__ == "__main__":
    main()
