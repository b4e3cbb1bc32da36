"""The connection: a line protocol that pairs every client line with its final reply.

Everything in this module runs in the reactor thread.
"""

from __future__ import annotations

import enum
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from OpenSSL import SSL
from twisted.internet import defer, error, ssl
from twisted.internet.endpoints import HostnameEndpoint, wrapClientTLS
from twisted.internet.interfaces import IStreamClientEndpoint
from twisted.internet.protocol import Factory
from twisted.protocols.basic import LineReceiver
from twisted.python.failure import Failure
from zope.interface import implementer

from chatd.client.lines import ServerLine, parse_server_line
from chatd.frontends.keepalive import enable_tcp_keepalive


class Purpose(enum.Enum):
    """Why the client sent a line, which decides how much of its answer is shown."""

    TYPED = "typed"
    """The user typed it: everything it causes is shown."""
    LOGIN = "login"
    """The ``--user`` login of an interactive client: shown like a typed one."""
    QUIET_LOGIN = "quiet-login"
    """The ``--user`` login in pipe mode: only stored messages and errors are shown."""
    SCRIPTED = "scripted"
    """A line from a pipe or typed at the terminal: shown like a typed one, except
    ``ERR rate-limited``, which the runner answers by sending the line again a
    little later."""
    RESUME = "resume"
    """Logging in and rejoining after a reconnect: only what was missed is shown."""
    PONG = "pong"
    """The answer to a keep-alive ``PING``: nothing is shown."""


@dataclass
class PendingCommand:
    """A client line waiting for its final reply."""

    line: str
    purpose: Purpose
    replied: defer.Deferred = field(default_factory=defer.Deferred)


def describe_reason(reason: BaseException | Failure) -> str:
    """Why a connection failed or ended, in a few words for people."""
    value = reason.value if isinstance(reason, Failure) else reason
    if isinstance(value, SSL.Error) and value.args and isinstance(value.args[0], list):
        # OpenSSL reports a list of (library, function, reason) triples.
        details = [part[-1] for part in value.args[0] if isinstance(part, tuple) and part[-1]]
        return "TLS: " + ("; ".join(details) or "handshake failed")
    return str(value).strip().rstrip(".") or type(value).__name__


class ServerClosedSession(Exception):
    """The server said ``BYE``: no line sent after that will be answered."""


class NotConnected(Exception):
    """There is no connection to send the line on."""


class ConnectionListener(Protocol):
    """What the protocol tells the rest of the client."""

    def connected(self, protocol: ChatProtocol) -> None:
        """A connection is up (no line has arrived yet)."""

    def line_received(self, line: ServerLine, command: PendingCommand | None) -> None:
        """A server line; ``command`` is the oldest unanswered client line, if any."""

    def disconnected(self, reason: Failure) -> None:
        """The connection is gone."""


class ChatProtocol(LineReceiver):
    """One connection to a chatd server.

    The final-reply rule of the protocol (one OK or ERR per client line, in
    order) lets a simple queue pair each reply with its line: whatever arrives
    while a line is the oldest unanswered one is either caused by it or an
    unrelated event, and its final reply is the next OK or ERR.
    """

    # The server ends lines with CRLF; splitting on LF and dropping the CR also
    # copes with a server that sends bare LF.
    delimiter = b"\n"
    # WHO lines of big rooms are long; the limit only guards against a server
    # that never ends a line (LineReceiver then drops the connection).
    MAX_LENGTH = 1 << 20

    def __init__(self, listener: ConnectionListener) -> None:
        self.listener = listener
        self.greeted: defer.Deferred[ServerLine] = defer.Deferred()
        self._pending: deque[PendingCommand] = deque()
        self._said_bye = False
        self._open = False

    @property
    def usable(self) -> bool:
        """True while lines sent now can still be answered."""
        return self._open and not self._said_bye

    def connectionMade(self) -> None:
        """Tell the listener; the server speaks first, with HELLO.

        TCP keep-alive finds a server that is gone without a word (its host
        down, the network cut) even while nobody types.
        """
        enable_tcp_keepalive(self.transport)
        self._open = True
        self.listener.connected(self)

    def lineReceived(self, data: bytes) -> None:
        """Pass the line on and, when it is a final reply, settle its command."""
        line = parse_server_line(data.decode("utf-8", "replace").removesuffix("\r"))
        command = self._pending[0] if self._pending else None
        if line.is_final_reply and command is not None:
            self._pending.popleft()
        if line.kind == "HELLO" and not self.greeted.called:
            self.greeted.callback(line)
        self.listener.line_received(line, command)
        if line.is_final_reply and command is not None:
            command.replied.callback(line)
        if line.kind == "PING" and self.usable:
            # Answered here rather than by the listener so that keep-alive works
            # the same in every mode, raw included.
            self.send_command(f"/pong {line.fields[0]}".rstrip(), Purpose.PONG).addErrback(
                lambda _: None
            )
        if line.kind == "BYE":
            self._said_bye = True
            self._fail_pending(Failure(ServerClosedSession(line.fields[0])))

    def send_command(self, line: str, purpose: Purpose = Purpose.TYPED) -> defer.Deferred:
        """Send a client line; the result fires with its final reply (a ServerLine).

        It fails with NotConnected when the line cannot be sent, and with the
        reason the connection ended when it ends before the reply.
        """
        if not self.usable:
            return defer.fail(NotConnected())
        command = PendingCommand(line, purpose)
        self._pending.append(command)
        self.sendLine(line.encode("utf-8"))
        return command.replied

    def connectionLost(self, reason: Failure = error.ConnectionDone) -> None:
        """Fail whatever is still waiting, then tell the listener."""
        self._open = False
        self._fail_pending(reason)
        if not self.greeted.called:
            self.greeted.errback(reason)
        self.listener.disconnected(reason)

    def _fail_pending(self, reason: Failure) -> None:
        waiting, self._pending = self._pending, deque()
        for command in waiting:
            command.replied.errback(reason)


class ChatFactory(Factory):
    """Makes a ChatProtocol for each connection, all reporting to one listener."""

    def __init__(self, listener: ConnectionListener) -> None:
        self.listener = listener

    def buildProtocol(self, addr) -> ChatProtocol:
        """A protocol for a new connection."""
        protocol = ChatProtocol(self.listener)
        protocol.factory = self
        return protocol


def make_endpoint(
    reactor,
    host: str,
    port: int,
    *,
    tls: bool = False,
    ca_pem: bytes | None = None,
    timeout: float = 10,
) -> IStreamClientEndpoint:
    """The endpoint for ``--host``/``--port``, wrapped in TLS for ``--tls``.

    With ``ca_pem`` the server's certificate must be signed by that certificate
    (or be it, for a self-signed server); without it the platform's trust store
    decides. Either way the certificate must name ``host``.
    """
    endpoint = HostnameEndpoint(reactor, host, port, timeout=timeout)
    if not tls:
        return endpoint
    trust = ssl.Certificate.loadPEM(ca_pem) if ca_pem is not None else None
    options = ssl.optionsForClientTLS(host, trustRoot=trust)
    return wrapClientTLS(options, endpoint)


def parse_host(text: str, default_port: int) -> tuple[str, int]:
    """``--host`` as (host, port): ``name``, ``name:port``, ``[v6]:port`` or a bare IPv6
    address; a value without a port takes ``default_port``. ``ValueError`` if malformed."""
    text = text.strip()
    if text.startswith("["):
        host, bracket, rest = text[1:].partition("]")
        if not bracket or not host or (rest and not rest.startswith(":")):
            raise ValueError(f"{text!r} is not [address] or [address]:port")
        port_text = rest[1:] if rest else ""
    elif text.count(":") == 1:
        host, _, port_text = text.partition(":")
    else:
        host, port_text = text, ""
    if not host:
        raise ValueError(f"{text!r} names no host")
    if not port_text:
        return host, default_port
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise ValueError(f"the port in {text!r} must be a number from 1 to 65535")
    return host, int(port_text)


def host_text(host: str, port: int) -> str:
    """``host:port`` for people (IPv6 addresses in brackets)."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


@implementer(IStreamClientEndpoint)
class FailoverEndpoint:
    """Several servers (the nodes of a cluster): each connection goes to the next one.

    ``connect`` starts with the server after the one the previous connection
    went to (the first server at first) and falls through to the following
    ones, each tried once, until one answers; it fails with the last
    server's reason when none does. So a client whose node died reconnects
    to another node at once instead of waiting for the dead one, and comes
    back round to it later. ``on_connected(index)`` hears which server took
    each connection. One server is simply that server, every time (a name
    with several addresses is one server: ``HostnameEndpoint`` tries each
    address it resolves to).
    """

    def __init__(
        self,
        endpoints: list[IStreamClientEndpoint],
        on_connected: Callable[[int], None] = lambda index: None,
    ) -> None:
        if not endpoints:
            raise ValueError("at least one endpoint")
        self.endpoints = list(endpoints)
        self.on_connected = on_connected
        # The server the next connect starts with.
        self._next = 0

    @defer.inlineCallbacks
    def connect(self, factory):
        """Connect to the first of the servers, in turn from the next one, that answers."""
        start = self._next
        failure = None
        for step in range(len(self.endpoints)):
            index = (start + step) % len(self.endpoints)
            try:
                protocol = yield self.endpoints[index].connect(factory)
            except Exception:
                failure = Failure()
                continue
            # Lost later, the connection is made again to the next server.
            self._next = (index + 1) % len(self.endpoints)
            self.on_connected(index)
            return protocol
        self._next = (start + 1) % len(self.endpoints)
        failure.raiseException()


@implementer(IStreamClientEndpoint)
class ReportingEndpoint:
    """An endpoint that tells ``on_failure`` why a connection attempt failed.

    ClientService keeps the reason to itself; the user should see it.
    """

    def __init__(self, wrapped: IStreamClientEndpoint, on_failure: Callable[[Failure], None]):
        self._wrapped = wrapped
        self._on_failure = on_failure

    def connect(self, factory):
        """Connect through the wrapped endpoint, reporting a failure and passing it on."""

        def report(failure: Failure) -> Failure:
            self._on_failure(failure)
            return failure

        return self._wrapped.connect(factory).addErrback(report)
