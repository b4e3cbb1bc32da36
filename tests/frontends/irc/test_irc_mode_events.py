"""A room's mode changes are core events: every member is told, on every door.

Over StringTransport on the in-memory server: an IRC operator's ``MODE``
(+i, +s, +m, -t, +v, +b, and their undoing) reaches the room's IRC members
(another connection of the operator too) as ``MODE`` from the operator's
``nick!user@host`` and the line door's members as the extension line
``MODE <room> <by> <feature> <on|off> [<user>]``; a line-door operator's
``/private``, ``/secret``, ``/ban`` and ``/unban`` reach IRC members as
``MODE``. The web door is the line door's protocol: its test is in
tests/frontends/web/test_web_socket.py.
"""

import pytest

from chatd.config import Config
from chatd.frontends.irc.message import parse
from chatd.frontends.line.wire import split_line
from tests.frontends.irc.support import IRCHarness


@pytest.fixture
def irc() -> IRCHarness:
    """An in-memory server with guests on and accounts alice, bob, carol and dave."""
    harness = IRCHarness(
        Config(bcrypt_rounds=4, rate_limit=None, room_creation_limit=None, guests=True)
    )
    for name in ("alice", "bob", "carol", "dave"):
        harness.account(name)
    return harness


def in_dev(irc, bytewise=False):
    """alice opens #dev over IRC (its operator) with a second IRC connection; bob joins
    over IRC and carol over the line door. Every read so far is drained."""
    alice = irc.irc_client(port=50001)
    alice.login_with_pass("alice")
    alice.send("JOIN #dev", bytewise=bytewise)
    again = irc.irc_client(port=50004)
    again.login_with_pass("alice")
    bob = irc.irc_client(port=50002)
    bob.login_with_pass("bob")
    bob.send("JOIN #dev")
    carol = irc.logged_in("carol")
    carol.send("/join #dev")
    for client in (alice, again, bob, carol):
        client.lines()
    return alice, again, bob, carol


# What each IRC MODE is told as: IRC's line (from alice) and the line door's.
CHANGES = [
    ("MODE #dev +m", "MODE #dev +m", "MODE #dev alice moderated on"),
    ("MODE #dev +v bob", "MODE #dev +v bob", "MODE #dev alice voice on bob"),
    ("MODE #dev -v bob", "MODE #dev -v bob", "MODE #dev alice voice off bob"),
    ("MODE #dev -m", "MODE #dev -m", "MODE #dev alice moderated off"),
    ("MODE #dev +i", "MODE #dev +i", "MODE #dev alice private on"),
    ("MODE #dev -i", "MODE #dev -i", "MODE #dev alice private off"),
    ("MODE #dev +s", "MODE #dev +s", "MODE #dev alice secret on"),
    ("MODE #dev -p", "MODE #dev -s", "MODE #dev alice secret off"),
    ("MODE #dev -t", "MODE #dev -t", "MODE #dev alice topic-open on"),
    ("MODE #dev +t", "MODE #dev +t", "MODE #dev alice topic-open off"),
    ("MODE #dev +b dave", "MODE #dev +b dave!*@*", "MODE #dev alice ban on dave"),
    ("MODE #dev -b dave!*@*", "MODE #dev -b dave!*@*", "MODE #dev alice ban off dave"),
]


@pytest.mark.parametrize("bytewise", [False, True])
@pytest.mark.parametrize(("command", "irc_line", "line_line"), CHANGES)
def test_an_irc_mode_change_is_told_to_every_member_on_both_doors(
    irc, bytewise, command, irc_line, line_line
):
    """One MODE: the operator's connection, its other connection and bob (IRC) get the
    change from alice!alice@chatd; carol (line door) gets the MODE extension line."""
    alice, again, bob, carol = in_dev(irc)
    told = f":alice!alice@chatd {irc_line}"
    assert alice.send(command, bytewise=bytewise) == [told]
    assert again.lines() == [told]
    assert bob.lines() == [told]
    assert carol.lines() == [line_line]


def test_a_mode_naming_several_letters_tells_each_change(irc):
    """``MODE #dev +mt-s`` is three changes, each told once to everyone, in order; a
    refused one (bob is no operator) is told to nobody."""
    alice, _again, bob, carol = in_dev(irc)
    assert bob.send("MODE #dev +m") == [
        ":chatd 482 bob #dev :only an operator of #dev may do that"
    ]
    assert alice.lines() == [] and carol.lines() == []
    alice.send("MODE #dev +st")
    told = [":alice!alice@chatd MODE #dev +s", ":alice!alice@chatd MODE #dev +t"]
    assert bob.lines() == told
    assert carol.lines() == ["MODE #dev alice secret on", "MODE #dev alice topic-open off"]


def test_banning_a_member_tells_the_ban_then_the_kick(irc):
    """+b on a member: MODE +b, then KICK ... banned, to everyone (bob too, before he is
    out); the line door gets MODE ban then KICK."""
    alice, again, bob, carol = in_dev(irc)
    mode = ":alice!alice@chatd MODE #dev +b bob!*@*"
    kick = ":alice!alice@chatd KICK #dev bob banned"
    assert alice.send("MODE #dev +b bob!*@*") == [mode, kick]
    assert again.lines() == [mode, kick]
    assert bob.lines() == [mode, kick]
    assert carol.lines() == ["MODE #dev alice ban on bob", "KICK #dev bob alice banned"]
    # bob is out: the -b is told to the members only.
    alice.send("MODE #dev -b bob")
    assert bob.lines() == []
    assert carol.lines() == ["MODE #dev alice ban off bob"]


def test_a_line_door_operators_changes_reach_irc_members_as_mode(irc):
    """carol opens #ops on the line door; bob (IRC) joins: her /private, /secret, /ban and
    /unban are MODE lines from carol!carol@chatd to him, and lines to her own session."""
    carol = irc.logged_in("carol")
    carol.send("/join #ops")
    bob = irc.irc_client()
    bob.login_with_pass("bob")
    bob.send("JOIN #ops")
    carol.lines()
    assert carol.send("/private #ops on") == ["MODE #ops carol private on", "OK private #ops"]
    assert carol.send("/secret #ops on") == ["MODE #ops carol secret on", "OK secret #ops"]
    assert carol.send("/ban #ops dave") == ["MODE #ops carol ban on dave", "OK ban #ops"]
    assert carol.send("/unban #ops dave") == ["MODE #ops carol ban off dave", "OK unban #ops"]
    assert carol.send("/private #ops off") == ["MODE #ops carol private off", "OK private #ops"]
    assert bob.lines() == [
        ":carol!carol@chatd MODE #ops +i",
        ":carol!carol@chatd MODE #ops +s",
        ":carol!carol@chatd MODE #ops +b dave!*@*",
        ":carol!carol@chatd MODE #ops -b dave!*@*",
        ":carol!carol@chatd MODE #ops -i",
    ]


def test_a_guests_voice_in_memory_is_told_to_line_members_too(irc):
    """A guest operator voices another guest (kept in memory, no room event): the IRC
    members and a line-door member are told."""
    opener = irc.irc_client()
    opener.send("NICK opener", "USER u 0 * :O", "JOIN #g")
    other = irc.irc_client()
    other.send("NICK other", "USER u 0 * :X", "JOIN #g")
    carol = irc.logged_in("carol")
    carol.send("/join #g")
    opener.lines(), other.lines(), carol.lines()
    assert opener.send("MODE #g +v other") == [":opener!opener@chatd MODE #g +v other"]
    assert other.lines() == [":opener!opener@chatd MODE #g +v other"]
    assert carol.lines() == ["MODE #g opener voice on other"]


def test_the_mode_line_parses_back_with_its_fields():
    """The line door's MODE has five fields; the user field is empty for a room's own
    features (the line ends after on/off)."""
    assert split_line("MODE #dev alice ban on bob") == (
        "MODE", ["#dev", "alice", "ban", "on", "bob"]
    )
    assert split_line("MODE #dev alice private off") == (
        "MODE", ["#dev", "alice", "private", "off", ""]
    )
    assert parse(":alice!alice@chatd MODE #dev +b bob!*@*").params == ("#dev", "+b", "bob!*@*")
