"""Writing to a plain TCP connection at once when Twisted holds nothing for it.

``transport.write`` on a TCP connection buffers the bytes and registers the
socket for writing; on the next turn the reactor wakes for it, ``doWrite``
sends, and the socket is unregistered again. For a chat server's fan-out
that is, for every connection and every message, two ``epoll_ctl`` calls,
a wake-up and a trip through Twisted's logging context around one
``send``: measured at about half of the IRC door's reactor time at 20,000
deliveries/s (docs/benchmarks.md, "Sending at once").

When the transport's buffer is empty, sending now is what ``doWrite``
would do next turn, minus that bookkeeping. Whatever the kernel does not
take at once goes to ``transport.write``: from then on Twisted buffers,
and later writes queue behind it, so the order of bytes and Twisted's own
flow control (its buffer size, pausing a registered producer) are
unchanged. Any other transport (TLS, a test's ``StringTransport``, a
protocol wrapper) is written to as usual.
"""

import socket
from collections.abc import Callable

from twisted.internet import tcp


def sender_for(transport) -> Callable[[bytes], None]:
    """The function to write ``transport``'s bytes with: sending now on plain
    TCP, ``transport.write`` on anything else."""
    if isinstance(transport, tcp.Connection) and isinstance(
        getattr(transport, "socket", None), socket.socket
    ):
        return _SendNow(transport).write
    # Looked up at each write, as a direct call would: a wrapper or test may replace it.
    return lambda data: transport.write(data)


class _SendNow:
    """``write`` for one TCP connection: ``send`` at once while nothing waits."""

    __slots__ = ("_send", "_transport")

    def __init__(self, transport: tcp.Connection) -> None:
        self._transport = transport
        self._send = transport.socket.send

    def write(self, data: bytes) -> None:
        """Send ``data`` now if Twisted holds nothing for the connection; the rest
        (or all of it) through ``transport.write``."""
        transport = self._transport
        if (
            transport._tempDataLen
            or transport.offset != len(transport.dataBuffer)
            or transport.TLS
            or not transport.connected
            or transport.disconnecting
        ):
            transport.write(data)
            return
        try:
            sent = self._send(data)
        except OSError:
            # Full (EAGAIN), interrupted, or a connection going away: Twisted's
            # own write path retries, or meets the error and closes as usual.
            sent = 0
        if sent < len(data):
            transport.write(data[sent:])
