"""The PROXY protocol wrapper over StringTransport: the door starts only with the client's
address, the header may come whole or byte by byte, and a connection without a valid
header in time is dropped without the door ever hearing of it."""

import socket
import struct

import pytest
from twisted.internet import task
from twisted.internet.address import IPv4Address
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.testing import StringTransportWithDisconnection

from chatd.config import check_endpoint
from chatd.frontends.proxy import (
    HEADER_LIMIT,
    HEADER_TIMEOUT_SECONDS,
    ProxyHeaderFactory,
    header_version,
    split_proxy_prefix,
)

V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"


class Door(Protocol):
    """A door that notes the peer it saw at connectionMade and what it read."""

    def __init__(self):
        self.peer = None
        self.data = b""
        self.lost = False

    def connectionMade(self):
        self.peer = self.transport.getPeer()

    def dataReceived(self, data):
        self.data += data

    def connectionLost(self, reason=None):
        self.lost = True


def v1(client="198.51.100.7", port=40000) -> bytes:
    """HAProxy's ``send-proxy`` header."""
    return f"PROXY TCP4 {client} 10.0.0.11 {port} 8004\r\n".encode()


def v2(client="198.51.100.7", port=40000, command=0x21) -> bytes:
    """HAProxy's ``send-proxy-v2`` header (IPv4, TCP); command 0x20 is LOCAL."""
    body = socket.inet_aton(client) + socket.inet_aton("10.0.0.11") + struct.pack("!HH", port, 8004)
    return V2_SIGNATURE + bytes([command, 0x11]) + struct.pack("!H", len(body)) + body


@pytest.fixture
def connect():
    """Open connections from the balancer (10.0.0.5): (wrapper, door, transport, clock)."""
    clock = task.Clock()

    def opened():
        factory = ProxyHeaderFactory(Factory.forProtocol(Door), clock)
        wrapper = factory.buildProtocol(IPv4Address("TCP", "10.0.0.5", 55555))
        transport = StringTransportWithDisconnection(
            peerAddress=IPv4Address("TCP", "10.0.0.5", 55555))
        transport.protocol = wrapper
        wrapper.makeConnection(transport)
        return wrapper, wrapper.wrappedProtocol, transport, clock

    return opened


@pytest.mark.parametrize("header", [v1, v2], ids=["v1", "v2"])
@pytest.mark.parametrize("bytewise", [False, True])
def test_the_door_starts_with_the_clients_address_and_reads_what_follows(connect, header,
                                                                         bytewise):
    """Nothing reaches the door until the header is whole; then it is made with the
    client's address and gets the bytes after the header, in order."""
    wrapper, door, _, _ = connect()
    data = header() + b"/register alice password1\r\n"
    if bytewise:
        for index in range(len(header())):
            assert door.peer is None
            wrapper.dataReceived(data[index:index + 1])
        wrapper.dataReceived(data[len(header()):])
    else:
        wrapper.dataReceived(data)
    assert door.peer == IPv4Address("TCP", "198.51.100.7", 40000)
    assert door.data == b"/register alice password1\r\n"
    wrapper.dataReceived(b"more\r\n")
    assert door.data.endswith(b"more\r\n")


def test_a_health_check_without_a_client_address_keeps_the_balancers(connect):
    """HAProxy's checks send a LOCAL header: the door sees the balancer's own address."""
    wrapper, door, _, _ = connect()
    wrapper.dataReceived(v2(command=0x20))
    assert door.peer == IPv4Address("TCP", "10.0.0.5", 55555)


@pytest.mark.parametrize("data", [
    b"/register mallory password1\r\n",
    b"GET / HTTP/1.1\r\n",
    b"PROXY TCP4 not-an-address 10.0.0.11 1 2\r\n",
], ids=["line", "http", "bad-v1"])
def test_a_connection_without_a_valid_header_is_dropped_unheard(connect, data):
    """No header, or a broken one: the connection is aborted and the door never made."""
    wrapper, door, transport, _ = connect()
    wrapper.dataReceived(data)
    assert not transport.connected
    # The transport told the wrapper the connection was lost; the door hears nothing.
    assert door.peer is None and door.data == b"" and not door.lost


def test_a_header_at_and_past_the_size_limit(connect):
    """A version 2 header with TLVs up to the limit is read; one byte over is dropped."""
    wrapper, door, _, _ = connect()
    base = v2()
    padding = HEADER_LIMIT - len(base)
    tlvs = bytes([0xEE]) + struct.pack("!H", padding - 3) + b"x" * (padding - 3)
    length = len(base) - 16 + len(tlvs)
    at_limit = base[:14] + struct.pack("!H", length) + base[16:] + tlvs
    assert len(at_limit) == HEADER_LIMIT
    wrapper.dataReceived(at_limit)
    assert door.peer == IPv4Address("TCP", "198.51.100.7", 40000)
    wrapper, door, transport, _ = connect()
    over = base[:14] + struct.pack("!H", length + 1) + base[16:] + tlvs + b"y"
    wrapper.dataReceived(over[:20])
    assert not transport.connected and door.peer is None


def test_a_v1_line_without_an_end_is_dropped_past_the_limit(connect):
    """A version 1 header that never ends is dropped, not buffered for ever."""
    wrapper, door, transport, _ = connect()
    wrapper.dataReceived(b"PROXY " + b"9" * 200)
    assert not transport.connected and door.peer is None


def test_a_header_that_does_not_come_in_time_drops_the_connection(connect):
    """A connection that sends nothing is dropped after the header timeout."""
    _wrapper, door, transport, clock = connect()
    clock.advance(HEADER_TIMEOUT_SECONDS - 0.1)
    assert transport.connected
    clock.advance(0.2)
    assert not transport.connected and door.peer is None


def test_the_timeout_ends_with_the_header(connect):
    """Once the header came, the header timeout no longer runs."""
    wrapper, _door, transport, clock = connect()
    wrapper.dataReceived(v1())
    clock.advance(HEADER_TIMEOUT_SECONDS * 2)
    assert transport.connected
    assert not clock.getDelayedCalls()


def test_header_versions_are_told_from_the_first_bytes():
    """Undecided while a prefix of a signature; 0 as soon as it cannot be one."""
    assert header_version(b"") is None
    assert header_version(b"PRO") is None
    assert header_version(b"PROXY ") == 1
    assert header_version(V2_SIGNATURE[:5]) is None
    assert header_version(V2_SIGNATURE) == 2
    assert header_version(b"/login") == 0


def test_haproxy_descriptions_are_checked_by_the_endpoint_inside():
    """``haproxy:`` wraps any endpoint chatd takes; the inner one is checked as usual."""
    assert split_proxy_prefix("haproxy:tcp:8004") == "tcp:8004"
    assert split_proxy_prefix("tcp:8004") is None
    check_endpoint("haproxy:tcp:8004:interface=10.0.0.11")
    check_endpoint("haproxy:ssl:6697:privateKey=key.pem:certKey=cert.pem")
    with pytest.raises(ValueError, match="65535"):
        check_endpoint("haproxy:tcp:99999")
