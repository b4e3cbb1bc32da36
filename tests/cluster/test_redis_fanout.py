"""The fan-out on a real redis-server: two nodes in one process, one database.

Each node is a ``ChatService`` with its own ``RedisFanout`` (its own node id
and connections) on a private redis-server (``tests/services.py``); both
use one database, as nodes of a cluster share one PostgreSQL. Sessions are
``RecordingClient`` minds. Tests wait on the events they expect, each wait
bounded by ``WAIT_SECONDS``; never on time passing.
"""

from collections.abc import Callable

import pytest
import pytest_twisted
from twisted.internet import defer, reactor

from chatd.cluster.redis import USERS_KEY, RedisFanout
from chatd.core.events import DirectMessage, Joined, Parted, RoomMessage, RoomMessages
from chatd.core.service import ChatService
from chatd.storage import transactions
from tests.programs import require_module
from tests.services import redis_server, start_redis  # noqa: F401 (a fixture)
from tests.support import InlineDatabase, RecordingClient

WAIT_SECONDS = 20.0


class WaitingClient(RecordingClient):
    """A mind whose test can wait until what it was sent satisfies a condition."""

    def __init__(self) -> None:
        super().__init__()
        self._waits: list[tuple[Callable[[], bool], defer.Deferred]] = []

    def deliver(self, event) -> None:
        """Keep ``event``; wake the waits it satisfies."""
        super().deliver(event)
        self._check()

    def _check(self) -> None:
        for wait in list(self._waits):
            condition, waiting = wait
            if condition():
                self._waits.remove(wait)
                waiting.callback(None)

    def until(self, condition: Callable[[], bool]) -> defer.Deferred:
        """Fires once ``condition()`` holds (at once if it does); fails after WAIT_SECONDS."""
        if condition():
            return defer.succeed(None)
        waiting: defer.Deferred = defer.Deferred()
        self._waits.append((condition, waiting))
        return waiting.addTimeout(WAIT_SECONDS, reactor)

    def said(self, room: str = "#lobby") -> list[str]:
        """The texts of the room messages delivered (not history), in order."""
        texts = []
        for event in self.events:
            batch = event.messages if isinstance(event, RoomMessages) else (event,)
            texts += [m.text for m in batch if isinstance(m, RoomMessage) and m.room == room]
        return texts

    def of_type(self, kind) -> list:
        """The events of one type delivered so far."""
        return [event for event in self.events if isinstance(event, kind)]


class Node:
    """One chatd node: a chat service and its fan-out on the shared database and Redis."""

    def __init__(self, database, url: str, **options) -> None:
        self.fanout = RedisFanout(url, reactor, **options)
        self.chat = ChatService(database, reactor, account_poll_seconds=3600, fanout=self.fanout)
        self.chat.startService()
        self.fanout.start()

    async def login(self, name: str) -> tuple:
        """A new session of ``name`` on this node, and its mind."""
        mind = WaitingClient()
        session = await self.chat.start_session(name, mind)
        return session, mind

    async def stop(self) -> None:
        """Leave the cluster as a stopping server does."""
        self.chat.stopService()
        await self.fanout.stop()


@pytest.fixture
def database():
    """One database for every node, with the accounts the tests use."""
    shared = InlineDatabase()
    for name in ("alice", "bob", "carol", "dave"):
        shared.write(transactions.create_user, name, "x", 0)
    return shared


@pytest.fixture
def nodes(database, redis_server):  # noqa: F811
    """Start nodes on the shared database and the private Redis; stop them all after."""
    require_module("txredisapi", "txredisapi")
    started: list[Node] = []

    async def start(**options) -> Node:
        node = Node(database, redis_server.url, **options)
        started.append(node)
        await node.fanout.when_ready()
        return node

    yield start
    for node in started:
        pytest_twisted.blockon(defer.ensureDeferred(node.stop()))


def history(database, room_id: int = 1) -> list[str]:
    """The room's messages in the database, in sequence order (what /history shows)."""
    rows = transactions.room_messages_between(database.connection, room_id, 1, 10**9, 10**6)
    assert [row.seq for row in rows] == list(range(1, len(rows) + 1))
    return [row.text for row in rows]


@pytest_twisted.ensureDeferred
async def test_both_nodes_see_one_order_equal_to_the_history(nodes, database):
    """Senders on both nodes: every member everywhere sees every message once, in /history's
    order."""
    first, second = await nodes(), await nodes()
    alice, alice_sees = await first.login("alice")
    bob, bob_sees = await second.login("bob")
    posts = []
    for number in range(30):
        posts.append(alice.say(f"a{number}"))
        posts.append(bob.say(f"b{number}"))
    await defer.gatherResults(posts)
    order = history(database)
    assert len(order) == 60
    await alice_sees.until(lambda: len(alice_sees.said()) == 60)
    await bob_sees.until(lambda: len(bob_sees.said()) == 60)
    assert alice_sees.said() == order
    assert bob_sees.said() == order


@pytest_twisted.ensureDeferred
async def test_dropped_announcements_are_filled_from_the_database(nodes, database):
    """The test hook drops every other announcement bob's node hears: the gaps are read back,
    and bob sees every message once, in order."""
    first, second = await nodes(), await nodes()
    second.fanout.drop = lambda fields: fields.get("e") == "msg" and fields["s"] % 2 == 1
    alice, _ = await first.login("alice")
    _bob, bob_sees = await second.login("bob")
    for number in range(20):
        await alice.say(f"m{number}")
    # The last message (20) is even, so announced: it shows the last gap. (A lost
    # last announcement waits for the room's next message, or a resync.)
    await bob_sees.until(lambda: len(bob_sees.said()) == 20)
    assert bob_sees.said() == history(database) == [f"m{number}" for number in range(20)]
    lobby = second.chat.rooms["#lobby"]
    assert lobby.sequencer.filled == 10


@pytest_twisted.ensureDeferred
async def test_redis_restarted_nodes_catch_up_by_sequence(nodes, database, redis_server, tmp_path):  # noqa: F811
    """Redis killed: alice's node still commits and shows her messages; bob's hears nothing
    (its read-back while away is turned off here); Redis back on its port: bob gets every
    message once, in order."""
    first = await nodes()
    second = await nodes(resync_seconds=3600)
    alice, alice_sees = await first.login("alice")
    _bob, bob_sees = await second.login("bob")
    await alice.say("before")
    await bob_sees.until(lambda: bob_sees.said() == ["before"])
    redis_server.process.kill()
    redis_server.process.wait()
    for number in range(5):
        await alice.say(f"during{number}")
    assert alice_sees.said() == ["before", *[f"during{n}" for n in range(5)]]
    assert bob_sees.said() == ["before"]
    restarted = start_redis(tmp_path, redis_server.port)
    try:
        await bob_sees.until(lambda: len(bob_sees.said()) == 6)
        assert bob_sees.said() == history(database)
        await alice.say("after")
        await bob_sees.until(lambda: len(bob_sees.said()) == 7)
        assert bob_sees.said() == history(database)
        assert second.fanout.reconnects >= 1
    finally:
        for node in (first, second):
            await node.stop()
        restarted.process.kill()
        restarted.process.wait()


@pytest_twisted.ensureDeferred
async def test_with_redis_away_rooms_are_read_back_from_the_database(nodes, database, redis_server):  # noqa: F811
    """Redis stays away: bob's node reads the room back every second, so alice's messages
    still reach him, in order."""
    first = await nodes()
    second = await nodes(resync_seconds=0.2)
    alice, _ = await first.login("alice")
    _bob, bob_sees = await second.login("bob")
    redis_server.process.kill()
    redis_server.process.wait()
    for number in range(3):
        await alice.say(f"away{number}")
    await bob_sees.until(lambda: len(bob_sees.said()) == 3)
    assert bob_sees.said() == history(database)


@pytest_twisted.ensureDeferred
async def test_direct_messages_reach_every_session_on_any_node(nodes):
    """alice on one node, bob on the other (and a second alice there): the DM is delivered
    to bob, shown to both of alice's sessions, and not stored."""
    first, second = await nodes(), await nodes()
    alice, alice_sees = await first.login("alice")
    _other_alice, other_alice_sees = await second.login("alice")
    _bob, bob_sees = await second.login("bob")
    answer = await alice.message("bob", "psst")
    assert answer[1] == "delivered"
    for mind in (bob_sees, other_alice_sees, alice_sees):
        await mind.until(lambda mind=mind: mind.of_type(DirectMessage))
        (message,) = mind.of_type(DirectMessage)
        assert (message.sender, message.recipient, message.text) == ("alice", "bob", "psst")
    stored = await first.chat.database.read(transactions.count_stored_messages, "bob")
    assert stored == 0


@pytest_twisted.ensureDeferred
async def test_a_direct_message_to_a_user_online_nowhere_is_stored(nodes, redis_server):  # noqa: F811
    """carol has no session on any node: stored. With Redis away, bob's node cannot be
    reached either: stored too, and bob gets it at his next login."""
    first, second = await nodes(), await nodes()
    alice, _ = await first.login("alice")
    bob, _ = await second.login("bob")
    assert (await alice.message("carol", "later"))[1] == "stored"
    redis_server.process.kill()
    redis_server.process.wait()
    assert (await alice.message("bob", "kept"))[1] == "stored"
    bob.logout()
    _bob_again, bob_sees = await second.login("bob")
    assert [m.text for m in bob_sees.events if getattr(m, "text", None) == "kept"] == ["kept"]


@pytest_twisted.ensureDeferred
async def test_join_and_part_are_told_once_for_the_cluster(nodes):
    """A user's sessions on two nodes: one JOIN when the first arrives, none for the second,
    none when one of them ends, one PART when the last ends; members on both nodes alike."""
    first, second = await nodes(), await nodes()
    _bob, bob_sees = await first.login("bob")
    _carol, carol_sees = await second.login("carol")
    alice_here, _ = await first.login("alice")
    await carol_sees.until(lambda: "alice" in [j.user for j in carol_sees.of_type(Joined)])
    alice_there, _ = await second.login("alice")
    alice_here.logout()
    alice_there.logout()
    for mind in (bob_sees, carol_sees):
        await mind.until(lambda mind=mind: mind.of_type(Parted))
        assert [j.user for j in mind.of_type(Joined) if j.user == "alice"] == ["alice"]
        assert [p.user for p in mind.of_type(Parted)] == ["alice"]


@pytest_twisted.ensureDeferred
async def test_a_dead_nodes_users_part_within_the_expiry(nodes, redis_server):  # noqa: F811
    """A node that stops heartbeating without leaving (kill -9): once its key expires, a
    live node announces the PART of its users, once, and drops its user list."""
    survivor = await nodes(heartbeat_seconds=0.1, expiry_seconds=0.5)
    doomed = await nodes(heartbeat_seconds=0.1, expiry_seconds=0.5)
    _bob, bob_sees = await survivor.login("bob")
    await doomed.login("dave")
    await bob_sees.until(lambda: "dave" in [j.user for j in bob_sees.of_type(Joined)])
    # As kill -9 would: the connections drop, nothing is said, nothing is cleaned.
    doomed.fanout._heartbeat.stop()
    doomed.fanout._resync.stop()
    for client in doomed.fanout._clients:
        await client.stopService()
    doomed.fanout._clients = []
    doomed.fanout._publisher = None
    await bob_sees.until(lambda: [p.user for p in bob_sees.of_type(Parted)] == ["dave"])
    publisher = survivor.fanout._publisher
    assert await publisher.execute_command("EXISTS", USERS_KEY + doomed.fanout.node) == 0


@pytest_twisted.ensureDeferred
async def test_failed_logins_spread_over_nodes_are_limited_as_one(nodes):
    """Guesses from one address split between two nodes: each node's throttle counts them
    all, so the address is locked out on both after the limit, not after twice it."""
    from twisted.internet import task

    from chatd.auth.throttles import LoginThrottle

    clock = task.Clock()
    throttles = [LoginThrottle(clock, 4, 100, 60.0, 900.0) for _ in range(2)]
    first, second = await nodes(), await nodes()
    heard: list[defer.Deferred] = [defer.Deferred(), defer.Deferred()]
    for node, throttle, done in zip((first, second), throttles, heard, strict=True):
        await node.fanout.share_logins(throttle)
        counted = throttle.failed_elsewhere

        def failed_elsewhere(address, account, counted=counted, done=done, throttle=throttle):
            counted(address, account)
            if throttle.locked(address) and not done.called:
                done.callback(None)

        throttle.failed_elsewhere = failed_elsewhere
    throttles[0].failed("192.0.2.7", "alice")
    throttles[1].failed("192.0.2.7", "alice")
    throttles[0].failed("192.0.2.7", "bob")
    throttles[1].failed("192.0.2.7", "carol")
    await defer.gatherResults([done.addTimeout(WAIT_SECONDS, reactor) for done in heard])
    assert all(throttle.locked("192.0.2.7") for throttle in throttles)
    assert not throttles[0].locked("198.51.100.1")


@pytest_twisted.ensureDeferred
async def test_notices_part_reasons_and_client_tags_cross_nodes(nodes, database):
    """What the IRC door needs of the core crosses nodes too: a room notice with client
    tags (kind and tags), a PART's reason, tags alone to a room (TAGMSG, not stored),
    and a DM notice with its tags."""
    from chatd.core.events import NOTICE, TagMessage

    first, second = await nodes(), await nodes()
    alice, _ = await first.login("alice")
    _bob, bob_sees = await second.login("bob")
    await alice.notice("heads up", "#lobby", (("+draft/reply", "m1"),))
    await bob_sees.until(lambda: bob_sees.said() == ["heads up"])
    [notice] = [e for e in bob_sees.of_type(RoomMessage) if e.text == "heads up"]
    assert (notice.kind, notice.tags) == (NOTICE, (("+draft/reply", "m1"),))
    alice.tag("#lobby", (("+typing", "active"),))
    await bob_sees.until(lambda: bob_sees.of_type(TagMessage))
    [tagged] = bob_sees.of_type(TagMessage)
    assert (tagged.sender, tagged.target, tagged.tags) == (
        "alice", "#lobby", (("+typing", "active"),)
    )
    await alice.message("bob", "psst", NOTICE, (("+a", "1"),))
    await bob_sees.until(lambda: bob_sees.of_type(DirectMessage))
    [direct] = bob_sees.of_type(DirectMessage)
    assert (direct.kind, direct.tags, direct.text) == (NOTICE, (("+a", "1"),), "psst")
    await alice.part("#lobby", "see you")
    await bob_sees.until(lambda: bob_sees.of_type(Parted))
    assert [(e.user, e.reason) for e in bob_sees.of_type(Parted)] == [("alice", "see you")]
