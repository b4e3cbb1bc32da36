"""Room modes in the core: a moderated room lets only operators and voiced members speak."""

import pytest

from chatd.core.errors import ChatError
from tests.core.test_direct_history import start
from tests.support import ChatHarness


def test_moderated_rooms_and_voice():
    """+m refuses bob (forbidden, nothing committed); voice lets him speak; an operator
    always may; only an operator sets either."""
    harness = ChatHarness()
    alice, _ = start(harness, "alice")
    bob, _ = start(harness, "bob")
    alice.join("#dev")
    bob.join("#dev")
    with pytest.raises(ChatError):
        bob.set_moderated("#dev", True)
    alice.set_moderated("#dev", True)
    with pytest.raises(ChatError) as refused:
        bob.say("hello", "#dev")
    assert refused.value.code == "forbidden"
    said = []
    alice.say("operators speak", "#dev").addCallback(said.append)
    alice.set_voice("#dev", "bob", True)
    bob.say("voiced now", "#dev").addCallback(said.append)
    harness.end_turn()
    assert said == ["#dev", "#dev"]
    count = harness.database.connection.execute(
        "SELECT count(*) FROM room_messages WHERE text = 'hello'"
    ).fetchone()[0]
    assert count == 0
