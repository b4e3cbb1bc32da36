"""``/history <user>`` on the line door (an extension): your direct messages with a
user, both ways, as HISTORYDM lines, oldest first, then ``OK history <user>``."""

from tests.support import ChatHarness


def test_history_of_a_user_is_the_conversation_both_ways():
    """Three DMs (one stored while bob was away); each side reads the same conversation;
    a count keeps the newest; a guest-free name with none: just OK."""
    harness = ChatHarness()
    alice = harness.client()
    alice.send("/register alice password1")
    alice.login("alice")
    harness.clock.advance(1)
    alice.send("/msg bob hi")  # no such user yet: refused, nothing kept
    bob = harness.client()
    bob.send("/register bob password1")
    bob.send("/quit")
    harness.clock.advance(1)
    assert alice.send("/msg bob while you were out")[-1] == "OK msg bob stored"
    bob = harness.client()
    bob.login("bob")
    harness.clock.advance(1)
    bob.send("/msg alice back now")
    harness.clock.advance(1)
    alice.send("/msg bob welcome")
    alice.lines()
    lines = alice.send("/history bob")
    assert lines == [
        "HISTORYDM 2025-11-25T10:00:02.000Z alice bob while you were out",
        "HISTORYDM 2025-11-25T10:00:03.000Z bob alice back now",
        "HISTORYDM 2025-11-25T10:00:04.000Z alice bob welcome",
        "OK history bob",
    ]
    bob.lines()
    assert bob.send("/history ALICE 2") == [*lines[1:3], "OK history ALICE"]
    assert alice.send("/history carol") == ["OK history carol"]
    assert alice.send("/history bob 0")[0].startswith("ERR bad-arguments")
    assert alice.send("/history b!b")[0].startswith("ERR invalid-name")
