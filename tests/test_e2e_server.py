"""End to end: the real ``twistd -ny chatd.tac`` process over real sockets."""

import json
import os
import select
import signal
import subprocess
import sys

import pytest

from chatd.config import Config
from tests.programs import REQUIRE_ALL, require_module, require_program
from tests.serverproc import ROOT, LineClient, ServerProcess, twistd_command


@pytest.fixture(params=["sqlite", "postgresql"])
def any_db_server(request, tmp_path):
    """The real ``twistd -ny chatd.tac`` on SQLite (its default) and on a fresh database
    of the session's private PostgreSQL (skipped naming the package ``postgresql`` where
    it is not installed; a failure under ``CHATD_TEST_REQUIRE_ALL=1``); killed after."""
    env = {}
    if request.param == "postgresql":
        require_module("psycopg", "psycopg[binary]")
        postgres = request.getfixturevalue("postgres_server")
        env["CHATD_DB"] = postgres.fresh_database("e2e")
    server = ServerProcess(tmp_path, env=env).start()
    yield server
    server.stop()


def db_setting(server: ServerProcess) -> str:
    """What the admin command line's ``--db`` takes for ``server``'s database."""
    return server.env.get("CHATD_DB") or str(server.db_path)


def test_chat_through_a_real_twistd(any_db_server):
    """Two users register, log in and talk in #lobby over real sockets."""
    chatd_server = any_db_server
    alice, bob = chatd_server.connect(), chatd_server.connect()
    assert alice.hello.startswith("HELLO chatd 1 ")
    alice.login("alice")
    bob.login("bob")
    assert alice.read_line() == "JOIN #lobby bob"
    assert bob.command("hi alice") == ["MSG #lobby bob hi alice", "OK say #lobby"]
    assert alice.read_line() == "MSG #lobby bob hi alice"


def test_stored_dm_and_history_survive_kill_9(any_db_server):
    """What was acknowledged with OK is there after SIGKILL and a restart."""
    chatd_server = any_db_server
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


def children_of(pid: int) -> list[bytes]:
    """The command lines of every process whose parent is ``pid`` (from /proc)."""
    children = []
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
        if parent == pid:
            children.append(command)
    return children


def test_deploy_md_counts_the_processes_of_a_running_server(chatd_server):
    """docs/deploy.md's process count is the real one: the server, its bcrypt
    workers (CHATD_BCRYPT_WORKERS, default 2) and multiprocessing's resource tracker."""
    chatd_server.connect().login("alice")  # bcrypt has run: the workers are up.
    children = children_of(chatd_server.pid)
    workers = Config().bcrypt_workers
    assert sum(b"spawn_main" in command for command in children) == workers
    assert sum(b"resource_tracker" in command for command in children) == 1
    assert len(children) == workers + 1
    words = {3: "three", 4: "four", 5: "five"}
    text = " ".join((ROOT / "docs" / "deploy.md").read_text().split())
    assert f"`systemctl status chatd` shows {words[len(children) + 1]} processes" in text


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


def test_sigterm_says_bye_shutdown_and_exits_cleanly(any_db_server):
    """SIGTERM: every connection gets BYE shutdown, the database closes, the process ends.

    twistd ends by re-raising the signal that stopped it once shutdown is
    complete, so the exit status is "terminated by SIGTERM", which systemd
    counts as a clean stop.
    """
    chatd_server = any_db_server
    logged_in, anonymous = chatd_server.connect(), chatd_server.connect()
    logged_in.login("alice")
    chatd_server.process.send_signal(signal.SIGTERM)
    assert logged_in.read_line() == "BYE shutdown"
    assert anonymous.read_line() == "BYE shutdown"
    assert logged_in.read_line() == ""
    assert chatd_server.process.wait(30) in (0, -signal.SIGTERM)
    chatd_server.wait_for("database closed")
    chatd_server.wait_for("Server Shut Down")


def test_password_with_a_tab_changes_a_password_with_spaces(any_db_server):
    """``/password <old>TAB<new>`` over a real socket: both may hold spaces."""
    chatd_server = any_db_server
    alice = chatd_server.connect()
    assert alice.command("/register alice old pass word") == ["OK register alice"]
    assert alice.command("/login alice old pass word")[-1] == "OK login alice"
    assert alice.command("/password old pass word\tnew pass word") == ["OK password"]
    again = chatd_server.connect()
    assert again.command("/login alice old pass word")[-1].startswith("ERR bad-credentials")
    assert again.command("/login alice new pass word")[-1] == "OK login alice"


def test_admin_command_line_adds_a_user_who_can_log_in(any_db_server):
    """``chatd user add`` on the live database; the new user logs in at once."""
    chatd_server = any_db_server
    added = subprocess.run(
        [sys.executable, "-m", "chatd", "user", "add", "carol", "--password-stdin",
         "--db", db_setting(chatd_server)],
        input="carols-password\n", capture_output=True, text=True, cwd=ROOT, timeout=60,
        env={"PYTHONPATH": str(ROOT), "CHATD_BCRYPT_ROUNDS": "4", "PATH": "/usr/bin:/bin"},
    )
    assert added.returncode == 0, added.stderr
    carol = LineClient(chatd_server.port)
    assert carol.command("/login carol carols-password")[-1] == "OK login carol"


def test_banned_from_the_command_line_while_logged_in(any_db_server):
    """``chatd user ban`` on the live server: the session gets BYE banned, login ERR banned."""
    chatd_server = any_db_server
    mallory = chatd_server.connect()
    mallory.login("mallory")
    banned = subprocess.run(
        [sys.executable, "-m", "chatd", "--db", db_setting(chatd_server), "user", "ban",
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


# Run in the server's private network namespace: register and log in over
# loopback, then connect to an address that is not on loopback.
_ZERO_CONFIGURATION_CLIENT = """
import json, sys
from tests.programs import REQUIRE_ALL, require_program
from tests.serverproc import LineClient
client = LineClient(8004)
lines = [client.hello]
lines += client.command("/register alice password1")
lines += client.command("/login alice password1")
other = LineClient(8004, host=sys.argv[1])
lines.append(other.hello)
import urllib.request
with urllib.request.urlopen("http://127.0.0.1:8080/", timeout=60) as page:
    lines.append("the page" if b"<title>chatd</title>" in page.read() else "no page")
print(json.dumps(lines))
"""
# An address on no loopback network: answered only by a server on every interface.
_OTHER_ADDRESS = "10.254.0.1"


def _require_private_network_namespaces() -> None:
    """Skip (or fail under CHATD_TEST_REQUIRE_ALL=1) where no network namespace can be made."""
    require_program("unshare", "util-linux")
    require_program("nsenter", "util-linux")
    require_program("ip", "iproute2")
    tried = subprocess.run(
        ["unshare", "--net", "ip", "link", "set", "lo", "up"], capture_output=True, timeout=30
    )
    if tried.returncode != 0:
        reason = "unshare --net is not allowed here (it needs root or user namespaces)"
        if REQUIRE_ALL:
            pytest.fail(f"{reason} (CHATD_TEST_REQUIRE_ALL=1)")
        pytest.skip(reason)


def test_zero_configuration(tmp_path):
    """Defaults only: port 8004 (and the page on 8080) on every interface, registration
    open, bcrypt 12, chatd.sqlite3.

    No CHATD_* variable is set at all. The server runs in a private network
    namespace (``unshare --net``), so nothing else on the machine can hold
    its port, and it listens on that namespace's interfaces only. The client
    joins the namespace (``nsenter``) and reaches it at 127.0.0.1 and at an
    address outside loopback's network, which proves every interface.
    """
    _require_private_network_namespaces()
    env = {name: value for name, value in os.environ.items() if not name.startswith("CHATD_")}
    env["PYTHONPATH"] = str(ROOT)
    network = f"ip link set lo up && ip addr add {_OTHER_ADDRESS}/32 dev lo"
    command = ["unshare", "--net", "sh", "-c", f'{network} && exec "$@"', "sh", *twistd_command()]
    server = ServerProcess(tmp_path, env=env, command=command, exact_env=True)
    try:
        server.start(timeout=60)
        assert server.port == 8004
        server.wait_for("bcrypt cost 12")
        client = subprocess.run(
            ["nsenter", f"--net=/proc/{server.pid}/ns/net", sys.executable, "-c",
             _ZERO_CONFIGURATION_CLIENT, _OTHER_ADDRESS],
            capture_output=True, text=True, cwd=ROOT, timeout=120,
            env={"PYTHONPATH": str(ROOT), "PATH": os.environ.get("PATH", "/usr/bin:/bin")},
        )
        assert client.returncode == 0, client.stderr
        lines = json.loads(client.stdout)
        assert lines[0].startswith("HELLO chatd 1 ")
        assert lines[1] == "OK register alice"
        assert lines[-3] == "OK login alice"
        assert lines[-2].startswith("HELLO chatd 1 ")
        # The web door's default, tcp:8080, serves the chat page too.
        assert lines[-1] == "the page"
        assert (tmp_path / "chatd.sqlite3").is_file()
        assert server.terminate() in (0, -signal.SIGTERM)
        server.wait_for("database closed")
    finally:
        server.stop()
