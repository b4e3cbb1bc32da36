"""The core's notice kind of message, PART reasons and client-only tags (issue 11's
IRC door needs them; no protocol here: minds that record events)."""

import pytest

from chatd.core.errors import ChatError
from chatd.core.events import (
    CLIENT_TAGS_MAX_BYTES,
    NOTICE,
    PART_REASON_MAX,
    SAY,
    DirectMessage,
    Parted,
    RoomMessage,
    TagMessage,
    client_tags,
    part_reason,
)
from chatd.storage.rows import HistoryMark
from tests.core.test_rooms_service import outcome, start
from tests.support import ChatHarness


def posted(harness: ChatHarness, deferred):
    """A post's outcome once the turn that flushes room messages has ended."""
    harness.end_turn()
    return outcome(deferred)


def of_type(mind, kind) -> list:
    """The events of one type a mind was delivered."""
    return [event for event in mind.events if isinstance(event, kind)]


def test_a_notice_to_a_room_is_a_message_of_the_notice_kind_kept_in_history():
    """session.notice posts a RoomMessage of kind notice to every member; the room's
    history (read from the database and replayed on join) keeps that kind."""
    harness = ChatHarness()
    alice, alice_mind = start(harness, "alice")
    bob, bob_mind = start(harness, "bob")
    assert posted(harness, alice.notice("server going down", "#lobby")) == "#lobby"
    [seen] = of_type(bob_mind, RoomMessage)
    assert (seen.kind, seen.text, seen.origin) == (NOTICE, "server going down", alice.origin)
    assert of_type(alice_mind, RoomMessage)[0] is seen
    window = outcome(bob.history_window("#lobby", None, None, 10, True))
    assert [(line.kind, line.text) for line in window] == [(NOTICE, "server going down")]
    _carol, carol_mind = start(harness, "carol")
    harness.end_turn()
    replayed = [event for event in carol_mind.events if type(event).__name__ == "HistoryLine"]
    assert [(line.kind, line.text) for line in replayed] == [(NOTICE, "server going down")]


def test_a_notice_to_a_user_is_a_direct_message_of_the_notice_kind():
    """session.message with kind notice reaches both users as a DirectMessage of that
    kind, with its client-only tags; any other kind is refused."""
    harness = ChatHarness()
    alice, alice_mind = start(harness, "alice")
    _bob, bob_mind = start(harness, "bob")
    tags = (("+draft/reply", "x1"),)
    assert outcome(alice.message("bob", "ping me", NOTICE, tags)) == ("bob", "delivered")
    [seen] = of_type(bob_mind, DirectMessage)
    assert (seen.kind, seen.text, seen.tags) == (NOTICE, "ping me", tags)
    assert of_type(alice_mind, DirectMessage) == [seen]
    assert outcome(alice.message("bob", "plain")) == ("bob", "delivered")
    assert of_type(bob_mind, DirectMessage)[-1].kind == SAY
    with pytest.raises(ChatError) as refused:
        alice.message("bob", "x", "action")
    assert refused.value.code == "bad-arguments"


def test_a_part_reason_reaches_every_member_cut_at_its_limit():
    """session.part with a reason: the Parted event carries it, at most PART_REASON_MAX
    characters (one more is cut), line ends turned into spaces."""
    harness = ChatHarness()
    alice, _ = start(harness, "alice")
    _bob, bob_mind = start(harness, "bob")
    outcome(alice.part("#lobby", "bye\r\nall"))
    assert [(e.user, e.reason) for e in of_type(bob_mind, Parted)] == [("alice", "bye  all")]
    outcome(alice.join("#lobby"))
    outcome(alice.part("#lobby", "x" * PART_REASON_MAX))
    assert of_type(bob_mind, Parted)[-1].reason == "x" * PART_REASON_MAX
    outcome(alice.join("#lobby"))
    outcome(alice.part("#lobby", "y" * (PART_REASON_MAX + 1)))
    assert of_type(bob_mind, Parted)[-1].reason == "y" * PART_REASON_MAX
    outcome(alice.join("#lobby"))
    outcome(alice.part("#lobby"))
    assert of_type(bob_mind, Parted)[-1].reason == ""
    assert part_reason(None) == ""


def test_client_tags_at_their_limit_pass_and_one_byte_more_is_refused():
    """4,094 bytes of client-only tags as written on the wire pass; 4,095 are refused,
    escaping counted (a ';' is two bytes on the wire)."""
    head = "+a="
    at_limit = (("+a", "b" * (CLIENT_TAGS_MAX_BYTES - len(head))),)
    assert client_tags(at_limit) == at_limit
    with pytest.raises(ChatError) as refused:
        client_tags((("+a", "b" * (CLIENT_TAGS_MAX_BYTES - len(head) + 1)),))
    assert refused.value.code == "bad-arguments"
    escaped = (("+a", ";" * ((CLIENT_TAGS_MAX_BYTES - len(head)) // 2)),)
    assert client_tags(escaped) == escaped
    with pytest.raises(ChatError):
        client_tags((("+a", ";" * ((CLIENT_TAGS_MAX_BYTES - len(head)) // 2 + 1)),))
    two = (("+a", "1"), ("+example.com/b", ""))
    assert client_tags(two) == two


@pytest.mark.parametrize(
    "tags",
    [
        (("a", "server tag"),),
        (("+", "no name"),),
        (("+a b", "space"),),
        (("+a", "1"), ("+a", "twice")),
        (("+a", "nul\0"),),
        (("+/a", "empty vendor"),),
    ],
)
def test_malformed_client_tags_are_refused(tags):
    """Only client-only keys (+, optional vendor/, name), each once, without NUL."""
    with pytest.raises(ChatError) as refused:
        client_tags(tags)
    assert refused.value.code == "bad-arguments"


def test_client_tags_ride_a_live_room_message_but_not_its_history():
    """A room message's client-only tags reach the members; the history keeps none."""
    harness = ChatHarness()
    alice, _ = start(harness, "alice")
    bob, bob_mind = start(harness, "bob")
    posted(harness, alice.say("hi", "#lobby", (("+draft/react", "l😃l"),)))
    [seen] = of_type(bob_mind, RoomMessage)
    assert seen.tags == (("+draft/react", "l😃l"),)
    window = outcome(bob.history_window("#lobby", None, None, 10, True))
    assert [line.text for line in window] == ["hi"]
    with pytest.raises(ChatError):
        alice.say("x", "#lobby", (("nope", "1"),))


def test_tags_alone_reach_a_room_live_and_are_not_stored():
    """session.tag to a room: one TagMessage (with an id and time) to every member's
    sessions, at once; nothing is written to the database."""
    harness = ChatHarness()
    alice, alice_mind = start(harness, "alice")
    bob, bob_mind = start(harness, "bob")
    writes = harness.database.writes
    assert alice.tag("#lobby", (("+typing", "active"),)) == "#lobby"
    [seen] = of_type(bob_mind, TagMessage)
    assert (seen.sender, seen.target, seen.tags) == ("alice", "#lobby", (("+typing", "active"),))
    assert seen.message_id and seen.at and seen.origin == alice.origin
    assert of_type(alice_mind, TagMessage) == [seen]
    assert harness.database.writes == writes
    assert outcome(bob.history_window("#lobby", None, None, 10, True)) == []
    with pytest.raises(ChatError) as refused:
        alice.tag("#elsewhere", (("+typing", "active"),))
    assert refused.value.code == "not-in-room"


def test_tags_alone_to_a_user_reach_both_users_and_not_the_offline():
    """session.tag to a user online: every session of both (once to oneself); a user
    with no session is no-such-user (nothing is kept for later)."""
    harness = ChatHarness()
    alice, alice_mind = start(harness, "alice")
    _bob, bob_mind = start(harness, "bob")
    assert alice.tag("BOB", (("+typing", "paused"),)) == "bob"
    assert [e.target for e in of_type(bob_mind, TagMessage)] == ["bob"]
    assert len(of_type(alice_mind, TagMessage)) == 1
    alice.tag("alice", ())
    assert len(of_type(alice_mind, TagMessage)) == 2
    harness.accounts.register("carol", "password1")
    with pytest.raises(ChatError) as refused:
        alice.tag("carol", (("+typing", "active"),))
    assert refused.value.code == "no-such-user"


def test_history_marks_still_read_notices_in_order():
    """A notice between two messages keeps its place in the room's sequence."""
    harness = ChatHarness()
    alice, _ = start(harness, "alice")
    posted(harness, alice.say("one", "#lobby"))
    posted(harness, alice.notice("two", "#lobby"))
    posted(harness, alice.act("three", "#lobby"))
    window = outcome(alice.history_window("#lobby", HistoryMark(time=0), None, 10, False))
    assert [(line.kind, line.text) for line in window] == [
        (SAY, "one"), (NOTICE, "two"), ("action", "three"),
    ]
