"""The real server as a process: ``twistd -ny chatd.tac``, for end-to-end tests.

``ServerProcess`` starts twistd in a directory of its own with the
database there, reads the log it prints, and learns the port from the
``chatd listening on`` line; nothing waits on a timer, every wait is for a
line of output or a process exit, with a deadline that fails the test.
``LineClient`` is a plain blocking socket client for talking to it.
"""

import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TAC = ROOT / "chatd.tac"
LISTENING = re.compile(r"chatd listening on tcp \S+ (\d+)")
IRC_LISTENING = re.compile(r"chatd irc listening on tcp \S+ (\d+)")


def twistd_command() -> list[str]:
    """The twistd installed beside this Python, run on chatd.tac without daemonizing."""
    script = Path(sys.executable).with_name("twistd")
    launcher = [str(script)] if script.exists() else [
        sys.executable, "-c", "from twisted.scripts.twistd import run; run()"
    ]
    return [*launcher, "--nodaemon", "--pidfile=", "-y", str(TAC)]


def server_environment(directory: Path, extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment a test server runs with: fast bcrypt, database in ``directory``."""
    env = dict(os.environ)
    env.update(
        PYTHONPATH=str(ROOT),
        CHATD_DB=str(directory / "chatd.sqlite3"),
        CHATD_LISTEN="tcp:0:interface=127.0.0.1",
        CHATD_IRC_LISTEN="tcp:0:interface=127.0.0.1",
        CHATD_BCRYPT_ROUNDS="4",
        CHATD_RATE_LIMIT="off",
        # The web door's default port 8080 is one for all: tests that want it say so.
        CHATD_WEB_LISTEN="off",
    )
    env.update(extra or {})
    return env


class ServerProcess:
    """A chatd server run by the real twistd, in ``directory``."""

    def __init__(
        self,
        directory: Path,
        env: dict[str, str] | None = None,
        command: list[str] | None = None,
        exact_env: bool = False,
    ) -> None:
        """``env`` adds to the test defaults, or with ``exact_env`` is the whole environment."""
        self.directory = Path(directory)
        self.env = dict(env or {})
        self.command = command or twistd_command()
        self.exact_env = exact_env
        self.process: subprocess.Popen | None = None
        self.port: int | None = None
        # The IRC door's port, once it listens (kept across restarts like ``port``).
        self.irc_port: int | None = None
        self.output: list[str] = []
        self._output_ended = False
        self._changed = threading.Condition()

    @property
    def pid(self) -> int:
        """The server's process id."""
        assert self.process is not None
        return self.process.pid

    @property
    def db_path(self) -> Path:
        """The database file the server uses."""
        return Path(server_environment(self.directory, self.env)["CHATD_DB"])

    def start(self, timeout: float = 30.0) -> "ServerProcess":
        """Start twistd and return once it listens (on the same port after a restart)."""
        env = self.launch()
        match = self.wait_for(LISTENING, timeout)
        self.port = int(match.group(1))
        if env.get("CHATD_IRC_LISTEN", "tcp:6667").lower() != "off":
            self.irc_port = int(self.wait_for(IRC_LISTENING, timeout).group(1))
        return self

    def launch(self) -> dict[str, str]:
        """Start twistd without waiting for anything; the environment it was given.

        ``wait_for`` what you expect to see.
        """
        env = dict(self.env) if self.exact_env else server_environment(self.directory, self.env)
        if self.port is not None and "CHATD_LISTEN" not in self.env and not self.exact_env:
            env["CHATD_LISTEN"] = f"tcp:{self.port}:interface=127.0.0.1"
        if self.irc_port is not None and "CHATD_IRC_LISTEN" not in self.env and not self.exact_env:
            env["CHATD_IRC_LISTEN"] = f"tcp:{self.irc_port}:interface=127.0.0.1"
        self.output = []
        self._output_ended = False
        self.process = subprocess.Popen(
            self.command,
            cwd=self.directory,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        threading.Thread(target=self._read_output, args=(self.process,), daemon=True).start()
        return env

    def _read_output(self, process: subprocess.Popen) -> None:
        for line in process.stdout:
            with self._changed:
                self.output.append(line.rstrip("\n"))
                self._changed.notify_all()
        with self._changed:
            self._output_ended = True
            self._changed.notify_all()

    def wait_for_end_of_output(self, timeout: float = 30.0) -> list[str]:
        """Wait until every process writing to the output (workers too) has closed it."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while not self._output_ended:
                remaining = deadline - time.monotonic()
                assert remaining > 0, "the server's output is still open"
                self._changed.wait(remaining)
        return self.output

    def wait_for(
        self, pattern: str | re.Pattern, timeout: float = 30.0, since: int = 0
    ) -> re.Match:
        """Wait until a line of the server's output matches ``pattern``; ``since``: only
        lines from that index on (``len(server.output)`` taken earlier: a new line)."""
        regex = re.compile(pattern)
        deadline = time.monotonic() + timeout
        seen = since
        with self._changed:
            while True:
                for line in self.output[seen:]:
                    match = regex.search(line)
                    if match:
                        return match
                seen = len(self.output)
                if self.process.poll() is not None and seen == len(self.output):
                    raise AssertionError(
                        f"server exited ({self.process.returncode}) before {regex.pattern!r}:\n"
                        + "\n".join(self.output)
                    )
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise AssertionError(
                        f"no {regex.pattern!r} in the server's output:\n" + "\n".join(self.output)
                    )
                self._changed.wait(min(remaining, 0.5))

    def terminate(self, timeout: float = 30.0) -> int:
        """Send SIGTERM and return the exit code."""
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout)

    def kill(self) -> None:
        """Kill the process with SIGKILL: a crash, as far as chatd can tell."""
        self.process.kill()
        self.process.wait(30)

    def restart(self, timeout: float = 30.0) -> "ServerProcess":
        """Stop (SIGTERM) if running, then start again on the same port."""
        if self.process is not None and self.process.poll() is None:
            self.terminate()
        return self.start(timeout)

    def stop(self) -> None:
        """Make sure the process is gone."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(30)

    def connect(self, timeout: float = 10.0) -> "LineClient":
        """A new plain-socket client, its HELLO already read."""
        return LineClient(self.port, timeout=timeout)


class LineClient:
    """A blocking line client for end-to-end tests (what ``nc`` would do)."""

    def __init__(self, port: int, host: str = "127.0.0.1", timeout: float = 10.0) -> None:
        self.socket = socket.create_connection((host, port), timeout=timeout)
        self.timeout = timeout
        self._buffer = b""
        self.hello = self.read_line()

    def send(self, line: str) -> None:
        """Send one line."""
        self.socket.sendall(line.encode() + b"\n")

    def read_line(self) -> str:
        """Wait for the next server line; '' when the server closed the connection."""
        while b"\r\n" not in self._buffer:
            data = self.socket.recv(65536)
            if not data:
                return ""
            self._buffer += data
        line, self._buffer = self._buffer.split(b"\r\n", 1)
        return line.decode()

    def command(self, line: str) -> list[str]:
        """Send ``line`` and return every line up to and including its final reply."""
        self.send(line)
        return self.until(lambda text: text.startswith(("OK ", "ERR ")))

    def until(self, done) -> list[str]:
        """Read lines until one satisfies ``done``; return them all."""
        lines = []
        while True:
            line = self.read_line()
            if line == "":
                raise AssertionError(f"connection closed after {lines}")
            lines.append(line)
            if done(line):
                return lines

    def login(self, name: str, password: str = "password1") -> list[str]:
        """Register if needed, then log in; return the login's lines."""
        self.command(f"/register {name} {password}")
        lines = self.command(f"/login {name} {password}")
        assert lines[-1] == f"OK login {name}", lines
        return lines

    def close(self) -> None:
        """Close the socket."""
        self.socket.close()
