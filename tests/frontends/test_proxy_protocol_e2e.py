"""Behind a TCP load balancer: ``haproxy:`` endpoints take the client's address from
the PROXY protocol header, so per-address limits count clients, not the balancer.

Real ``twistd``, real sockets: every connection comes from 127.0.0.1, and only the
PROXY header HAProxy would send (``send-proxy``, version 1; ``send-proxy-v2``) tells
them apart.
"""

import socket
import struct

import pytest

from tests.serverproc import ServerProcess

PROXY_V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"


def proxied(port: int, header: bytes) -> socket.socket:
    """A connection to ``port`` that starts with a PROXY protocol ``header``."""
    connection = socket.create_connection(("127.0.0.1", port), timeout=10)
    connection.sendall(header)
    return connection


def proxy_v1(client: str) -> bytes:
    """HAProxy's ``send-proxy`` header for a client at ``client``."""
    return f"PROXY TCP4 {client} 127.0.0.1 40000 8004\r\n".encode()


def proxy_v2(client: str) -> bytes:
    """HAProxy's ``send-proxy-v2`` header for a client at ``client`` (IPv4 over TCP)."""
    addresses = socket.inet_aton(client) + socket.inet_aton("127.0.0.1")
    body = addresses + struct.pack("!HH", 40000, 8004)
    return PROXY_V2_SIGNATURE + bytes([0x21, 0x11]) + struct.pack("!H", len(body)) + body


def first_lines(connection: socket.socket, count: int) -> list[str]:
    """The server's first ``count`` lines, or fewer if it closed the connection."""
    data = b""
    while data.count(b"\r\n") < count:
        chunk = connection.recv(4096)
        if not chunk:
            break
        data += chunk
    return data.decode().split("\r\n")[:count]


@pytest.fixture
def proxied_server(tmp_path):
    """chatd whose line door expects a PROXY header; one connection per address."""
    server = ServerProcess(tmp_path, env={
        "CHATD_LISTEN": "haproxy:tcp:0:interface=127.0.0.1",
        "CHATD_IRC_LISTEN": "off",
        "CHATD_MAX_CONNECTIONS_PER_ADDRESS": "1",
    }).start()
    yield server
    server.stop()


@pytest.mark.parametrize("header", [proxy_v1, proxy_v2], ids=["v1", "v2"])
def test_the_per_address_limit_counts_the_address_in_the_proxy_header(proxied_server, header):
    """Two clients behind the balancer are admitted although both reach chatd from
    127.0.0.1; a second connection of one of them is refused, as it would be without
    a balancer; a client logs in and chats through the proxied connection."""
    first = proxied(proxied_server.port, header("198.51.100.7") + b"/register alice password1\r\n")
    assert first_lines(first, 2)[1] == "OK register alice"
    other = proxied(proxied_server.port, header("198.51.100.8") + b"/register bob password1\r\n")
    assert first_lines(other, 2)[1] == "OK register bob"
    again = proxied(proxied_server.port, header("198.51.100.7"))
    assert first_lines(again, 2)[1] == "BYE too-many-connections"
    for connection in (first, other, again):
        connection.close()


def test_a_connection_without_the_header_is_dropped(proxied_server):
    """Where a PROXY header is expected, a client speaking straight to chatd (around the
    balancer) is closed before it is greeted: it cannot pose as any address."""
    direct = socket.create_connection(("127.0.0.1", proxied_server.port), timeout=10)
    direct.sendall(b"/register mallory password1\r\n")
    try:
        answer = direct.recv(4096)
    except ConnectionResetError:
        # Aborted: the usual ending, as nothing is owed to such a client.
        answer = b""
    assert answer == b""
    direct.close()
