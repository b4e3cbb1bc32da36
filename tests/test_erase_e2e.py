"""``chatd user del NAME --erase-messages`` against a real server and a sender still posting.

The account's sessions keep posting room messages and storing direct
messages while the admin command line deletes it; afterwards none of what
the server acknowledged may remain: not in the database, not in the
history the running server shows, not after a restart.
"""

import sqlite3
import subprocess
import sys
import threading

from tests.serverproc import ROOT, LineClient, ServerProcess

SESSIONS = 20
# Per session: bounded, though the deletion ends every session long before.
MAX_ROUNDS = 400


class Poster(threading.Thread):
    """One session of the spammer: a room message and a stored DM per round, pipelined."""

    def __init__(self, client: LineClient, number: int, progress: threading.Condition) -> None:
        super().__init__(daemon=True)
        self.client = client
        self.number = number
        self.progress = progress
        self.acknowledged: list[str] = []
        self.refused: list[str] = []

    def run(self) -> None:
        for round_number in range(MAX_ROUNDS):
            tag = f"s{self.number}-{round_number}"
            try:
                self.client.send(f"/say #lobby room {tag}")
                self.client.send(f"/msg bob dm {tag}")
                finals = 0
                while finals < 2:
                    line = self.client.read_line()
                    if line == "" or line.startswith("BYE "):
                        return
                    if line.startswith(("OK say", "OK msg")):
                        finals += 1
                        with self.progress:
                            self.acknowledged.append(line)
                            self.progress.notify_all()
                    elif line.startswith("ERR "):
                        finals += 1
                        self.refused.append(line)
            except OSError:
                return


def spammer_rows(path) -> list[tuple]:
    """Every room message and waiting DM whose sender is the spammer, straight from the file."""
    connection = sqlite3.connect(path)
    try:
        return connection.execute(
            "SELECT 'room', text FROM room_messages WHERE lower(sender) = 'spammer'"
            " UNION ALL SELECT 'stored', text FROM stored_messages WHERE lower(sender) = 'spammer'"
        ).fetchall()
    finally:
        connection.close()


def history_senders(server: ServerProcess) -> list[str]:
    """Who the running server's #lobby history (up to 500 lines) shows as senders."""
    reader = server.connect()
    try:
        reader.login("reader")
        lines = reader.command("/history #lobby 500")
        assert lines[-1] == "OK history #lobby", lines
        return [line.split(" ")[3] for line in lines if line.startswith("HISTORY ")]
    finally:
        reader.close()


def test_erasing_an_active_sender_removes_every_acknowledged_message(tmp_path):
    """20 sessions post room messages and stored DMs while their account is erased: none stay.

    Before the server's writes checked the sender's account in their
    transaction, messages kept committing (and being answered OK) between
    the erase window and the server noticing the deletion; they stayed in
    the history, also after a restart, and as waiting DMs.
    """
    server = ServerProcess(tmp_path).start()
    clients: list[LineClient] = []
    try:
        bob = server.connect()
        bob.login("bob")
        bob.command("/quit")
        bob.close()
        progress = threading.Condition()
        posters = []
        for number in range(SESSIONS):
            client = server.connect(timeout=30)
            clients.append(client)
            client.login("spammer")
            posters.append(Poster(client, number, progress))
        for poster in posters:
            poster.start()

        def acknowledged() -> int:
            return sum(len(poster.acknowledged) for poster in posters)

        with progress:
            assert progress.wait_for(lambda: acknowledged() >= 20 * SESSIONS, timeout=60)
        erase = subprocess.run(
            [sys.executable, "-m", "chatd", "--db", str(server.db_path),
             "user", "del", "spammer", "--erase-messages"],
            env={**server_env(), "PYTHONPATH": str(ROOT)},
            capture_output=True, text=True, timeout=60,
        )
        assert erase.returncode == 0, erase.stderr
        for poster in posters:
            poster.join(timeout=60)
            assert not poster.is_alive(), "a session of the deleted account is still posting"
        # The sessions were posting right up to the deletion and were refused after it.
        assert acknowledged() > 20 * SESSIONS
        assert spammer_rows(server.db_path) == []
        assert "spammer" not in history_senders(server)

        server.restart()
        assert spammer_rows(server.db_path) == []
        assert "spammer" not in history_senders(server)
        bob = server.connect()
        bob_lines = bob.login("bob")
        assert not [line for line in bob_lines if line.startswith("STORED ")], bob_lines
        bob.close()
    finally:
        for client in clients:
            client.close()
        server.stop()


def server_env() -> dict[str, str]:
    """The test's own environment, for the admin command line."""
    import os

    return dict(os.environ)
