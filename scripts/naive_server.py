"""The naive Twisted broadcast server that chatd grew out of: the benchmarks' baseline.

A ``LineReceiver`` whose ``lineReceived`` writes the line to every client in
``factory.clients``, nothing else: no login, no rooms, no limits, no TCP_NODELAY.
It is deliberately left exactly that naive so the benchmark compares chatd against
the plain broadcast loop it replaced.

Usage: ``python scripts/naive_server.py PORT`` (``0`` picks a free port). It listens on
127.0.0.1 only and prints ``listening on <port>`` once it accepts connections.
"""

import sys

from twisted.internet import protocol, reactor
from twisted.protocols.basic import LineReceiver


class Broadcast(LineReceiver):
    """Writes every line it receives to every connected client, itself included."""

    def connectionMade(self):
        self.factory.clients.add(self)

    def connectionLost(self, reason):
        self.factory.clients.discard(self)

    def lineReceived(self, line):
        for client in self.factory.clients:
            client.sendLine(line)


class BroadcastFactory(protocol.ServerFactory):
    """Holds the set of connected clients that every line is written to."""

    protocol = Broadcast

    def __init__(self):
        self.clients = set()


def main(argv):
    """Listen on the port given in ``argv[1]`` and run the reactor until killed."""
    if len(argv) != 2:
        sys.exit("usage: naive_server.py PORT")
    port = reactor.listenTCP(int(argv[1]), BroadcastFactory(), interface="127.0.0.1")
    print(f"listening on {port.getHost().port}", flush=True)
    reactor.run()


if __name__ == "__main__":
    main(sys.argv)
