"""The real client address of a web connection, behind trusted reverse proxies.

A reverse proxy (nginx, Caddy) connects from its own address and names the
client in ``X-Forwarded-For``, appending the address it saw to whatever the
client sent. Only proxies listed in ``CHATD_WEB_TRUSTED_PROXIES`` are
believed: the header is read from its right end, skipping the trusted
proxies' own addresses, and the first address not trusted is the client.
Anything to its left was written by the client and is ignored, so a client
cannot pick the address that the connection and login limits count it by.
"""

import ipaddress
from collections.abc import Iterable

from twisted.internet.address import IPv4Address, IPv6Address

from chatd.config import IPNetwork


def _parse(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    text = text.strip()
    if text.startswith("[") and "]" in text:
        # [2001:db8::1]:4711, as some proxies write it.
        text = text[1 : text.index("]")]
    elif text.count(":") == 1:
        # 192.0.2.1:4711
        text = text.partition(":")[0]
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


def _trusted(address, networks: Iterable[IPNetwork]) -> bool:
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return any(address.version == network.version and address in network for network in networks)


def client_address(peer, forwarded_for: str | None, trusted: tuple[IPNetwork, ...]):
    """The address to count a connection by: ``peer``, or the client a trusted proxy names.

    ``peer`` is the transport's own peer (a Twisted address); the result is
    one too, with port 0 when it comes from the header.
    """
    host = getattr(peer, "host", None)
    if not trusted or not forwarded_for or host is None:
        return peer
    nearest = _parse(host)
    if nearest is None or not _trusted(nearest, trusted):
        return peer
    client = nearest
    for entry in reversed(forwarded_for.split(",")):
        address = _parse(entry)
        if address is None:
            # Not an address: nothing further left can be believed.
            break
        client = address
        if not _trusted(address, trusted):
            break
    if client == nearest:
        return peer
    if isinstance(client, ipaddress.IPv6Address):
        return IPv6Address("TCP", str(client), 0)
    return IPv4Address("TCP", str(client), 0)
