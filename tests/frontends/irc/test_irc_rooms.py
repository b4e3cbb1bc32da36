"""The IRC door's room features over StringTransport.

TOPIC, KICK, INVITE, MODE (+o, +b, +i, +t), AWAY and away-notify, WHOIS, WHOX.
"""

import pytest

from chatd.frontends.irc.message import parse
from tests.frontends.irc.support import IRCHarness


@pytest.fixture
def irc() -> IRCHarness:
    """An in-memory server with accounts alice, bob and carol."""
    harness = IRCHarness()
    for name in ("alice", "bob", "carol"):
        harness.account(name)
    return harness


def verbs(lines):
    """The verbs and numerics of ``lines``, in order."""
    return [parse(line).verb for line in lines]


def in_dev(irc, caps=()):
    """alice opens #dev (so she is its operator), then bob joins it; both over IRC."""
    alice = irc.irc_client(port=50001)
    alice.login_with_pass("alice", caps=caps)
    alice.send("JOIN #dev")
    bob = irc.irc_client(port=50002)
    bob.login_with_pass("bob", caps=caps)
    bob.send("JOIN #dev")
    alice.lines()
    return alice, bob


@pytest.mark.parametrize("bytewise", [False, True])
def test_topic_set_shown_to_members_and_on_join(irc, bytewise):
    """TOPIC: 331 without one; a change reaches IRC and line members; 332/333 on query and join."""
    alice, bob = in_dev(irc)
    line = irc.logged_in("carol")
    line.send("/join #dev")
    alice.lines(), bob.lines()
    assert alice.send("TOPIC #dev", bytewise=bytewise) == [
        ":chatd 331 alice #dev :No topic is set"
    ]
    assert alice.send("TOPIC #dev :ship it friday", bytewise=bytewise) == [
        ":alice!alice@chatd TOPIC #dev :ship it friday"
    ]
    assert bob.lines() == [":alice!alice@chatd TOPIC #dev :ship it friday"]
    assert line.lines() == ["TOPIC #dev alice ship it friday"]
    shown = alice.send("TOPIC #dev", bytewise=bytewise)
    assert shown[0] == ":chatd 332 alice #dev :ship it friday"
    assert parse(shown[1]).verb == "333" and parse(shown[1]).params[1:3] == ("#dev", "alice")
    assert int(parse(shown[1]).params[3]) == int(irc.clock.seconds())
    # A later joiner gets the topic in its burst, before NAMES, and no TOPIC change.
    line.send("/part #dev")
    carol = irc.irc_client(port=50003)
    carol.login_with_pass("carol")
    burst = carol.send("JOIN #dev", bytewise=bytewise)
    assert verbs(burst) == ["JOIN", "332", "333", "353", "366"]
    assert ":chatd 332 carol #dev :ship it friday" in burst
    assert "TOPIC" not in verbs(burst)


def test_topic_refusals(irc):
    """A non-operator of a room with operators gets 482; a room that is not there 403."""
    alice, bob = in_dev(irc)
    assert bob.send("TOPIC #dev :mine now") == [
        ":chatd 482 bob #dev :only an operator of #dev may do that"
    ]
    assert verbs(bob.send("TOPIC #elsewhere")) == ["403"]
    assert verbs(bob.send("TOPIC")) == ["461"]
    assert alice.lines() == []


@pytest.mark.parametrize("bytewise", [False, True])
def test_kick_both_ways(irc, bytewise):
    """KICK from IRC reaches every member; a /kick from the line door renders as KICK."""
    alice, bob = in_dev(irc)
    bob.lines()
    assert bob.send("KICK #dev alice :no", bytewise=bytewise) == [
        ":chatd 482 bob #dev :only an operator of #dev may do that"
    ]
    assert alice.send("KICK #dev bob :take a break", bytewise=bytewise) == [
        ":alice!alice@chatd KICK #dev bob :take a break"
    ]
    assert bob.lines() == [":alice!alice@chatd KICK #dev bob :take a break"]
    assert verbs(alice.send("KICK #dev bob")) == ["441"]
    # The line door's operator kicks an IRC user.
    bob.send("JOIN #dev")
    alice.lines()
    line_alice = irc.logged_in("alice")
    line_alice.send("/kick #dev bob spam")
    assert bob.lines()[-1] == ":alice!alice@chatd KICK #dev bob spam"
    assert verbs(bob.send("PRIVMSG #dev :still here?")) == ["404"]


def test_invite_into_a_private_room(irc):
    """MODE +i makes #dev private: 473 to the uninvited; INVITE (341, INVITE to them) lets in."""
    alice = irc.irc_client(port=50001)
    alice.login_with_pass("alice")
    alice.send("JOIN #dev")
    assert alice.send("MODE #dev +i") == [":alice!alice@chatd MODE #dev +i"]
    assert alice.send("MODE #dev") == [":chatd 324 alice #dev +it"]
    bob = irc.irc_client(port=50002)
    bob.login_with_pass("bob")
    alice.lines()
    assert verbs(bob.send("JOIN #dev")) == ["473"]
    assert alice.send("INVITE bob #dev") == [":chatd 341 alice bob #dev"]
    assert bob.lines() == [":alice!alice@chatd INVITE bob #dev"]
    assert bob.send("JOIN #dev")[0] == ":bob!bob@chatd JOIN #dev"
    assert alice.lines() == [":bob!bob@chatd JOIN #dev"]
    assert verbs(alice.send("INVITE bob #dev")) == ["443"]
    assert verbs(alice.send("INVITE nobody #dev")) == ["401"]
    assert verbs(bob.send("INVITE carol #nowhere")) == ["442"]
    assert verbs(bob.send("INVITE carol #dev")) == ["482"]  # private: operators only
    assert verbs(alice.send("MODE #dev -i")) == ["MODE"]


@pytest.mark.parametrize("bytewise", [False, True])
def test_mode_op_and_deop_render_for_all_and_in_names(irc, bytewise):
    """MODE +o/-o: the change as MODE to every member; @ in NAMES and WHO; 482 for others."""
    alice, bob = in_dev(irc, caps=("multi-prefix",))
    bob.lines()
    assert verbs(bob.send("MODE #dev +o bob", bytewise=bytewise)) == ["482"]
    assert alice.send("MODE #dev +o bob", bytewise=bytewise) == [":chatd MODE #dev +o bob"]
    assert bob.lines() == [":chatd MODE #dev +o bob"]
    assert ":chatd 353 alice = #dev :@alice @bob" in alice.send("NAMES #dev")
    assert ":chatd 352 alice #dev u chatd chatd bob H@ :0 Real Name" in alice.send("WHO #dev")
    assert bob.send("MODE #dev -o alice", bytewise=bytewise) == [":chatd MODE #dev -o alice"]
    assert alice.lines() == [":chatd MODE #dev -o alice"]
    assert ":chatd 353 alice = #dev :alice @bob" in alice.send("NAMES #dev")
    assert verbs(bob.send("MODE #dev +o")) == ["461"]
    assert verbs(bob.send("MODE #dev +o nobody")) == ["441"]


def test_mode_ban_by_nick_mask_kicks_lists_and_lifts(irc):
    """+b nick!*@* bans the account (kicking it), b lists 367/368, -b lifts; other masks refused."""
    alice, bob = in_dev(irc)
    bob.lines()
    assert alice.send("MODE #dev +b bob!*@*") == [
        ":alice!alice@chatd MODE #dev +b bob!*@*",
        ":alice!alice@chatd KICK #dev bob banned",
    ]
    assert bob.lines() == [
        ":alice!alice@chatd MODE #dev +b bob!*@*",
        ":alice!alice@chatd KICK #dev bob banned",
    ]
    listed = alice.send("MODE #dev b")
    assert verbs(listed) == ["367", "368"]
    assert parse(listed[0]).params[1:4] == ("#dev", "bob!*@*", "alice")
    assert verbs(bob.send("JOIN #dev")) == ["474"]
    assert verbs(alice.send("MODE #dev +b *!*@evil.example")) == ["NOTICE"]
    assert alice.send("MODE #dev -b bob") == [":alice!alice@chatd MODE #dev -b bob!*@*"]
    assert verbs(alice.send("MODE #dev +b")) == ["368"]
    assert bob.send("JOIN #dev")[0] == ":bob!bob@chatd JOIN #dev"


def test_mode_t_is_a_switch_of_operators(irc):
    """+t is on while a room has operators, unless an operator set -t (kept in the
    database: the room loaded again still has it); a room without operators has no lock;
    only operators switch it (482)."""
    alice = irc.irc_client()
    alice.login_with_pass("alice")
    assert alice.send("MODE #lobby") == [":chatd 324 alice #lobby +"]
    assert verbs(alice.send("MODE #lobby -t")) == ["482"]
    alice.send("JOIN #dev")
    assert alice.send("MODE #dev") == [":chatd 324 alice #dev +t"]
    assert alice.send("MODE #dev -t") == [":alice!alice@chatd MODE #dev -t"]
    assert alice.send("MODE #dev") == [":chatd 324 alice #dev +"]
    bob = irc.irc_client()
    bob.login_with_pass("bob")
    bob.send("JOIN #dev")
    assert bob.send("TOPIC #dev :bob's topic")[-1].endswith("TOPIC #dev :bob's topic")
    assert verbs(bob.send("MODE #dev +t")) == ["482"]
    bob.send("PART #dev")
    alice.send("QUIT")
    bob.send("QUIT")
    assert "#dev" not in irc.chat.rooms
    alice = irc.irc_client()
    alice.login_with_pass("alice")  # back in #dev, loaded from the database
    assert alice.send("MODE #dev") == [":chatd 324 alice #dev +"]
    alice.send("MODE #dev +t")
    assert alice.send("MODE #dev") == [":chatd 324 alice #dev +t"]
    assert verbs(alice.send("MODE #dev +x")) == ["472"]
    assert verbs(alice.send("MODE #nowhere")) == ["442"]


@pytest.mark.parametrize("bytewise", [False, True])
def test_away_numerics_away_notify_and_whois(irc, bytewise):
    """AWAY: 306/305; 301 to a PRIVMSG's sender; AWAY to away-notify peers; G in WHO; WHOIS."""
    alice = irc.irc_client(port=50001)
    alice.login_with_pass("alice", caps=("away-notify",))
    bob = irc.irc_client(port=50002)
    bob.login_with_pass("bob")
    alice.lines()
    assert bob.send("AWAY :at lunch", bytewise=bytewise) == [
        ":chatd 306 bob :You have been marked as being away"
    ]
    assert alice.lines() == [":bob!bob@chatd AWAY :at lunch"]
    assert ":chatd 301 alice bob :at lunch" in alice.send("PRIVMSG bob :hi", bytewise=bytewise)
    assert ":chatd 352 alice #lobby u chatd chatd bob G :0 Real Name" in alice.send("WHO #lobby")
    whois = alice.send("WHOIS bob", bytewise=bytewise)
    assert verbs(whois) == ["311", "319", "312", "330", "301", "318"]
    assert whois[1] == ":chatd 319 alice bob #lobby"
    assert whois[4] == ":chatd 301 alice bob :at lunch"
    assert bob.lines() == [":alice!alice@chatd PRIVMSG bob hi"]
    assert bob.send("AWAY") == [":chatd 305 bob :You are no longer marked as being away"]
    assert alice.lines() == [":bob!bob@chatd AWAY"]
    assert verbs(alice.send("WHOIS bob")) == ["311", "319", "312", "330", "318"]


def test_away_set_on_the_line_door_reaches_away_notify(irc):
    """An /away from a line session is an AWAY to IRC clients in a shared room."""
    alice = irc.irc_client()
    alice.login_with_pass("alice", caps=("away-notify",))
    line = irc.logged_in("bob")
    alice.lines()
    line.send("/away gone fishing")
    assert alice.lines() == [":bob!bob@chatd AWAY :gone fishing"]


def test_whois_offline_and_unknown(irc):
    """WHOIS of an offline account or a name nobody has: 401 then 318."""
    alice = irc.irc_client()
    alice.login_with_pass("alice")
    assert verbs(alice.send("WHOIS carol")) == ["401", "318"]
    assert verbs(alice.send("WHOIS nobody")) == ["401", "318"]
    assert verbs(alice.send("WHOIS bad*name")) == ["401", "318"]


@pytest.mark.parametrize("bytewise", [False, True])
def test_whox_fields_in_their_order_with_the_token(irc, bytewise):
    """WHO #room %tcuhnfar,42: a 354 per member with the fields in WHOX order; 315."""
    alice, _bob = in_dev(irc)
    lines = alice.send("WHO #dev %tcuhnfar,42", bytewise=bytewise)
    assert lines == [
        ":chatd 354 alice 42 #dev u chatd alice H@ alice :Real Name",
        ":chatd 354 alice 42 #dev u chatd bob H bob :Real Name",
        ":chatd 315 alice #dev :End of WHO list",
    ]
    assert alice.send("WHO bob %na") == [
        ":chatd 354 alice bob bob",
        ":chatd 315 alice bob :End of WHO list",
    ]


def names_in(lines, room):
    """The names the 353 lines for ``room`` list, in order (prefixes kept)."""
    return [
        name for line in lines
        if (message := parse(line)).verb == "353" and message.params[2] == room
        for name in message.params[3].split()
    ]


@pytest.mark.parametrize("bytewise", [False, True])
def test_names_leaves_out_invisible_users_for_those_outside_the_room(irc, bytewise):
    """bob (in #dev) sets user mode +i: carol, not in #dev, gets NAMES #dev (and NAMES
    without a room) without him, RFC 2812 3.2.5; alice, a member, still sees him, as
    does bob himself and carol in #lobby, which she shares with him; after -i carol
    sees him again."""
    alice, bob = in_dev(irc)
    carol = irc.irc_client(port=50003)
    carol.login_with_pass("carol")
    assert names_in(carol.send("NAMES #dev", bytewise=bytewise), "#dev") == ["@alice", "bob"]
    bob.send("MODE bob +i")
    assert names_in(carol.send("NAMES #dev", bytewise=bytewise), "#dev") == ["@alice"]
    everything = carol.send("NAMES", bytewise=bytewise)
    assert names_in(everything, "#dev") == ["@alice"]
    assert names_in(everything, "#lobby") == ["alice", "bob", "carol"]
    assert names_in(alice.send("NAMES #dev"), "#dev") == ["@alice", "bob"]
    assert names_in(bob.send("NAMES #dev"), "#dev") == ["@alice", "bob"]
    # carol's own +i hides nobody from her, and her from nobody in her rooms.
    carol.send("MODE carol +i")
    assert names_in(carol.send("NAMES #lobby"), "#lobby") == ["alice", "bob", "carol"]
    bob.send("MODE bob -i")
    assert names_in(carol.send("NAMES #dev", bytewise=bytewise), "#dev") == ["@alice", "bob"]
