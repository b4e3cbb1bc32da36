"""The cluster's shared limits (chatd/cluster/policy.py) on a real redis-server.

Two ``SharedLimits``, each on a ``RedisFanout`` of its own (two nodes), count
registrations, bcrypt jobs and logins in flight in one Redis. Their time is
a ``task.Clock``, so buckets refill and attempts of a dead node expire when
the test moves it; Redis is real. Then the gate and the bcrypt queue with a
shared count in front of them, and what happens while Redis is away.
"""

import pytest
import pytest_twisted
from twisted.internet import defer, reactor, task

from chatd.auth.passwords import PasswordHasher
from chatd.cluster.policy import IN_FLIGHT_SECONDS, UNSHARED, SharedLimits
from chatd.cluster.redis import RedisFanout
from chatd.config import Allowance
from chatd.core.errors import ChatError
from tests.programs import require_module

START = 1_764_064_800.0


@pytest.fixture
def clock() -> task.Clock:
    """The limits' time, moved by the test."""
    clock = task.Clock()
    clock.advance(START)
    return clock


@pytest.fixture
def fanouts(redis_server):
    """Start connected fan-outs (nodes without a chat service) on the private Redis."""
    require_module("txredisapi", "txredisapi")
    started: list[RedisFanout] = []

    async def start() -> RedisFanout:
        fanout = RedisFanout(redis_server.url, reactor)
        started.append(fanout)
        fanout.start()
        await fanout.when_ready()
        return fanout

    yield start
    for fanout in started:
        pytest_twisted.blockon(fanout.stop())


async def two_nodes(fanouts, clock, **options) -> tuple[SharedLimits, SharedLimits]:
    """Two nodes' shared limits on one Redis."""
    return (SharedLimits(await fanouts(), clock, **options),
            SharedLimits(await fanouts(), clock, **options))


@pytest_twisted.ensureDeferred
async def test_registrations_from_one_address_are_counted_for_the_cluster(fanouts, clock):
    """3 per hour: two on one node and one on the other use them up; the fourth is refused
    on either node; a third of an hour later one more is admitted."""
    first, second = await two_nodes(fanouts, clock, registration=Allowance(3, 3600))
    for limits in (first, first, second):
        ticket = await limits.admit_registration("10.0.0.1")
        assert ticket is not None and ticket.shared
        await ticket.end(used=True)
    assert await first.admit_registration("10.0.0.1") is None
    assert await second.admit_registration("10.0.0.1") is None
    assert (await second.admit_registration("10.0.0.2")) is not None
    clock.advance(1200)
    assert (await second.admit_registration("10.0.0.1")) is not None
    assert first.unshared == second.unshared == 0


@pytest_twisted.ensureDeferred
async def test_registrations_in_flight_on_other_nodes_count_at_admission(fanouts, clock):
    """Three admitted on one node and not yet ended fill a bucket of three: the other
    node is refused; one ending unused (a taken name) gives its place back."""
    first, second = await two_nodes(fanouts, clock, registration=Allowance(3, 3600))
    held = [await first.admit_registration("10.0.0.1") for _ in range(3)]
    assert all(ticket is not None for ticket in held)
    assert await second.admit_registration("10.0.0.1") is None
    await held[0].end(used=False)
    ticket = await second.admit_registration("10.0.0.1")
    assert ticket is not None
    for used in (ticket, held[1], held[2]):
        await used.end(used=True)
    assert await first.admit_registration("10.0.0.1") is None


@pytest_twisted.ensureDeferred
async def test_bcrypt_jobs_per_address_at_and_past_the_cap_across_nodes(fanouts, clock):
    """A cap of 2 jobs for the cluster: one on each node fill it; a third on either node is
    refused; when one ends, the next is admitted. Another address is not affected."""
    first, second = await two_nodes(fanouts, clock, bcrypt_per_address=2)
    one = await first.admit_bcrypt("10.0.0.1")
    two = await second.admit_bcrypt("10.0.0.1")
    assert one is not None and two is not None
    assert await first.admit_bcrypt("10.0.0.1") is None
    assert await second.admit_bcrypt("10.0.0.1") is None
    assert await second.admit_bcrypt("10.0.0.9") is not None
    await one.end()
    assert await second.admit_bcrypt("10.0.0.1") is not None


@pytest_twisted.ensureDeferred
async def test_attempts_of_a_node_that_died_stop_counting_after_their_deadline(fanouts, clock):
    """A node admits and dies (its tickets never end): the places come free once
    IN_FLIGHT_SECONDS have passed, not before."""
    first, second = await two_nodes(fanouts, clock)
    assert await first.admit_login("10.0.0.1", 1) is not None
    clock.advance(IN_FLIGHT_SECONDS - 1)
    assert await second.admit_login("10.0.0.1", 1) is None
    clock.advance(1)
    assert await second.admit_login("10.0.0.1", 1) is not None


@pytest_twisted.ensureDeferred
async def test_with_redis_away_each_node_admits_by_its_own_limits(fanouts, clock, redis_server):
    """Redis killed: admissions are not refused (nobody is locked out by an outage); they
    are told apart as unshared, and counted."""
    limits = SharedLimits(await fanouts(), clock, registration=Allowance(1, 3600),
                          bcrypt_per_address=1)
    assert (await limits.admit_bcrypt("10.0.0.1")).shared
    redis_server.process.kill()
    redis_server.process.wait()
    assert await limits.admit_bcrypt("10.0.0.1") is UNSHARED
    assert await limits.admit_registration("10.0.0.1") is UNSHARED
    assert await limits.admit_login("10.0.0.1", 1) is UNSHARED
    assert limits.unshared >= 3


class FakeShared:
    """A shared count that is full, or admits, as the test says."""

    def __init__(self, full: bool) -> None:
        self.full = full
        self.asked: list[str] = []
        self.ended = 0

    def _answer(self, what: str):
        self.asked.append(what)
        if self.full:
            return defer.succeed(None)
        ticket = SharedTicket(self)
        return defer.succeed(ticket)

    def admit_bcrypt(self, address):
        return self._answer("bcrypt " + address)


class SharedTicket:
    """A ticket that counts its end on its FakeShared."""

    shared = True

    def __init__(self, owner: FakeShared) -> None:
        self.owner = owner

    def end(self, used: bool = False) -> None:
        self.owner.ended += 1


class RecordingHasher(PasswordHasher):
    """The real bcrypt queue with the job itself run at once (no worker processes)."""

    def __init__(self) -> None:
        super().__init__(reactor=None, rounds=4, per_address=8)
        self.pools = [object()]
        self._busy = [0]

    def _run(self, function, *args):
        return defer.succeed("ran")


def test_the_bcrypt_queue_refuses_when_the_cluster_count_is_full():
    """The node's own count has room, the cluster's does not: ``too-many-attempts``, and the
    node's own place is given back (its count and pending go back to 0)."""
    hasher = RecordingHasher()
    hasher.shared = FakeShared(full=True)
    outcome = []
    hasher.hash(b"secret-password", "10.0.0.1", "alice").addErrback(outcome.append)
    assert outcome[0].check(ChatError) and outcome[0].value.code == "too-many-attempts"
    assert hasher.shared.asked == ["bcrypt 10.0.0.1"]
    assert hasher.pending == 0 and hasher._by_address == {}


def test_the_bcrypt_queue_ends_its_cluster_place_when_the_job_ends():
    """Admitted by the cluster's count: the job runs, and its place there ends with it."""
    hasher = RecordingHasher()
    hasher.shared = FakeShared(full=False)
    outcome = []
    hasher.hash(b"secret-password", "10.0.0.1", "alice").addCallback(outcome.append)
    assert outcome == ["ran"]
    assert hasher.shared.ended == 1
    assert hasher.pending == 0 and hasher._by_address == {}
