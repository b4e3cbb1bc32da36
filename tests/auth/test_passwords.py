"""The bcrypt worker pool: real worker processes, driven from the real reactor."""

import contextlib
import os
import signal
from concurrent.futures.process import BrokenProcessPool

import pytest
import pytest_twisted
from twisted.internet import defer

from chatd.auth import passwords
from chatd.auth.passwords import BCRYPT_NICENESS, PasswordHasher, check_password
from chatd.core.errors import ChatError


@pytest.fixture
def hasher():
    """A started pool of two workers at the lowest cost, stopped after the test."""
    from twisted.internet import reactor

    timings = []
    pool = PasswordHasher(
        reactor, 4, 2, on_timing=lambda *timing: timings.append(timing), queue_limit=1
    )
    pool.timings = timings
    pytest_twisted.blockon(pool.start())
    yield pool
    pytest_twisted.blockon(pool.stop())


@pytest_twisted.inlineCallbacks
def test_hash_and_check_run_in_the_workers(hasher):
    """A hash made in a worker checks right against its password only, in a worker too."""
    stored = yield hasher.hash(b"correct horse")
    assert check_password(b"correct horse", stored)
    assert (yield hasher.check(b"correct horse", stored)) is True
    assert (yield hasher.check(b"wrong horse", stored)) is False
    assert (yield hasher.check(b"anything at all", None)) is False
    operations = [operation for operation, _waited, _took in hasher.timings]
    # The dummy hash at start, then one hash and three checks (the unknown user's too).
    assert operations == ["hash", "hash", "check", "check", "check"]
    assert all(waited >= 0 and took > 0 for _op, waited, took in hasher.timings)


def pid_and_niceness() -> tuple[int, int]:
    """Run in a worker: which process it is, and its nice value."""
    return os.getpid(), os.nice(0)


@defer.inlineCallbacks
def ask_every_worker(hasher):
    """Run ``pid_and_niceness`` until every worker has answered (so each has started)."""
    seen = {}
    for _attempt in range(200):
        if len(seen) == hasher.workers:
            break
        answers = yield defer.gatherResults([hasher._run(pid_and_niceness) for _ in range(4)])
        seen.update(answers)
    return seen


@pytest_twisted.inlineCallbacks
def test_workers_are_processes_at_the_lowest_priority(hasher):
    """Each worker is a process of its own whose nice value is raised by BCRYPT_NICENESS."""
    workers = set(hasher.worker_pids())
    assert len(workers) == 2 and os.getpid() not in workers
    seen = yield ask_every_worker(hasher)
    assert set(seen) == workers
    assert set(seen.values()) == {min(os.nice(0) + BCRYPT_NICENESS, 19)}


@pytest_twisted.inlineCallbacks
def test_a_full_queue_refuses_at_once(hasher):
    """Two workers busy and one job waiting (queue_limit=1): the next is refused, not queued."""
    running = [hasher.check(b"password%d" % n, passwords.hash_password(b"x", 4)) for n in range(3)]
    assert hasher.queued == 1
    refused = hasher.check(b"one too many", None)
    with pytest.raises(ChatError) as refusal:
        yield refused
    assert refusal.value.code == "too-many-attempts"
    assert (yield defer.gatherResults(running)) == [False, False, False]
    assert hasher.pending == 0 and hasher.queued == 0


@pytest_twisted.inlineCallbacks
def test_killed_workers_are_replaced(hasher):
    """Workers killed from outside (out of memory, a stray signal): new ones take over."""
    stored = yield hasher.hash(b"correct horse")
    for pid in hasher.worker_pids():
        os.kill(pid, signal.SIGKILL)
    with contextlib.suppress(BrokenProcessPool):
        # Sent before or after the pool noticed: it fails, or runs in the new worker.
        assert (yield hasher.check(b"correct horse", stored)) is True
    assert (yield hasher.check(b"correct horse", stored)) is True
    assert (yield hasher.check(b"wrong horse", stored)) is False


@pytest_twisted.inlineCallbacks
def test_killing_one_worker_fails_only_the_job_it_had():
    """Issue 9, item 15: twenty checks in flight on two workers, one worker killed: at
    most the one check it ran fails; every other check, queued or running, answers."""
    from twisted.internet import reactor

    pool = PasswordHasher(reactor, 4, 2)
    yield pool.start()
    try:
        stored = passwords.hash_password(b"correct horse", 8)
        checks = [pool.check(b"correct horse", stored) for _ in range(20)]
        assert pool.running == 2 and pool.queued == 18
        os.kill(pool.worker_pids()[0], signal.SIGKILL)
        outcomes = yield defer.DeferredList(checks, consumeErrors=True)
        failed = [outcome for ok, outcome in outcomes if not ok]
        assert len(failed) <= 1
        assert all(failure.check(BrokenProcessPool) for failure in failed)
        assert [outcome for ok, outcome in outcomes if ok] == [True] * (20 - len(failed))
        assert len(pool.worker_pids()) == 2
    finally:
        yield pool.stop()


@pytest_twisted.inlineCallbacks
def test_jobs_take_turns_by_address():
    """One address with many jobs queued does not go before another's single job:
    the queue goes round the addresses, and each address's share is capped."""
    from twisted.internet import reactor

    pool = PasswordHasher(reactor, 4, 1, per_address=5)
    yield pool.start()
    try:
        order = []
        stored = passwords.hash_password(b"x", 4)

        def note(result, who):
            order.append(who)
            return result

        flood = [
            pool.check(b"guess", stored, "198.51.100.1", "alice").addCallback(note, "flood")
            for _ in range(5)
        ]
        refusals = []
        pool.check(b"guess", stored, "198.51.100.1", "alice").addErrback(refusals.append)
        assert [failure.value.code for failure in refusals] == ["too-many-attempts"]
        owner = pool.check(b"x", stored, "203.0.113.5", "alice").addCallback(note, "owner")
        yield defer.gatherResults([*flood, owner])
        # One flood job was running and one queued before the owner's: the owner's
        # comes after those, not after all five (first in, first out would make it sixth).
        assert order.index("owner") <= 2
    finally:
        yield pool.stop()


@pytest_twisted.inlineCallbacks
def test_stopping_ends_every_worker(hasher):
    """stop() fires once every worker process has exited."""
    processes = [process for pool in hasher.pools for process in pool._processes.values()]
    yield hasher.stop()
    assert all(process.exitcode is not None for process in processes)


@pytest_twisted.inlineCallbacks
def test_a_hang_up_leaves_the_workers_to_the_server(hasher):
    """SIGHUP (a closed terminal, a reload sent to the group) does not kill a worker."""
    yield ask_every_worker(hasher)
    workers = {pid: process for pool in hasher.pools for pid, process in pool._processes.items()}
    for pid in workers:
        os.kill(pid, signal.SIGHUP)
    answers = yield defer.gatherResults([hasher._run(pid_and_niceness) for _ in range(4)])
    assert {pid for pid, _niceness in answers} <= set(workers)
    assert all(process.is_alive() for process in workers.values())


def test_a_job_cancelled_by_a_stopping_pool_fails_its_waiter():
    """A stop (SIGTERM while the server starts) cancels the jobs not yet run: each one's
    Deferred fails with CancelledError, where the reactor used to log a traceback."""
    from concurrent.futures import Future

    from twisted.internet import reactor

    pool = PasswordHasher(reactor, 4, 1)
    job, done = Future(), defer.Deferred()
    assert job.cancel()
    pool._job_done(job, done, "check", 0.0, 0, None)
    failures = []
    done.addErrback(failures.append)
    assert failures and failures[0].check(defer.CancelledError)
