"""The client end to end against the real ``twistd -ny chatd.tac``.

Interactive clients run under a pseudo-terminal with pexpect, exactly as a
person would use them; pipe mode runs with ordinary pipes. Every wait is for
output or an exit, never a sleep.
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import pexpect

# The checkout's root: the client run is this checkout's, not whatever chatd the
# venv would import from elsewhere.
ROOT = Path(__file__).resolve().parents[2]
TIMEOUT = 20

# prompt_toolkit draws with escape sequences: styles, cursor moves, and cursor
# forward (CSI n C) where a space was already on the screen.
_ESCAPES = r"(?:\x1b\[[0-9;?]*[A-Za-z])*"
_SPACE = r"(?: |\x1b\[[0-9]*C)"


def on_screen(text: str) -> re.Pattern:
    """A pattern for text as a terminal would show it, whatever escapes are drawn in between."""
    parts = [_SPACE if char == " " else re.escape(char) for char in text]
    return re.compile(_ESCAPES.join(parts))


def client_environment(**extra: str) -> dict[str, str]:
    """The client's environment: this worktree's code, no colour, a known terminal type."""
    env = dict(os.environ)
    env.pop("CHATD_PASSWORD", None)
    env.update(
        PYTHONPATH=str(ROOT),
        NO_COLOR="1",
        TERM="xterm-256color",
        # pexpect does not answer cursor-position requests; without this
        # prompt_toolkit waits for the answer and then warns about it.
        PROMPT_TOOLKIT_NO_CPR="1",
    )
    env.update(extra)
    return env


class Terminal:
    """An interactive chatd-client under a pty."""

    def __init__(self, port: int, *arguments: str, password: str | None = None) -> None:
        env = client_environment(**({"CHATD_PASSWORD": password} if password else {}))
        self.child = pexpect.spawn(
            sys.executable,
            ["-m", "chatd.client", "--port", str(port), *arguments],
            env=env,
            cwd=str(ROOT),
            encoding="utf-8",
            dimensions=(40, 120),
            timeout=TIMEOUT,
        )

    def expect(self, text: str) -> None:
        """Wait until ``text`` appears on the screen."""
        self.child.expect(on_screen(text))

    def type(self, text: str) -> None:
        """Type without pressing Enter."""
        self.child.send(text)

    def enter(self, text: str = "") -> None:
        """Type a line and press Enter."""
        self.child.send(text + "\r")

    def quit(self) -> int:
        """/quit and return the exit status."""
        self.enter("/quit")
        self.child.expect(pexpect.EOF)
        self.child.close()
        return self.child.exitstatus

    def close(self) -> None:
        """Make sure the process is gone."""
        if self.child.isalive():
            self.child.terminate(force=True)


def register(server, *names: str) -> None:
    """Create accounts with a plain socket, as an admin script would."""
    line_client = server.connect()
    for name in names:
        assert line_client.command(f"/register {name} pw-{name}-123")[-1] == f"OK register {name}"
    line_client.close()


def run_piped(port: int, lines: str, *arguments: str, password: str | None = None):
    """Run the client with ``lines`` on a pipe; return the finished process."""
    env = client_environment(**({"CHATD_PASSWORD": password} if password else {}))
    return subprocess.run(
        [sys.executable, "-m", "chatd.client", "--port", str(port), *arguments],
        input=lines,
        capture_output=True,
        text=True,
        env=env,
        cwd=str(ROOT),
        timeout=TIMEOUT,
        # No controlling terminal, as under cron: nothing can be asked of a user.
        start_new_session=True,
    )


def test_two_people_chat_in_the_lobby_and_by_dm_with_the_typed_line_intact(chatd_server):
    """Lines arriving while alice types are printed above her prompt; her line survives."""
    register(chatd_server, "alice", "bob")
    alice = Terminal(chatd_server.port, "--user", "alice", password="pw-alice-123")
    bob = None
    try:
        alice.expect("logged in as alice")
        alice.expect("alice #lobby> ")
        bob = Terminal(chatd_server.port, "--user", "bob", password="pw-bob-123")
        bob.expect("logged in as bob")
        alice.expect("* bob joined #lobby")

        alice.type("half of my")
        alice.expect("alice #lobby> half of my")
        bob.enter("hello alice")
        alice.expect("[#lobby] <bob> hello alice")
        alice.expect("alice #lobby> half of my")
        alice.enter(" sentence")
        bob.expect("[#lobby] <alice> half of my sentence")

        bob.enter("/msg alice psst")
        alice.expect("[DM bob -> alice] psst")
        # prompt_toolkit redraws only what changed, so each completion is
        # awaited by the characters it adds; the DM arriving proves the line:
        # each completion ends with a space, so "/ms" Tab "b" Tab "got it" is
        # "/msg bob got it" (without the space it was "/msg bobgot it").
        # "/m" is also "/me": "/ms" is the shortest that names /msg alone.
        alice.type("/ms\t")
        alice.expect("g")
        alice.type("b\t")
        alice.expect("ob")
        alice.enter("got it")
        bob.expect("[DM alice -> bob] got it")

        alice.enter("/join #dev")
        alice.expect("alice #dev> ")
        bob.enter("/join #dev")
        alice.expect("* bob joined #dev")
        assert alice.quit() == 0
        bob.expect("* alice left #lobby")
        assert bob.quit() == 0
    finally:
        alice.close()
        if bob is not None:
            bob.close()


def test_the_client_reconnects_after_a_server_restart_and_keeps_chatting(chatd_server):
    """SIGTERM, start again: the client says so, logs in, rejoins, and chat goes on."""
    register(chatd_server, "alice", "bob")
    alice = Terminal(chatd_server.port, "--user", "alice", password="pw-alice-123")
    bob = Terminal(chatd_server.port, "--user", "bob", password="pw-bob-123")
    try:
        alice.expect("alice #lobby> ")
        alice.enter("/join #dev")
        alice.expect("alice #dev> ")
        bob.expect("bob #lobby> ")
        bob.enter("before the restart")
        alice.expect("[#lobby] <bob> before the restart")

        chatd_server.restart()

        alice.expect("* the server closed the connection (shutdown)")
        alice.expect("! disconnected from 127.0.0.1:")
        alice.expect("* reconnected as alice; back in #lobby, #dev")
        alice.expect("alice #dev> ")
        bob.expect("* reconnected as bob; back in #lobby")
        bob.enter("after the restart")
        alice.expect("[#lobby] <bob> after the restart")
        alice.enter("/say #lobby welcome back")
        bob.expect("[#lobby] <alice> welcome back")
        assert alice.quit() == 0
        assert bob.quit() == 0
    finally:
        alice.close()
        bob.close()


def test_login_from_the_prompt_asks_for_the_password_without_echo(chatd_server):
    """``/login alice`` prompts for the password, which never appears on the screen."""
    register(chatd_server, "alice")
    alice = Terminal(chatd_server.port)
    try:
        alice.expect("guest> ")
        alice.enter("/login alice")
        alice.expect("password: ")
        alice.enter("pw-alice-123")
        alice.expect("logged in as alice")
        alice.expect("alice #lobby> ")
        assert "pw-alice-123" not in alice.child.before
        assert "*" * len("pw-alice-123") not in alice.child.before
        alice.enter("/help")
        alice.expect("/history <room> [<count>]")
        alice.child.sendcontrol("d")
        alice.child.expect(pexpect.EOF)
        alice.child.close()
        assert alice.child.exitstatus == 0
    finally:
        alice.close()


def test_a_kicked_client_does_not_come_back(chatd_server):
    """``chatd user kick``: the client says why and exits 3 instead of reconnecting."""
    register(chatd_server, "alice")
    alice = Terminal(chatd_server.port, "--user", "alice", password="pw-alice-123")
    try:
        alice.expect("alice #lobby> ")
        kicked = subprocess.run(
            [
                sys.executable,
                "-m",
                "chatd",
                "--db",
                str(chatd_server.db_path),
                "user",
                "kick",
                "alice",
            ],
            capture_output=True,
            text=True,
            cwd=ROOT,
            timeout=60,
            env=client_environment(),
        )
        assert kicked.returncode == 0, kicked.stderr
        alice.expect("* the server closed the connection (kicked)")
        alice.expect("! not reconnecting after BYE kicked")
        alice.child.expect(pexpect.EOF)
        alice.child.close()
        assert alice.child.exitstatus == 3
    finally:
        alice.close()


def test_pipe_mode_sends_each_line_and_exits_zero_when_all_went_well(chatd_server):
    """The issue's example: a DM from a script, then the recipient reads it later."""
    register(chatd_server, "alice", "bob")
    sent = run_piped(chatd_server.port, "/msg bob hi\n", "--user", "alice", password="pw-alice-123")
    assert sent.returncode == 0, sent.stderr
    assert sent.stdout.splitlines() == [
        "[DM alice -> bob] hi",
        "* bob is offline; the message is stored until they log in",
    ]
    assert sent.stderr == ""

    read = run_piped(chatd_server.port, "", "--user", "bob", password="pw-bob-123")
    assert read.returncode == 0, read.stderr
    assert re.fullmatch(r"\(stored \d\d:\d\d\) \[DM alice -> bob\] hi\n", read.stdout)


def test_pipe_mode_exits_one_when_a_command_got_err_and_runs_the_rest(chatd_server):
    """An ERR is reported on stderr; later lines still run; the exit code says it."""
    register(chatd_server, "alice")
    result = run_piped(
        chatd_server.port,
        "/who #nowhere\nhello\n/ping check\n",
        "--user",
        "alice",
        password="pw-alice-123",
    )
    assert result.returncode == 1
    assert result.stderr.startswith("! ")
    assert result.stdout.splitlines() == ["[#lobby] <alice> hello", "* pong check"]


def test_pipe_mode_stops_at_quit(chatd_server):
    """Lines after /quit are not sent."""
    register(chatd_server, "alice")
    result = run_piped(
        chatd_server.port, "one\n/quit\ntwo\n", "--user", "alice", password="pw-alice-123"
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == ["[#lobby] <alice> one"]


def test_pipe_mode_exits_four_when_the_login_fails(chatd_server):
    """A wrong password, or none at all, is a failed login."""
    register(chatd_server, "alice")
    wrong = run_piped(chatd_server.port, "hi\n", "--user", "alice", password="not-the-one")
    assert wrong.returncode == 4
    assert "bad-credentials" in wrong.stderr
    missing = run_piped(chatd_server.port, "hi\n", "--user", "alice")
    assert missing.returncode == 4
    assert "CHATD_PASSWORD" in missing.stderr


def test_pipe_mode_exits_three_when_it_cannot_connect():
    """Nothing listening: say so on stderr, exit 3."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    result = run_piped(port, "hi\n")
    assert result.returncode == 3
    assert f"cannot connect to 127.0.0.1:{port}" in result.stderr


def test_raw_pipe_mode_prints_protocol_lines_as_they_are(chatd_server):
    """--raw is for looking at the protocol: every line, unrendered."""
    register(chatd_server, "alice")
    result = run_piped(chatd_server.port, "/ping x\n", "--raw")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith("HELLO chatd 1 ")
    assert lines[1:] == ["OK ping x", "OK quit", "BYE quit"]


def test_pipe_mode_keeps_within_the_servers_rate_limit(tmp_path):
    """A script faster than CHATD_RATE_LIMIT still gets every line through, exit 0."""
    from tests.serverproc import ServerProcess

    server = ServerProcess(tmp_path, env={"CHATD_RATE_LIMIT": "4/2"}).start()
    try:
        register(server, "alice")
        lines = "".join(f"line {number}\n" for number in range(10))
        result = run_piped(server.port, lines, "--user", "alice", password="pw-alice-123")
        assert result.returncode == 0, result.stderr
        assert result.stdout.splitlines() == [f"[#lobby] <alice> line {n}" for n in range(10)]
        assert result.stderr == ""
    finally:
        server.stop()


def test_a_paste_past_the_rate_limit_arrives_whole_and_in_order(tmp_path):
    """45 lines pasted at once (a bracketed paste) into a server allowing bursts of 10:
    every line reaches the room, in order, none twice, and the session lives on."""
    from tests.serverproc import ServerProcess

    server = ServerProcess(tmp_path, env={"CHATD_RATE_LIMIT": "5/10"}).start()
    register(server, "alice")
    bob = server.connect(timeout=TIMEOUT)
    bob.login("bob")
    alice = Terminal(server.port, "--user", "alice", password="pw-alice-123")
    try:
        alice.expect("alice #lobby> ")
        bob.until(lambda line: line == "JOIN #lobby alice")
        pasted = [f"pasted line {number:02d}" for number in range(45)]
        alice.type("\x1b[200~" + "\n".join(pasted) + "\x1b[201~")
        alice.enter()
        received = []
        while len(received) < len(pasted):
            line = bob.read_line()
            assert line, f"bob's connection ended after {received}"
            if line.startswith("MSG #lobby alice "):
                received.append(line.removeprefix("MSG #lobby alice "))
        assert received == pasted
        alice.expect("the server limits how fast lines may come")
        alice.enter("after the paste")
        assert bob.until(lambda line: line.startswith("MSG "))[-1] == (
            "MSG #lobby alice after the paste"
        )
        assert alice.quit() == 0
    finally:
        alice.close()
        server.stop()


def test_a_bare_passwd_asks_unseen_and_changes_a_password_with_spaces(chatd_server):
    """``/passwd`` alone: old, new and again, none echoed; then the new password,
    spaces and all, logs in and the old one does not."""
    line_client = chatd_server.connect()
    assert line_client.command("/register alice my old pass")[-1] == "OK register alice"
    alice = Terminal(chatd_server.port, "--user", "alice", password="my old pass")
    try:
        alice.expect("alice #lobby> ")
        alice.enter("/passwd")
        alice.expect("old password: ")
        alice.enter("my old pass")
        alice.expect("new password: ")
        alice.enter("a new pass phrase")
        alice.expect("again: ")
        alice.enter("a new pass phrase")
        alice.expect("password changed")
        assert "a new pass phrase" not in alice.child.before
        assert "my old pass" not in alice.child.before
        assert alice.quit() == 0
    finally:
        alice.close()
    assert line_client.command("/login alice my old pass")[-1].startswith("ERR bad-credentials")
    assert line_client.command("/login alice a new pass phrase")[-1] == "OK login alice"


def test_with_several_hosts_a_killed_server_is_left_for_the_next(tmp_path):
    """Two servers (two nodes, as far as the client can tell), alice given both with
    ``--host``: the one she is on is killed with ``kill -9``; she reconnects to the other
    at once, logs in, rejoins, and chats there with bob."""
    from tests.serverproc import ServerProcess

    servers = []
    for name in ("one", "two"):
        (tmp_path / name).mkdir()
        servers.append(ServerProcess(tmp_path / name).start())
    first, second = servers
    alice = None
    try:
        for server in servers:
            register(server, "alice", "bob")
        alice = Terminal(
            first.port, "--host", f"127.0.0.1:{first.port}", "--host", f"127.0.0.1:{second.port}",
            "--user", "alice", password="pw-alice-123",
        )
        alice.expect(f"connecting to 127.0.0.1:{first.port}, 127.0.0.1:{second.port}")
        alice.expect("alice #lobby> ")
        bob = second.connect()
        bob.login("bob", "pw-bob-123")
        first.kill()
        alice.expect(f"! disconnected from 127.0.0.1:{first.port}")
        alice.expect("* reconnected as alice; back in #lobby")
        assert bob.read_line() == "JOIN #lobby alice"
        alice.enter("made it across")
        assert bob.read_line() == "MSG #lobby alice made it across"
        assert bob.command("welcome")[-1] == "OK say #lobby"
        alice.expect("[#lobby] <bob> welcome")
        assert alice.quit() == 0
    finally:
        if alice is not None:
            alice.close()
        for server in servers:
            server.stop()
