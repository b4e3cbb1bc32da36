"""A further login of a user while the first session still arrives (issue 9, item 3).

The first session's history is paced by its reader; a client that stops
reading must not hold up the user's other logins.
"""

from tests.support import ChatHarness, Client, LineTransport


class StalledTransport(LineTransport):
    """A transport whose reader has stopped: past ``capacity`` bytes its producer stays paused."""

    capacity = 2048

    def __init__(self) -> None:
        super().__init__()
        self.held = 0

    def write(self, data: bytes) -> None:
        """Buffer ``data``; pause the producer past the capacity, for good."""
        super().write(data)
        self.held += len(data)
        if self.held > self.capacity and self.producer is not None:
            self.producer.pauseProducing()


def test_a_stalled_first_session_does_not_hold_up_a_second_login():
    """bob's first session stops reading in the middle of #lobby's history: a second login
    of bob still completes, gets #lobby, and can chat; the first is still arriving."""
    harness = ChatHarness()
    harness.client().send("/register bob password1")
    alice = harness.logged_in("alice")
    for number in range(50):
        assert alice.send(f"history line {number:02d} " + "h" * 80) == [
            f"MSG #lobby alice history line {number:02d} " + "h" * 80,
            "OK say #lobby",
        ]
    first = Client(harness, transport=StalledTransport())
    first.send("/login bob password1")
    first_lines = first.lines()
    # The window is full: the first session has not had all its history, nor OK login.
    assert first.transport.held > StalledTransport.capacity
    assert "OK login bob" not in first_lines
    second = harness.client()
    lines = second.send("/login bob password1")
    assert "OK login bob" in lines
    assert "WHO #lobby alice bob" in lines
    history = [line for line in lines if line.startswith("HISTORY #lobby ")]
    assert [line.split(" ", 5)[5] for line in history] == [
        f"line {number:02d} " + "h" * 80 for number in range(50)
    ]
    assert second.send("hello")[-1] == "OK say #lobby"
    assert "MSG #lobby bob hello" in alice.lines()
