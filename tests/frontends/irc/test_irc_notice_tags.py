"""NOTICE as its own kind, PART reasons, TAGMSG and client-only tags, and a DM to
oneself over the IRC door (StringTransport, whole lines and byte by byte)."""

import pytest

from chatd.frontends.irc.message import parse
from tests.frontends.irc.support import IRCHarness

TAGS = ("message-tags", "server-time", "echo-message")
LABELED = ("echo-message", "batch", "labeled-response", "message-tags")


@pytest.fixture
def irc() -> IRCHarness:
    """An in-memory server with accounts alice, bob and carol."""
    harness = IRCHarness()
    for name in ("alice", "bob", "carol"):
        harness.account(name)
    harness.tracked = []
    return harness


def settle(irc) -> None:
    """Read (and forget) what every client made so far was sent: its login's lines."""
    for client in irc.tracked:
        client.lines()


def logged_in(irc, name, caps=()):
    """An IRC client logged in with PASS and ``caps``; every client's lines read."""
    client = irc.irc_client()
    client.login_with_pass(name, caps=caps)
    irc.tracked.append(client)
    settle(irc)
    return client


def line_in(irc, name):
    """A line-door client logged in; every client's lines read."""
    client = irc.logged_in(name)
    irc.tracked.append(client)
    settle(irc)
    return client


def messages(lines, verb=None):
    """The lines parsed, only those of ``verb`` if given."""
    parsed = [parse(line) for line in lines]
    return [m for m in parsed if verb is None or m.verb == verb]


# --- NOTICE -------------------------------------------------------------------------


@pytest.mark.parametrize("bytewise", [False, True])
def test_a_notice_to_a_room_reaches_irc_as_notice_and_the_line_door_as_msg(irc, bytewise):
    """NOTICE #room: IRC members get NOTICE (not PRIVMSG); a line-door member gets its
    ordinary MSG line (the line protocol's forms are fixed); the sender, no reply."""
    alice = logged_in(irc, "alice")
    bob = logged_in(irc, "bob")
    line = line_in(irc, "carol")
    assert alice.send("NOTICE #lobby :the build is green", bytewise=bytewise) == []
    assert bob.lines() == [":alice!alice@chatd NOTICE #lobby :the build is green"]
    assert line.lines() == ["MSG #lobby alice the build is green"]


def test_a_notice_is_echoed_as_notice(irc):
    """echo-message: the sender's echo of a NOTICE is a NOTICE, with the same msgid as
    the other member's copy; a CTCP ACTION in a NOTICE stays a notice's text."""
    alice = logged_in(irc, "alice", TAGS)
    bob = logged_in(irc, "bob", TAGS)
    [echo] = messages(alice.send("NOTICE #lobby :hello everyone"))
    [heard] = messages(bob.lines())
    assert echo.verb == heard.verb == "NOTICE"
    assert echo.params == heard.params == ("#lobby", "hello everyone")
    assert echo.tags["msgid"] == heard.tags["msgid"] and "time" in echo.tags
    [action] = messages(alice.send("NOTICE #lobby :\x01ACTION waves\x01"))
    assert action.verb == "NOTICE" and action.params[1] == "\x01ACTION waves\x01"


def test_a_notice_is_replayed_as_notice_on_join_and_by_chathistory(irc):
    """A room's notice is kept as one: the history on JOIN and CHATHISTORY give NOTICE,
    the line door's /history its HISTORY line."""
    caps = ("draft/chathistory", "batch", "server-time", "message-tags")
    alice = logged_in(irc, "alice")
    alice.send("JOIN #den", "PRIVMSG #den :said", "NOTICE #den :noticed")
    bob = logged_in(irc, "bob", caps)
    joined = messages(bob.send("JOIN #den"))
    replay = [(m.verb, m.params[1]) for m in joined if m.verb in ("PRIVMSG", "NOTICE")]
    assert replay == [("PRIVMSG", "said"), ("NOTICE", "noticed")]
    paged = messages(bob.send("CHATHISTORY LATEST #den * 10"))
    assert [(m.verb, m.params[1]) for m in paged if "batch" in m.tags and m.verb != "BATCH"] == [
        ("PRIVMSG", "said"), ("NOTICE", "noticed"),
    ]
    line = line_in(irc, "carol")
    line.send("/join #den")
    assert [text.split(" ", 3)[0] for text in line.send("/history #den")][:2] == [
        "HISTORY", "HISTORY",
    ]


def test_a_notice_to_a_user_reaches_irc_as_notice_and_the_line_door_as_dm(irc):
    """NOTICE nick: the IRC user gets NOTICE; a line-door user its DM line."""
    alice = logged_in(irc, "alice")
    bob = logged_in(irc, "bob")
    assert alice.send("NOTICE bob :psst") == []
    assert bob.lines() == [":alice!alice@chatd NOTICE bob psst"]
    line = line_in(irc, "carol")
    alice.send("NOTICE carol :psst too")
    assert line.lines() == ["DM alice carol psst too"]


@pytest.mark.parametrize("bytewise", [False, True])
def test_a_notice_kept_for_someone_offline_arrives_as_notice(irc, bytewise):
    """NOTICE and PRIVMSG to carol, offline: both are stored; at her IRC login the notice
    comes as NOTICE and the message as PRIVMSG, in order, each with the time it was sent;
    on the line door (its fixed forms) a kept notice is its STORED line, as any."""
    alice = logged_in(irc, "alice")
    assert alice.send("NOTICE carol :the build is red", bytewise=bytewise) == []
    alice.send("PRIVMSG carol :call me", bytewise=bytewise)
    carol = irc.irc_client()
    lines = carol.login_with_pass("carol", caps=("server-time",))
    kept = [m for m in messages(lines) if m.verb in ("NOTICE", "PRIVMSG") and m.source]
    kept = [m for m in kept if m.source.startswith("alice!")]
    assert [(m.verb, m.params) for m in kept] == [
        ("NOTICE", ("carol", "the build is red")), ("PRIVMSG", ("carol", "call me")),
    ]
    assert all("time" in m.tags for m in kept)
    alice.send("NOTICE bob :and again")
    irc.tracked.remove(alice)
    for client in irc.tracked:
        client.lines()
    # bob logs in on the line door: the notice kept for him is a STORED line.
    bob_line = irc.client()
    stored = [line for line in bob_line.send("/login bob password1") if line.startswith("STORED")]
    assert len(stored) == 1 and stored[0].endswith(" alice and again")


def test_a_notice_where_one_cannot_send_gets_no_reply(irc):
    """NOTICE to a room one is not in, or to nobody: no reply at all (RFC 2812)."""
    alice = logged_in(irc, "alice")
    assert alice.send("NOTICE #nowhere :hello", "NOTICE nobody-here :hi") == []


# --- PART reasons -------------------------------------------------------------------


@pytest.mark.parametrize("bytewise", [False, True])
def test_a_part_reason_reaches_irc_members_and_the_line_door_sees_its_part(irc, bytewise):
    """PART #room :reason: the parting client and the other IRC members get the reason;
    a line-door member its PART line (which has no reason field)."""
    alice = logged_in(irc, "alice")
    bob = logged_in(irc, "bob")
    line = line_in(irc, "carol")
    assert alice.send("PART #lobby :bye everyone", bytewise=bytewise) == [
        ":alice!alice@chatd PART #lobby :bye everyone"
    ]
    assert bob.lines() == [":alice!alice@chatd PART #lobby :bye everyone"]
    assert line.lines() == ["PART #lobby alice"]


def test_a_part_without_reason_and_a_long_reason(irc):
    """No reason: PART #room alone; a reason past 300 characters is cut to 300."""
    alice = logged_in(irc, "alice")
    bob = logged_in(irc, "bob")
    alice.send("PART #lobby")
    assert bob.lines() == [":alice!alice@chatd PART #lobby"]
    alice.send("JOIN #lobby")
    bob.lines()
    alice.send("PART #lobby :" + "r" * 301)
    assert bob.lines() == [":alice!alice@chatd PART #lobby " + "r" * 300]


def test_a_line_door_part_with_a_reason_is_still_bad_arguments(irc):
    """The contract's /part takes a room and nothing more: a reason is refused there."""
    line = line_in(irc, "carol")
    assert line.send("/part #lobby see you")[-1].startswith("ERR bad-arguments")


# --- client-only tags and TAGMSG ------------------------------------------------------


@pytest.mark.parametrize("bytewise", [False, True])
def test_client_tags_on_a_privmsg_go_to_message_tags_clients_only(irc, bytewise):
    """@+tag PRIVMSG: passed to clients with message-tags (with the echo), not to the
    others; tags without '+' are never passed on."""
    alice = logged_in(irc, "alice", TAGS)
    bob = logged_in(irc, "bob", ("message-tags",))
    carol = logged_in(irc, "carol")
    [echo] = messages(alice.send("@+baz=bat;fizz=buzz PRIVMSG #lobby hi", bytewise=bytewise))
    [heard] = messages(bob.lines())
    assert echo.tags["+baz"] == heard.tags["+baz"] == "bat"
    assert "fizz" not in echo.tags and "fizz" not in heard.tags
    assert carol.lines() == [":alice!alice@chatd PRIVMSG #lobby hi"]


def test_client_tags_from_a_client_without_message_tags_are_dropped(irc):
    """A client that did not ask for message-tags has no tags to send: none passed on."""
    alice = logged_in(irc, "alice")
    bob = logged_in(irc, "bob", ("message-tags",))
    alice.send("@+baz=bat PRIVMSG #lobby hi")
    [heard] = messages(bob.lines())
    assert "+baz" not in heard.tags


def test_client_tags_on_a_direct_message_are_escaped_and_passed_on(irc):
    """@+tag PRIVMSG nick: the recipient and the echo carry the tag, escaped again."""
    alice = logged_in(irc, "alice", LABELED)
    bob = logged_in(irc, "bob", ("message-tags",))
    [echo] = messages(alice.send(r"@label=x;+draft/reply=a\:b\sc PRIVMSG bob :hi there"))
    [heard] = messages(bob.lines())
    assert echo.tags["label"] == "x" and "label" not in heard.tags
    assert echo.tags["+draft/reply"] == heard.tags["+draft/reply"] == "a;b c"
    assert echo.tags["msgid"] == heard.tags["msgid"]


@pytest.mark.parametrize("bytewise", [False, True])
def test_tagmsg_to_a_room_reaches_message_tags_clients_only(irc, bytewise):
    """TAGMSG #room: TAGMSG with the client-only tags, msgid and time to members with
    message-tags (the echo too); nothing to the others, nor to the line door."""
    alice = logged_in(irc, "alice", TAGS)
    bob = logged_in(irc, "bob", ("message-tags",))
    carol = logged_in(irc, "carol", ("server-time",))
    line = line_in(irc, "carol")
    [echo] = messages(alice.send(r"@+buzz=fizz\:buzz;cat=dog;+steel=wootz TAGMSG #lobby",
                                 bytewise=bytewise))
    [heard] = messages(bob.lines())
    for message in (echo, heard):
        assert message.verb == "TAGMSG" and message.params == ("#lobby",)
        assert message.tags["+buzz"] == "fizz;buzz" and message.tags["+steel"] == "wootz"
        assert "cat" not in message.tags
    assert echo.tags["msgid"] == heard.tags["msgid"]
    assert carol.lines() == [] and line.lines() == []


def test_tagmsg_without_echo_message_is_not_echoed_and_is_not_stored(irc):
    """Without echo-message the sender sees nothing; TAGMSG leaves no history."""
    alice = logged_in(irc, "alice", ("message-tags",))
    bob = logged_in(irc, "bob", ("message-tags", "draft/chathistory", "batch", "server-time"))
    assert alice.send("@+typing=active TAGMSG #lobby") == []
    assert [m.verb for m in messages(bob.lines())] == ["TAGMSG"]
    paged = messages(bob.send("CHATHISTORY LATEST #lobby * 10"))
    assert [m.verb for m in paged] == ["BATCH", "BATCH"]


def test_tagmsg_to_a_user_and_its_refusals(irc):
    """TAGMSG nick: to the user online; offline 401; a room one is not in 404; from a
    client without message-tags: ignored."""
    alice = logged_in(irc, "alice", ("message-tags",))
    bob = logged_in(irc, "bob", ("message-tags",))
    assert alice.send("@+typing=active TAGMSG bob") == []
    [heard] = messages(bob.lines())
    assert (heard.verb, heard.params, heard.tags["+typing"]) == ("TAGMSG", ("bob",), "active")
    assert [m.verb for m in messages(alice.send("@+typing=active TAGMSG carol"))] == ["401"]
    assert [m.verb for m in messages(alice.send("@+typing=active TAGMSG #nowhere"))] == ["404"]
    plain = logged_in(irc, "carol")
    assert plain.send("@+typing=active TAGMSG bob") == []
    assert bob.lines() == []


def test_a_labeled_tagmsg_is_answered_by_its_echo(irc):
    """labeled-response: a TAGMSG's echo is its labeled reply; the recipient's copy
    carries no label."""
    alice = logged_in(irc, "alice", LABELED)
    bob = logged_in(irc, "bob", LABELED)
    [echo] = messages(alice.send("@label=12345;+draft/react=l😃l TAGMSG #lobby"))
    assert echo.verb == "TAGMSG" and echo.tags["label"] == "12345"
    [heard] = messages(bob.lines())
    assert "label" not in heard.tags and heard.tags["+draft/react"] == "l😃l"
    alice.lines()
    [echo] = messages(alice.send("@label=6789;+draft/react=x TAGMSG bob"))
    assert echo.verb == "TAGMSG" and echo.tags["label"] == "6789"
    assert "label" not in messages(bob.lines())[0].tags


@pytest.mark.parametrize("bytewise", [False, True])
def test_tags_of_4094_bytes_pass_and_4095_are_417(irc, bytewise):
    """IRCv3: 4,094 bytes of tags (not counting '@' and the space) are taken and passed
    on whole; one byte more is 417 and nothing reaches the others."""
    alice = logged_in(irc, "alice", TAGS)
    bob = logged_in(irc, "bob", ("message-tags",))
    at_limit = "@foo=bar;+baz=" + "a" * 4081 + " TAGMSG #lobby"
    assert at_limit.index("TAGMSG") == 4096
    [echo] = messages(alice.send(at_limit, bytewise=bytewise))
    assert echo.verb == "TAGMSG" and echo.tags["+baz"] == "a" * 4081
    [heard] = messages(bob.lines())
    assert heard.tags["+baz"] == "a" * 4081
    past = "@foo=bar;+baz=" + "a" * 4082 + " TAGMSG #lobby"
    assert [m.verb for m in messages(alice.send(past, bytewise=bytewise))] == ["417"]
    assert bob.lines() == []


def test_isupport_no_longer_denies_client_tags_and_tagmsg_has_a_targmax(irc):
    """005: no CLIENTTAGDENY; TARGMAX gives TAGMSG:4."""
    client = irc.irc_client()
    isupport = " ".join(line for line in client.login_with_pass("alice") if " 005 " in line)
    assert "CLIENTTAGDENY" not in isupport and "TAGMSG:4" in isupport


# --- a DM to oneself ------------------------------------------------------------------


@pytest.mark.parametrize("verb", ["PRIVMSG", "NOTICE"])
def test_a_labeled_message_to_oneself_comes_as_delivery_and_labeled_echo(irc, verb):
    """With echo-message, a message to oneself comes twice (the delivery and the echo,
    as Ergo sends it), exactly one of them labeled, no batch around them."""
    alice = logged_in(irc, "alice", LABELED)
    lines = messages(alice.send(f"@label=12345 {verb} alice :hi"))
    assert [m.verb for m in lines] == [verb, verb]
    assert [m.tags.get("label") for m in lines].count("12345") == 1
    assert all(m.params == ("alice", "hi") for m in lines)


def test_a_labeled_tagmsg_to_oneself_comes_twice(irc):
    """TAGMSG to oneself with echo-message: two TAGMSG, one labeled."""
    alice = logged_in(irc, "alice", LABELED)
    lines = messages(alice.send("@label=12345;+draft/react=x TAGMSG alice"))
    assert [m.verb for m in lines] == ["TAGMSG", "TAGMSG"]
    assert [m.tags.get("label") for m in lines].count("12345") == 1


def test_a_message_to_oneself_without_echo_message_comes_once(irc):
    """Without echo-message, a message to oneself is shown once, as received; another
    session of the same user sees it once too."""
    alice = logged_in(irc, "alice")
    other = logged_in(irc, "alice", ("echo-message",))
    other.lines()
    assert alice.send("PRIVMSG alice :note to self") == [
        ":alice!alice@chatd PRIVMSG alice :note to self"
    ]
    assert other.lines() == [":alice!alice@chatd PRIVMSG alice :note to self"]
