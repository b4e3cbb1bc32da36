"""Voice (+v) and moderated rooms (+m) over the IRC door, kept by the core's rooms."""

import pytest

from chatd.config import Config
from chatd.frontends.irc.message import parse
from tests.frontends.irc.support import IRCHarness


@pytest.fixture
def irc() -> IRCHarness:
    """An in-memory server with guests on and the accounts alice, bob and carol."""
    harness = IRCHarness(
        Config(bcrypt_rounds=4, rate_limit=None, room_creation_limit=None, guests=True)
    )
    for name in ("alice", "bob", "carol"):
        harness.account(name)
    return harness


def verbs(lines):
    return [parse(line).verb for line in lines]


def names(lines):
    return [
        name for line in lines if (message := parse(line)).verb == "353"
        for name in message.params[-1].split()
    ]


def test_prefix_and_chanmodes_say_voice_and_moderated(irc):
    """005: PREFIX=(ov)@+ (o before v, @ and +) and m among the room modes."""
    alice = irc.irc_client()
    isupport = " ".join(line for line in alice.login_with_pass("alice") if " 005 " in line)
    assert "PREFIX=(ov)@+" in isupport and "CHANMODES=b,,,imst" in isupport


def test_voice_is_shown_in_names_and_who_and_kept_with_the_membership(irc):
    """+v by an operator: MODE to the room, + in NAMES and WHO (@+ with multi-prefix);
    kept in the database (back after a new login); -v takes it; not by a non-operator."""
    alice = irc.irc_client()
    alice.login_with_pass("alice", caps=("multi-prefix",))
    alice.send("JOIN #dev")
    bob = irc.irc_client()
    bob.login_with_pass("bob")
    bob.send("JOIN #dev")
    alice.lines()
    assert alice.send("MODE #dev +v bob") == [":alice!alice@chatd MODE #dev +v bob"]
    assert bob.lines() == [":alice!alice@chatd MODE #dev +v bob"]
    assert names(bob.send("NAMES #dev")) == ["@alice", "+bob"]
    who = [parse(line) for line in bob.send("WHO #dev") if " 352 " in line]
    assert [m.params[6] for m in who] == ["H@", "H+"]
    alice.send("MODE #dev +v alice")
    assert names(alice.send("NAMES #dev")) == ["@+alice", "+bob"]
    assert names(bob.send("NAMES #dev")) == ["@alice", "+bob"]  # no multi-prefix: the higher
    assert verbs(bob.send("MODE #dev -v alice")) == ["482"]
    bob.send("QUIT")
    alice.send("QUIT")
    assert "#dev" not in irc.chat.rooms
    bob = irc.irc_client()
    assert "+bob" in names(bob.login_with_pass("bob"))
    alice = irc.irc_client()
    alice.login_with_pass("alice")
    alice.send("MODE #dev -v bob")
    assert names(alice.send("NAMES #dev")) == ["@alice", "bob"]


def test_a_moderated_room_lets_only_operators_and_voiced_members_speak(irc):
    """+m: others get 404 (and the line door ERR forbidden); voice lets them speak;
    MODE #room shows m; parting takes voice; -m opens it again."""
    alice = irc.irc_client()
    alice.login_with_pass("alice")
    alice.send("JOIN #dev")
    bob = irc.irc_client()
    bob.login_with_pass("bob")
    bob.send("JOIN #dev")
    line = irc.client()
    line.login("carol")
    line.send("/join #dev")
    alice.lines()
    assert alice.send("MODE #dev +m") == [":alice!alice@chatd MODE #dev +m"]
    assert alice.send("MODE #dev") == [":chatd 324 alice #dev +mt"]
    bob.lines()
    assert verbs(bob.send("PRIVMSG #dev :may I?")) == ["404"]
    assert line.send("/say #dev me?")[-1].startswith("ERR forbidden")
    alice.send("MODE #dev +v bob")
    bob.lines()
    assert bob.send("PRIVMSG #dev :thanks") == []
    assert ("#dev", "thanks") in [parse(text).params for text in alice.lines()]
    alice.send("PRIVMSG #dev :operators speak")
    bob.send("PART #dev", "JOIN #dev")
    bob.lines()
    assert verbs(bob.send("PRIVMSG #dev :again?")) == ["404"]
    alice.send("MODE #dev -m")
    assert bob.send("PRIVMSG #dev :free") == [":alice!alice@chatd MODE #dev -m"]


def test_guests_voice_lives_in_memory_and_a_guest_may_not_moderate(irc):
    """A guest operator voices a guest (in memory) and cannot set +m (482)."""
    opener = irc.irc_client()
    opener.send("NICK opener", "USER u 0 * :O")
    opener.send("JOIN #g")
    other = irc.irc_client()
    other.send("NICK other", "USER u 0 * :X")
    other.send("JOIN #g")
    opener.lines()
    assert opener.send("MODE #g +v other") == [":opener!opener@chatd MODE #g +v other"]
    assert irc.chat.rooms["#g"].voiced == {"other": "other"}
    assert verbs(opener.send("MODE #g +m")) == ["482"]
    other.lines()
    assert verbs(other.send("TOPIC #g :voice is not enough")) == ["482"]
    other.send("QUIT")
    assert irc.chat.rooms["#g"].voiced == {}
