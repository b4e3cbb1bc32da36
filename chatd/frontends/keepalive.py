"""TCP keep-alive: the kernel finds dead peers, so nobody has to answer a PING.

A reader on ``nc`` who never types cannot answer the server's ``PING``; the
kernel can. With keep-alive on, after ``idle`` seconds without traffic it
sends a probe every ``interval`` seconds, and after ``count`` unanswered
probes it resets the connection: Twisted then reports it lost like any
other close. The server turns it on for every TCP connection (TLS included),
the console client for its connection to the server.
"""

import socket

# What the server and the console client use unless configured otherwise:
# a dead peer is found about two minutes after the last traffic.
DEFAULT_IDLE = 60
DEFAULT_INTERVAL = 10
DEFAULT_COUNT = 6


def socket_of(transport) -> socket.socket | None:
    """The TCP socket under ``transport`` (through TLS), or None if it has none."""
    while transport is not None:
        get_handle = getattr(transport, "getHandle", None)
        handle = get_handle() if get_handle is not None else None
        if isinstance(handle, socket.socket):
            if handle.family in (socket.AF_INET, socket.AF_INET6):
                return handle
            return None
        # A TLS transport's handle is its OpenSSL connection: the socket is below.
        transport = getattr(transport, "transport", None)
    return None


def enable_tcp_keepalive(
    transport,
    idle: int = DEFAULT_IDLE,
    interval: int = DEFAULT_INTERVAL,
    count: int = DEFAULT_COUNT,
) -> bool:
    """Turn keep-alive on for ``transport``'s TCP socket; tell whether there was one.

    The timings use TCP_KEEPIDLE, TCP_KEEPINTVL and TCP_KEEPCNT where the
    platform has them (Linux; macOS names the first TCP_KEEPALIVE); elsewhere
    the system's own timings apply.
    """
    handle = socket_of(transport)
    if handle is None:
        return False
    try:
        handle.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        idle_option = getattr(socket, "TCP_KEEPIDLE", None) or getattr(
            socket, "TCP_KEEPALIVE", None
        )
        for option, value in (
            (idle_option, idle),
            (getattr(socket, "TCP_KEEPINTVL", None), interval),
            (getattr(socket, "TCP_KEEPCNT", None), count),
        ):
            if option is not None:
                handle.setsockopt(socket.IPPROTO_TCP, option, value)
    except OSError:
        # A socket already closed by the peer: nothing left to keep alive.
        return False
    return True
