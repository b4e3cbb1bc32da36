"""What an idle logged-in session keeps: slotted objects and no emptied containers.

The memory itself is measured by ``scripts/bench.py sessions --room #lobby``
(docs/benchmarks.md); these tests only pin down the shapes that keep it small.
"""

import pytest

from chatd.auth.throttles import TokenBucket
from chatd.core.rooms import User
from chatd.core.session import Session
from chatd.frontends.limits import ConnectionGuard, SendQueue
from chatd.ops.telemetry import ObservedLogout
from tests.support import ChatHarness


@pytest.mark.parametrize(
    "kind", [SendQueue, ConnectionGuard, TokenBucket, Session, User, ObservedLogout]
)
def test_per_session_classes_have_no_instance_dict(kind):
    """Every per-session class is slotted: its instances carry no ``__dict__``."""
    assert "__slots__" in vars(kind)
    assert "__dict__" not in dir(kind)


def test_a_session_in_the_lobby_keeps_no_queues_once_its_history_is_sent():
    """Login shows #lobby's history through a bulk reply; afterwards nothing waits.

    The send queue lets go of its deques once they are empty, and the logout
    the protocol keeps is a slotted ``ObservedLogout``, not a closure.
    """
    harness = ChatHarness()
    talker = harness.logged_in("alice")
    talker.send("/say #lobby hello")
    idle = harness.logged_in("bob")
    lines = idle.lines()
    output = idle.protocol.output
    assert output._waiting is None
    assert output._confirming is None
    assert output.queued == 0
    assert isinstance(idle.protocol._logout, ObservedLogout)
    assert not hasattr(idle.protocol._logout, "__dict__")
    # The queue still works after letting go of its deque.
    talker.send("/say #lobby again")
    assert any(line.endswith("again") for line in idle.lines()), lines
