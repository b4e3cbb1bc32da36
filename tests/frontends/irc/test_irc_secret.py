"""Secret rooms over the IRC door: MODE +s (and +p, its older synonym), 324, 005 and 353's @."""

import pytest

from chatd.frontends.irc.message import parse
from tests.frontends.irc.support import IRCHarness
from tests.frontends.irc.test_irc_guests import connect_guest, guest_config


@pytest.fixture
def irc() -> IRCHarness:
    """An in-memory server with guests on and the accounts alice, bob and carol."""
    harness = IRCHarness(guest_config())
    for name in ("alice", "bob", "carol"):
        harness.account(name)
    return harness


def verbs(lines):
    return [parse(line).verb for line in lines]


@pytest.mark.parametrize("bytewise", [False, True])
def test_mode_s_hides_the_room_from_names_who_and_list_of_non_members(irc, bytewise):
    """alice's +s: MODE to the room's members, s in 324 and 005's CHANMODES, 353 with @;
    bob (no member) gets only 366 from NAMES, only 315 from WHO, no 322 from LIST, and
    no #hideout in NAMES without a channel or in WHOIS alice; -s shows it again."""
    alice = irc.irc_client()
    isupport = " ".join(
        line for line in alice.login_with_pass("alice") if " 005 " in line
    )
    assert "CHANMODES=b,,,imst" in isupport
    alice.send("JOIN #hideout")
    carol = irc.irc_client()
    carol.login_with_pass("carol")
    carol.send("JOIN #hideout")
    alice.lines()
    bob = irc.irc_client()
    bob.login_with_pass("bob")
    alice.lines()
    carol.lines()
    assert alice.send("MODE #hideout +s", bytewise=bytewise) == [
        ":alice!alice@chatd MODE #hideout +s"
    ]
    assert carol.lines() == [":alice!alice@chatd MODE #hideout +s"]
    assert bob.lines() == []
    assert alice.send("MODE #hideout", bytewise=bytewise) == [
        ":chatd 324 alice #hideout +st"
    ]
    assert alice.send("NAMES #hideout", bytewise=bytewise) == [
        ":chatd 353 alice @ #hideout :@alice carol",
        ":chatd 366 alice #hideout :End of /NAMES list",
    ]
    assert bob.send("NAMES #hideout", bytewise=bytewise) == [
        ":chatd 366 bob #hideout :End of /NAMES list"
    ]
    assert bob.send("WHO #hideout", bytewise=bytewise) == [
        ":chatd 315 bob #hideout :End of WHO list"
    ]
    assert "#hideout" not in " ".join(bob.send("NAMES"))
    assert "#hideout" not in " ".join(bob.send("LIST"))
    assert "#hideout" not in " ".join(bob.send("WHOIS alice"))
    assert "#hideout" in " ".join(carol.send("LIST"))
    assert "#hideout" in " ".join(carol.send("WHOIS alice"))
    assert alice.send("MODE #hideout -s") == [":alice!alice@chatd MODE #hideout -s"]
    assert bob.send("NAMES #hideout")[0] == ":chatd 353 bob = #hideout :@alice carol"
    assert "#hideout" in " ".join(bob.send("LIST"))


def test_p_means_s_and_a_mode_naming_both_is_one_change(irc):
    """+p alone sets secret (shown as +s, 324 says s); +sp is one change, one MODE line;
    -p lifts it; a member who is no operator gets 482 and nothing changes."""
    alice = irc.irc_client()
    alice.login_with_pass("alice")
    alice.send("JOIN #hideout")
    bob = irc.irc_client()
    bob.login_with_pass("bob")
    bob.send("JOIN #hideout")
    alice.lines()
    assert alice.send("MODE #hideout +p") == [":alice!alice@chatd MODE #hideout +s"]
    assert irc.chat.rooms["#hideout"].secret
    assert alice.send("MODE #hideout -p") == [":alice!alice@chatd MODE #hideout -s"]
    assert not irc.chat.rooms["#hideout"].secret
    assert alice.send("MODE #hideout +sp") == [":alice!alice@chatd MODE #hideout +s"]
    assert alice.send("MODE #hideout") == [":chatd 324 alice #hideout +st"]
    bob.lines()
    assert verbs(bob.send("MODE #hideout -s")) == ["482"]
    assert irc.chat.rooms["#hideout"].secret


def test_irctests_secret_cases_as_guests(irc):
    """irctest's testNames2812Secret and testNamesNoArgumentPrivate2812, as guests: the
    guest that opened #chan sets +s (353 with @); a guest joining later sees @ in its
    join's 353; NAMES without a channel from a guest elsewhere leaves the +sp room out."""
    nick1, _ = connect_guest(irc, "nick1")
    nick1.send("JOIN #chan")
    nick1.send("MODE #chan +s")
    assert nick1.send("NAMES #chan") == [
        ":chatd 353 nick1 @ #chan @nick1",
        ":chatd 366 nick1 #chan :End of /NAMES list",
    ]
    nick2, _ = connect_guest(irc, "nick2")
    joined = nick2.send("JOIN #chan")
    namreplies = [parse(line) for line in joined if parse(line).verb == "353"]
    assert namreplies and all(m.params[1:3] == ("@", "#chan") for m in namreplies)
    nick3, _ = connect_guest(irc, "nick3")
    nick3.send("JOIN #chan2")
    nick4, _ = connect_guest(irc, "nick4")
    nick4.send("JOIN #chan3")
    nick4.send("MODE #chan3 +sp")
    assert nick3.send("NAMES") == [
        ":chatd 353 nick3 = #chan2 @nick3",
        ":chatd 366 nick3 * :End of /NAMES list",
    ]
