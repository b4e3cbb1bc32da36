"""Cluster mode end to end: WHO across nodes, moderation across nodes, a node killed.

Real ``twistd`` nodes on one fresh database of the private PostgreSQL and
the private redis-server (the ``cluster`` fixture of
``test_cluster_e2e.py``). Clients are plain sockets, every read bounded by
the client's timeout; what arrives later than a reply (another node's
state) is waited for by reading the line that announces it, then asking
again, until a bounded deadline.
"""

import contextlib
import time

from tests.cluster.test_cluster_e2e import cluster  # noqa: F401 (a fixture)
from tests.serverproc import LineClient

# A dead node's users stop counting at most 13 s after it died (10 s expiry +
# one 3 s heartbeat, docs/cluster.md); the rest is room for a loaded machine.
DEAD_NODE_DEADLINE_SECONDS = 13.0 + 12.0
# Another node's state arrives within milliseconds; this bounds a wait for it.
ARRIVAL_DEADLINE_SECONDS = 10.0


def who(client: LineClient, room: str = "#lobby", seen: list[str] | None = None) -> list[str]:
    """The members ``/who`` lists (sorted as the server sorts them); every line read is
    added to ``seen``."""
    lines = client.command(f"/who {room}")
    if seen is not None:
        seen += lines
    for line in lines:
        if line.startswith(f"WHO {room}"):
            return line.split()[2:]
    raise AssertionError(f"no WHO line for {room}")


def who_until(
    client: LineClient, wanted: list[str], deadline: float, room: str = "#lobby",
    seen: list[str] | None = None,
) -> float:
    """Ask ``/who`` until it lists ``wanted``; the seconds that took. Fails past ``deadline``.
    Every line read is added to ``seen``."""
    started = time.monotonic()
    while True:
        members = who(client, room, seen)
        if members == wanted:
            return time.monotonic() - started
        assert time.monotonic() - started < deadline, f"{room}: {members}, not {wanted}"
        # Another node's change reaches this client as a line (JOIN, PART, KICK) once
        # its node knows it: wait for the next line, then ask again.
        with contextlib.suppress(TimeoutError):
            line = client.read_line()
            assert line, "connection closed"
            if seen is not None:
                seen.append(line)


def read_until(client: LineClient, prefix: str) -> str:
    """Read lines until one starts with ``prefix`` (each read bounded by the timeout)."""
    line = client.read_line()
    while not line.startswith(prefix):
        assert line, f"connection closed before {prefix!r}"
        line = client.read_line()
    return line


def test_who_lists_the_members_of_every_node_with_operators(cluster):  # noqa: F811
    """alice on node a, bob on node b: WHO on either lists both; in #side, opened by alice,
    both nodes mark her its operator, and once alice is told bob's JOIN her WHO has him;
    /rooms answers alike on both."""
    first, second = cluster("a"), cluster("b")
    alice, bob = first.connect(), second.connect()
    alice.login("alice")
    bob.login("bob")
    who_until(alice, ["alice", "bob"], ARRIVAL_DEADLINE_SECONDS)
    who_until(bob, ["alice", "bob"], ARRIVAL_DEADLINE_SECONDS)
    assert alice.command("/join #side")[-1] == "OK join #side"
    joining = bob.command("/join #side")
    assert "WHO #side alice bob" in joining and "OPS #side alice" in joining
    # bob's state reaches node a before his JOIN does: told JOIN, alice's WHO lists him.
    read_until(alice, "JOIN #side bob")
    lines = alice.command("/who #side")
    assert lines[-3:] == ["WHO #side alice bob", "OPS #side alice", "OK who #side"]
    # /rooms counts from the shared database: the same on every node.
    for client in (alice, bob):
        rooms = client.command("/rooms")
        assert rooms[-3:] == ["ROOM #lobby 2", "ROOM #side 2", "OK rooms"]


def test_a_kick_and_a_ban_on_one_node_reach_the_session_on_the_other(cluster):  # noqa: F811
    """alice (operator of #side) on node a kicks bob, whose session is on node b: bob is
    told at once and is out of the room; after joining again her ban takes him out and
    keeps him out."""
    first, second = cluster("a"), cluster("b")
    alice, bob = first.connect(), second.connect()
    alice.login("alice")
    bob.login("bob")
    assert alice.command("/join #side")[-1] == "OK join #side"
    assert bob.command("/join #side")[-1] == "OK join #side"
    sent = time.monotonic()
    assert alice.command("/kick #side bob enough")[-1] == "OK kick #side"
    assert read_until(bob, "KICK ") == "KICK #side bob alice enough"
    print(f"the kick reached the other node's session {time.monotonic() - sent:.3f} s after it"
          " was sent")
    assert bob.command("/say #side still here?")[-1].startswith("ERR not-in-room")
    assert bob.command("/join #side")[-1] == "OK join #side"
    assert alice.command("/ban #side bob")[-1] == "OK ban #side"
    assert read_until(bob, "KICK ") == "KICK #side bob alice banned"
    assert bob.command("/join #side")[-1].startswith("ERR forbidden")
    who_until(alice, ["alice"], ARRIVAL_DEADLINE_SECONDS, room="#side")


def test_a_node_killed_leaves_who_within_the_documented_bound(cluster):  # noqa: F811
    """dave's node is killed with SIGKILL (nothing said, nothing cleaned up): WHO on alice's
    node stops listing him within the documented 13 s (plus room for a loaded machine)."""
    first, doomed = cluster("a"), cluster("c")
    alice, dave = first.connect(), doomed.connect()
    alice.login("alice")
    dave.login("dave")
    who_until(alice, ["alice", "dave"], ARRIVAL_DEADLINE_SECONDS)
    doomed.kill()
    took = who_until(alice, ["alice"], DEAD_NODE_DEADLINE_SECONDS)
    print(f"dave left WHO {took:.1f} s after his node was killed")


def test_a_user_on_two_nodes_joins_and_parts_once_for_the_cluster(cluster):  # noqa: F811
    """bob logs in on node b, then on node a too: alice (node a) sees one JOIN; his session
    on b ends, then the one on a: she sees one PART, after the last."""
    first, second = cluster("a"), cluster("b")
    alice, bob_there = first.connect(), second.connect()
    alice.login("alice")
    bob_there.login("bob")
    read_until(alice, "JOIN #lobby bob")
    bob_here = first.connect()
    bob_here.login("bob")
    # A JOIN for bob's second session would have gone to alice before his login's OK.
    lines = alice.command("/who #lobby")
    assert "WHO #lobby alice bob" in lines
    assert not [line for line in lines if line.startswith("JOIN ")]
    assert bob_there.command("/quit")[-1].startswith("OK")
    bob_there.close()
    seen: list[str] = []
    assert who(alice, seen=seen) == ["alice", "bob"]
    assert bob_here.command("/quit")[-1].startswith("OK")
    bob_here.close()
    seen += alice.until(lambda line: line.startswith("PART "))
    # Two more round trips: a PART told twice would be here by now.
    assert who(alice, seen=seen) == who(alice, seen=seen) == ["alice"]
    assert [line for line in seen if line.startswith(("JOIN ", "PART "))] == ["PART #lobby bob"]
