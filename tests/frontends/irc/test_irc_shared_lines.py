"""Room messages are rendered once per choice of tags, for all of a room's IRC connections.

Rendering every message for every connection was most of the IRC door's time
under load (docs/benchmarks.md); these show the sharing keeps each client's
view exactly as its capabilities and its own messages make it.
"""

from itertools import combinations

import pytest

from chatd.core.events import ACTION, NOTICE, SAY, RoomMessage
from chatd.frontends.irc.message import parse, serialize
from chatd.frontends.irc.protocol import (
    _ROOM_TAG_CAPS,
    IRCFactory,
    _as_asked,
    _room_message,
    room_line,
)
from tests.frontends.irc.support import IRCHarness
from tests.support import SlowDatabase


@pytest.fixture
def held():
    """(harness, database): commits wait for ``harness.commit_held()`` while holding."""
    database = SlowDatabase()
    harness = IRCHarness(database=database)
    for name in ("alice", "bob", "carol", "dave", "eve"):
        harness.account(name)
    return harness, database


def count_renders(monkeypatch) -> list[frozenset[str]]:
    """The tags capabilities each time a room message's IRC line is made."""
    renders: list[frozenset[str]] = []
    original = IRCFactory._shared_line

    def counting(self, message, shown_as):
        renders.append(shown_as)
        return original(self, message, shown_as)

    monkeypatch.setattr(IRCFactory, "_shared_line", counting)
    return renders


def test_a_commit_batch_is_rendered_once_per_choice_of_tags(held, monkeypatch):
    """Two plain clients share one rendering; server-time and message-tags get their own."""
    harness, database = held
    plain = [harness.irc_client(port=50001), harness.irc_client(port=50002)]
    plain[0].login_with_pass("alice")
    plain[1].login_with_pass("bob")
    timed = harness.irc_client(port=50003)
    timed.login_with_pass("carol", caps=["server-time"])
    tagged = harness.irc_client(port=50004)
    tagged.login_with_pass("dave", caps=["message-tags"])
    line = harness.logged_in("eve")
    for client in (*plain, timed, tagged, line):
        client.lines()
    renders = count_renders(monkeypatch)
    database.holding = True
    line.feed(b"the first\nthe second\n")
    harness.commit_held()

    expected = [":eve!eve@chatd PRIVMSG #lobby :the first",
                ":eve!eve@chatd PRIVMSG #lobby :the second"]
    assert plain[0].lines() == plain[1].lines() == expected
    timed_lines = [parse(text) for text in timed.lines()]
    tagged_lines = [parse(text) for text in tagged.lines()]
    assert [m.params[1] for m in timed_lines] == [m.params[1] for m in tagged_lines] == [
        "the first", "the second"]
    assert all(set(m.tags) == {"time"} for m in timed_lines)
    assert all(set(m.tags) == {"msgid", "time", "account"} for m in tagged_lines)
    assert len(renders) == 3 * 2, renders  # three choices of tags, two messages


def test_a_sender_is_not_shown_its_own_message_in_a_shared_batch(held):
    """alice's message and eve's, committed together: alice's sending connection gets only
    eve's (no echo-message); her other connection and bob get both, in commit order."""
    harness, database = held
    sending = harness.irc_client(port=50001)
    sending.login_with_pass("alice")
    other = harness.irc_client(port=50002)
    other.login_with_pass("alice")
    bob = harness.irc_client(port=50003)
    bob.login_with_pass("bob")
    line = harness.logged_in("eve")
    for client in (sending, other, bob, line):
        client.lines()
    database.holding = True
    sending.protocol.dataReceived(b"PRIVMSG #lobby :my words\r\n")
    line.feed(b"their words\n")
    harness.commit_held()

    both = [":alice!alice@chatd PRIVMSG #lobby :my words",
            ":eve!eve@chatd PRIVMSG #lobby :their words"]
    assert sending.lines() == both[1:]
    assert other.lines() == bob.lines() == both
    assert line.lines() == ["MSG #lobby alice my words", "MSG #lobby eve their words",
                            "OK say #lobby"]


def test_each_connection_counts_its_delivery_and_the_bytes_it_was_sent(held):
    """The metrics see one delivery of a two-message batch per IRC connection, and
    exactly the bytes each was written: the sender's own line left out of its count
    of bytes, not of its deliveries."""
    harness, database = held
    sending = harness.irc_client(port=50001)
    sending.login_with_pass("alice")
    bob = harness.irc_client(port=50002)
    bob.login_with_pass("bob")
    line = harness.logged_in("eve")
    for client in (sending, bob, line):
        client.lines()
    traffic = harness.telemetry.metrics.traffic
    deliveries_before = traffic.deliveries.get("RoomMessages", 0)
    database.holding = True
    sending.protocol.dataReceived(b"PRIVMSG #lobby :my words\r\n")
    line.feed(b"their words\n")
    before_irc = len(sending.transport.value()) + len(bob.transport.value())
    bytes_before = traffic.bytes_out
    line_before = len(line.transport.value())
    harness.commit_held()

    irc_bytes = len(sending.transport.value()) + len(bob.transport.value()) - before_irc
    line_bytes = len(line.transport.value()) - line_before
    # Each of the two IRC connections was handed the batch of two messages (the line
    # door counts its own lines by their kind).
    assert traffic.deliveries["RoomMessages"] - deliveries_before == 2 * 2
    assert traffic.bytes_out - bytes_before == irc_bytes + line_bytes
    assert len(sending.lines()) == 1 and len(bob.lines()) == 2


def test_the_shared_line_is_what_the_general_path_serialises():
    """``room_line`` writes each room message as building the whole ``Message`` and
    leaving out the tags not asked for would, for every choice of tag capabilities."""
    choices = [
        frozenset(choice)
        for size in range(len(_ROOM_TAG_CAPS) + 1)
        for choice in combinations(sorted(_ROOM_TAG_CAPS), size)
    ]
    texts = [
        "word", "two words", ":colon", ":colon first", "", "a:colon inside", "ünïcode ✓", "x" * 400
    ]
    messages = [
        RoomMessage("#lobby", sender, text, at, message_id, 7, kind, 3, tags)
        for sender in ("alice", "Guest-12")
        for text in texts
        for kind in (SAY, ACTION, NOTICE)
        for at, message_id in ((1_700_000_000_123, "018bcfe56a1b0001000a0"), (5, ""))
        for tags in ((), (("+draft/reply", "a;b c\\d"), ("+example.org/flag", "")))
    ]
    for message in messages:
        for shown_as in choices:
            general = _as_asked(_room_message(message, "chatd.example"), shown_as)
            expected = (serialize(general) + "\r\n").encode()
            assert room_line(message, "chatd.example", shown_as) == expected, (message, shown_as)
