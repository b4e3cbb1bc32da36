"""The server's database: named transactions run off the reactor thread.

Writes run on one writer thread that commits whatever is queued as one
batch (each write in a savepoint of its own, so one failing write does not
undo the others), reads on a reader thread with a connection of its own. WAL
lets the reader, the admin command line and backups read while the writer
writes. A Deferred returned by ``Database.write`` fires only after the batch
holding that write has been committed. The files under it are watched
(``FileGuard``): a removed or replaced database refuses writes instead of
acknowledging what it cannot keep."""

import os
import queue
import sqlite3
import threading
import time
from collections.abc import Callable
from typing import Any

from twisted.internet.defer import Deferred, fail
from twisted.internet.interfaces import IReactorFromThreads
from twisted.logger import Logger
from twisted.python.failure import Failure

from chatd.core.errors import ChatError
from chatd.storage.queued import STOP, QueuedWork, WriteFailed, answered, batch_runs
from chatd.storage.sqlite.schema import (
    BUSY_TIMEOUT_MS,
    SCHEMA_VERSION,
    WAL_LIMIT_BYTES,
    connect,
    migrate,
)

MAX_BATCH = 512
# How often the checkpointer copies the write-ahead log back into the database,
# and checks that the database's files are still the ones the server opened.
CHECKPOINT_SECONDS = 1.0
# How long emptying the log may wait for a reader of an older snapshot (a backup).
TRUNCATE_WAIT_MS = 200
# A log larger than this is emptied once the writer has been idle a checkpoint interval.
IDLE_WAL_BYTES = 4 * 1024 * 1024


# --- running transactions off the reactor thread ----------------------------


log = Logger()


class FileGuard:
    """Notices the database's files being removed, replaced or made unwritable.

    SQLite keeps writing to the files it opened: after ``rm chatd.sqlite3*``
    every commit lands in deleted files and is gone at the next start, and a
    ``-shm`` that can no longer be written (``chattr +i``) kills the process
    with SIGBUS at the next write or checkpoint. So before every batch and
    every checkpoint the guard compares each path's device and inode with
    those of the file the server opened, and checks the path is writable:
    a few ``stat`` calls, microseconds against a commit's milliseconds.
    """

    def __init__(self, path: str) -> None:
        self.path = path
        self.files = (path, path + "-wal", path + "-shm")
        self._identities: dict[str, tuple[int, int]] = {}

    def remember(self) -> None:
        """Take the files there now as the ones the server opened."""
        for name in self.files:
            try:
                found = os.stat(name)
            except FileNotFoundError:
                continue
            self._identities[name] = (found.st_dev, found.st_ino)

    def problem(self) -> str | None:
        """What is wrong with the database's files, or None when they are as opened."""
        for name in self.files:
            try:
                found = os.stat(name)
            except FileNotFoundError:
                if name in self._identities:
                    return f"{name} was removed"
                continue  # the -wal and -shm appear with the first transaction
            except OSError as error:
                return f"{name} cannot be checked: {error.strerror}"
            identity = (found.st_dev, found.st_ino)
            if self._identities.setdefault(name, identity) != identity:
                return f"{name} was replaced by another file"
            if not os.access(name, os.W_OK):
                return f"{name} is not writable (read-only or immutable)"
        return None


def unavailable_error() -> ChatError:
    """What a client is told for a write the server cannot keep."""
    return ChatError("unavailable", "the server cannot store anything now; try again later")


class Database(QueuedWork):
    """The server's handle on the database: a writer, a reader and a checkpointer thread.

    ``write`` queues a transaction body for the writer; the writer takes
    every body queued at that moment (up to ``MAX_BATCH``), runs each in its
    own savepoint inside one transaction, commits once, and only then fires
    the Deferreds, in queue order, on the reactor thread. ``read`` runs a
    body on the reader thread. Nothing here runs SQL on the reactor thread.

    The writer never checkpoints the WAL itself: a checkpoint syncs the disk,
    and every room message would wait behind that sync for its commit. The
    checkpointer thread copies the WAL back every ``CHECKPOINT_SECONDS``
    instead, beside the writer, without holding it up (PASSIVE). Only when
    the log has passed ``wal_limit_bytes`` anyway (saturating writes outrun
    a passive checkpoint) does the writer, between two batches, run a
    TRUNCATE checkpoint that empties the file; it does so on its own once
    the file passes twice the limit, so the log stays under twice the limit
    and one batch. ``journal_size_limit`` shrinks the file whenever SQLite
    starts the log over on its own.

    Before every batch, and with every checkpoint, a ``FileGuard`` checks the
    database's files are still the ones opened. Once they are not, the
    database is ``unavailable`` for good (until a restart): every write
    fails with ``ChatError("unavailable")`` and nothing is checkpointed,
    while reads still answer from what was opened.
    """

    SCHEMA_VERSION = SCHEMA_VERSION

    def __init__(
        self,
        path: str,
        reactor: IReactorFromThreads,
        on_commit: Callable[[float, int], None] | None = None,
        on_checkpoint: Callable[[str, float, int], None] | None = None,
        wal_limit_bytes: int = WAL_LIMIT_BYTES,
        checkpoint_seconds: float | None = None,
    ) -> None:
        """``on_commit(seconds, writes)``, if given, hears of each committed batch;
        ``on_checkpoint(mode, seconds, wal_bytes)`` of each checkpoint, with the
        size of the log file after it.

        Both are called on database threads, so they must be thread-safe (metrics are).
        """
        self.path = path
        self._reactor = reactor
        self._on_commit = on_commit
        self._on_checkpoint = on_checkpoint
        self.wal_limit_bytes = wal_limit_bytes
        # None: CHECKPOINT_SECONDS as it is when the database opens.
        self._checkpoint_seconds = checkpoint_seconds
        in_memory = path == ":memory:" or path.startswith("file:")
        self._guard = None if in_memory else FileGuard(os.path.abspath(path))
        # Why writes are refused, once the files are not the ones opened; set once.
        self.unavailable: str | None = None
        # The size of the write-ahead log at the last checkpoint.
        self.wal_bytes = 0
        self._writes: queue.SimpleQueue = queue.SimpleQueue()
        self._reads: queue.SimpleQueue = queue.SimpleQueue()
        self._threads: list[threading.Thread] = []
        self._stopping = threading.Event()
        self._truncate_wanted = threading.Event()
        # Held by whichever thread checkpoints: SQLite lets only one at a time.
        self._checkpointing = threading.Lock()
        self._truncate_not_before = 0.0
        self._closed: Deferred | None = None
        self.batches_committed = 0

    def open(self) -> Deferred:
        """Start the threads; fire with the schema version found once migrated."""
        if self._checkpoint_seconds is None:
            self._checkpoint_seconds = CHECKPOINT_SECONDS
        opened: Deferred = Deferred()
        writer = threading.Thread(
            target=self._run_writer, args=(opened,), name="chatd-db-writer", daemon=True
        )
        reader = threading.Thread(target=self._run_reader, name="chatd-db-reader", daemon=True)
        checkpointer = threading.Thread(
            target=self._run_checkpointer, name="chatd-db-checkpointer", daemon=True
        )
        self._threads = [writer, reader, checkpointer]
        writer.start()
        return opened.addCallback(self._start_others, reader, checkpointer)

    def _start_others(self, found_version: int, *threads: threading.Thread) -> int:
        for thread in threads:
            thread.start()
        return found_version

    def write(self, body: Callable[..., Any], *args: Any) -> Deferred:
        """Run ``body(connection, *args)`` in the next batch; fire after its commit.

        Fails with ``ChatError("unavailable")`` once the database's files are
        not the ones opened: nothing written then would be kept.
        """
        if self.unavailable is not None:
            return fail(unavailable_error())
        done: Deferred = Deferred()
        self._writes.put((body, args, done))
        return done

    def _closing(self) -> None:
        # The checkpointer waits on this event, not on a queue.
        self._stopping.set()

    def _close(self, connection: sqlite3.Connection) -> None:
        """Close a connection, unless the files are not the ones opened.

        The last connection to close checkpoints the log and removes it,
        which writes the ``-shm``: with that file immutable, a SIGBUS at
        shutdown. Left open, the connection goes with the process.
        """
        if self.unavailable is None:
            connection.close()

    def _check_files(self) -> bool:
        """True while the files are the ones opened; else make the database unavailable."""
        if self.unavailable is not None:
            return False
        problem = None if self._guard is None else self._guard.problem()
        if problem is None:
            return True
        self.unavailable = problem
        self._reactor.callFromThread(self._report_unavailable, problem)
        return False

    def _report_unavailable(self, problem: str) -> None:
        log.critical(
            "database {path} is unavailable: {problem}; every write is refused"
            " until chatd is restarted with its database in place",
            path=self.path,
            problem=problem,
        )

    def _run_writer(self, opened: Deferred) -> None:
        try:
            connection = connect(self.path)
            found = migrate(connection)
            connection.execute("PRAGMA wal_autocheckpoint = 0")
            connection.execute(f"PRAGMA journal_size_limit = {self.wal_limit_bytes}")
            if self._guard is not None:
                self._guard.remember()
        except Exception:
            self._reactor.callFromThread(opened.errback, Failure())
            return
        self._reactor.callFromThread(opened.callback, found)
        stopping = False
        while not stopping:
            try:
                # Woken now and then while idle, to empty the log after a burst.
                batch = [self._writes.get(timeout=self._checkpoint_seconds)]
            except queue.Empty:
                self._bound_wal(connection, idle=True)
                continue
            while len(batch) < MAX_BATCH and batch[-1] is not STOP:
                try:
                    batch.append(self._writes.get_nowait())
                except queue.Empty:
                    break
            if batch[-1] is STOP:
                stopping = True
                batch.pop()
            if batch:
                self._reactor.callFromThread(self._report, self._commit(connection, batch))
                self._bound_wal(connection)
        self._close(connection)
        self._reactor.callFromThread(self._stopped, None)

    def _commit(self, connection: sqlite3.Connection, batch: list) -> list:
        """Run and commit one batch; each write's outcome.

        Most batches have no failing write: they run without a savepoint per
        write (two statements a write fewer), with runs of writes that have a
        form for many (``RUN_TOGETHER``) run as one. A write that fails rolls
        the batch back, and it runs again write by write, each in a savepoint,
        so the others still commit. PostgreSQL's writer does the same.
        """
        started = time.perf_counter()
        if not self._check_files():
            # Checked before BEGIN: with an unwritable -shm the write itself would SIGBUS.
            refused = Failure(unavailable_error())
            return [(done, refused) for _, _, done in batch]
        try:
            try:
                outcomes = self._run_batch(connection, batch, savepoints=False)
            except WriteFailed:
                outcomes = self._run_batch(connection, batch, savepoints=True)
            if not self._check_files():
                # Removed while the batch ran: committing would only write to deleted files.
                raise unavailable_error()
            connection.execute("COMMIT")
        except Exception:
            failure = Failure()
            if connection.in_transaction:
                connection.execute("ROLLBACK")
            return [(done, failure) for _, _, done in batch]
        self.batches_committed += 1
        if self._on_commit is not None:
            self._on_commit(time.perf_counter() - started, len(batch))
        return outcomes

    @staticmethod
    def _run_batch(connection: sqlite3.Connection, batch: list, savepoints: bool) -> list:
        """BEGIN and the batch's writes, left uncommitted; each write's outcome.

        Without savepoints, a write that fails rolls everything back and
        raises ``WriteFailed``.
        """
        connection.execute("BEGIN IMMEDIATE")
        outcomes: list[tuple[Deferred, Any]] = []
        # With savepoints each write is a run of its own, in its savepoint
        # (as in PostgreSQL's writer).
        for entries, run in batch_runs(batch, together=not savepoints):
            if savepoints:
                connection.execute("SAVEPOINT write")
            try:
                results = run(connection)
            except Exception as error:
                if not savepoints:
                    if connection.in_transaction:
                        connection.execute("ROLLBACK")
                    raise WriteFailed() from error
                connection.execute("ROLLBACK TO write")
                results = [Failure()]
            if savepoints:
                connection.execute("RELEASE write")
            outcomes += answered(entries, results)
        return outcomes

    def _run_checkpointer(self) -> None:
        connection = connect(self.path)
        connection.execute(f"PRAGMA journal_size_limit = {self.wal_limit_bytes}")
        while not self._stopping.wait(self._checkpoint_seconds):
            # A checkpoint writes the -shm too: with it immutable, that is a SIGBUS.
            if not self._check_files():
                continue
            try:
                with self._checkpointing:
                    self.checkpoint(connection)
            except sqlite3.Error as error:
                log.warn("WAL checkpoint failed: {error}", error=error)
        self._close(connection)
        self._reactor.callFromThread(self._stopped, None)

    def checkpoint(self, connection: sqlite3.Connection) -> bool:
        """Copy the log back into the database beside the writer; True if it is over the limit.

        A PASSIVE checkpoint, which waits for nobody. When the log it found
        is still over ``wal_limit_bytes`` (the writer outran it), it asks the
        writer to empty the log between two batches (``_bound_wal``).
        """
        started = time.perf_counter()
        ((_, log_frames, _),) = connection.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
        ((page_size,),) = connection.execute("PRAGMA page_size").fetchall()
        self._observe_checkpoint("PASSIVE", started)
        # Each frame is a page and its 24-byte header; the file itself may be
        # larger than the frames in use, having grown before SQLite started over.
        over = max(log_frames * (page_size + 24), self.wal_bytes) > self.wal_limit_bytes
        if over:
            self._truncate_wanted.set()
        return over

    def _bound_wal(self, connection: sqlite3.Connection, idle: bool = False) -> None:
        """After a batch, or idle, on the writer thread: empty the log if it has grown too far.

        Asked for by the checkpointer once the log passes the limit, the
        writer tries when no checkpoint is running. Past twice the limit (the
        checkpointer was late: a busy machine, a slow disk sync) it waits for
        the running checkpoint to end, holding further batches up, so the file
        never grows past twice the limit and a batch. With nothing to write
        for a checkpoint interval it empties any log of more than
        ``IDLE_WAL_BYTES``: that holds up nobody. A TRUNCATE that could not
        finish (a reader on an old snapshot) is not retried before the next
        checkpoint interval, so a long backup holds writes up only briefly.
        """
        if time.monotonic() < self._truncate_not_before:
            return
        size = self._wal_file_bytes()
        if size > 2 * self.wal_limit_bytes or (idle and size > IDLE_WAL_BYTES):
            self._truncate(connection, wait=True)
        elif self._truncate_wanted.is_set():
            self._truncate(connection, wait=idle)

    def _truncate(self, connection: sqlite3.Connection, wait: bool) -> None:
        """Copy the rest of the log back into the database and empty it (on the writer thread).

        Run by the writer itself, between two batches, so no batch slips in
        meanwhile (a checkpointer competing for the write lock through the
        busy handler lost to a saturating writer for a second and more, while
        the log grew by tens of megabytes). The PASSIVE checkpoint before it
        copied most of the log already. A reader on an older snapshot (a
        backup in progress) can hold it up: it gives up after
        ``TRUNCATE_WAIT_MS`` rather than stall every write.
        """
        if not self._checkpointing.acquire(blocking=wait):
            return  # a checkpoint is running: after the next batch
        try:
            self._truncate_wanted.clear()
            if not self._check_files():
                return
            started = time.perf_counter()
            connection.execute(f"PRAGMA busy_timeout = {TRUNCATE_WAIT_MS}")
            try:
                ((busy, _, _),) = connection.execute(
                    "PRAGMA wal_checkpoint(TRUNCATE)"
                ).fetchall()
            except sqlite3.Error as error:
                log.warn("WAL checkpoint failed: {error}", error=error)
                busy = True
            finally:
                connection.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
            if busy:
                self._truncate_not_before = time.monotonic() + self._checkpoint_seconds
            self._observe_checkpoint("TRUNCATE", started)
        finally:
            self._checkpointing.release()

    def _wal_file_bytes(self) -> int:
        try:
            return os.stat(self.path + "-wal").st_size
        except OSError:
            return 0

    def _observe_checkpoint(self, mode: str, started: float) -> None:
        seconds = time.perf_counter() - started
        self.wal_bytes = self._wal_file_bytes()
        if self._on_checkpoint is not None:
            self._on_checkpoint(mode, seconds, self.wal_bytes)

    def _run_reader(self) -> None:
        connection = connect(self.path)
        while True:
            item = self._reads.get()
            if item is STOP:
                break
            body, args, done = item
            try:
                result = body(connection, *args)
            except Exception:
                result = Failure()
            if connection.in_transaction:
                connection.execute("ROLLBACK")
            self._reactor.callFromThread(self._report, [(done, result)])
        self._close(connection)
        self._reactor.callFromThread(self._stopped, None)
