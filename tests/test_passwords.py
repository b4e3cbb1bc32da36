"""The bcrypt worker pool: real worker processes, driven from the real reactor."""

import os

import pytest
import pytest_twisted
from twisted.internet import defer

from chatd import passwords
from chatd.errors import ChatError
from chatd.passwords import BCRYPT_NICENESS, PasswordHasher, check_password


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
    pool.stop()


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


@pytest_twisted.inlineCallbacks
def test_workers_are_processes_at_the_lowest_priority(hasher):
    """Each worker is a process of its own whose nice value is raised by BCRYPT_NICENESS."""
    workers = {process.pid for process in hasher.pool._pool}
    assert len(workers) == 2 and os.getpid() not in workers
    seen = {}
    for _attempt in range(200):
        if len(seen) == 2:
            break
        answers = yield defer.gatherResults([hasher._run(pid_and_niceness) for _ in range(4)])
        seen.update(answers)
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
