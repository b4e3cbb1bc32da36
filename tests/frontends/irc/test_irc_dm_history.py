"""draft/chathistory of direct messages over the IRC door: a conversation between two
accounts, the same for both, paged like a room's, beside the mailbox that is unchanged."""

import pytest

from chatd.config import Config
from chatd.frontends.irc.message import parse
from chatd.frontends.irc.protocol import irc_time
from chatd.storage import transactions
from tests.frontends.irc.support import IRCHarness

CAPS = ("draft/chathistory", "batch", "server-time", "message-tags", "echo-message")


@pytest.fixture
def irc() -> IRCHarness:
    """An in-memory server with guests on and the accounts alice, bob and carol."""
    harness = IRCHarness(
        Config(bcrypt_rounds=4, rate_limit=None, room_creation_limit=None, guests=True)
    )
    for name in ("alice", "bob", "carol"):
        harness.account(name)
    return harness


def connect(irc, name, caps=CAPS):
    client = irc.irc_client()
    client.login_with_pass(name, caps=caps)
    return client


@pytest.fixture
def talk(irc):
    """alice and bob online, six DMs between them one second apart (m0, m2, m4 from
    alice; m1, m3, m5 from bob); the two clients and the six echoes, parsed."""
    alice, bob = connect(irc, "alice"), connect(irc, "bob")
    echoes = []
    for number in range(6):
        irc.clock.advance(1)
        sender, target = (alice, "bob") if number % 2 == 0 else (bob, "alice")
        sender.lines()  # the other side's message, received
        lines = [parse(line) for line in sender.send(f"PRIVMSG {target} :m{number}")]
        (echo,) = [message for message in lines if message.verb == "PRIVMSG"]
        echoes.append(echo)
    return alice, bob, echoes


def batch(client, request, target):
    """Send a CHATHISTORY request; return its chathistory batch's PRIVMSGs, checking the
    batch (its type and target, as asked) and that every line is in it."""
    client.lines()  # what came before (the other side's messages)
    lines = [parse(line) for line in client.send(request)]
    start, *inner, end = lines
    assert start.verb == "BATCH" and start.params[1:] == ("chathistory", target), lines
    assert end.params == (f"-{start.params[0][1:]}",)
    assert all(message.tags["batch"] == start.params[0][1:] for message in inner)
    return inner


def as_history(messages):
    """What irctest compares: time, msgid, target, text (and here the source too)."""
    return [
        (m.tags["time"], m.tags["msgid"], m.source.split("!")[0], m.params[0], m.params[1])
        for m in messages
    ]


def test_both_sides_see_the_same_conversation(talk):
    """LATEST with the other's nick (in any case): all six, oldest first, each as it was
    sent (sender, target, time, msgid), the same for alice and for bob."""
    alice, bob, echoes = talk
    expected = as_history(echoes)
    assert [m[2:] for m in expected][:2] == [("alice", "bob", "m0"), ("bob", "alice", "m1")]
    assert as_history(batch(alice, "CHATHISTORY LATEST bob * 100", "bob")) == expected
    assert as_history(batch(bob, "CHATHISTORY LATEST alice * 100", "alice")) == expected
    assert as_history(batch(bob, "CHATHISTORY LATEST ALICE * 100", "ALICE")) == expected
    assert as_history(batch(alice, "CHATHISTORY LATEST bob * 2", "bob")) == expected[4:]


def test_marks_page_a_conversation_like_a_room(talk):
    """BEFORE, AFTER, AROUND and BETWEEN by msgid and by time, marks excluded but AROUND's."""
    alice, _bob, echoes = talk
    expected = as_history(echoes)
    msgid = [echo.tags["msgid"] for echo in echoes]
    when = [echo.tags["time"] for echo in echoes]

    def ask(request):
        return as_history(batch(alice, request, "bob"))

    assert ask(f"CHATHISTORY BEFORE bob msgid={msgid[3]} 2") == expected[1:3]
    assert ask(f"CHATHISTORY BEFORE bob timestamp={when[3]} 10") == expected[:3]
    assert ask(f"CHATHISTORY AFTER bob msgid={msgid[3]} 10") == expected[4:]
    assert ask(f"CHATHISTORY AFTER bob timestamp={when[3]} 1") == expected[4:5]
    assert ask(f"CHATHISTORY AROUND bob msgid={msgid[2]} 3") == expected[1:4]
    assert ask(f"CHATHISTORY BETWEEN bob msgid={msgid[0]} msgid={msgid[5]} 10") == expected[1:5]
    assert ask(f"CHATHISTORY BETWEEN bob msgid={msgid[5]} msgid={msgid[0]} 2") == expected[3:5]
    assert ask(f"CHATHISTORY LATEST bob msgid={msgid[3]} 10") == expected[4:]
    assert ask("CHATHISTORY AFTER bob msgid=0000000000000000beef 10") == []


def test_a_third_conversation_stays_apart(irc, talk):
    """carol's DMs with alice are alice's conversation with carol, not with bob; bob's
    conversation with carol is empty."""
    alice, bob, _echoes = talk
    carol = connect(irc, "carol")
    carol.send("PRIVMSG alice :hi from carol")
    alice.send("PRIVMSG carol :hi carol")
    assert len(batch(alice, "CHATHISTORY LATEST bob * 100", "bob")) == 6
    texts = [m.params[1] for m in batch(alice, "CHATHISTORY LATEST carol * 100", "carol")]
    assert texts == ["hi from carol", "hi carol"]
    assert batch(bob, "CHATHISTORY LATEST carol * 100", "carol") == []


def test_a_stored_dm_is_in_the_history_and_still_delivered_once(irc):
    """A DM to someone offline waits in the mailbox as before (delivered at the next
    login, then gone from it) and is in both histories from the start."""
    alice = connect(irc, "alice")
    irc.clock.advance(1)
    lines = [parse(line) for line in alice.send("PRIVMSG bob :while you were out")]
    (echo,) = [m for m in lines if m.verb == "PRIVMSG"]
    assert as_history(batch(alice, "CHATHISTORY LATEST bob * 10", "bob")) == as_history([echo])
    assert transactions.count_stored_messages(irc.database.connection, "bob") == 1
    bob = irc.irc_client()
    arrived = [parse(line) for line in bob.login_with_pass("bob", caps=CAPS)]
    delivered = [m for m in arrived if m.verb == "PRIVMSG"]
    assert [(m.params[1], m.tags["msgid"]) for m in delivered] == [
        ("while you were out", echo.tags["msgid"])
    ]
    assert transactions.count_stored_messages(irc.database.connection, "bob") == 0
    again = batch(bob, "CHATHISTORY LATEST alice * 10", "alice")
    assert [(m.params[1], m.tags["msgid"]) for m in again] == [
        ("while you were out", echo.tags["msgid"])
    ]


def test_targets_list_conversations_beside_rooms(irc, talk):
    """TARGETS: rooms and the people you exchanged DMs with, by their last message."""
    alice, _bob, echoes = talk
    irc.clock.advance(1)
    alice.send("PRIVMSG #lobby :a room line")
    irc.clock.advance(1)
    carol = connect(irc, "carol")
    carol.send("PRIVMSG alice :latest of all")
    low, high = irc_time(1_000), irc_time(int(irc.clock.seconds() * 1000) + 1)
    alice.lines()  # carol's message, received
    lines = [parse(line) for line in alice.send(
        f"CHATHISTORY TARGETS timestamp={low} timestamp={high} 10"
    )]
    listed = [(m.params[1], m.params[2]) for m in lines[1:-1]]
    assert [name for name, _ in listed] == ["bob", "#lobby", "carol"]
    assert listed[0][1] == echoes[-1].tags["time"]
    lines = alice.send(f"CHATHISTORY TARGETS timestamp={low} timestamp={high} 1")
    assert [parse(line).params[1] for line in lines[1:-1]] == ["bob"]


def test_a_dm_to_oneself_is_echoed_and_delivered_and_kept_once(irc):
    """With echo-message a DM to oneself comes twice, the echo labeled and the delivery
    not; without it once; the history has each message once."""
    alice = connect(irc, "alice", caps=(*CAPS, "labeled-response"))
    lines = [parse(line) for line in alice.send("@label=x PRIVMSG alice :to me")]
    privmsgs = [m for m in lines if m.verb == "PRIVMSG"]
    assert len(privmsgs) == 2
    assert sorted(m.tags.get("label", "") for m in privmsgs) == ["", "x"]
    assert privmsgs[0].tags["msgid"] == privmsgs[1].tags["msgid"]
    plain = connect(irc, "alice", caps=("draft/chathistory", "batch", "server-time"))
    lines = [parse(line) for line in plain.send("PRIVMSG alice :again")]
    assert [m.params[1] for m in lines if m.verb == "PRIVMSG"] == ["again"]
    history = batch(alice, "CHATHISTORY LATEST alice * 10", "alice")
    assert [m.params[1] for m in history] == ["to me", "again"]


def test_an_account_keeps_its_talk_with_a_guest_and_the_guest_keeps_nothing(irc):
    """alice's conversation with the guest zed is alice's; zed's history is empty; two
    guests keep nothing; an account later registered as zed sees none of it."""
    alice = connect(irc, "alice")
    zed = irc.irc_client()
    zed.send("CAP LS 302", f"CAP REQ :{' '.join(CAPS)}", "NICK zed", "USER u 0 * :Z", "CAP END")
    alice.send("PRIVMSG zed :hello guest")
    zed.send("PRIVMSG alice :hello account")
    texts = [m.params[1] for m in batch(alice, "CHATHISTORY LATEST zed * 10", "zed")]
    assert texts == ["hello guest", "hello account"]
    assert batch(zed, "CHATHISTORY LATEST alice * 10", "alice") == []
    yan = irc.irc_client()
    yan.send("NICK yan", "USER u 0 * :Y")
    zed.send("PRIVMSG yan :between guests")
    assert irc.database.connection.execute("SELECT count(*) FROM direct_history").fetchone()[0] == 2
    zed.send("QUIT")
    irc.account("zed")
    zed = connect(irc, "zed")
    assert batch(zed, "CHATHISTORY LATEST alice * 10", "alice") == []
