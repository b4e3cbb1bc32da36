"""Sending at once on an idle TCP connection (chatd.frontends.sendnow): on real loopback
sockets, the bytes skip the reactor's write registration while Twisted holds nothing, and
order and flow control stay Twisted's once the kernel is full."""

import socket

import pytest_twisted
from twisted.internet import defer, protocol, reactor
from twisted.internet.testing import StringTransport

from chatd.frontends.sendnow import _SendNow, sender_for


class Reader(protocol.Protocol):
    """The client's side: keeps what it reads, tells when ``expected`` bytes or the close came."""

    def __init__(self) -> None:
        self.received = bytearray()
        self.expected = 0
        self.enough: defer.Deferred | None = None
        self.closed: defer.Deferred = defer.Deferred()

    def wait_for(self, size: int) -> defer.Deferred:
        """Fire once ``size`` bytes in all have been read."""
        self.expected = size
        self.enough = defer.Deferred()
        self._check()
        return self.enough

    def dataReceived(self, data: bytes) -> None:
        self.received += data
        self._check()

    def _check(self) -> None:
        if self.enough is not None and len(self.received) >= self.expected:
            enough, self.enough = self.enough, None
            enough.callback(bytes(self.received))

    def connectionLost(self, reason) -> None:
        self.closed.callback(None)


class Accepted(protocol.Protocol):
    """The server's side: hands its transport to the test."""

    def connectionMade(self) -> None:
        self.factory.accepted.callback(self)


@defer.inlineCallbacks
def connected_pair():
    """A server transport (a real ``tcp.Server``) and the ``Reader`` on the other end."""
    factory = protocol.Factory.forProtocol(Accepted)
    factory.accepted = defer.Deferred()
    port = reactor.listenTCP(0, factory, interface="127.0.0.1")
    reader = Reader()
    yield protocol.ClientCreator(reactor, lambda: reader).connectTCP(
        "127.0.0.1", port.getHost().port)
    server = yield factory.accepted
    yield port.stopListening()
    return server.transport, reader


def waiting_in_twisted(transport) -> int:
    """Bytes Twisted's transport holds for the socket."""
    return transport._tempDataLen + len(transport.dataBuffer) - transport.offset


@pytest_twisted.inlineCallbacks
def test_an_idle_connection_is_sent_to_at_once_without_registering_for_writing():
    """Nothing waits in Twisted: the bytes are in the kernel before ``write`` returns, and
    the reactor was never asked to watch the socket for writing."""
    transport, reader = yield connected_pair()
    write = sender_for(transport)
    assert write.__self__.__class__ is _SendNow
    write(b"PRIVMSG #lobby :hello\r\n")
    assert waiting_in_twisted(transport) == 0
    assert transport not in reactor.getWriters()
    received = yield reader.wait_for(23)
    assert received == b"PRIVMSG #lobby :hello\r\n"
    transport.loseConnection()
    yield reader.closed


@pytest_twisted.inlineCallbacks
def test_what_the_kernel_does_not_take_waits_in_twisted_and_later_writes_queue_behind_it():
    """A reader that does not read fills the kernel's buffers: the rest of a write, and
    every write after it, goes through Twisted's buffer, and the reader gets all in order."""
    transport, reader = yield connected_pair()
    transport.socket.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    reader.transport.pauseProducing()
    write = sender_for(transport)
    chunks = []
    for number in range(400):
        chunk = bytes([65 + number % 26]) * 65536
        chunks.append(chunk)
        write(chunk)
        if waiting_in_twisted(transport):
            break
    assert waiting_in_twisted(transport), "the kernel took 26 MB from a reader that reads nothing"
    write(b"tail\r\n")
    chunks.append(b"tail\r\n")
    assert transport in reactor.getWriters()
    expected = b"".join(chunks)
    reader.transport.resumeProducing()
    received = yield reader.wait_for(len(expected))
    assert received == expected
    transport.loseConnection()
    yield reader.closed


@pytest_twisted.inlineCallbacks
def test_a_closing_connection_is_written_to_through_twisted_before_the_close():
    """After ``loseConnection`` the bytes take Twisted's path: sent, then the close."""
    transport, reader = yield connected_pair()
    write = sender_for(transport)
    transport.loseConnection()
    write(b"BYE quit\r\n")
    yield reader.closed
    assert bytes(reader.received) == b"BYE quit\r\n"


def test_a_transport_that_is_not_plain_tcp_is_written_to_as_usual():
    """A test's ``StringTransport`` (like TLS or a protocol wrapper) is written to through
    its ``write``, looked up at each write (a wrapper may replace it)."""
    transport = StringTransport()
    write = sender_for(transport)
    write(b"one\r\n")
    written: list[bytes] = []
    transport.write = written.append
    write(b"two\r\n")
    assert transport.value() == b"one\r\n" and written == [b"two\r\n"]


class FakeSocket:
    """``send`` answers as it is told: a count of bytes taken, or an error."""

    def __init__(self, answer) -> None:
        self.answer = answer
        self.sent: list[bytes] = []

    def send(self, data: bytes) -> int:
        if isinstance(self.answer, Exception):
            raise self.answer
        self.sent.append(data[: self.answer])
        return min(self.answer, len(data))


class FakeTCP:
    """The attributes of ``tcp.Connection`` that decide whether to send at once."""

    def __init__(self, answer, **state) -> None:
        self.socket = FakeSocket(answer)
        self._tempDataLen = 0
        self.dataBuffer = b""
        self.offset = 0
        self.TLS = False
        self.connected = True
        self.disconnecting = False
        self.__dict__.update(state)
        self.written: list[bytes] = []

    def write(self, data: bytes) -> None:
        self.written.append(data)


def test_a_partial_send_leaves_the_rest_to_twisted():
    """The kernel takes 3 bytes of 10: the other 7 go to ``transport.write``."""
    transport = FakeTCP(3)
    _SendNow(transport).write(b"0123456789")
    assert transport.socket.sent == [b"012"]
    assert transport.written == [b"3456789"]


def test_a_full_or_failing_socket_leaves_everything_to_twisted():
    """EAGAIN, or a reset connection: Twisted's write path retries or closes as usual."""
    for error in (BlockingIOError(), ConnectionResetError(), InterruptedError()):
        transport = FakeTCP(error)
        _SendNow(transport).write(b"hello\r\n")
        assert transport.written == [b"hello\r\n"]


def test_bytes_waiting_in_twisted_or_tls_or_a_closed_connection_are_never_overtaken():
    """Whenever Twisted holds bytes, TLS is on, or the connection is closing or gone, the
    write goes behind them, through ``transport.write``, and nothing is sent directly."""
    for state in (
        {"_tempDataLen": 5},
        {"dataBuffer": b"waiting", "offset": 2},
        {"TLS": True},
        {"connected": False},
        {"disconnecting": True},
    ):
        transport = FakeTCP(100, **state)
        _SendNow(transport).write(b"hello\r\n")
        assert transport.socket.sent == [], state
        assert transport.written == [b"hello\r\n"], state
