"""The final-reply rule when commands wait on the database."""

import pytest

from chatd.config import Config
from chatd.storage.transactions import post_room_message
from tests.support import ChatHarness, SlowDatabase


def make_slow() -> tuple[ChatHarness, SlowDatabase]:
    database = SlowDatabase()
    return ChatHarness(database=database), database


def test_lines_wait_behind_a_command_that_waits_on_a_commit():
    """A /ping sent after a message is answered only after the message's OK."""
    harness, database = make_slow()
    alice = harness.logged_in("alice")
    database.holding = True
    assert alice.send("first", "/ping 1", "second", "/ping 2") == []
    harness.commit_held()
    assert alice.lines() == ["MSG #lobby alice first", "OK say #lobby", "OK ping 1"]
    harness.commit_held()
    assert alice.lines() == ["MSG #lobby alice second", "OK say #lobby", "OK ping 2"]


def test_nobody_sees_a_message_before_it_is_committed():
    """Members get MSG only once the message is in the database."""
    harness, database = make_slow()
    alice, bob = harness.logged_in("alice"), harness.logged_in("bob")
    alice.lines()
    database.holding = True
    alice.send("durable")
    assert bob.lines() == []
    assert database.pending[0][0] is post_room_message
    harness.commit_held()
    assert bob.lines() == ["MSG #lobby alice durable"]
    rows = database.connection.execute("SELECT text FROM room_messages").fetchall()
    assert rows == [("durable",)]


def test_reading_stops_while_a_full_line_waits():
    """While a command waits, the connection stops reading once a whole line is buffered."""
    harness, database = make_slow()
    alice = harness.logged_in("alice")
    database.holding = True
    alice.send("/join #side")
    assert alice.transport.producerState == "producing"
    alice.feed(b"x" * 5000)
    assert alice.transport.producerState == "paused"
    alice.feed(b"\n/ping after\n")
    harness.commit_held()
    assert alice.transport.producerState == "producing"
    assert alice.lines() == [
        "JOIN #side alice",
        "WHO #side alice",
        "OPS #side alice",
        "OK join #side",
        "ERR line-too-long lines are limited to 4096 bytes",
        "OK ping after",
    ]


def test_a_failed_commit_is_a_server_error_and_the_session_goes_on():
    """If the database fails, the client gets ERR server-error, not a hang or a crash."""
    harness, database = make_slow()
    alice = harness.logged_in("alice")
    database.fail_writes = OSError("disk full")
    assert alice.send("lost?") == ["ERR server-error the server failed; try again"]
    database.fail_writes = None
    assert alice.send("/ping ok") == ["OK ping ok"]


def test_stored_messages_go_back_if_the_session_ends_before_they_are_sent():
    """A session that disappears while its STORED messages are read leaves them stored."""
    harness, database = make_slow()
    harness.client().send("/register bob password1")
    alice = harness.logged_in("alice")
    alice.send("/msg bob kept for you")
    bob = harness.client()
    database.holding = True
    bob.send("/login bob password1")
    bob.close()  # The connection goes while the stored messages are being taken.
    harness.commit_held()
    database.holding = False
    harness.commit_held()
    again = harness.client()
    lines = again.send("/login bob password1")
    assert [line.split(" ", 2)[2] for line in lines if line.startswith("STORED")] == [
        "alice kept for you"
    ]


def test_room_messages_pipeline_and_are_answered_in_line_order():
    """Messages do not wait for each other's commit; their replies keep line order."""
    harness, database = make_slow()
    alice = harness.logged_in("alice")
    database.holding = True
    assert alice.send("one", "two", b"\xff", "/say #nowhere x", "three", "/ping p") == []
    assert [body for body, _args, _done in database.pending] == [post_room_message] * 3
    harness.commit_held()
    assert alice.lines() == [
        "MSG #lobby alice one",
        "MSG #lobby alice two",
        "MSG #lobby alice three",
        "OK say #lobby",
        "OK say #lobby",
        "ERR bad-encoding lines must be UTF-8",
        "ERR not-in-room you are not in #nowhere",
        "OK say #lobby",
        "OK ping p",
    ]


@pytest.mark.parametrize("depth", [1, 32])
def test_a_session_has_at_most_its_pipeline_depth_of_messages_in_flight(depth):
    """Past CHATD_PIPELINE_DEPTH messages waiting on commits, the next line waits its turn."""
    database = SlowDatabase()
    harness = ChatHarness(Config(bcrypt_rounds=4, rate_limit=None, pipeline_depth=depth),
                          database=database)
    alice = harness.logged_in("alice")
    database.holding = True
    alice.send(*(f"m{k}" for k in range(depth + 1)))
    assert len(database.pending) == depth
    harness.commit_held()
    assert len(database.pending) == 1
    harness.commit_held()
    finals = [line for line in alice.lines() if line.startswith("OK ")]
    assert finals == ["OK say #lobby"] * (depth + 1)
