"""Server operators in the core: the in-memory flag makes a user an operator of every room."""

import pytest

from chatd.core.errors import ChatError
from tests.core.test_direct_history import start
from tests.support import ChatHarness


def in_dev(harness):
    """alice opens #dev (its operator); bob and carol join it; return the three sessions."""
    alice, _ = start(harness, "alice")
    bob, _ = start(harness, "bob")
    carol, _ = start(harness, "carol")
    for session in (alice, bob, carol):
        session.join("#dev")
    harness.end_turn()
    return alice, bob, carol


def results(deferred):
    """What ``deferred`` fired with, or the ChatError code it failed with."""
    seen = []
    deferred.addCallbacks(seen.append, lambda failure: seen.append(failure.value.code))
    return seen


def test_a_server_operator_acts_as_a_room_operator_in_a_room_it_does_not_operate():
    """bob is refused until set_oper: then topic, +t, +m, voice, op, deop, kick, ban."""
    harness = ChatHarness()
    alice, bob, _carol = in_dev(harness)
    with pytest.raises(ChatError) as refused:
        bob.kick("#dev", "carol", "no")
    assert refused.value.code == "forbidden"
    bob.set_oper(True)
    assert bob.oper and harness.chat.users["bob"].oper
    assert "bob" not in harness.chat.rooms["#dev"].operators
    assert results(bob.set_topic("#dev", "bob's topic")) == ["#dev"]
    assert results(bob.set_topic_open("#dev", True)) == ["#dev"]
    assert results(bob.set_moderated("#dev", True)) == ["#dev"]
    assert results(bob.set_voice("#dev", "carol", True)) == ["#dev"]
    assert results(bob.set_operator("#dev", "carol", True)) == ["#dev"]
    assert results(bob.set_operator("#dev", "alice", False)) == ["#dev"]
    assert set(harness.chat.rooms["#dev"].operators) == {"carol"}
    assert results(bob.kick("#dev", "alice", "out")) == ["#dev"]
    assert "#dev" not in harness.chat.users["alice"].rooms
    assert results(bob.ban("#dev", "alice", True)) == ["#dev"]
    assert results(alice.join("#dev")) == ["forbidden"]


def test_a_server_operator_speaks_in_a_moderated_room_and_loses_it_with_set_oper_false():
    """+m: bob (no voice) speaks once a server operator; set_oper(False) ends it."""
    harness = ChatHarness()
    alice, bob, _carol = in_dev(harness)
    alice.set_moderated("#dev", True)
    with pytest.raises(ChatError):
        bob.say("hello", "#dev")
    bob.set_oper(True)
    said = results(bob.say("an operator speaks", "#dev"))
    harness.end_turn()
    assert said == ["#dev"]
    bob.set_oper(False)
    with pytest.raises(ChatError) as refused:
        bob.say("not any more", "#dev")
    assert refused.value.code == "forbidden"
    with pytest.raises(ChatError):
        bob.kick("#dev", "carol", "no")


def test_the_flag_ends_with_the_users_last_session():
    """Operator status lives on the in-memory user: a new login is no operator."""
    harness = ChatHarness()
    bob, _ = start(harness, "bob")
    bob.set_oper(True)
    bob.logout()
    again, _ = start(harness, "bob")
    assert not again.oper
