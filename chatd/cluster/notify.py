"""Telling a cluster's nodes from outside a node: the admin command line's announcement.

``chatd user ban|del|passwd|kick`` and ``chatd room ...`` write account
events into the shared database, which every node reads at its next poll
(``CHATD_ACCOUNT_POLL_SECONDS``). With ``CHATD_REDIS`` set the command line
also announces on Redis that there are new events, so every node reads them
at once: a short blocking exchange (the command line has no reactor), with
a timeout; if it fails, the poll still finds the events.
"""

import json
import socket

from chatd.cluster.redis import ROOMS_CHANNEL, parse_redis_url

TIMEOUT_SECONDS = 2.0


def _command(*parts: str) -> bytes:
    """One Redis command in RESP, the protocol's array of bulk strings."""
    encoded = [part.encode() for part in parts]
    return b"*%d\r\n" % len(encoded) + b"".join(
        b"$%d\r\n%s\r\n" % (len(part), part) for part in encoded
    )


def announce_account_events(url: str, timeout: float = TIMEOUT_SECONDS) -> None:
    """Announce on the Redis at ``url`` that account events were recorded; ``OSError``
    (``ConnectionError`` for a refusal by Redis) when that could not be done."""
    address = parse_redis_url(url)
    commands = []
    if address.password is not None:
        commands.append(_command("AUTH", address.password))
    # Not the id: every node reads whatever is newer than what it has seen.
    payload = json.dumps({"e": "events", "i": None, "n": "admin"}, separators=(",", ":"))
    commands.append(_command("PUBLISH", ROOMS_CHANNEL, payload))
    with socket.create_connection((address.host, address.port), timeout=timeout) as connection:
        connection.settimeout(timeout)
        connection.sendall(b"".join(commands))
        received = b""
        # Each reply here is one line: +OK, :<count> or -ERR ...
        while received.count(b"\r\n") < len(commands):
            data = connection.recv(4096)
            if not data:
                raise ConnectionError("redis closed the connection")
            received += data
    for reply in received.split(b"\r\n")[: len(commands)]:
        if reply.startswith(b"-"):
            raise ConnectionError(reply[1:].decode(errors="replace"))
