"""The IRC door of one cluster node: users online on another node in NAMES, WHO and WHOIS.

The in-memory server of tests/support.py, its fan-out's presence mirror
filled as another node's announcements would fill it (chatd/cluster/presence.py):
bob is online on node n2, away, in #lobby and in #far (its operator);
carol on n2 is in the private #secret.
"""

import pytest

from chatd.cluster.fanout import LocalFanout
from chatd.cluster.presence import ClusterPresence, RoomSeat, UserState
from chatd.frontends.irc.message import parse
from tests.frontends.irc.support import IRCHarness


class Elsewhere(LocalFanout):
    """One node's fan-out as far as the IRC door can tell: a mirror of another node."""

    def __init__(self) -> None:
        self.presence = ClusterPresence()


@pytest.fixture
def irc() -> IRCHarness:
    """alice's server; bob and carol online on another node."""
    harness = IRCHarness()
    for name in ("alice", "bob", "carol"):
        harness.account(name)
    harness.chat.fanout = fanout = Elsewhere()
    fanout.presence.set("n2", "bob", UserState("bob", "at lunch", (
        RoomSeat("#lobby", "#lobby", False, False), RoomSeat("#far", "#far", True, False),
    )))
    fanout.presence.set("n2", "carol", UserState("carol", "", (
        RoomSeat("#secret", "#secret", True, True),
    )))
    return harness


def test_names_and_who_list_the_members_on_other_nodes(irc):
    """NAMES #lobby and WHO #lobby list bob (G: away); NAMES #far, a room with nobody on
    this node, marks bob its operator; NAMES without a channel shows #far but not the
    private #secret."""
    alice = irc.irc_client()
    alice.login_with_pass("alice")
    assert ":chatd 353 alice = #lobby :alice bob" in alice.send("NAMES #lobby")
    assert ":chatd 352 alice #lobby bob chatd chatd bob G :0 bob" in alice.send("WHO #lobby")
    assert alice.send("NAMES #far") == [
        ":chatd 353 alice = #far @bob", ":chatd 366 alice #far :End of /NAMES list",
    ]
    every = alice.send("NAMES")
    assert every == [
        ":chatd 353 alice = #far @bob",
        ":chatd 353 alice = #lobby :alice bob",
        ":chatd 366 alice * :End of /NAMES list",
    ]
    assert alice.send("NAMES #secret") == [":chatd 366 alice #secret :End of /NAMES list"]


def test_who_and_whois_of_a_nick_on_another_node(irc):
    """WHO bob answers 352 (away: G); WHOIS bob says he is there and away, not 401."""
    alice = irc.irc_client()
    alice.login_with_pass("alice")
    assert alice.send("WHO bob")[0] == ":chatd 352 alice * bob chatd chatd bob G :0 bob"
    whois = alice.send("WHOIS bob")
    assert [parse(line).verb for line in whois] == ["311", "312", "330", "301", "318"]
    assert whois[3] == ":chatd 301 alice bob :at lunch"


def test_who_with_a_mask_leaves_out_invisible_users_of_other_nodes_unless_in_a_room(irc):
    """WHO with a mask: carol (another node, visible, shares nothing with alice) is found;
    once her node says she is +i she is not, while bob (+i too, but sharing #lobby with
    alice) still is; an invisible user of another node sharing nothing: not found."""
    alice = irc.irc_client()
    alice.login_with_pass("alice")
    assert alice.send("WHO *o*") == [
        ":chatd 352 alice * bob chatd chatd bob G :0 bob",
        ":chatd 352 alice * carol chatd chatd carol H :0 carol",
        ":chatd 315 alice *o* :End of WHO list",
    ]
    presence = irc.chat.fanout.presence
    for name, away, seats in (
        ("bob", "at lunch", (RoomSeat("#lobby", "#lobby", False, False),)),
        ("carol", "", (RoomSeat("#secret", "#secret", True, True),)),
    ):
        presence.set("n2", name, UserState(name, away, seats, invisible=True))
    assert alice.send("WHO *o*") == [
        ":chatd 352 alice * bob chatd chatd bob G :0 bob",
        ":chatd 315 alice *o* :End of WHO list",
    ]
    assert alice.send("WHO c*") == [":chatd 315 alice c* :End of WHO list"]
    # Visible again on its node: found again.
    presence.set("n2", "carol", UserState("carol", "", (), invisible=False))
    assert alice.send("WHO c*")[0] == ":chatd 352 alice * carol chatd chatd carol H :0 carol"


def test_a_part_of_a_user_still_online_elsewhere_is_a_part_not_a_quit(irc):
    """bob /parts #lobby on his node: alice's client gets PART; once bob is online nowhere,
    his departure renders as one QUIT, not one per room shared; after he JOINs again, his
    next departure is a QUIT again."""
    alice = irc.irc_client()
    alice.login_with_pass("alice")
    alice.lines()
    irc.chat.membership_announced("#lobby", "bob", False)
    assert alice.lines() == [":bob!bob@chatd PART #lobby"]
    irc.chat.fanout.presence.forget_node("n2")
    irc.chat.membership_announced("#lobby", "bob", False)
    assert [parse(line).verb for line in alice.lines()] == ["QUIT"]
    # The PART of the same departure from another room shared with alice: shown once.
    alice.send("JOIN #far")
    irc.chat.membership_announced("#far", "bob", False)
    assert alice.lines() == []
    irc.chat.membership_announced("#far", "bob", True)
    irc.chat.membership_announced("#far", "bob", False)
    assert [parse(line).verb for line in alice.lines()] == ["JOIN", "QUIT"]
