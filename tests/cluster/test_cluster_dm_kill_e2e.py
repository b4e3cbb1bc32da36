"""Cluster mode end to end: a direct message to a user whose node was just killed.

Real ``twistd`` nodes on one fresh database of the private PostgreSQL and
the private redis-server (the ``cluster`` fixture of
``test_cluster_e2e.py``). The recipient's node is killed with SIGKILL
(nothing said, nothing cleaned up); a DM sent to the recipient at once,
and one sent once its presence has expired, is either shown to a live
session of the recipient or stored (``OK msg <user> stored``), never
answered ``delivered`` to nobody, and the stored ones reach the recipient
at its next login on another node.
"""

import time

from tests.cluster.test_cluster_e2e import cluster  # noqa: F401 (a fixture)
from tests.cluster.test_cluster_who_e2e import (
    ARRIVAL_DEADLINE_SECONDS,
    DEAD_NODE_DEADLINE_SECONDS,
    read_until,
    who_until,
)


def test_a_dm_to_a_user_whose_node_was_killed_is_stored_and_read_at_the_next_login(
    cluster,  # noqa: F811
):
    """bob's only session is on node b, which is killed: alice's DM at once and her DM
    once bob's presence has expired are both stored, and bob, logging in on node a,
    gets both, in order."""
    first, doomed = cluster("a"), cluster("b")
    alice, bob = first.connect(), doomed.connect()
    alice.login("alice")
    bob.login("bob")
    who_until(alice, ["alice", "bob"], ARRIVAL_DEADLINE_SECONDS)
    doomed.kill()
    assert alice.command("/msg bob right after the kill")[-1] == "OK msg bob stored"
    took = who_until(alice, ["alice"], DEAD_NODE_DEADLINE_SECONDS)
    print(f"bob left WHO {took:.1f} s after his node was killed")
    assert alice.command("/msg bob after the expiry")[-1] == "OK msg bob stored"
    again = first.connect()
    lines = again.login("bob")
    if not any(line.startswith("STORED ") and "expiry" in line for line in lines):
        lines += again.until(lambda line: line.startswith("STORED ") and "expiry" in line)
    stored = [line.split(" ", 3)[3] for line in lines if line.startswith("STORED ")]
    assert stored == ["right after the kill", "after the expiry"], lines


def test_a_dm_to_a_user_whose_node_was_killed_reaches_its_session_on_a_live_node(
    cluster,  # noqa: F811
):
    """bob has a session on node b and one on node c; node b is killed: alice's DM, sent at
    once, is delivered to bob's session on c; nothing is stored for his next login."""
    first, doomed, third = cluster("a"), cluster("b"), cluster("c")
    alice, bob_dies, bob_lives = first.connect(), doomed.connect(), third.connect()
    alice.login("alice")
    bob_dies.login("bob")
    bob_lives.login("bob")
    who_until(alice, ["alice", "bob"], ARRIVAL_DEADLINE_SECONDS)
    doomed.kill()
    sent = time.monotonic()
    assert alice.command("/msg bob are you there?")[-1] == "OK msg bob delivered"
    assert read_until(bob_lives, "DM ") == "DM alice bob are you there?"
    print(f"shown on the live node {time.monotonic() - sent:.3f} s after it was sent")
    assert bob_lives.command("/quit")[-1].startswith("OK")
    bob_lives.close()
    again = first.connect()
    lines = again.login("bob")
    assert not [line for line in lines if line.startswith("STORED ")], lines
