"""Room modes kept for IRC on both backends: voice (+v), moderated (+m), an open topic (-t)."""

import pytest

from chatd.core.errors import ChatError
from chatd.storage import backends
from chatd.storage import transactions as storage
from tests.storage.test_storage import backend, connection, db_setting  # noqa: F401 (fixtures)


def commit(opened, body, *arguments):
    with backends.transaction(opened):
        return body(opened, *arguments)


def test_voice_moderated_and_topic_open_are_kept_with_the_room(connection):  # noqa: F811
    """set_voice on a member (no-such-user otherwise), set_moderated and set_topic_open
    come back in load_room; voice goes with the membership."""
    for name in ("alice", "Bob"):
        commit(connection, storage.create_user, name, "hash", 0)
    commit(connection, storage.join_room, "#dev", "alice", 1)
    commit(connection, storage.join_room, "#dev", "bob", 2)
    room = storage.load_room(connection, "#dev", 3, 0)
    assert (room.voiced, room.moderated, room.topic_open) == ((), False, False)
    assert commit(connection, storage.set_voice, room.id, "bob", True) == "Bob"
    commit(connection, storage.set_moderated, room.id, True)
    commit(connection, storage.set_topic_open, room.id, True)
    again = storage.load_room(connection, "#dev", 4, 0)
    assert (again.voiced, again.moderated, again.topic_open) == (("Bob",), True, True)
    commit(connection, storage.leave_room, room.id, "bob")
    with pytest.raises(ChatError) as refused:
        commit(connection, storage.set_voice, room.id, "bob", True)
    assert refused.value.code == "no-such-user"
    assert storage.load_room(connection, "#dev", 5, 0).voiced == ()


def test_mode_changes_made_in_sessions_are_room_events_for_every_node(connection):  # noqa: F811
    """change_voice, change_moderated and change_topic_open store the mode and record a
    room event (with the operator as actor) that the other nodes of a cluster read."""
    for name in ("alice", "Bob"):
        commit(connection, storage.create_user, name, "hash", 0)
    commit(connection, storage.join_room, "#dev", "alice", 1)
    commit(connection, storage.join_room, "#dev", "bob", 2)
    room = storage.load_room(connection, "#dev", 3, 0)
    before = storage.last_account_event_id(connection)
    name, voiced = commit(
        connection, storage.change_voice, room.id, "#dev", "bob", True, "alice", 4
    )
    moderated = commit(connection, storage.change_moderated, room.id, "#dev", True, "alice", 5)
    opened = commit(connection, storage.change_topic_open, room.id, "#dev", True, "alice", 6)
    assert name == "Bob" and before < voiced < moderated < opened
    events = [
        (e.id, e.action, e.room_key, e.name_key, e.user_name, e.detail, e.actor)
        for e in storage.account_events_since(connection, before)
    ]
    assert events == [
        (voiced, "room-voice", "#dev", "bob", "Bob", "on", "alice"),
        (moderated, "room-moderated", "#dev", "", "", "on", "alice"),
        (opened, "room-topic-open", "#dev", "", "", "on", "alice"),
    ]
    again = storage.load_room(connection, "#dev", 7, 0)
    assert (again.voiced, again.moderated, again.topic_open) == (("Bob",), True, True)


def test_a_kick_of_a_guest_listed_by_another_node_is_the_event_alone(connection):  # noqa: F811
    """kick_from_room with ``guest``: a name no account has is a guest of another node,
    kicked by the room event alone; an account's name is still kicked only as a member
    (no-such-user when it is not one), whatever the other node listed."""
    commit(connection, storage.create_user, "alice", "hash", 0)
    commit(connection, storage.create_user, "bob", "hash", 0)
    commit(connection, storage.join_room, "#dev", "alice", 1)
    room = storage.load_room(connection, "#dev", 2, 0)
    name, event_id = commit(
        connection, storage.kick_from_room, room.id, "#dev", "visitor", "alice", "go", 3,
        "Visitor",
    )
    [event] = storage.account_events_since(connection, event_id - 1)
    assert (name, event.action, event.name_key, event.user_name, event.detail, event.actor) == (
        "Visitor", "room-kick", "visitor", "Visitor", "go", "alice"
    )
    for guest in ("", "bob"):
        with pytest.raises(ChatError) as refused:
            commit(connection, storage.kick_from_room, room.id, "#dev", "bob", "alice", "", 4,
                   guest)
        assert refused.value.code == "no-such-user"
    with pytest.raises(ChatError) as refused:
        commit(connection, storage.kick_from_room, room.id, "#dev", "visitor", "alice", "", 5)
    assert refused.value.code == "no-such-user"


def test_secret_is_kept_with_the_room_and_hides_it_from_non_members(connection):  # noqa: F811
    """change_secret sets the flag load_room and list_rooms give back and records a
    ``room-secret`` event (detail on/off) for the other nodes; visible_rooms leaves a
    secret room out for non-members only; secret and private are independent."""
    for name in ("alice", "bob"):
        commit(connection, storage.create_user, name, "hash", 0)
    commit(connection, storage.join_room, "#dev", "alice", 1)
    room = storage.load_room(connection, "#dev", 2, 0)
    assert room.secret is False
    event_id = commit(connection, storage.change_secret, room.id, "#dev", True, "alice", 3)
    event = next(e for e in storage.account_events_since(connection, 0) if e.id == event_id)
    assert (event.action, event.room_key, event.detail, event.actor) == (
        "room-secret", "#dev", "on", "alice"
    )
    again = storage.load_room(connection, "#dev", 4, 0)
    assert (again.secret, again.private) == (True, False)
    assert [r.secret for r in storage.list_rooms(connection)] == [True]
    assert storage.visible_rooms(connection, "bob") == []
    assert storage.visible_rooms(connection, "alice") == [("#dev", 1)]
    commit(connection, storage.set_private, room.id, True)
    commit(connection, storage.change_secret, room.id, "#dev", False, "alice", 5)
    assert storage.visible_rooms(connection, "bob") == []
    commit(connection, storage.set_private, room.id, False)
    assert storage.visible_rooms(connection, "bob") == [("#dev", 1)]
    assert storage.load_room(connection, "#dev", 6, 0).secret is False


def test_a_topic_is_kept_with_its_setter_and_time(connection):  # noqa: F811
    """change_topic (a session's) and the admin command line's topic store who set it and
    when (ms), which load_room gives back, as the room event's time; a room whose topic
    was never set has none (time 0)."""
    commit(connection, storage.create_user, "alice", "hash", 0)
    commit(connection, storage.join_room, "#dev", "alice", 1)
    room = storage.load_room(connection, "#dev", 2, 0)
    assert (room.topic, room.topic_setter, room.topic_at) == ("", "", 0)
    event_id = commit(
        connection, storage.change_topic, room.id, "#dev", "ship it", "alice", 1_764_000_000_123
    )
    again = storage.load_room(connection, "#dev", 3, 0)
    assert (again.topic, again.topic_setter, again.topic_at) == (
        "ship it", "alice", 1_764_000_000_123
    )
    (event,) = [e for e in storage.account_events_since(connection, 0) if e.id == event_id]
    assert (event.action, event.actor, event.at) == ("room-topic", "alice", 1_764_000_000_123)
    commit(connection, storage.admin_room_change, "topic", "#dev", "", "frozen", 1_764_000_500_000)
    last = storage.load_room(connection, "#dev", 4, 0)
    assert (last.topic, last.topic_setter, last.topic_at) == (
        "frozen", "*admin", 1_764_000_500_000
    )
