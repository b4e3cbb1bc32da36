"""Singleton jobs: work that one node of a cluster does for all of them (retention).

On PostgreSQL the node that does it holds a session-level advisory lock
(``pg_try_advisory_lock``) on a connection of its own, kept open for as long
as it runs. Every node asks for the lock before each round of the job: the
holder keeps it (checking that its connection still works), every other
node is refused and skips the round. When the holder dies (``kill -9``, a
crash, its host gone) its connection closes, PostgreSQL frees the lock, and
the next node to ask takes it over; a node stopping cleanly closes the
connection at once. Nothing here runs on the reactor: each question is one
blocking call on a thread of the reactor's pool.

On SQLite there is one node (the database file is locked to one server),
which is always the one.
"""

import contextlib

from twisted.internet import defer
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger

from chatd.storage.backends import is_postgres_url

log = Logger()

# The lock of the retention job: "chatdret" in ASCII.
RETENTION_LOCK = 0x6368617464726574


class OnlyNode:
    """One node alone (SQLite): it always runs the job."""

    held = True

    def take(self) -> defer.Deferred:
        """Fire with True: nobody else could run it."""
        return defer.succeed(True)

    def release(self) -> defer.Deferred:
        """Nothing held: nothing to give up."""
        return defer.succeed(None)


class AdvisoryLock:
    """A session-level PostgreSQL advisory lock held on a connection of its own.

    ``take`` fires with whether this node holds the lock now (taking it if it
    is free); ``release`` gives it up by closing the connection. Errors
    (PostgreSQL away) answer False: a node unsure it holds the lock does not
    run the job.
    """

    def __init__(self, url: str, reactor, key: int, job: str) -> None:
        self._url = url
        self._reactor = reactor
        self.key = key
        self.job = job
        self.held = False
        self._connection = None
        self._asking: defer.Deferred | None = None

    def take(self) -> defer.Deferred:
        """Fire with whether this node holds the lock (one question at a time)."""
        if self._asking is not None:
            return self._asking
        asking = deferToThreadPool(self._reactor, self._reactor.getThreadPool(), self.take_now)

        def answered(held: bool) -> bool:
            self._asking = None
            if held != self.held:
                log.info("{job}: this node {what}", job=self.job,
                         what="runs it now" if held else "no longer runs it")
            self.held = held
            return held

        self._asking = asking.addCallback(answered)
        return self._asking

    def take_now(self) -> bool:
        """The blocking question (on a thread): do we hold the lock, taking it if free?"""
        from chatd.storage.postgres import schema

        try:
            if self._connection is None:
                self._connection = schema.connect(self._url)
                self.held = False
            if self.held:
                # Still ours while the session lives: prove it does.
                self._connection.execute("SELECT 1").fetchone()
                return True
            row = self._connection.execute(
                "SELECT pg_try_advisory_lock(?)", (self.key,)
            ).fetchone()
            return bool(row[0])
        except Exception as error:
            log.warn("{job}: cannot ask PostgreSQL for its lock: {error}", job=self.job,
                     error=str(error).strip())
            self.release_now()
            return False

    def release(self) -> defer.Deferred:
        """Give the lock up (close its connection), on a thread, after any question
        under way."""
        self.held = False
        asked: defer.Deferred = defer.Deferred()
        if self._asking is None:
            asked.callback(None)
        else:
            self._asking.addBoth(lambda result: (asked.callback(None), result)[1])
        pool = self._reactor.getThreadPool()
        return asked.addCallback(
            lambda _: deferToThreadPool(self._reactor, pool, self.release_now)
        )

    def release_now(self) -> None:
        """Close the connection, freeing the lock (blocking)."""
        connection, self._connection = self._connection, None
        if connection is not None:
            with contextlib.suppress(Exception):
                connection.close()


def singleton_lock(db_setting: str, reactor, key: int, job: str):
    """The lock deciding which node runs ``job``: an ``AdvisoryLock`` on PostgreSQL,
    ``OnlyNode`` on SQLite."""
    if is_postgres_url(db_setting):
        return AdvisoryLock(db_setting, reactor, key, job)
    return OnlyNode()
