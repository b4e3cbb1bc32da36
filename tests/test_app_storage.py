"""The storage service's start: what a failing bcrypt pool means, running or stopped.

A SIGTERM while the server starts stops the bcrypt pool before its workers
are up; that failure is the stop itself, not a setting that cannot work.
"""

from twisted.internet import defer

from chatd.app import StartError, StorageService


class StillStarting:
    """A database still opening (another process holds it) or a bcrypt pool whose
    workers are still starting: ``pending`` ends as the test says."""

    path = "chatd.sqlite3"
    SCHEMA_VERSION = 1

    def __init__(self) -> None:
        self.pending: defer.Deferred = defer.Deferred()

    def open(self) -> defer.Deferred:
        return self.pending

    start = open

    def close(self) -> defer.Deferred:
        return defer.succeed(None)

    stop = close


class QuietReactor:
    """Only what the service asks of a reactor while starting."""

    def callWhenRunning(self, *_args, **_kwargs) -> None:
        pass


def started_service() -> tuple[StorageService, StillStarting]:
    pool = StillStarting()
    service = StorageService(StillStarting(), pool, QuietReactor(), workers_setting="2")
    service.startService()
    return service, pool


def outcome(deferred: defer.Deferred):
    """The failure ``deferred`` fired with (it must have fired, and failed)."""
    failures = []
    deferred.addErrback(failures.append)
    assert failures, "the start has not ended"
    return failures[0]


def test_workers_stopped_by_a_stop_during_the_start_are_an_ordinary_stop():
    """SIGTERM while the workers start: the start ends as cancelled, which the server
    takes as a stop (exit as on any SIGTERM), never as 'cannot start'."""
    service, pool = started_service()
    service.stopService()
    pool.pending.errback(RuntimeError("the password workers stopped"))
    failure = outcome(service.ready)
    assert failure.check(defer.CancelledError)


def test_workers_that_fail_while_the_server_starts_name_the_setting():
    """Workers that cannot start while nothing stops the server: a start error that
    names CHATD_BCRYPT_WORKERS and says why."""
    service, pool = started_service()
    pool.pending.errback(RuntimeError("no such program"))
    failure = outcome(service.ready)
    assert failure.check(StartError)
    text = str(failure.value)
    assert text.startswith("CHATD_BCRYPT_WORKERS=2:") and "no such program" in text
