"""An irctest controller for chatd's IRC door (irctest is the IRC conformance suite).

irctest is not part of chatd and is never vendored: fetch it, install its
requirements in a virtual environment beside chatd, and run its server tests
with this module as the controller, from chatd's checkout::

    git clone <irctest> /tmp/irctest && pip install -r /tmp/irctest/requirements.txt
    cd /tmp/irctest && PYTHONPATH=/path/to/chatd/scripts:/path/to/chatd \\
        IRCTEST_CHATD_ROOT=/path/to/chatd timeout 900 python -m pytest -p no:twisted \\
        -m "not implementation-specific" --controller irctest_chatd \\
        irctest/server_tests/connection_registration.py ...

docs/irc.md gives the exact command, the modules run and the results. The
controller starts the real ``twistd -ny chatd.tac`` in irctest's temporary
directory with the IRC door on the port irctest asks for, guests allowed
(irctest connects with nicks that are no account's), limits wide open, and
registers accounts through the admin command line (``chatd user add``), or
for irctest's passwords shorter than chatd's minimum, straight into the
database (see ``registerUser``).
Nothing here is imported by chatd or by its own tests.
"""

import os
import subprocess
import sys
import time
from pathlib import Path

from irctest.basecontrollers import BaseServerController, DirectoryBasedController
from irctest.runner import NotImplementedByController

from chatd.auth.passwords import hash_password
from chatd.core.names import PASSWORD_MIN_BYTES, normalize_password
from chatd.ops.admin import open_chatd_database
from chatd.storage import transactions
from chatd.storage.sqlite.schema import transaction

# Not a CHATD_* name: chatd reports unknown CHATD_* variables at start.
IRCTEST_CHATD_ROOT = Path(
    os.environ.get("IRCTEST_CHATD_ROOT", Path(__file__).resolve().parent.parent)
)


# The server operator irctest's OPER tests log in as.
OPER_ACCOUNT, OPER_PASSWORD = "operuser", "operpassword"


class ChatdController(BaseServerController, DirectoryBasedController):
    """Runs chatd for one irctest test case."""

    # Whether this run's operator account is in the database yet.
    _operator_stored = False

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
            # No web door: irctest needs none, and its default port may be taken.
            CHATD_WEB_LISTEN="off",
            CHATD_SERVER_NAME="My.Little.Server",
            CHATD_GUESTS="on",
            CHATD_BCRYPT_ROUNDS="4",
            CHATD_RATE_LIMIT="off",
            CHATD_MAX_CONNECTIONS_PER_ADDRESS="100000",
            CHATD_REGISTRATION_LIMIT="off",
            CHATD_LOGIN_FAILURES_PER_ADDRESS="20",
            # irctest's OPER tests send OPER operuser operpassword: that account
            # (registered once the server is up, see wait_for_port) is an operator.
            CHATD_OPERATORS=OPER_ACCOUNT,
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
        self._operator_stored = False
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

    def wait_for_port(self) -> None:
        """Wait for the IRC door; the first time, store the operator account (the
        database exists once the server is up) before any client connects."""
        super().wait_for_port()
        if not self._operator_stored:
            self._operator_stored = True
            self._store_account(OPER_ACCOUNT, OPER_PASSWORD)

    def wait_for_services(self) -> None:
        """Accounts and NickServ are chatd's own: up once the server is."""
        self.wait_for_port()

    def registerUser(self, case, username: str, password: str | None = None) -> None:
        """Create an account with the admin command line, as an operator would.

        irctest's accounts have passwords such as ``sesame``, shorter than the
        8 bytes chatd asks of every new password (the admin command line
        included): those accounts are written into the database directly,
        with a bcrypt hash as chatd makes them. Logging in never checks a
        password's length, so they log in like any other.
        """
        assert password
        # The database exists once the server has started: wait for it.
        self.wait_for_port()
        if len(normalize_password(password).encode("utf-8")) < PASSWORD_MIN_BYTES:
            self._store_account(username, password)
            return
        subprocess.run(
            [sys.executable, "-m", "chatd", "--db", self.env["CHATD_DB"], "user", "add",
             username, "--password-stdin"],
            input=password + "\n",
            env=self.env,
            check=True,
            text=True,
            capture_output=True,
        )

    def _store_account(self, username: str, password: str) -> None:
        """Write an account with a short password straight into the database."""
        connection = open_chatd_database(self.env["CHATD_DB"])
        try:
            password_hash = hash_password(normalize_password(password).encode("utf-8"), 4)
            now = int(time.time() * 1000)
            with transaction(connection):
                transactions.create_user(connection, username, password_hash, now)
        finally:
            connection.close()


def get_irctest_controller_class():
    """What irctest's ``--controller`` asks of this module."""
    return ChatdController
