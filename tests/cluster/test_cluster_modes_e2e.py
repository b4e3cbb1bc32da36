"""Cluster mode end to end: room modes, guests and invisibility across real nodes.

Real ``twistd`` nodes on one fresh database of the private PostgreSQL and
the private redis-server (the ``cluster`` fixture of
``test_cluster_e2e.py``), with the IRC door on where a test needs it.
Clients are plain sockets, every read bounded by the client's timeout. A
change another node must know of is waited for by a line it sends after
it: room events are applied on every node in the order they were
recorded, so once a later topic reaches a session there, the earlier
change has been applied there too.
"""

import time

from tests.cluster.test_cluster_e2e import cluster  # noqa: F401 (a fixture)
from tests.cluster.test_cluster_who_e2e import (
    ARRIVAL_DEADLINE_SECONDS,
    DEAD_NODE_DEADLINE_SECONDS,
    read_until,
    who,
    who_until,
)
from tests.frontends.irc.support import IRCSocketClient

IRC_ON = {"CHATD_IRC_LISTEN": "tcp:0:interface=127.0.0.1"}


def irc_login(port: int, name: str) -> IRCSocketClient:
    """An IRC client logged in as ``name`` (an account already registered) by PASS."""
    client = IRCSocketClient(port)
    client.send("PASS password1", f"NICK {name}", f"USER {name} 0 * :{name}")
    client.until(lambda m: m.verb == "001")
    return client


def mode_told(client: IRCSocketClient, change: str) -> str:
    """Read IRC lines until the ``MODE`` making ``change`` (committed: it is told after);
    that line. An error numeric on the way fails."""
    lines = client.until(
        lambda m: (m.verb == "MODE" and change in m.params)
        or (m.verb.isdigit() and m.verb >= "400")
    )
    assert " MODE " in lines[-1], lines
    return lines[-1]


def marker(alice, bob, text: str, started: float) -> None:
    """alice sets #side's topic to ``text``; wait until bob (another node) is told, which
    is after every change alice made before it. Prints how long it took from
    ``started``."""
    assert alice.command(f"/topic #side {text}")[-1] == "OK topic #side"
    assert read_until(bob, "TOPIC #side") == f"TOPIC #side alice {text}"
    print(f"{text}: on the other node {time.monotonic() - started:.3f} s after the change")


def test_voice_moderated_and_open_topic_reach_the_other_node(cluster):  # noqa: F811
    """alice (operator of #side, IRC on node a) makes #side moderated and voices carol:
    on node b, bob may no longer speak there and carol may; -m lets bob speak again,
    -v takes carol's voice back for the next +m, and -t lets bob set the topic."""
    first, second = cluster("a", **IRC_ON), cluster("b")
    alice = first.connect()
    alice.login("alice")
    assert alice.command("/join #side")[-1] == "OK join #side"
    bob, carol = second.connect(), second.connect()
    bob.login("bob")
    carol.login("carol")
    for client in (bob, carol):
        assert client.command("/join #side")[-1] == "OK join #side"
    modes = irc_login(first.irc_port, "alice")

    started = time.monotonic()
    modes.send("MODE #side +m")
    mode_told(modes, "+m")
    marker(alice, bob, "moderated", started)
    read_until(carol, "TOPIC #side")
    assert bob.command("/say #side may I?")[-1].startswith("ERR forbidden")
    assert carol.command("/say #side may I?")[-1].startswith("ERR forbidden")

    started = time.monotonic()
    modes.send("MODE #side +v carol")
    mode_told(modes, "+v")
    marker(alice, bob, "voiced", started)
    read_until(carol, "TOPIC #side")
    assert carol.command("/say #side I may")[-1] == "OK say #side"
    assert bob.command("/say #side still not?")[-1].startswith("ERR forbidden")

    started = time.monotonic()
    modes.send("MODE #side -m")
    mode_told(modes, "-m")
    marker(alice, bob, "open", started)
    assert bob.command("/say #side at last")[-1] == "OK say #side"

    modes.send("MODE #side -v carol", "MODE #side +m")
    mode_told(modes, "+m")
    marker(alice, bob, "moderated-again", started)
    read_until(carol, "TOPIC #side")
    assert carol.command("/say #side again?")[-1].startswith("ERR forbidden")

    # Only operators set the topic of a room with operators (+t) until alice says -t.
    assert bob.command("/topic #side mine")[-1].startswith("ERR forbidden")
    started = time.monotonic()
    modes.send("MODE #side -t")
    mode_told(modes, "-t")
    marker(alice, bob, "topic-open", started)
    assert bob.command("/topic #side mine")[-1] == "OK topic #side"


def alice_and_a_guest_in_side(cluster, guest_node: str):  # noqa: F811
    """alice (line door, node a) and the guest ``visitor`` (IRC, on ``guest_node``) in
    #side, guests on, both nodes listing both: (alice, the guest, the guest's node)."""
    guests = {"CHATD_GUESTS": "on", **IRC_ON}
    first, second = cluster("a", **guests), cluster(guest_node, **guests)
    alice = first.connect()
    alice.login("alice")
    assert alice.command("/join #side")[-1] == "OK join #side"
    guest = IRCSocketClient(second.irc_port)
    guest.send("NICK visitor", "USER v 0 * :Visitor", "JOIN #side")
    guest.until(lambda m: m.verb == "366")
    read_until(alice, "JOIN #side visitor")
    who_until(alice, ["alice", "visitor"], ARRIVAL_DEADLINE_SECONDS, room="#side")
    return alice, guest, second


def test_an_operator_on_one_node_kicks_a_guest_on_another(cluster):  # noqa: F811
    """A guest (no account) joins #side over IRC on node b; alice, #side's operator on node
    a, kicks it: the guest is told KICK and is out of #side there, and WHO on node a no
    longer lists it. A name that is neither a member nor online stays no-such-user."""
    alice, guest, _ = alice_and_a_guest_in_side(cluster, "b")
    assert alice.command("/kick #side nobody")[-1].startswith("ERR no-such-user")
    sent = time.monotonic()
    assert alice.command("/kick #side visitor enough")[-1] == "OK kick #side"
    kick = guest.until(lambda m: m.verb == "KICK")[-1]
    print(f"the guest was kicked on its node {time.monotonic() - sent:.3f} s after the kick")
    assert kick == ":alice!alice@chatd KICK #side visitor enough"
    guest.send("PRIVMSG #side :still here?")
    assert guest.until(lambda m: m.verb.isdigit() and m.verb >= "400")[-1].split()[1] in (
        "404", "442"
    )
    who_until(alice, ["alice"], ARRIVAL_DEADLINE_SECONDS, room="#side")


def test_a_guest_whose_node_is_killed_parts_its_rooms_for_the_cluster(cluster):  # noqa: F811
    """A guest on node c is in #side with alice (node a); node c is killed with SIGKILL:
    alice is told ``PART #side visitor`` once (its rooms are nowhere but in what node c
    last told of it) and WHO stops listing it, within the documented bound."""
    alice, _, doomed = alice_and_a_guest_in_side(cluster, "c")
    doomed.kill()
    seen: list[str] = []
    took = who_until(alice, ["alice"], DEAD_NODE_DEADLINE_SECONDS, room="#side", seen=seen)
    print(f"the guest left #side {took:.1f} s after its node was killed")
    # Two more round trips: a PART told twice would be here by now.
    assert who(alice, "#side", seen) == who(alice, "#side", seen) == ["alice"]
    assert [line for line in seen if line.startswith("PART ")] == ["PART #side visitor"]


def who_mask(client: IRCSocketClient, mask: str) -> list[str]:
    """The nicks a ``WHO <mask>`` lists (352 lines) up to its 315."""
    client.send(f"WHO {mask}")
    lines = client.until(lambda m: m.verb == "315")
    return [line.split()[7] for line in lines if line.split()[1] == "352"]


def test_an_invisible_user_of_another_node_is_left_out_of_who_by_mask(cluster):  # noqa: F811
    """carol (IRC, node b) shares no room with alice (IRC, node a): alice's WHO c* finds
    her until she sets +i, then not; after -i, again. Each time carol then sends alice a DM,
    which reaches alice's node after carol's new state (one Redis connection each way)."""
    first, second = cluster("a", **IRC_ON), cluster("b", **IRC_ON)
    for node, name in ((first, "alice"), (second, "carol")):
        node.connect().login(name)
    alice, carol = irc_login(first.irc_port, "alice"), irc_login(second.irc_port, "carol")

    def told(text: str) -> None:
        carol.send(f"PRIVMSG alice :{text}")
        alice.until(lambda m: m.verb == "PRIVMSG" and m.params[-1] == text)

    carol.send("PART #lobby")
    carol.until(lambda m: m.verb == "PART")
    told("parted")
    assert who_mask(alice, "c*") == ["carol"]
    carol.send("MODE carol +i")
    mode_told(carol, "+i")
    told("invisible")
    assert who_mask(alice, "c*") == []
    assert who_mask(alice, "carol") == ["carol"]  # a nick, not a mask: found anyway
    carol.send("MODE carol -i")
    mode_told(carol, "-i")
    told("visible")
    assert who_mask(alice, "c*") == ["carol"]


def test_a_mode_made_on_one_node_is_told_to_irc_and_line_members_of_another(cluster):  # noqa: F811
    """alice (IRC, node a) opens #r; bob (IRC) and carol (line door) on node b join it.
    alice's MODE #r +m reaches bob as MODE from alice!alice@chatd and carol as the MODE
    line; +b dave (an account not in #r) and -m too, in order."""
    first, second = cluster("a", **IRC_ON), cluster("b", **IRC_ON)
    first.connect().login("alice")
    second.connect().login("dave")
    alice = irc_login(first.irc_port, "alice")
    alice.send("JOIN #r")
    alice.until(lambda m: m.verb == "366")
    bob = second.connect()
    bob.login("bob")
    bob_irc = irc_login(second.irc_port, "bob")
    bob_irc.send("JOIN #r")
    bob_irc.until(lambda m: m.verb == "366")
    carol = second.connect()
    carol.login("carol")
    assert carol.command("/join #r")[-1] == "OK join #r"
    started = time.monotonic()
    alice.send("MODE #r +m")
    assert mode_told(alice, "+m") == ":alice!alice@chatd MODE #r +m"
    assert mode_told(bob_irc, "+m") == ":alice!alice@chatd MODE #r +m"
    print(f"MODE +m on the other node {time.monotonic() - started:.3f} s after it was sent")
    assert read_until(carol, "MODE ") == "MODE #r alice moderated on"
    alice.send("MODE #r +b dave", "MODE #r -m")
    assert mode_told(bob_irc, "+b") == ":alice!alice@chatd MODE #r +b dave!*@*"
    assert mode_told(bob_irc, "-m") == ":alice!alice@chatd MODE #r -m"
    assert read_until(carol, "MODE ") == "MODE #r alice ban on dave"
    assert read_until(carol, "MODE ") == "MODE #r alice moderated off"
