"""Rooms people live in at the service level: minds that record events, no protocol."""

import pytest

from chatd.core.errors import ChatError
from chatd.core.events import ACTION, Invited, Kicked, Operators, RoomMessage, Topic
from chatd.storage import transactions
from chatd.storage.sqlite import schema
from tests.support import ChatHarness, RecordingClient, SlowDatabase


def start(harness: ChatHarness, name: str):
    """Register ``name`` if needed and start a session with a recording mind."""
    harness.accounts.register(name, "password1").addErrback(lambda failure: None)
    mind = RecordingClient()
    sessions = []
    harness.chat.start_session(name, mind).addCallback(sessions.append)
    return sessions[0], mind


def outcome(deferred):
    """The result a Deferred already has, raising what it failed with."""
    results = []
    deferred.addBoth(results.append)
    if hasattr(results[0], "raiseException"):
        results[0].raiseException()
    return results[0]


def test_moderation_events_are_one_object_for_every_session():
    """KICK, OPS, TOPIC and ACTION reach every session as the very same event."""
    harness = ChatHarness()
    alice, alice_mind = start(harness, "alice")
    outcome(alice.join("#a"))
    others = [start(harness, "bob") for _ in range(2)]
    outcome(others[0][0].join("#a"))
    minds = [alice_mind] + [mind for _, mind in others]
    for mind in minds:
        mind.events.clear()
    outcome(alice.set_topic("#a", "t"))
    acting = alice.act("waves")
    harness.end_turn()  # room messages go out at the end of the reactor turn
    outcome(acting)
    outcome(alice.set_operator("#a", "bob", True))
    outcome(alice.kick("#a", "bob", "bye"))
    kinds = [Topic, RoomMessage, Operators, Kicked, Operators]
    assert [type(event) for event in alice_mind.events] == kinds
    assert alice_mind.events[1].kind == ACTION
    # bob, kicked, is no longer a member when the OPS that follows the KICK goes out.
    for mind in minds[1:]:
        assert mind.events == alice_mind.events[:4]  # eq=False: the same objects
    assert [session.current.name for session, _ in others] == ["#lobby", "#lobby"]


def test_refusals_raise_chat_errors_before_touching_the_database():
    """A member who is not an operator is refused at once: nothing is written."""
    harness = ChatHarness()
    alice, _ = start(harness, "alice")
    outcome(alice.join("#a"))
    bob, _ = start(harness, "bob")
    outcome(bob.join("#a"))
    writes = harness.database.writes
    for attempt in (
        lambda: bob.set_topic("#a", "x"),
        lambda: bob.kick("#a", "alice", ""),
        lambda: bob.ban("#a", "alice", True),
        lambda: bob.set_operator("#a", "bob", True),
        lambda: bob.set_private("#a", True),
    ):
        with pytest.raises(ChatError) as refused:
            attempt()
        assert refused.value.code == "forbidden"
    assert harness.database.writes == writes


def test_an_invitation_to_an_online_user_is_not_shown_again_at_login():
    """Delivered at once to every session; the next login does not repeat it."""
    harness = ChatHarness()
    alice, _ = start(harness, "alice")
    outcome(alice.join("#a"))
    bob, bob_mind = start(harness, "bob")
    bob_mind.events.clear()
    outcome(alice.invite("#a", "bob"))
    assert [type(event) for event in bob_mind.events] == [Invited]
    bob.logout()
    _again, again_mind = start(harness, "bob")
    assert not any(isinstance(event, Invited) for event in again_mind.events)


def test_a_join_is_one_commit_even_for_a_room_not_loaded():
    """Membership and the room's state are written and read in one transaction."""
    harness = ChatHarness(database=SlowDatabase())
    alice, mind = start(harness, "alice")
    harness.database.holding = True
    joining = alice.join("#new")
    assert len(harness.database.pending) == 1
    harness.commit_held()
    assert outcome(joining) == "#new"
    assert mind.lines()[-3:] == ["JOIN #new alice", "WHO #new alice", "OPS #new alice"]


def test_a_room_event_for_a_room_nobody_online_is_in_changes_nothing_in_memory():
    """The database is the truth for rooms not loaded: the next load reads the change."""
    harness = ChatHarness()
    alice, _ = start(harness, "alice")
    outcome(alice.join("#a"))
    alice.logout()
    assert "#a" not in harness.chat.rooms
    connection = harness.database.connection
    with schema.transaction(connection):
        transactions.admin_room_change(connection, "topic", "#a", "", "quiet", 0)
    harness.chat._poll_account_events()
    assert "#a" not in harness.chat.rooms
    _, mind = start(harness, "alice")
    assert "TOPIC #a *admin quiet" in mind.lines()


def test_the_command_lines_ban_and_unban_are_told_as_mode_changes():
    """``chatd room ban`` of a member: every member is told the ban, then its KICK; of an
    account not in the room: the ban alone (no KICK of someone who was not there);
    ``chatd room unban``: the lifting. All by ``*admin``."""
    harness = ChatHarness()
    alice, mind = start(harness, "alice")
    outcome(alice.join("#a"))
    bob, _ = start(harness, "bob")
    outcome(bob.join("#a"))
    start(harness, "carol")[0].logout()
    mind.lines()
    connection = harness.database.connection
    for action, name in (("ban", "bob"), ("ban", "carol"), ("unban", "carol")):
        with schema.transaction(connection):
            transactions.admin_room_change(connection, action, "#a", name, "", 0)
    harness.chat._poll_account_events()
    assert mind.lines() == [
        "MODE #a *admin ban on bob",
        "KICK #a bob *admin banned",
        "MODE #a *admin ban on carol",
        "MODE #a *admin ban off carol",
    ]


def test_questions_return_values_and_deliver_nothing():
    """who, rooms, topic, whois and history answer with values for the door to render.

    Nothing is pushed to the asking session's mind: each door renders the
    answer in its own form (WHO/OPS lines, NAMES numerics, a web panel).
    """
    harness = ChatHarness()
    alice, alice_mind = start(harness, "alice")
    outcome(alice.join("#a"))
    bob, _ = start(harness, "bob")
    outcome(bob.join("#a"))
    outcome(alice.set_operator("#a", "bob", True))
    outcome(alice.set_topic("#a", "plans"))
    outcome(bob.away("lunch"))
    saying = alice.say("hello", "#a")
    harness.end_turn()
    outcome(saying)
    alice_mind.events.clear()

    roster = alice.who("#a")
    assert (roster.room, roster.members) == ("#a", ("alice", "bob"))
    assert roster.operators == ("alice", "bob")
    summaries = outcome(alice.rooms())
    assert sorted((s.room, s.member_count) for s in summaries) == [("#a", 2), ("#lobby", 2)]
    topic = alice.topic("#a")
    assert (topic.room, topic.setter, topic.text) == ("#a", "alice", "plans")
    assert topic.at == harness.chat.now()
    known = outcome(alice.whois("BOB"))
    assert (known.user, known.online, known.shared_rooms, known.away) == (
        "bob", True, ("#a", "#lobby"), "lunch"
    )
    history = alice.history("#a", 10)
    assert history.room_name == "#a"
    page = outcome(history.next_page())
    assert [(line.sender, line.text) for line in page.events] == [("alice", "hello")]
    assert alice_mind.events == []
