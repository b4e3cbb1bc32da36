"""Doors behind a TCP load balancer: the PROXY protocol (HAProxy's, versions 1 and 2).

A listener described as ``haproxy:<endpoint>`` (``haproxy:tcp:8004``,
``haproxy:ssl:6697:...``) expects each connection to start with the PROXY
header a balancer such as HAProxy sends (``send-proxy``, ``send-proxy-v2``),
naming the client's own address. The door is told of the connection only
once that header has arrived, so everything it does with the peer's
address (per-address connection limits, the login throttle, registration
limits, the logs) sees the client, never the balancer.

Twisted's own ``haproxy:`` wrapper starts the wrapped protocol at once and
corrects ``getPeer`` only later; chatd's doors read the address when the
connection is made, so this wrapper holds the door back instead. It also
takes the header byte by byte, bounds its size and the time it may take,
and drops a connection that comes without one: whoever reaches a node
around the balancer cannot claim an address.
"""

from __future__ import annotations

import ipaddress

from twisted.internet import interfaces
from twisted.internet.endpoints import _WrapperServerEndpoint
from twisted.internet.protocol import Protocol
from twisted.logger import Logger
from twisted.protocols import policies
from twisted.protocols.haproxy._exceptions import InvalidProxyHeader
from twisted.protocols.haproxy._v1parser import V1Parser
from twisted.protocols.haproxy._v2parser import V2Parser
from zope.interface import directlyProvides, providedBy

log = Logger()

PREFIX = "haproxy"
# A version 1 header is at most 107 bytes; version 2 adds TLVs (TLS details and
# the like) after the addresses: a few hundred bytes in practice.
HEADER_LIMIT = 4096
# The version 1 specification's longest header, line end included.
V1_HEADER_LIMIT = 107
# How long a connection may take to send its header before it is dropped.
HEADER_TIMEOUT_SECONDS = 10.0
_V1_SIGNATURE = V1Parser.PROXYSTR + b" "
_V2_SIGNATURE = V2Parser.PREFIX


def header_version(start: bytes) -> int | None:
    """1 or 2 when ``start`` begins a PROXY header of that version; 0 when it cannot;
    None while it is too short to tell."""
    for version, signature in ((1, _V1_SIGNATURE), (2, _V2_SIGNATURE)):
        known = min(len(start), len(signature))
        if start[:known] == signature[:known]:
            return version if len(start) >= len(signature) else None
    return 0


def is_ip_address(text: str) -> bool:
    """Whether ``text`` is an IPv4 or IPv6 address (version 1 headers are text)."""
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


class ProxyHeaderProtocol(policies.ProtocolWrapper):
    """Reads the PROXY header, then starts the door's protocol with the client's address."""

    def __init__(self, factory: ProxyHeaderFactory, wrappedProtocol: interfaces.IProtocol):
        super().__init__(factory, wrappedProtocol)
        self._header = b""
        self._info = None
        self._started = False
        self._timeout = None

    def makeConnection(self, transport) -> None:
        """Take the connection, but start the door only once the header has come."""
        directlyProvides(self, providedBy(transport))
        Protocol.makeConnection(self, transport)
        self.factory.registerProtocol(self)
        self._timeout = self.factory.clock.callLater(
            HEADER_TIMEOUT_SECONDS, self._refuse, "no PROXY header in time"
        )

    def dataReceived(self, data: bytes) -> None:
        """Until the header is complete, read it; then pass everything to the door."""
        if self._started:
            self.wrappedProtocol.dataReceived(data)
            return
        if self.disconnecting:
            return
        self._header += data
        version = header_version(self._header)
        if version == 0:
            self._refuse("no PROXY header")
            return
        size = self._complete_size(version)
        if size is None:
            if len(self._header) > (V1_HEADER_LIMIT if version == 1 else HEADER_LIMIT):
                self._refuse("a PROXY header over the size limit")
            return
        if size > HEADER_LIMIT:
            self._refuse("a PROXY header over the size limit")
            return
        parser = V1Parser() if version == 1 else V2Parser()
        try:
            self._info, remaining = parser.feed(self._header)
        except InvalidProxyHeader:
            self._refuse("an invalid PROXY header")
            return
        self._header = b""
        source = self._info.source
        if source is not None and not is_ip_address(getattr(source, "host", "")):
            self._refuse("a PROXY header without a client address")
            return
        self._start(remaining or b"")

    def _complete_size(self, version: int | None) -> int | None:
        """The length of the header once enough of it is here to parse; None till then."""
        header = self._header
        if version == 1:
            end = header.find(b"\r\n")
            return None if end < 0 else end + 2
        if version == 2 and len(header) >= 16:
            size = int.from_bytes(header[14:16], "big") + 16
            return size if len(header) >= size or size > HEADER_LIMIT else None
        return None

    def _start(self, remaining: bytes) -> None:
        if self._timeout is not None and self._timeout.active():
            self._timeout.cancel()
        self._timeout = None
        self._started = True
        self.wrappedProtocol.makeConnection(self)
        if remaining and not self.disconnecting:
            self.wrappedProtocol.dataReceived(remaining)

    def _refuse(self, why: str) -> None:
        self._timeout = None
        log.info(
            "dropped a connection from {peer} to a PROXY listener: {why}",
            peer=self.transport.getPeer(),
            why=why,
        )
        self.transport.abortConnection()

    def getPeer(self) -> interfaces.IAddress:
        """The client's address from the header (the balancer's for a health check)."""
        if self._info is not None and self._info.source is not None:
            return self._info.source
        return self.transport.getPeer()

    def getHost(self) -> interfaces.IAddress:
        """The address the client connected to, as the balancer saw it."""
        if self._info is not None and self._info.destination is not None:
            return self._info.destination
        return self.transport.getHost()

    def connectionLost(self, reason) -> None:
        """Tell the door only if it was ever started."""
        if self._timeout is not None and self._timeout.active():
            self._timeout.cancel()
        if self._started:
            super().connectionLost(reason)
        else:
            self.factory.unregisterProtocol(self)


class ProxyHeaderFactory(policies.WrappingFactory):
    """Wraps a door's factory so that each connection first reads its PROXY header."""

    protocol = ProxyHeaderProtocol

    def __init__(self, wrappedFactory, clock):
        super().__init__(wrappedFactory)
        self.clock = clock

    def logPrefix(self) -> str:
        """The door's log prefix, marked as behind a balancer."""
        inner = self.wrappedFactory
        prefix = inner.logPrefix() if hasattr(inner, "logPrefix") else type(inner).__name__
        return f"{prefix} (PROXY)"


def split_proxy_prefix(description: str) -> str | None:
    """The endpoint inside ``haproxy:<endpoint>``, or None for any other description."""
    prefix, colon, rest = description.partition(":")
    if colon and prefix.lower() == PREFIX:
        return rest
    return None


def proxy_endpoint(reactor, inner_endpoint):
    """``inner_endpoint`` whose connections start with a PROXY header."""
    return _WrapperServerEndpoint(
        inner_endpoint, lambda factory: ProxyHeaderFactory(factory, reactor)
    )
