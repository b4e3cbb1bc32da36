"""Secret rooms (IRC's ``+s``, the line door's ``/secret``) in the core: shown to members only."""

import pytest

from chatd.core.errors import ChatError
from tests.core.test_direct_history import start
from tests.support import ChatHarness, RecordingClient


def listed(session) -> list[str]:
    """The rooms ``session``'s ``/rooms`` lists."""
    return [summary.room for summary in session.rooms().result]


def refused_who(session, room: str) -> str:
    with pytest.raises(ChatError) as refused:
        session.who(room)
    return refused.value.code


def test_a_secret_room_is_hidden_from_non_members_only():
    """alice (operator) makes #hideout secret: bob (no member) no longer sees it in /rooms
    nor gets its WHO (no-such-room), and WHOIS alice does not name it to him; alice and
    carol (members) still see all of it, and the roster says it is secret. Off again:
    bob sees it as before."""
    harness = ChatHarness()
    alice, _ = start(harness, "alice")
    bob, _ = start(harness, "bob")
    carol, _ = start(harness, "carol")
    alice.join("#hideout")
    carol.join("#hideout")
    assert "#hideout" in listed(bob)
    assert not bob.who("#hideout").secret
    assert alice.set_secret("#hideout", True).result == "#hideout"
    assert "#hideout" not in listed(bob) and "#lobby" in listed(bob)
    assert refused_who(bob, "#hideout") == "no-such-room"
    assert "#hideout" not in bob.whois("alice").result.shared_rooms
    for member in (alice, carol):
        assert "#hideout" in listed(member)
        roster = member.who("#hideout")
        assert (roster.members, roster.secret) == (("alice", "carol"), True)
    assert "#hideout" in carol.whois("alice").result.shared_rooms
    # Stored with the room: a server loading it again has it secret.
    flag = harness.database.connection.execute(
        "SELECT secret FROM rooms WHERE name_key = '#hideout'"
    ).fetchone()[0]
    assert flag
    alice.set_secret("#hideout", False)
    assert "#hideout" in listed(bob)
    assert bob.who("#hideout").members == ("alice", "carol")


def test_only_an_operator_sets_it_and_anyone_may_still_join():
    """bob, a member but no operator, is refused (forbidden; nothing changes); a secret
    room is not private: dave joins it without an invitation, and then sees it."""
    harness = ChatHarness()
    alice, _ = start(harness, "alice")
    bob, _ = start(harness, "bob")
    dave, _ = start(harness, "dave")
    alice.join("#hideout")
    bob.join("#hideout")
    with pytest.raises(ChatError) as refused:
        bob.set_secret("#hideout", True)
    assert refused.value.code == "forbidden"
    assert not harness.chat.rooms["#hideout"].secret
    alice.set_secret("#hideout", True)
    assert refused_who(dave, "#hideout") == "no-such-room"
    assert dave.join("#hideout").result == "#hideout"
    assert "#hideout" in listed(dave)
    assert dave.who("#hideout").members == ("alice", "bob", "dave")


def test_secret_and_private_are_independent():
    """Private alone hides the room too; secret on and private off still hides it; both
    off shows it; a private room's join rule does not depend on secret."""
    harness = ChatHarness()
    alice, _ = start(harness, "alice")
    bob, _ = start(harness, "bob")
    alice.join("#hideout")
    alice.set_private("#hideout", True)
    alice.set_secret("#hideout", True)
    alice.set_private("#hideout", False)
    room = harness.chat.rooms["#hideout"]
    assert (room.private, room.secret) == (False, True)
    assert refused_who(bob, "#hideout") == "no-such-room"
    assert "#hideout" not in listed(bob)
    alice.set_secret("#hideout", False)
    alice.set_private("#hideout", True)
    assert "#hideout" not in listed(bob)
    failures = []
    bob.join("#hideout").addErrback(failures.append)
    assert failures and failures[0].value.code == "forbidden"
    alice.set_private("#hideout", False)
    assert "#hideout" in listed(bob)


def test_a_guest_operator_may_make_its_room_secret():
    """Unlike +i and +m: secrecy shuts nobody out, so the guest that opened #new may set
    it; a guest that is no operator may not; another guest may still join it."""
    harness = ChatHarness()
    visitor = harness.chat.start_guest("visitor", RecordingClient())
    other = harness.chat.start_guest("other", RecordingClient())
    alice, _ = start(harness, "alice")
    visitor.join("#new")
    other.join("#new")
    with pytest.raises(ChatError):
        other.set_private("#new", True)
    with pytest.raises(ChatError) as refused:
        other.set_secret("#new", True)
    assert refused.value.code == "forbidden"
    assert visitor.set_secret("#new", True).result == "#new"
    assert refused_who(alice, "#new") == "no-such-room"
    assert other.who("#new").secret
    late = harness.chat.start_guest("late", RecordingClient())
    assert late.join("#new").result == "#new"
