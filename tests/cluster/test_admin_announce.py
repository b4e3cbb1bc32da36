"""The admin command line in cluster mode: each change is announced on Redis.

``chatd user ...`` and ``chatd room ...`` write account events the nodes
poll; with ``CHATD_REDIS`` set the command also publishes "new account
events" on ``chatd:rooms`` so every node reads them at once. A Redis that
cannot be reached costs a warning, never the command. The subscriber here
is a plain socket speaking RESP, every read bounded by its timeout.
"""

import json
import socket

from chatd.cluster.redis import ROOMS_CHANNEL
from tests.services import free_port, redis_server  # noqa: F401 (a fixture)

TIMEOUT_SECONDS = 10.0


class Subscriber:
    """A raw RESP connection subscribed to ``chatd:rooms``."""

    def __init__(self, port: int) -> None:
        self.socket = socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT_SECONDS)
        self.buffer = b""
        channel = ROOMS_CHANNEL.encode()
        self.socket.sendall(b"*2\r\n$9\r\nSUBSCRIBE\r\n$%d\r\n%s\r\n" % (len(channel), channel))
        assert self.message()[0] == "subscribe"

    def _line(self) -> bytes:
        while b"\r\n" not in self.buffer:
            data = self.socket.recv(65536)
            assert data, "redis closed the connection"
            self.buffer += data
        line, self.buffer = self.buffer.split(b"\r\n", 1)
        return line

    def message(self) -> list[str]:
        """The next pushed message: an array of bulk strings and integers."""
        header = self._line()
        assert header.startswith(b"*"), header
        parts = []
        for _ in range(int(header[1:])):
            item = self._line()
            if item.startswith(b"$"):
                parts.append(self._line().decode())
            else:
                parts.append(item[1:].decode())
        return parts

    def close(self) -> None:
        self.socket.close()


def test_a_ban_is_announced_to_the_cluster(run, monkeypatch, redis_server):  # noqa: F811
    """user ban with CHATD_REDIS: one "events" announcement on chatd:rooms, from no node;
    user list (nothing changed) announces nothing before the next change does."""
    run("db", "init")
    run("user", "add", "alice", "--password-stdin", stdin="password1\n")
    monkeypatch.setenv("CHATD_REDIS", redis_server.url)
    listening = Subscriber(redis_server.port)
    try:
        assert run("user", "list")[0] == 0
        assert run("user", "ban", "alice") == (0, "banned alice\n", "")
        kind, channel, payload = listening.message()
        assert (kind, channel) == ("message", ROOMS_CHANNEL)
        assert json.loads(payload) == {"e": "events", "i": None, "n": "admin"}
        assert run("user", "unban", "alice")[0] == 0
        assert json.loads(listening.message()[2])["e"] == "events"
    finally:
        listening.close()


def test_without_redis_the_change_is_made_and_a_warning_says_so(run, monkeypatch):
    """Nothing listens at CHATD_REDIS: the ban is made (exit 0) and stderr warns that the
    nodes will see it at their next poll."""
    run("db", "init")
    run("user", "add", "alice", "--password-stdin", stdin="password1\n")
    monkeypatch.setenv("CHATD_REDIS", f"redis://:secret@127.0.0.1:{free_port()}/0")
    code, out, err = run("user", "ban", "alice")
    assert (code, out) == (0, "banned alice\n"), err
    assert "could not announce the change" in err and "CHATD_ACCOUNT_POLL_SECONDS" in err
    assert "secret" not in err
