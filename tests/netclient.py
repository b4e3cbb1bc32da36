"""A Twisted line client and an in-process server on real loopback sockets.

``start_server`` runs a whole ``ChatdServer`` (real threads, real SQLite
file, port 0) on the test's reactor; ``connect`` opens a real TCP
connection to it. Every wait is on a Deferred that fires when the awaited
line arrives, with a timeout so a missing line fails the test.
"""

from collections.abc import Callable

from twisted.internet import defer, reactor
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.protocols.basic import LineReceiver

from chatd.app import ChatdServer
from chatd.config import Config

TIMEOUT = 15.0


class LineCollector(LineReceiver):
    """Collects server lines; ``expect`` fires when a wanted line arrives."""

    delimiter = b"\r\n"
    MAX_LENGTH = 1 << 20

    def __init__(self) -> None:
        self.lines: list[str] = []
        self._read = 0
        self._waiting: list[tuple[Callable[[str], bool], defer.Deferred]] = []
        self.closed: defer.Deferred = defer.Deferred()

    def lineReceived(self, line: bytes) -> None:
        """Keep the line and wake whoever waits for it."""
        self.lines.append(line.decode("utf-8"))
        self._wake()

    def connectionLost(self, reason=None) -> None:
        """Fire ``closed``; waiters still waiting fail."""
        self.closed.callback(None)
        for _, waiting in self._waiting:
            waiting.errback(ConnectionError(f"closed; lines so far: {self.lines}"))
        self._waiting = []

    def _wake(self) -> None:
        while self._waiting:
            wanted, waiting = self._waiting[0]
            for index in range(self._read, len(self.lines)):
                if wanted(self.lines[index]):
                    found = self.lines[self._read : index + 1]
                    self._read = index + 1
                    self._waiting.pop(0)
                    waiting.callback(found)
                    break
            else:
                return

    def expect(self, wanted: str | Callable[[str], bool]) -> defer.Deferred:
        """Fire with the unread lines up to the first that is (or satisfies) ``wanted``."""
        predicate = wanted if callable(wanted) else (lambda line: line == wanted)
        waiting: defer.Deferred = defer.Deferred()
        waiting.addTimeout(TIMEOUT, reactor)
        self._waiting.append((predicate, waiting))
        self._wake()
        return waiting

    def send(self, line: str | bytes) -> None:
        """Send one line."""
        self.transport.write((line.encode() if isinstance(line, str) else line) + b"\n")

    def command(self, line: str) -> defer.Deferred:
        """Send ``line``; fire with the lines up to its final reply."""
        self.send(line)
        return self.expect(lambda text: text.startswith(("OK ", "ERR ")))

    @defer.inlineCallbacks
    def login(self, name: str, password: str = "password1"):
        """Register if needed and log in; fire with the login's lines."""
        yield self.command(f"/register {name} {password}")
        lines = yield self.command(f"/login {name} {password}")
        assert lines[-1] == f"OK login {name}", lines
        return lines


@defer.inlineCallbacks
def start_server(tmp_path, **settings):
    """Start a ChatdServer on 127.0.0.1, port 0; fire with (server, port)."""
    values = {
        "bcrypt_rounds": 4,
        "rate_limit": None,
        "irc_listen": ("tcp:0:interface=127.0.0.1",),
        "web_listen": (),
    }
    server_options = {"freeze_after_start": settings.pop("freeze_after_start", False)}
    values.update(settings)
    config = Config(
        listen=("tcp:0:interface=127.0.0.1",), db_path=str(tmp_path / "chatd.sqlite3"), **values
    )
    server = ChatdServer(config, reactor, **server_options)
    server.startService()
    port = yield server.listeners[0].listening
    return server, port.getHost().port


@defer.inlineCallbacks
def connect(port: int, host: str = "127.0.0.1", bind: str | None = None):
    """Connect a LineCollector; fire with it once HELLO has arrived."""
    endpoint = TCP4ClientEndpoint(
        reactor, "127.0.0.1", port, bindAddress=(bind, 0) if bind else None
    )
    client = yield connectProtocol(endpoint, LineCollector())
    yield client.expect(lambda line: line.startswith("HELLO "))
    return client
