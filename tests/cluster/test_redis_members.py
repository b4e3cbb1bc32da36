"""WHO, moderation and membership across nodes on a real redis-server, in one process.

The nodes are those of ``test_redis_fanout.py``: real ``ChatService`` and
``RedisFanout`` pairs on one shared database and a private redis-server,
with the account poll set to an hour, so whatever reaches another node
here came by its Redis announcement. Every wait is bounded (``WAIT_SECONDS``).
"""

import socket
import time

import pytest
import pytest_twisted
from twisted.internet import defer, reactor, task, threads

from chatd.cluster.notify import announce_account_events
from chatd.core.events import Joined, Kicked, Parted
from chatd.core.interfaces import DisconnectReason
from chatd.storage import transactions
from tests.cluster.test_redis_fanout import (  # noqa: F401 (fixtures)
    WAIT_SECONDS,
    WaitingClient,
    database,
    nodes,
)
from tests.services import redis_server  # noqa: F401 (a fixture)


async def eventually(condition) -> None:
    """Wait until ``condition()`` holds, looking every 50 ms; fail after WAIT_SECONDS."""
    deadline = time.monotonic() + WAIT_SECONDS
    while not condition():
        assert time.monotonic() < deadline, "the condition never held"
        await task.deferLater(reactor, 0.05, lambda: None)


async def wait(mind, condition) -> None:
    """Wait until ``mind``'s deliveries satisfy ``condition``, then for the delivery that
    did to end (the test goes on outside it, as a real client would)."""
    await mind.until(condition)
    await task.deferLater(reactor, 0, lambda: None)


def joined(mind, user: str, room: str = "#lobby") -> bool:
    """Whether ``mind`` was told that ``user`` joined ``room``."""
    return any(e.user == user and e.room == room for e in mind.of_type(Joined))


class EndingClient(WaitingClient):
    """A mind whose test can also wait for its session to be ended."""

    def disconnect(self, reason: str) -> None:
        super().disconnect(reason)
        self._check()


async def login(node, name: str, mind=None):
    """A session of ``name`` on ``node`` with ``mind`` (a new ``WaitingClient`` if None)."""
    mind = mind or WaitingClient()
    session = await node.chat.start_session(name, mind)
    return session, mind


@pytest_twisted.ensureDeferred
async def test_who_lists_members_on_both_nodes(nodes):  # noqa: F811
    """alice on one node, bob on the other: once alice is told bob's JOIN, WHO on her node
    lists him (his state was told before his JOIN), and the other way round."""
    first, second = await nodes(), await nodes()
    alice, alice_sees = await login(first, "alice")
    bob, _ = await login(second, "bob")
    await wait(alice_sees, lambda: joined(alice_sees, "bob"))
    assert alice.who("#lobby").members == ("alice", "bob")
    # bob's node heard of alice when it asked every node for its users ("hello").
    await eventually(lambda: bob.who("#lobby").members == ("alice", "bob"))


@pytest_twisted.ensureDeferred
async def test_a_dead_node_leaves_who_within_its_expiry(nodes):  # noqa: F811
    """A node that stops heartbeating without a word (kill -9): once its key expired, its
    user is no longer in WHO on the live node, and is parted there."""
    survivor = await nodes(heartbeat_seconds=0.1, expiry_seconds=0.5)
    doomed = await nodes(heartbeat_seconds=0.1, expiry_seconds=0.5)
    bob, bob_sees = await login(survivor, "bob")
    await login(doomed, "dave")
    await wait(bob_sees, lambda: joined(bob_sees, "dave"))
    assert bob.who("#lobby").members == ("bob", "dave")
    doomed.fanout._heartbeat.stop()
    doomed.fanout._resync.stop()
    for client in doomed.fanout._clients:
        await client.stopService()
    doomed.fanout._clients = []
    doomed.fanout._publisher = None
    await wait(bob_sees, lambda: [p.user for p in bob_sees.of_type(Parted)] == ["dave"])
    assert bob.who("#lobby").members == ("bob",)
    assert survivor.chat.is_online("dave") is False


@pytest_twisted.ensureDeferred
async def test_a_kick_and_a_ban_on_one_node_reach_the_sessions_on_the_other(nodes):  # noqa: F811
    """alice (operator of #side) on one node kicks bob, whose session is on the other: bob
    is out there at once (by the announcement: the poll is an hour away); after he joins
    again, her ban takes him out and keeps him out."""
    first, second = await nodes(), await nodes()
    alice, _ = await login(first, "alice")
    await alice.join("#side")
    bob, bob_sees = await login(second, "bob")
    await bob.join("#side")
    await alice.kick("#side", "bob", "enough")
    await wait(bob_sees, lambda: bob_sees.of_type(Kicked))
    assert [(k.by, k.reason) for k in bob_sees.of_type(Kicked)] == [("alice", "enough")]
    assert "#side" not in bob.user.rooms
    await bob.join("#side")
    await alice.ban("#side", "bob", True)
    await wait(bob_sees, lambda: len(bob_sees.of_type(Kicked)) == 2)
    assert bob_sees.of_type(Kicked)[-1].reason == "banned" and "#side" not in bob.user.rooms
    refused = []
    await bob.join("#side").addErrback(refused.append)
    assert refused[0].value.code == "forbidden"


@pytest_twisted.ensureDeferred
async def test_join_and_part_on_one_node_move_the_users_sessions_on_the_other(nodes):  # noqa: F811
    """bob has a session on each node: his /join on one puts the other in the room, and his
    /part there takes both out."""
    first, second = await nodes(), await nodes()
    bob_here, _ = await login(first, "bob")
    bob_there, there_sees = await login(second, "bob")
    await bob_here.join("#side")
    await wait(there_sees, lambda: joined(there_sees, "bob", "#side"))
    assert "#side" in bob_there.user.rooms
    await bob_there.part("#side")
    here_sees = bob_here.mind
    await wait(here_sees, lambda: any(p.room == "#side" for p in here_sees.of_type(Parted)))
    assert "#side" not in bob_here.user.rooms


@pytest_twisted.ensureDeferred
async def test_a_password_change_on_one_node_ends_the_session_on_the_other(nodes, database):  # noqa: F811
    """bob changes his password in a session on one node: his session on the other node
    ends at once (BYE password-changed), the one that changed it stays."""
    first, second = await nodes(), await nodes()
    changer, _ = await login(first, "bob")
    other = EndingClient()
    await login(second, "bob", other)
    identity = database.write(transactions.find_account, "bob").result.identity
    event_id = database.write(transactions.change_password_hash, identity, "new", 1).result
    changer.password_changed(event_id)
    await wait(other, lambda: other.closed_with is not None)
    assert other.closed_with == DisconnectReason.PASSWORD_CHANGED
    assert changer.active and "bob" not in second.chat.users


@pytest_twisted.ensureDeferred
async def test_the_admin_command_lines_announcement_ends_sessions_on_every_node(
    nodes, database, redis_server  # noqa: F811
):
    """The admin command line deletes bob and announces it (chatd.cluster.notify): bob's
    sessions on both nodes end at once, though their polls are an hour away."""
    first, second = await nodes(), await nodes()
    minds = [EndingClient(), EndingClient()]
    await login(first, "bob", minds[0])
    await login(second, "bob", minds[1])
    database.write(transactions.delete_user, "bob", 1)
    await threads.deferToThread(announce_account_events, redis_server.url)
    await defer.gatherResults([
        mind.until(lambda mind=mind: mind.closed_with is not None) for mind in minds
    ])
    assert [mind.closed_with for mind in minds] == [DisconnectReason.ACCOUNT_DELETED] * 2


def test_the_admin_announcement_fails_with_oserror_when_redis_is_not_there():
    """Nothing listens: OSError (the command line warns; the nodes' poll still finds it)."""
    spare = socket.socket()
    spare.bind(("127.0.0.1", 0))
    port = spare.getsockname()[1]
    spare.close()
    with pytest.raises(OSError):
        announce_account_events(f"redis://127.0.0.1:{port}/0", timeout=WAIT_SECONDS)
