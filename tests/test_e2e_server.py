"""End to end: the real ``twistd -ny chatd.tac`` process over real sockets."""

import os
import select
import signal
import socket
import subprocess
import sys

from tests.serverproc import ROOT, LineClient, ServerProcess


def test_chat_through_a_real_twistd(chatd_server):
    """Two users register, log in and talk in #lobby over real sockets."""
    alice, bob = chatd_server.connect(), chatd_server.connect()
    assert alice.hello.startswith("HELLO chatd 1 ")
    alice.login("alice")
    bob.login("bob")
    assert alice.read_line() == "JOIN #lobby bob"
    assert bob.command("hi alice") == ["MSG #lobby bob hi alice", "OK say #lobby"]
    assert alice.read_line() == "MSG #lobby bob hi alice"


def test_stored_dm_and_history_survive_kill_9(chatd_server):
    """What was acknowledged with OK is there after SIGKILL and a restart."""
    alice, bob = chatd_server.connect(), chatd_server.connect()
    alice.login("alice")
    bob.login("bob")
    bob.close()
    assert alice.command("remember this")[-1] == "OK say #lobby"
    assert alice.command("/msg bob while you were out")[-1] == "OK msg bob stored"
    chatd_server.kill()
    chatd_server.start()
    bob = chatd_server.connect()
    lines = bob.command("/login bob password1")
    assert any(
        line.startswith("HISTORY #lobby ") and line.endswith(" alice remember this")
        for line in lines
    ), lines
    stored = [line for line in lines if line.startswith("STORED ")]
    assert len(stored) == 1 and stored[0].endswith(" alice while you were out"), lines
    assert lines[-1] == "OK login bob"
    # Sent once, then gone from the store.
    again = chatd_server.connect()
    assert not [line for line in again.command("/login bob password1") if "STORED" in line]


def bcrypt_workers_of(pid: int) -> list[int]:
    """The bcrypt worker processes whose parent is ``pid`` (from /proc)."""
    workers = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as stat:
                parent = int(stat.read().rsplit(")", 1)[1].split()[1])
            with open(f"/proc/{entry}/cmdline", "rb") as cmdline:
                command = cmdline.read()
        except (OSError, ValueError, IndexError):
            continue
        if parent == pid and b"spawn_main" in command:
            workers.append(int(entry))
    return workers


def test_bcrypt_workers_end_with_a_killed_server(chatd_server):
    """SIGKILL leaves no bcrypt worker behind: each notices and exits by itself."""
    chatd_server.connect().login("alice")  # bcrypt has run: the workers are up.
    workers = bcrypt_workers_of(chatd_server.pid)
    assert len(workers) == 2
    exits = [os.pidfd_open(pid) for pid in workers]
    try:
        chatd_server.kill()
        for pidfd in exits:
            # A pidfd turns readable when its process has ended.
            readable, _, _ = select.select([pidfd], [], [], 30)
            assert readable == [pidfd]
    finally:
        for pidfd in exits:
            os.close(pidfd)


def test_sigterm_says_bye_shutdown_and_exits_cleanly(chatd_server):
    """SIGTERM: every connection gets BYE shutdown, the database closes, the process ends.

    twistd ends by re-raising the signal that stopped it once shutdown is
    complete, so the exit status is "terminated by SIGTERM", which systemd
    counts as a clean stop.
    """
    logged_in, anonymous = chatd_server.connect(), chatd_server.connect()
    logged_in.login("alice")
    chatd_server.process.send_signal(signal.SIGTERM)
    assert logged_in.read_line() == "BYE shutdown"
    assert anonymous.read_line() == "BYE shutdown"
    assert logged_in.read_line() == ""
    assert chatd_server.process.wait(30) in (0, -signal.SIGTERM)
    chatd_server.wait_for("database closed")
    chatd_server.wait_for("Server Shut Down")


def test_admin_command_line_adds_a_user_who_can_log_in(chatd_server):
    """``chatd user add`` on the live database; the new user logs in at once."""
    added = subprocess.run(
        [sys.executable, "-m", "chatd", "user", "add", "carol", "--password-stdin",
         "--db", str(chatd_server.db_path)],
        input="carols-password\n", capture_output=True, text=True, cwd=ROOT, timeout=60,
        env={"PYTHONPATH": str(ROOT), "CHATD_BCRYPT_ROUNDS": "4", "PATH": "/usr/bin:/bin"},
    )
    assert added.returncode == 0, added.stderr
    carol = LineClient(chatd_server.port)
    assert carol.command("/login carol carols-password")[-1] == "OK login carol"


def test_banned_from_the_command_line_while_logged_in(chatd_server):
    """``chatd user ban`` on the live server: the session gets BYE banned, login ERR banned."""
    mallory = chatd_server.connect()
    mallory.login("mallory")
    banned = subprocess.run(
        [sys.executable, "-m", "chatd", "--db", str(chatd_server.db_path), "user", "ban",
         "mallory"],
        capture_output=True, text=True, cwd=ROOT, timeout=60,
        env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"},
    )
    assert banned.returncode == 0, banned.stderr
    assert mallory.until(lambda line: line.startswith("BYE"))[-1] == "BYE banned"
    again = chatd_server.connect()
    assert again.command("/login mallory password1")[-1].startswith("ERR banned")


def test_the_twistd_plugin_serves_too(tmp_path):
    """``twistd -n chatd --listen ... --db ...`` runs the same server."""
    launcher = [sys.executable, "-c", "from twisted.scripts.twistd import run; run()"]
    command = [
        *launcher, "--nodaemon", "--pidfile=", "chatd",
        "--listen", "tcp:0:interface=127.0.0.1",
        "--db", str(tmp_path / "plugin.sqlite3"),
        "--bcrypt-rounds", "4",
    ]
    server = ServerProcess(tmp_path, command=command).start()
    try:
        client = server.connect()
        assert client.command("/register plugged password1") == ["OK register plugged"]
        assert (tmp_path / "plugin.sqlite3").exists()
        server.wait_for("bcrypt cost 4")
    finally:
        server.stop()


def test_zero_configuration(tmp_path):
    """Defaults only: port 8004, registration open, bcrypt 12, chatd.sqlite3 in the cwd.

    One variable is set: the default listener ``tcp:8004`` narrowed to
    loopback, because test servers listen on 127.0.0.1 only (the default
    description itself is checked in test_config).
    """
    with socket.socket() as probe:
        # As the server binds (SO_REUSEADDR, so old connections in TIME-WAIT do not
        # count): fails loudly if something else listens there.
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        probe.bind(("127.0.0.1", 8004))
    env = {name: value for name, value in os.environ.items() if not name.startswith("CHATD_")}
    env["CHATD_LISTEN"] = "tcp:8004:interface=127.0.0.1"
    env["CHATD_IRC_LISTEN"] = "tcp:6667:interface=127.0.0.1"
    env["PYTHONPATH"] = str(ROOT)
    server = ServerProcess(tmp_path, env=env, exact_env=True)
    try:
        server.start(timeout=60)
        assert server.port == 8004
        client = LineClient(8004)
        assert client.hello.startswith("HELLO chatd 1 ")
        assert client.command("/register alice password1") == ["OK register alice"]
        assert client.command("/login alice password1")[-1] == "OK login alice"
        assert (tmp_path / "chatd.sqlite3").is_file()
        assert server.terminate() in (0, -signal.SIGTERM)
        server.wait_for("database closed")
    finally:
        server.stop()
