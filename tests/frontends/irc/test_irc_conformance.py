"""Fixes found by irctest (the IRC conformance suite), each pinned by a test here."""

import pytest

from chatd.frontends.irc.message import parse
from tests.frontends.irc.support import IRCHarness


@pytest.fixture
def irc() -> IRCHarness:
    """An in-memory server with accounts alice and bob."""
    harness = IRCHarness()
    harness.account("alice")
    harness.account("bob")
    return harness


def test_userhost_in_names(irc):
    """With userhost-in-names, NAMES gives nick!user@host (operators still marked)."""
    alice = irc.irc_client()
    alice.login_with_pass("alice", caps=("userhost-in-names",))
    lines = alice.send("NAMES #lobby")
    assert lines[0] == ":chatd 353 alice = #lobby alice!alice@chatd"


def test_names_of_several_rooms_ends_once(irc):
    """NAMES #a,#b: the 353s of each room, then one 366 naming them as asked (irctest's
    testNamesMultipleChannels2812); a room you cannot see adds no 353."""
    alice = irc.irc_client()
    alice.login_with_pass("alice")
    alice.send("JOIN #dev")
    lines = alice.send("NAMES #lobby,#dev,#nowhere")
    assert lines == [
        ":chatd 353 alice = #lobby alice",
        ":chatd 353 alice = #dev @alice",
        ":chatd 366 alice #lobby,#dev,#nowhere :End of /NAMES list",
    ]
    assert alice.send("NAMES #nowhere") == [":chatd 366 alice #nowhere :End of /NAMES list"]


def test_a_live_direct_message_has_a_server_time(irc):
    """server-time: a DM delivered live carries the time it was sent."""
    alice = irc.irc_client()
    alice.login_with_pass("alice", caps=("server-time",))
    bob = irc.irc_client()
    bob.login_with_pass("bob")
    alice.lines()
    bob.send("PRIVMSG alice :hi")
    message = parse(alice.lines()[-1])
    assert message.verb == "PRIVMSG" and message.tags["time"].endswith("Z")


def test_an_empty_real_name_is_461(irc):
    """USER with an empty real name lacks a parameter: 461, and no welcome yet."""
    client = irc.irc_client()
    lines = client.send("NICK alice", "USER u 0 * :")
    assert [parse(line).verb for line in lines] == ["461"]


def test_whois_of_a_guest_shows_its_real_name():
    """WHOIS of a guest (no account to read): 311 with the USER user and real names,
    no 330, 318."""
    import dataclasses

    from chatd.config import Config

    config = dataclasses.replace(
        Config(bcrypt_rounds=4, rate_limit=None, room_creation_limit=None), guests=True
    )
    irc = IRCHarness(config)
    guest = irc.irc_client()
    guest.send("NICK foo", "USER u * * :the real name")
    lines = guest.send("WHOIS foo")
    assert lines[0] == ":chatd 311 foo foo u chatd * :the real name"
    verbs = [parse(line).verb for line in lines]
    assert "330" not in verbs and verbs[-1] == "318"


@pytest.mark.parametrize("bytewise", [False, True])
def test_replies_come_in_command_order_while_the_database_works(bytewise):
    """JOIN waits on a commit; a PING sent right behind it is answered after the
    JOIN's 366, not before (irctest's getMessages syncs on PING)."""
    from tests.support import SlowDatabase

    database = SlowDatabase()
    irc = IRCHarness(database=database)
    irc.account("alice")
    alice = irc.irc_client()
    alice.login_with_pass("alice")
    database.holding = True
    lines = alice.send("JOIN #den,#other", "PING sync", bytewise=bytewise)
    assert lines == []
    while database.pending:
        irc.commit_held()
    verbs = [parse(line).verb for line in alice.lines()]
    assert verbs.count("366") == 2 and verbs[-1] == "PONG"


def test_names_without_a_room_lists_every_visible_room(irc):
    """NAMES alone: a 353 for each room you are in or that is public with members,
    not others' private rooms, then one 366 for ``*``."""
    alice = irc.irc_client()
    alice.login_with_pass("alice")
    bob = irc.irc_client()
    bob.login_with_pass("bob")
    bob.send("JOIN #public", "JOIN #hidden", "MODE #hidden +i")
    alice.lines()
    lines = alice.send("NAMES")
    assert lines == [
        ":chatd 353 alice = #lobby :alice bob",
        ":chatd 353 alice = #public @bob",
        ":chatd 366 alice * :End of /NAMES list",
    ]


def test_who_shows_the_user_and_real_names_given_in_user(irc):
    """WHO and WHOX give the USER user name (at most 10 characters) and real name of an
    IRC user; a line-door user shows its nick for both."""
    alice = irc.irc_client()
    alice.send("PASS password1", "NICK alice", "USER myusername_long 0 * :My Real Name")
    line = irc.client()
    line.send("/login bob password1")
    alice.lines()
    lines = alice.send("WHO #lobby")
    assert ":chatd 352 alice #lobby myusername chatd chatd alice H :0 My Real Name" in lines
    assert ":chatd 352 alice #lobby bob chatd chatd bob H :0 bob" in lines
    lines = alice.send("WHO alice %tunar,42")
    assert lines[0] == ":chatd 354 alice 42 myusername alice alice :My Real Name"


def test_others_see_quit_with_the_reason_once(irc):
    """A user's last session quits: each IRC member sharing rooms with it sees one QUIT
    with its reason, not a PART per room."""
    alice = irc.irc_client()
    alice.login_with_pass("alice")
    bob = irc.irc_client()
    bob.login_with_pass("bob")
    alice.send("JOIN #den")
    bob.send("JOIN #den")
    alice.lines()
    bob.send("QUIT :off to bed")
    bob.protocol.connectionLost(None)
    assert alice.lines() == [":bob!bob@chatd QUIT :Quit: off to bed"]


def test_a_part_is_still_a_part(irc):
    """PART while staying online is PART."""
    alice = irc.irc_client()
    alice.login_with_pass("alice")
    bob = irc.irc_client()
    bob.login_with_pass("bob")
    alice.lines()
    bob.send("PART #lobby")
    assert alice.lines() == [":bob!bob@chatd PART #lobby"]


def test_time(irc):
    """TIME answers 391 with the server's time."""
    alice = irc.irc_client()
    alice.login_with_pass("alice")
    lines = alice.send("TIME")
    assert lines[0].startswith(":chatd 391 alice chatd :") and "2025" in lines[0]


def test_topic_of_a_room_that_does_not_exist_is_403(irc):
    """TOPIC of no room: 403; of a room you are not in: 442."""
    alice = irc.irc_client()
    alice.login_with_pass("alice")
    assert parse(alice.send("TOPIC #nowhere")[0]).verb == "403"
    bob = irc.irc_client()
    bob.login_with_pass("bob")
    bob.send("JOIN #den")
    alice.lines()
    assert parse(alice.send("TOPIC #den")[0]).verb == "442"


def test_targmax_is_told_and_kept(irc):
    """005 says TARGMAX; PRIVMSG to 4 targets goes out, to 5 is refused with 407."""
    alice = irc.irc_client()
    isupport = " ".join(line for line in alice.login_with_pass("alice") if " 005 " in line)
    assert "TARGMAX=JOIN:,PART:,NAMES:,KICK:,PRIVMSG:4,NOTICE:4,TAGMSG:4" in isupport
    bob = irc.irc_client()
    bob.login_with_pass("bob")
    bob.lines()
    alice.send("PRIVMSG bob,bob,bob,bob :four")
    assert len([line for line in bob.lines() if "four" in line]) == 4
    lines = alice.send("PRIVMSG bob,bob,bob,bob,bob :five")
    assert [parse(line).verb for line in lines] == ["407"]
    assert not bob.lines()


def test_a_line_that_is_not_utf8_is_refused_with_its_label(irc):
    """labeled-response: the INVALID_UTF8 FAIL for a bad line carries the line's label."""
    alice = irc.irc_client()
    alice.login_with_pass("alice", caps=("labeled-response", "batch"))
    lines = alice.send(b"@label=xyz PRIVMSG #lobby :hi\xaa")
    assert lines == [
        "@label=xyz :chatd FAIL * INVALID_UTF8 :lines must be UTF-8; this one was dropped"
    ]


def test_client_only_tags_are_not_denied_in_isupport(irc):
    """005 has no CLIENTTAGDENY: every well-formed client-only tag is passed on."""
    alice = irc.irc_client()
    assert not any("CLIENTTAGDENY" in line for line in alice.login_with_pass("alice"))


def test_sasl_that_never_ends_is_refused(irc):
    """AUTHENTICATE chunks of 400 bytes past any PLAIN login's length: 904, and the
    exchange ends (the next chunk is not taken as part of it)."""
    client = irc.irc_client()
    client.send("CAP LS 302", "CAP REQ :sasl", "AUTHENTICATE PLAIN")
    lines = []
    for _ in range(11):
        lines += client.send("AUTHENTICATE " + "A" * 400)
    assert [parse(line).verb for line in lines] == ["904"]


def test_who_with_a_mask_lists_the_matching_visible_users(irc):
    """WHO with * or ?: the online users whose nick matches, ignoring case; an
    invisible (+i) user only when you share a room; 315 names the mask as sent."""
    alice = irc.irc_client()
    alice.login_with_pass("alice")
    bob = irc.irc_client()
    bob.login_with_pass("bob")
    alice.lines()
    lines = alice.send("WHO B*")
    assert [parse(line).params[5] for line in lines[:-1]] == ["bob"]
    assert lines[-1] == ":chatd 315 alice B* :End of WHO list"
    assert len(alice.send("WHO *")) == 3
    bob.send("MODE bob +i", "PART #lobby")
    alice.lines()
    assert alice.send("WHO b?b") == [":chatd 315 alice b?b :End of WHO list"]
    assert len(alice.send("WHO bob")) == 2  # a plain nick is not a mask
