"""Dead peers without a human's answer (issue 9): TCP keep-alive on real sockets, and the
server's PING, for real, only for clients that answer it."""

import socket

import pytest
import pytest_twisted
from twisted.internet import defer, reactor
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.internet.testing import StringTransport

from chatd.client.connection import ChatProtocol as ClientProtocol
from chatd.config import Config, ConfigError, KeepAlive
from chatd.frontends.keepalive import enable_tcp_keepalive, socket_of
from tests.netclient import connect, start_server


def keepalive_of(handle: socket.socket) -> tuple[int, int, int, int]:
    """SO_KEEPALIVE, TCP_KEEPIDLE, TCP_KEEPINTVL and TCP_KEEPCNT of a socket."""
    return (
        handle.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE),
        handle.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE),
        handle.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL),
        handle.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT),
    )


def server_socket(server) -> socket.socket:
    """The server's side of its one connection."""
    (protocol,) = server.factory.connections
    return socket_of(protocol.transport)


@pytest.fixture
def settings():
    """Extra settings for the ``server`` fixture (a test may change them first)."""
    return {}


@pytest.fixture
def server(tmp_path, settings):
    """An in-process server on a real loopback port; stopped after the test."""
    server, port = pytest_twisted.blockon(start_server(tmp_path, **settings))
    server.port = port
    yield server
    pytest_twisted.blockon(server.stopService())


@pytest.mark.skipif(not hasattr(socket, "TCP_KEEPIDLE"), reason="Linux socket options")
@pytest_twisted.inlineCallbacks
def test_every_server_connection_has_tcp_keepalive(server):
    """Before login already: SO_KEEPALIVE on, probes after 60 s, every 10 s, 6 of them."""
    client = yield connect(server.port)
    assert keepalive_of(server_socket(server)) == (1, 60, 10, 6)
    client.transport.loseConnection()
    yield client.closed


@pytest.mark.skipif(not hasattr(socket, "TCP_KEEPIDLE"), reason="Linux socket options")
@pytest.mark.parametrize("settings", [{"tcp_keepalive": KeepAlive(5, 2, 3)}])
@pytest_twisted.inlineCallbacks
def test_the_keepalive_timings_are_a_setting(server):
    """CHATD_TCP_KEEPALIVE=5/2/3 reaches the socket."""
    client = yield connect(server.port)
    assert keepalive_of(server_socket(server)) == (1, 5, 2, 3)
    client.transport.loseConnection()
    yield client.closed


@pytest.mark.parametrize("settings", [{"tcp_keepalive": None}])
@pytest_twisted.inlineCallbacks
def test_keepalive_can_be_off(server):
    """CHATD_TCP_KEEPALIVE=off leaves the socket as the system made it."""
    client = yield connect(server.port)
    assert server_socket(server).getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE) == 0
    client.transport.loseConnection()
    yield client.closed


class _Listener:
    """What the console client's connection reports to; this test needs none of it."""

    def connected(self, protocol) -> None:
        """Nothing to do."""

    def line_received(self, line, command) -> None:
        """Nothing to do."""

    def disconnected(self, reason) -> None:
        """Nothing to do."""


@pytest.mark.skipif(not hasattr(socket, "TCP_KEEPIDLE"), reason="Linux socket options")
@pytest_twisted.inlineCallbacks
def test_the_console_client_turns_keepalive_on(server):
    """The console client finds a server that vanished without a word: keep-alive on its side."""
    endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", server.port)
    protocol = yield connectProtocol(endpoint, ClientProtocol(_Listener()))
    yield protocol.greeted
    assert keepalive_of(socket_of(protocol.transport)) == (1, 60, 10, 6)
    protocol.transport.loseConnection()


def test_transports_without_a_tcp_socket_are_left_alone(tmp_path):
    """A StringTransport or a unix socket has no TCP keep-alive: nothing is done, no error."""
    assert enable_tcp_keepalive(StringTransport()) is False

    class UnixTransport:
        def __init__(self) -> None:
            self.handle = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)

        def getHandle(self):
            return self.handle

    transport = UnixTransport()
    try:
        assert enable_tcp_keepalive(transport) is False
    finally:
        transport.handle.close()


def test_the_keepalive_setting_is_parsed_and_checked():
    """CHATD_TCP_KEEPALIVE is idle/interval/count or off; anything else stops the start."""
    assert Config().tcp_keepalive == KeepAlive(60, 10, 6)
    assert Config.from_environ({"CHATD_TCP_KEEPALIVE": "30/5/4"}).tcp_keepalive == KeepAlive(
        30, 5, 4
    )
    assert Config.from_environ({"CHATD_TCP_KEEPALIVE": "OFF"}).tcp_keepalive is None
    for bad in ("60/10", "0/10/6", "60/10/200", "soon"):
        with pytest.raises(ConfigError, match="CHATD_TCP_KEEPALIVE"):
            Config.from_environ({"CHATD_TCP_KEEPALIVE": bad})


@pytest.mark.parametrize("settings", [{"ping_interval_seconds": 1.0, "pong_timeout_seconds": 1.0}])
@pytest_twisted.inlineCallbacks
def test_idle_detection_for_real_spares_the_reader_who_never_types(server):
    """Real sockets, real clock: a client that answers PINGs and then goes silent is PINGed
    and closed with BYE idle-timeout, and the room sees it PART; a reader on nc who logged in
    before it and never typed since gets no PING and is still there."""
    reader, alice = yield defer.gatherResults([connect(server.port) for _ in range(2)])
    yield reader.login("reader")
    yield alice.command("/pong i-answer-pings")
    yield alice.login("alice")
    yield alice.expect(lambda line: line.startswith("PING "))
    yield alice.expect("BYE idle-timeout")
    yield alice.closed
    yield reader.expect("PART #lobby alice")
    assert not [line for line in reader.lines if line.startswith(("PING", "BYE"))]
    lines = yield reader.command("/ping still-here")
    assert lines == ["OK ping still-here"]
