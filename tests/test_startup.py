"""Failing to start, on the real ``twistd -ny chatd.tac``: one line, a non-zero status, no hang.

Each server here is meant not to come up. The test waits for the process
to exit (bounded by ``EXIT_TIMEOUT``, which fails the test), then reads
everything it printed: exactly one line says ``chatd: cannot start:``,
names the setting and the reason, and there is no traceback.
"""

import shutil
import signal
import socket
import sqlite3
import subprocess
import tempfile
from pathlib import Path

import pytest

from chatd.storage.sqlite import schema
from tests.serverproc import ServerProcess, server_environment, twistd_command

EXIT_TIMEOUT = 60


def start_and_wait_for_exit(directory: Path, env: dict[str, str]) -> tuple[int, list[str]]:
    """Run the server until it exits by itself; its status and every line it printed."""
    process = subprocess.run(
        twistd_command(),
        cwd=directory,
        env=server_environment(directory, {"CHATD_BCRYPT_WORKERS": "1", **env}),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=EXIT_TIMEOUT,
    )
    return process.returncode, process.stdout.splitlines()


def the_one_failure_line(output: list[str]) -> str:
    """The single ``chatd: cannot start:`` line, checked to be alone and traceback-free."""
    failures = [line for line in output if "chatd: cannot start:" in line]
    assert len(failures) == 1, "\n".join(output)
    assert not [line for line in output if "Traceback" in line], "\n".join(output)
    return failures[0].split("chatd: cannot start: ", 1)[1]


@pytest.fixture
def short_dir():
    """A directory with a short path: a unix socket path must fit in 108 bytes."""
    directory = Path(tempfile.mkdtemp(prefix="chatd-"))
    yield directory
    shutil.rmtree(directory, ignore_errors=True)


def make_text_file(path: Path) -> None:
    """Not a database at all."""
    path.write_text("these are my notes, not a database\n" * 20)


def make_corrupt_database(path: Path) -> None:
    """A chatd database whose schema page was overwritten."""
    schema.open_database_file(str(path)).close()
    with open(path, "r+b") as damaged:
        damaged.seek(100)
        damaged.write(b"\xa5" * 3000)


def make_newer_database(path: Path) -> None:
    """A database a later chatd wrote: its schema version is past ours."""
    connection = schema.open_database_file(str(path))
    connection.execute(f"PRAGMA user_version = {schema.SCHEMA_VERSION + 1}")
    connection.close()


@pytest.mark.parametrize(
    ("prepare", "reason"),
    [
        (None, "directory {directory} does not exist"),
        (make_text_file, "not an SQLite database"),
        (make_corrupt_database, "malformed"),
        (make_newer_database, f"schema version {schema.SCHEMA_VERSION + 1} is newer"),
    ],
    ids=["missing-directory", "text-file", "corrupt", "newer-schema"],
)
def test_a_database_that_cannot_be_opened_stops_the_server(tmp_path, short_dir, prepare, reason):
    """Issue 9 item 16: exit 1 with one line naming CHATD_DB and why; nothing ever listened."""
    if prepare is None:
        database = tmp_path / "missing" / "chatd.sqlite3"
    else:
        database = tmp_path / "chatd.sqlite3"
        prepare(database)
    sock = short_dir / "chatd.sock"
    status, output = start_and_wait_for_exit(
        tmp_path, {"CHATD_DB": str(database), "CHATD_LISTEN": f"unix:{sock}"}
    )
    assert status == 1, "\n".join(output)
    line = the_one_failure_line(output)
    assert line.startswith(f"CHATD_DB={database}: "), line
    assert reason.format(directory=database.parent) in line
    assert not [line for line in output if "listening on" in line]
    assert not sock.exists()


def test_nothing_listens_while_the_database_cannot_be_opened(tmp_path, short_dir):
    """A database another process holds locked: no socket while waiting; then exit 1."""
    database = tmp_path / "chatd.sqlite3"
    schema.open_database_file(str(database)).close()
    holder = sqlite3.connect(database, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    sock = short_dir / "chatd.sock"
    server = ServerProcess(tmp_path, env={"CHATD_LISTEN": f"unix:{sock}"})
    try:
        with pytest.raises(AssertionError, match=r"server exited \(1\)"):
            server.start(timeout=EXIT_TIMEOUT)
        assert server.process.wait(EXIT_TIMEOUT) == 1
        line = the_one_failure_line(server.wait_for_end_of_output())
        assert line.startswith(f"CHATD_DB={database}: "), line
        assert not [line for line in server.output if "listening on" in line]
        assert not sock.exists()
    finally:
        holder.close()
        server.stop()


def test_sigterm_while_the_database_opens_stops_the_server(tmp_path, short_dir):
    """SIGTERM during the start: the server exits as on any SIGTERM, never having listened.

    The database is held locked so the start is still opening it when the
    signal comes; the server must not wait for that open to end (it used to
    hang for good, logging ``ReactorNotRunning``).
    """
    database = tmp_path / "chatd.sqlite3"
    schema.open_database_file(str(database)).close()
    holder = sqlite3.connect(database, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    sock = short_dir / "chatd.sock"
    server = ServerProcess(tmp_path, env={"CHATD_LISTEN": f"unix:{sock}"})
    try:
        server.launch()
        server.wait_for("opening database", EXIT_TIMEOUT)  # logged once the reactor runs
        server.process.send_signal(signal.SIGTERM)
        assert server.process.wait(EXIT_TIMEOUT) in (0, -signal.SIGTERM)
        output = "\n".join(server.wait_for_end_of_output(EXIT_TIMEOUT))
        assert "Traceback" not in output and "ReactorNotRunning" not in output, output
        assert "cannot start" not in output, output
        assert "listening on" not in output
        assert not sock.exists()
    finally:
        holder.close()
        server.stop()


def test_a_port_in_use_stops_the_server(tmp_path):
    """Issue 9 item 17: CHATD_LISTEN on a port that is taken: exit 1, one line naming it."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        description = f"tcp:{port}:interface=127.0.0.1"
        status, output = start_and_wait_for_exit(tmp_path, {"CHATD_LISTEN": description})
    assert status == 1, "\n".join(output)
    line = the_one_failure_line(output)
    assert line == (
        f"CHATD_LISTEN={description}: cannot listen on 127.0.0.1:{port}: Address already in use"
    )


def test_a_metrics_port_in_use_stops_the_server(tmp_path):
    """The metrics listener fails the same way, naming CHATD_METRICS_LISTEN."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        description = f"tcp:{port}:interface=127.0.0.1"
        status, output = start_and_wait_for_exit(tmp_path, {"CHATD_METRICS_LISTEN": description})
    assert status == 1, "\n".join(output)
    line = the_one_failure_line(output)
    assert line.startswith(f"CHATD_METRICS_LISTEN={description}: cannot listen on "), line


def test_a_missing_directory_for_a_unix_socket_stops_the_server(tmp_path):
    """A unix: listener whose directory is missing: the path in the line, not a lock's pid."""
    path = tmp_path / "no-such-dir" / "chatd.sock"
    status, output = start_and_wait_for_exit(tmp_path, {"CHATD_LISTEN": f"unix:{path}"})
    assert status == 1, "\n".join(output)
    line = the_one_failure_line(output)
    assert line.startswith(f"CHATD_LISTEN=unix:{path}: No such file or directory: "), line
    assert str(path.parent) in line.split(": ", 2)[2]


@pytest.mark.parametrize(
    ("listen", "reason"),
    [
        ("nonsense:8004", "Unknown endpoint type: 'nonsense'"),
        ("tcp:80o4", "'80o4' is not a number"),
        ("tcp:70000", "the port must be from 0 to 65535"),
    ],
)
def test_an_endpoint_that_does_not_parse_stops_twistd_before_it_starts(tmp_path, listen, reason):
    """A description checked at parse time: exit 2 at once, the variable and reason on stderr."""
    status, output = start_and_wait_for_exit(tmp_path, {"CHATD_LISTEN": listen})
    assert status == 2, "\n".join(output)
    assert the_one_failure_line(output) == f"CHATD_LISTEN='{listen}': {reason}"
    assert not [line for line in output if "chatd starting" in line]


def test_unknown_chatd_variables_are_named_at_start(tmp_path):
    """Issue 9 item 20: a misspelled CHATD_* name is warned about, with the setting meant."""
    server = ServerProcess(
        tmp_path, env={"CHATD_REGISTRATON": "closed", "CHATD_NO_SUCH_THING": "1"}
    )
    try:
        server.start()
        server.wait_for(
            r"unknown variable CHATD_REGISTRATON ignored \(did you mean CHATD_REGISTRATION\?\)$"
        )
        server.wait_for(r"unknown variable CHATD_NO_SUCH_THING ignored$")
        assert not [line for line in server.output if "CHATD_PASSWORD" in line]
    finally:
        server.stop()


def test_the_systemd_unit_restarts_failures_but_not_bad_settings():
    """scripts/chatd.service: exit 1 (cannot start) is restarted; exit 2 (a bad setting) is not.

    A bad setting cannot be fixed by trying again, so the unit must not
    retry it forever; a port still held by the previous run can be.
    """
    unit = (Path(__file__).resolve().parent.parent / "scripts" / "chatd.service").read_text()
    settings = dict(
        line.split("=", 1) for line in unit.splitlines() if "=" in line and line[0] != "#"
    )
    assert settings["Restart"] == "on-failure"
    assert settings["RestartPreventExitStatus"].split() == ["2"]
    assert int(settings["StartLimitBurst"]) >= 1
