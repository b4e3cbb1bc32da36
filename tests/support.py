"""Test doubles and harnesses shared by the unit and integration tests.

``InlineDatabase`` and ``InlineHasher`` run the real transaction bodies and
the real bcrypt code synchronously, so the protocol and the service can be
driven line by line over ``StringTransport`` with a ``task.Clock`` and no
threads: every Deferred has fired by the time ``dataReceived`` returns.
"""

from twisted.internet import defer, task
from twisted.internet.address import IPv4Address
from twisted.internet.testing import StringTransport
from zope.interface import implementer

from chatd.auth.accounts import Accounts
from chatd.auth.cred import make_portal
from chatd.auth.passwords import PasswordHasher
from chatd.config import Config
from chatd.core.events import Event
from chatd.core.interfaces import IChatClient
from chatd.core.service import ChatService
from chatd.frontends.line.protocol import ChatServerFactory
from chatd.frontends.line.render import encode
from chatd.ops.telemetry import Telemetry
from chatd.storage.sqlite import schema


class InlineDatabase:
    """The ``Database`` interface over one connection, each call committed at once."""

    # The dialect's schema module: its connect, migrate and transaction.
    _schema = schema

    def __init__(self, path: str = ":memory:") -> None:
        self.path = path
        self.connection = self._schema.connect(path)
        self._schema.migrate(self.connection)
        self.writes = 0
        self.fail_writes: Exception | None = None

    def write(self, body, *args) -> defer.Deferred:
        """Run a write body in a transaction of its own."""
        if self.fail_writes is not None:
            return defer.fail(self.fail_writes)
        self.writes += 1
        try:
            with self._schema.transaction(self.connection):
                return defer.succeed(body(self.connection, *args))
        except Exception as error:
            return defer.fail(error)

    def read(self, body, *args) -> defer.Deferred:
        """Run a read body."""
        return defer.maybeDeferred(body, self.connection, *args)

    def close(self) -> defer.Deferred:
        """Close the connection."""
        self.connection.close()
        return defer.succeed(None)


class InlinePostgresDatabase(InlineDatabase):
    """``InlineDatabase`` on PostgreSQL: the same transaction bodies on one psycopg
    connection to ``url`` (migrated here), each write committed at once."""

    def __init__(self, url: str) -> None:
        from chatd.storage.postgres import schema as postgres_schema

        self._schema = postgres_schema
        super().__init__(url)


# What a ``ChatHarness`` made without a database uses: a fresh ``InlineDatabase``,
# unless a test module points this at another maker (the contract on PostgreSQL,
# tests/frontends/line/test_protocol.py).
make_inline_database = InlineDatabase


class InlineHasher(PasswordHasher):
    """The real bcrypt code at the lowest cost, run synchronously."""

    def __init__(self, rounds: int = 4) -> None:
        super().__init__(reactor=None, rounds=rounds)

    def start(self) -> defer.Deferred:
        """Compute the dummy hash at once."""
        return self._run(self._hash_dummy).addCallback(self._keep_dummy)

    def _hash_dummy(self) -> str:
        from chatd.auth.passwords import hash_password

        return hash_password(b"dummy", self.rounds)

    def _run(self, function, *args) -> defer.Deferred:
        return defer.maybeDeferred(function, *args)


@implementer(IChatClient)
class RecordingClient:
    """A mind that keeps what the service sends it, for service tests."""

    def __init__(self) -> None:
        self.events: list[Event] = []
        self.closed_with: str | None = None
        self.connected = True

    def deliver(self, event: Event) -> None:
        """Keep ``event``."""
        self.events.append(event)

    def deliver_bulk(self, source) -> defer.Deferred:
        """Keep every page's events as it comes; each page counts as handed over."""

        def keep(page) -> defer.Deferred | None:
            if page is None:
                return None
            self.events.extend(page.events)
            if page.handed_over is not None:
                page.handed_over(True)
            return defer.maybeDeferred(source.next_page).addCallback(keep)

        return defer.maybeDeferred(source.next_page).addCallback(keep)

    def disconnect(self, reason: str) -> None:
        """Remember the reason."""
        self.closed_with = reason
        self.connected = False

    def lines(self) -> list[str]:
        """The events as wire lines, then forget them."""
        lines = [encode(event).decode().rstrip("\r\n") for event in self.events]
        self.events.clear()
        return lines


class LineTransport(StringTransport):
    """A StringTransport that knows when it was closed by the protocol."""

    def __init__(self, host: str = "127.0.0.1", port: int = 40000) -> None:
        super().__init__(peerAddress=IPv4Address("TCP", host, port))
        self.closed = False

    def loseConnection(self) -> None:
        """Close as a real transport would, telling the protocol."""
        super().loseConnection()
        if not self.closed and self.protocol is not None:
            self.closed = True
            self.protocol.connectionLost(None)

    abortConnection = loseConnection


class Client:
    """One connection to a ``ChatHarness`` server, driven a line at a time."""

    def __init__(
        self,
        harness: "ChatHarness",
        host: str = "127.0.0.1",
        port: int = 40000,
        transport: LineTransport | None = None,
    ):
        self.harness = harness
        self.transport = transport or LineTransport(host, port)
        self.protocol = harness.factory.buildProtocol(self.transport.getPeer())
        self.transport.protocol = self.protocol
        self.protocol.makeConnection(self.transport)
        self._read = 0

    def send(self, *lines: str | bytes, bytewise: bool = False) -> list[str]:
        """Send lines (LF added when missing); return the server lines they caused."""
        for line in lines:
            data = line.encode() if isinstance(line, str) else line
            if not data.endswith(b"\n"):
                data += b"\n"
            self.feed(data, bytewise=bytewise)
        return self.lines()

    def feed(self, data: bytes, bytewise: bool = False) -> None:
        """Hand raw bytes to the protocol, whole or one byte per read."""
        if bytewise:
            for index in range(len(data)):
                self.protocol.dataReceived(data[index : index + 1])
                self.harness.end_turn()
        else:
            self.protocol.dataReceived(data)
            self.harness.end_turn()

    def lines(self) -> list[str]:
        """Server lines written since the last call, without their CRLF."""
        value = self.transport.value()
        new, self._read = value[self._read :], len(value)
        assert new == b"" or new.endswith(b"\r\n"), new
        return [line.decode() for line in new.split(b"\r\n")[:-1]]

    def login(self, name: str, password: str = "password1") -> list[str]:
        """Register (if needed) and log in; return the login's lines."""
        self.send(f"/register {name} {password}")
        lines = self.send(f"/login {name} {password}")
        assert lines[-1] == f"OK login {name}", lines
        return lines

    def close(self) -> None:
        """Drop the connection from the client's side."""
        self.transport.loseConnection()


class ChatHarness:
    """A whole chatd server in memory: inline database and bcrypt, fake clock."""

    def __init__(
        self,
        config: Config | None = None,
        database: InlineDatabase | None = None,
        hasher: PasswordHasher | None = None,
    ):
        # By default no limit on lines, stored messages or new rooms: tests of
        # those limits ask for them.
        self.config = config or Config(
            bcrypt_rounds=4, rate_limit=None, stored_message_limit=None, room_creation_limit=None
        )
        self.clock = task.Clock()
        self.clock.advance(1_764_064_800)
        self.database = database or make_inline_database()
        self.hasher = hasher or InlineHasher(self.config.bcrypt_rounds)
        self.hasher.start()
        self.chat = ChatService(
            self.database,
            self.clock,
            telemetry=Telemetry(log_messages=self.config.log_messages),
            mailbox_limit=self.config.mailbox_limit,
        )
        self.accounts = Accounts(
            self.database, self.hasher, self.clock, self.config.registration_open
        )
        self.portal = make_portal(self.chat, self.accounts)
        self.telemetry = self.chat.telemetry
        self.factory = ChatServerFactory(
            self.config, self.accounts, self.portal, self.clock, self.telemetry, chat=self.chat
        )

    def end_turn(self) -> None:
        """Run what the reactor runs at the end of a turn: the flush of room messages."""
        self.clock.advance(0)

    def commit_held(self) -> None:
        """Commit the writes a ``SlowDatabase`` holds, as one reactor turn would."""
        self.database.flush()
        self.end_turn()

    def client(self, host: str = "127.0.0.1", port: int = 40000) -> Client:
        """Connect a new client; its HELLO is already read."""
        client = Client(self, host, port)
        hello = client.lines()
        assert hello[0].startswith("HELLO "), hello
        return client

    def logged_in(self, name: str, password: str = "password1") -> Client:
        """A new client logged in as ``name`` (registered first if needed)."""
        client = self.client()
        client.login(name, password)
        return client


class SlowDatabase(InlineDatabase):
    """An inline database whose writes wait until the test calls ``flush``.

    It stands in for a commit that takes a while, to show what the protocol
    does while a command waits on the database.
    """

    def __init__(self, path: str = ":memory:") -> None:
        super().__init__(path)
        self.pending: list[tuple] = []
        self.holding = False

    def write(self, body, *args) -> defer.Deferred:
        """Queue the write while holding; otherwise commit it at once."""
        if not self.holding:
            return super().write(body, *args)
        done: defer.Deferred = defer.Deferred()
        self.pending.append((body, args, done))
        return done

    def flush(self) -> None:
        """Commit the writes queued so far (not those they cause), in order."""
        batch, self.pending = self.pending, []
        for body, args, done in batch:
            super().write(body, *args).chainDeferred(done)
