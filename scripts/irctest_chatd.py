"""An irctest controller for chatd's IRC door (irctest is the IRC conformance suite).

irctest is not part of chatd and is never vendored: fetch it, install its
requirements in a virtual environment beside chatd, and run its server tests
with this module as the controller, from chatd's checkout::

    git clone <irctest> /tmp/irctest && pip install -r /tmp/irctest/requirements.txt
    cd /tmp/irctest && PYTHONPATH=/path/to/chatd/scripts:/path/to/chatd \\
        IRCTEST_CHATD_ROOT=/path/to/chatd python -m pytest --controller irctest_chatd \\
        irctest/server_tests/registration.py ...

docs/irc.md gives the exact command, the modules run and the results. The
controller starts the real ``twistd -ny chatd.tac`` in irctest's temporary
directory with the IRC door on the port irctest asks for, guests allowed
(irctest connects with nicks that are no account's), limits wide open, and
registers accounts through the admin command line (``chatd user add``).
Nothing here is imported by chatd or by its own tests.
"""

import os
import subprocess
import sys
from pathlib import Path

from irctest.basecontrollers import BaseServerController, DirectoryBasedController
from irctest.runner import NotImplementedByController

# Not a CHATD_* name: chatd reports unknown CHATD_* variables at start.
IRCTEST_CHATD_ROOT = Path(
    os.environ.get("IRCTEST_CHATD_ROOT", Path(__file__).resolve().parent.parent)
)


class ChatdController(BaseServerController, DirectoryBasedController):
    """Runs chatd for one irctest test case."""

    software_name = "chatd"
    supported_sasl_mechanisms = {"PLAIN"}
    supports_sts = False

    def _environment(self, hostname: str, port: int) -> dict[str, str]:
        assert self.directory
        env = {name: value for name, value in os.environ.items() if not name.startswith("CHATD_")}
        env.update(
            PYTHONPATH=str(IRCTEST_CHATD_ROOT),
            CHATD_DB=str(self.directory / "chatd.sqlite3"),
            CHATD_LISTEN="tcp:0:interface=127.0.0.1",
            CHATD_IRC_LISTEN=f"tcp:{port}:interface={hostname}",
            CHATD_SERVER_NAME="My.Little.Server",
            CHATD_GUESTS="on",
            CHATD_BCRYPT_ROUNDS="4",
            CHATD_RATE_LIMIT="off",
            CHATD_MAX_CONNECTIONS_PER_ADDRESS="100000",
            CHATD_REGISTRATION_LIMIT="off",
            CHATD_LOGIN_FAILURES_PER_ADDRESS="20",
        )
        return env

    def run(
        self,
        hostname: str,
        port: int,
        *,
        password,
        ssl: bool,
        run_services: bool,
        faketime,
        websocket_hostname,
        websocket_port,
    ) -> None:
        """Start chatd listening for IRC on ``hostname:port``."""
        if ssl:
            raise NotImplementedByController("TLS")
        if password is not None:
            raise NotImplementedByController("PASS as a server password")
        if websocket_hostname is not None or websocket_port is not None:
            raise NotImplementedByController("Websocket")
        assert self.proc is None
        self.port = port
        self.hostname = hostname
        self.create_config()
        self.env = self._environment(hostname, port)
        twistd = Path(sys.executable).with_name("twistd")
        self.proc = self.execute(
            [str(twistd), "--nodaemon", "--pidfile=", "-y", str(IRCTEST_CHATD_ROOT / "chatd.tac")],
            env=self.env,
            cwd=self.directory,
        )

    def registerUser(self, case, username: str, password: str | None = None) -> None:
        """Create an account with the admin command line, as an operator would."""
        assert password
        subprocess.run(
            [sys.executable, "-m", "chatd", "--db", self.env["CHATD_DB"], "user", "add",
             username, "--password-stdin"],
            input=password + "\n",
            env=self.env,
            check=True,
            text=True,
            capture_output=True,
        )


def get_irctest_controller_class():
    """What irctest's ``--controller`` asks of this module."""
    return ChatdController
