"""draft/chathistory over the IRC door: a room's messages (and see test_irc_dm_history.py
for a conversation's direct messages), from the database."""

import pytest

from chatd.frontends.irc.message import parse
from chatd.frontends.irc.protocol import irc_time
from chatd.storage import transactions
from tests.frontends.irc.support import IRCHarness

CAPS = ("draft/chathistory", "batch", "server-time", "message-tags", "echo-message")


@pytest.fixture
def irc() -> IRCHarness:
    """An in-memory server with accounts alice and bob."""
    harness = IRCHarness()
    harness.account("alice")
    harness.account("bob")
    return harness


@pytest.fixture
def room(irc):
    """alice in #den, where she said ``m0`` to ``m9`` one second apart; her client and
    the ten echoes (parsed, with their msgid and time tags)."""
    alice = irc.irc_client()
    alice.login_with_pass("alice", caps=CAPS)
    alice.send("JOIN #den")
    echoes = []
    for number in range(10):
        irc.clock.advance(1)
        lines = alice.send(f"PRIVMSG #den :m{number}")
        echoes.append(parse(lines[-1]))
    return alice, echoes


def history(client, request):
    """Send a CHATHISTORY request; return the texts of the batch it answers, checking
    the batch's form (chathistory, the target, each line's batch, time and msgid tags)."""
    lines = [parse(line) for line in client.send(request)]
    start, *inner, end = lines
    assert start.verb == "BATCH" and start.params[1:] == ("chathistory", "#den")
    batch = start.params[0][1:]
    assert end.verb == "BATCH" and end.params == (f"-{batch}",)
    for message in inner:
        assert message.tags["batch"] == batch
        assert message.tags["time"] and message.tags["msgid"]
    return [message.params[1] for message in inner]


def texts(echoes, start, end=None):
    """The texts of a slice of the echoes."""
    return [message.params[1] for message in echoes[start:end]]


def test_chathistory_is_offered_with_its_limit(irc):
    """CAP LS has draft/chathistory; 005 says CHATHISTORY=100 and MSGREFTYPES."""
    client = irc.irc_client()
    assert "draft/chathistory" in client.send("CAP LS 302")[0]
    lines = client.send("CAP END")  # nothing yet: no NICK
    client = irc.irc_client()
    lines = client.login_with_pass("alice")
    isupport = " ".join(line for line in lines if " 005 " in line)
    assert "CHATHISTORY=100" in isupport and "MSGREFTYPES=msgid,timestamp" in isupport


@pytest.mark.parametrize("bytewise", [False, True])
def test_latest(room, bytewise):
    """LATEST * gives the newest messages, oldest first; a mark gives those after it."""
    alice, echoes = room
    assert history(alice, "CHATHISTORY LATEST #den * 100") == texts(echoes, 0)
    assert history(alice, "CHATHISTORY LATEST #den * 5") == texts(echoes, 5)
    assert history(alice, "CHATHISTORY LATEST #den * 1") == texts(echoes, 9)
    msgid = echoes[4].tags["msgid"]
    assert history(alice, f"CHATHISTORY LATEST #den msgid={msgid} 100") == texts(echoes, 5)
    when = echoes[4].tags["time"]
    assert history(alice, f"CHATHISTORY LATEST #den timestamp={when} 100") == texts(echoes, 5)


def test_before_and_after(room):
    """BEFORE takes the newest before the mark, AFTER the oldest after it, marks excluded."""
    alice, echoes = room
    msgid, when = echoes[6].tags["msgid"], echoes[6].tags["time"]
    assert history(alice, f"CHATHISTORY BEFORE #den msgid={msgid} 20") == texts(echoes, 0, 6)
    assert history(alice, f"CHATHISTORY BEFORE #den timestamp={when} 2") == texts(echoes, 4, 6)
    msgid, when = echoes[3].tags["msgid"], echoes[3].tags["time"]
    assert history(alice, f"CHATHISTORY AFTER #den msgid={msgid} 20") == texts(echoes, 4)
    assert history(alice, f"CHATHISTORY AFTER #den timestamp={when} 3") == texts(echoes, 4, 7)


def test_between_both_ways(room):
    """BETWEEN excludes both marks; forwards the limit keeps the oldest, backwards the newest."""
    alice, echoes = room
    first, last = echoes[0].tags["msgid"], echoes[-1].tags["msgid"]
    forwards = f"CHATHISTORY BETWEEN #den msgid={first} msgid={last}"
    backwards = f"CHATHISTORY BETWEEN #den msgid={last} msgid={first}"
    assert history(alice, forwards + " 20") == texts(echoes, 1, -1)
    assert history(alice, backwards + " 20") == texts(echoes, 1, -1)
    assert history(alice, forwards + " 3") == texts(echoes, 1, 4)
    assert history(alice, backwards + " 3") == texts(echoes, -4, -1)
    start, end = echoes[0].tags["time"], echoes[-1].tags["time"]
    assert history(
        alice, f"CHATHISTORY BETWEEN #den timestamp={end} timestamp={start} 3"
    ) == texts(echoes, -4, -1)


def test_around(room):
    """AROUND a message: it alone for 1, it with one on each side for 3."""
    alice, echoes = room
    msgid = echoes[7].tags["msgid"]
    assert history(alice, f"CHATHISTORY AROUND #den msgid={msgid} 1") == texts(echoes, 7, 8)
    assert history(alice, f"CHATHISTORY AROUND #den msgid={msgid} 3") == texts(echoes, 6, 9)
    when = echoes[7].tags["time"]
    assert "m7" in history(alice, f"CHATHISTORY AROUND #den timestamp={when} 3")


def test_an_unknown_msgid_is_an_empty_batch(room):
    """A message id the room does not have (expired, or never there): an empty batch."""
    alice, _ = room
    assert history(alice, "CHATHISTORY AFTER #den msgid=0000000000000000beef 10") == []


def test_the_limit_is_capped_and_checked(irc, room):
    """Past CHATHISTORY=100 the limit is 100; 0 or a word is INVALID_PARAMS."""
    alice, _ = room
    for number in range(120):
        irc.database.write(transactions.add_room_message, irc.chat.rooms["#den"].id, "alice",
                           f"bulk {number}", 1_764_064_900_000 + number)
    assert len(history(alice, "CHATHISTORY LATEST #den * 1000")) == 100
    for bad in ("0", "many", "-3"):
        lines = alice.send(f"CHATHISTORY LATEST #den * {bad}")
        assert lines[0].startswith(":chatd FAIL CHATHISTORY INVALID_PARAMS LATEST ")


def test_bad_requests_fail_with_their_code(room):
    """Unknown subcommands, missing parameters and bad marks get the standard FAIL codes."""
    alice, _ = room
    assert alice.send("CHATHISTORY SIDEWAYS #den * 1")[0].startswith(
        ":chatd FAIL CHATHISTORY INVALID_PARAMS SIDEWAYS"
    )
    assert alice.send("CHATHISTORY LATEST #den")[0].startswith(
        ":chatd FAIL CHATHISTORY NEED_MORE_PARAMS LATEST"
    )
    for mark in ("*", "msgid=", "timestamp=yesterday", "when=1"):
        lines = alice.send(f"CHATHISTORY BEFORE #den {mark} 10")
        assert lines[0].startswith(":chatd FAIL CHATHISTORY INVALID_PARAMS BEFORE"), mark


def test_rooms_you_are_not_in_are_invalid_targets(irc, room):
    """Not a member (or no such room): INVALID_TARGET; a nick is no room but a
    conversation (an empty one here); a nick that is no valid name: INVALID_TARGET."""
    bob = irc.irc_client()
    bob.login_with_pass("bob", caps=CAPS)
    for target in ("#den", "#nowhere"):
        lines = bob.send(f"CHATHISTORY LATEST {target} * 10")
        assert lines[0].startswith(f":chatd FAIL CHATHISTORY INVALID_TARGET LATEST {target} ")
    lines = bob.send("CHATHISTORY LATEST alice * 10")
    assert [parse(line).verb for line in lines] == ["BATCH", "BATCH"]
    lines = bob.send("CHATHISTORY LATEST a!b * 10")
    assert lines[0].startswith(":chatd FAIL CHATHISTORY INVALID_TARGET LATEST a!b ")


def test_targets_lists_your_rooms_by_their_last_message(irc, room):
    """TARGETS: the rooms you are in whose last message falls between the two times."""
    alice, echoes = room
    irc.clock.advance(1)
    alice.send("PRIVMSG #lobby :latest")
    low = irc_time(1_000)
    high = irc_time(int(irc.clock.seconds() * 1000) + 1)
    lines = [parse(line) for line in alice.send(f"CHATHISTORY TARGETS timestamp={low}"
                                                f" timestamp={high} 10")]
    assert lines[0].params[1] == "draft/chathistory-targets"
    listed = [message.params[1] for message in lines[1:-1]]
    assert listed == ["#den", "#lobby"]
    assert lines[1].params[2] == echoes[-1].tags["time"]
    last_den = echoes[-1].tags["time"]
    lines = alice.send(f"CHATHISTORY TARGETS timestamp={last_den} timestamp={high} 10")
    assert [parse(line).params[1] for line in lines[1:-1]] == ["#lobby"]


def test_a_history_request_with_a_label_is_one_labeled_batch(room):
    """With labeled-response the chathistory batch is nested in the labeled one."""
    alice, _ = room
    alice.send("CAP REQ labeled-response")
    lines = [parse(line) for line in alice.send("@label=h1 CHATHISTORY LATEST #den * 2")]
    assert lines[0].tags["label"] == "h1" and lines[0].params[1] == "labeled-response"
    assert lines[1].params[1] == "chathistory" and lines[1].tags["batch"] == lines[0].params[0][1:]
    assert len(lines) == 6


def test_join_replays_the_last_50_with_time_and_msgid(irc, room):
    """Joining a room with 60 messages: its last 50, in order, in one chathistory batch,
    each with server-time and msgid."""
    alice, _ = room
    for number in range(50):
        alice.send(f"PRIVMSG #den :n{number}")
    bob = irc.irc_client()
    bob.login_with_pass("bob", caps=CAPS)
    lines = [parse(line) for line in bob.send("JOIN #den")]
    replayed = [m for m in lines if m.verb == "PRIVMSG"]
    # m0-m9 are older than the last 50.
    assert [m.params[1] for m in replayed] == [f"n{number}" for number in range(50)]
    opening = next(m for m in lines if m.verb == "BATCH")
    assert opening.params[1:] == ("chathistory", "#den")
    assert all(m.tags["batch"] == opening.params[0][1:] for m in replayed)
    assert all(m.tags["time"] and m.tags["msgid"] for m in replayed)
