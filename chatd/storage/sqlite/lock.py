"""One server per database file: a lock file beside it, held while the server runs.

Two servers on one database would each think they knew who is online: a
direct message to someone logged in on the other would be stored instead,
and each would keep its own rooms. So a server takes ``<database>.lock``
with ``flock`` before it starts and holds it until its process ends (the
kernel lets go of it even after ``kill -9``); a second server finds it held
and refuses to start, naming the holder, whose pid, host and start time the
lock file holds.

Only servers take the lock: the admin command line and backups go on
working beside a running server, as SQLite lets them.
"""

import fcntl
import os
import socket
import time
from dataclasses import dataclass


class DatabaseInUse(Exception):
    """Another chatd holds the database, or its lock file cannot be made.

    The message names the setting: ``CHATD_DB <path> is in use by ...``.
    """


@dataclass
class DatabaseLock:
    """A held lock on a database file; ``release`` (or the process's end) lets go."""

    path: str
    descriptor: int | None

    def release(self) -> None:
        """Let another server have the database (the lock file stays, empty of meaning)."""
        if self.descriptor is not None:
            os.close(self.descriptor)
            self.descriptor = None


def lock_path(db_path: str) -> str:
    """Where the lock of the database at ``db_path`` lives."""
    return db_path + ".lock"


def lock_database(db_path: str, now: float | None = None) -> DatabaseLock:
    """Take the lock of the database at ``db_path`` for this process, or raise ``DatabaseInUse``.

    An in-memory database (``:memory:``) is nobody else's: no lock.
    """
    if db_path == ":memory:":
        return DatabaseLock(db_path, None)
    path = lock_path(db_path)
    try:
        descriptor = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    except OSError as error:
        raise DatabaseInUse(
            f"CHATD_DB {db_path}: cannot open its lock file {path}: {error.strerror}"
        ) from None
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = _read_holder(descriptor)
        os.close(descriptor)
        raise DatabaseInUse(
            f"CHATD_DB {db_path} is in use by another chatd ({holder}); "
            "one database serves one server"
        ) from None
    started = time.strftime(
        "%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() if now is None else now)
    )
    record = f"pid {os.getpid()} on {socket.gethostname()}, since {started}\n"
    os.ftruncate(descriptor, 0)
    os.pwrite(descriptor, record.encode(), 0)
    return DatabaseLock(db_path, descriptor)


def _read_holder(descriptor: int) -> str:
    text = os.pread(descriptor, 1024, 0).decode("utf-8", "replace").strip()
    # Empty for the moment between the holder's flock and its write.
    return text or "which has just started"
