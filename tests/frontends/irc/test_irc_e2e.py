"""The IRC door on the real server: twistd, real sockets, and a real IRC client (ii)."""

import os
import selectors
import subprocess
import time

import pytest

from tests.frontends.irc.support import IRCSocketClient
from tests.programs import require_program
from tests.serverproc import LineClient, ServerProcess


@pytest.fixture
def server(tmp_path):
    """The real ``twistd -ny chatd.tac`` with its IRC door on a loopback port."""
    process = ServerProcess(tmp_path).start()
    yield process
    process.stop()


def test_an_irc_client_and_a_line_client_share_the_lobby(server):
    """PASS login over IRC, then PRIVMSG and MSG both ways, and a DM stored across doors."""
    bob = LineClient(server.port)
    bob.login("bob")
    LineClient(server.port).command("/register alice password1")
    assert bob.command("/msg alice waiting for you")[-1] == "OK msg alice stored"
    alice = IRCSocketClient(server.irc_port)
    alice.send("CAP LS 302", "CAP REQ :server-time echo-message")
    alice.send("PASS password1", "NICK alice", "USER alice 0 * :Alice", "CAP END")
    lines = alice.until(lambda m: m.verb == "PRIVMSG" and m.params[0] == "alice")
    assert ":alice!alice@chatd JOIN #lobby" in lines
    assert lines[-1].endswith(":bob!bob@chatd PRIVMSG alice :waiting for you")
    assert lines[-1].startswith("@time=")
    assert bob.until(lambda line: line.startswith("JOIN "))[-1] == "JOIN #lobby alice"
    alice.send("PRIVMSG #lobby :hello from IRC")
    echoed = alice.until(lambda m: m.verb == "PRIVMSG")
    assert echoed[-1].endswith(":alice!alice@chatd PRIVMSG #lobby :hello from IRC")
    assert bob.until(lambda line: line.startswith("MSG "))[-1] == "MSG #lobby alice hello from IRC"
    bob.command("and hello from the line door")
    heard = alice.until(lambda m: m.verb == "PRIVMSG")
    assert heard[-1].endswith(":bob!bob@chatd PRIVMSG #lobby :and hello from the line door")
    alice.send("QUIT :bye")
    assert alice.until(lambda m: m.verb == "ERROR")
    assert bob.until(lambda line: line.startswith("PART "))[-1] == "PART #lobby alice"


def test_the_irc_door_stops_with_the_server(server):
    """SIGTERM: an IRC client gets ERROR, and the server still exits cleanly."""
    LineClient(server.port).command("/register alice password1")
    alice = IRCSocketClient(server.irc_port)
    alice.send("PASS password1", "NICK alice", "USER alice 0 * :Alice")
    alice.until(lambda m: m.verb == "366")
    server.terminate()
    assert alice.until(lambda m: m.verb == "ERROR")[-1].endswith("shutdown")
    server.wait_for("database closed")


class FollowedFile:
    """Lines appended to a file, read as they come (``tail -F``), with a deadline."""

    def __init__(self, path) -> None:
        self.process = subprocess.Popen(
            ["tail", "-F", "-n", "+1", str(path)],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
        )
        self._partial = b""
        self._selector = selectors.DefaultSelector()
        self._selector.register(self.process.stdout, selectors.EVENT_READ)
        self.lines: list[str] = []

    def wait_for(self, text: str, timeout: float = 20.0) -> str:
        """Wait for a line containing ``text``; return it."""
        deadline = time.monotonic() + timeout
        while True:
            for line in self.lines:
                if text in line:
                    return line
            remaining = deadline - time.monotonic()
            assert remaining > 0, f"no {text!r} in {self.lines}"
            if self._selector.select(remaining):
                # Raw reads: a buffered readline would hide lines the selector cannot see.
                self._partial += os.read(self.process.stdout.fileno(), 65536)
                *complete, self._partial = self._partial.split(b"\n")
                self.lines += [line.decode("utf-8", "replace") for line in complete]

    def close(self) -> None:
        """Stop following."""
        self.process.kill()
        self.process.wait()


def test_ii_a_real_irc_client_talks_with_a_line_user(server, tmp_path):
    """Debian's ``ii`` logs in with PASS, is put in #lobby, and chats with a line user."""
    ii = require_program("ii", "ii")
    bob = LineClient(server.port)
    bob.login("bob")
    LineClient(server.port).command("/register alice password1")
    base = tmp_path / "ii"
    env = dict(os.environ, IIPASS="password1")
    client = subprocess.Popen(
        [ii, "-s", "127.0.0.1", "-p", str(server.irc_port), "-n", "alice", "-k", "IIPASS",
         "-i", str(base)],
        env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        assert bob.until(lambda line: line.startswith("JOIN "))[-1] == "JOIN #lobby alice"
        lobby = base / "127.0.0.1" / "#lobby"
        out = FollowedFile(lobby / "out")
        try:
            bob.command("hello ii")
            assert "<bob> hello ii" in out.wait_for("hello ii")
            with open(lobby / "in", "w") as fifo:
                fifo.write("hello from ii\n")
            assert bob.until(lambda line: line.startswith("MSG "))[-1] == (
                "MSG #lobby alice hello from ii"
            )
        finally:
            out.close()
    finally:
        client.terminate()
        client.wait(timeout=10)
