"""PRIVMSG and NOTICE are pipelined: a connection reads on while their commits are awaited.

Before, each message held every later line until its commit was answered, so one
IRC client could send one message per commit round trip (docs/benchmarks.md).
The commits wait here (``SlowDatabase``) to show what is in flight at once.
"""

import pytest

from chatd.config import Config
from chatd.frontends.irc.message import parse
from tests.frontends.irc.support import IRCHarness
from tests.support import SlowDatabase


def held_harness(**settings) -> tuple[IRCHarness, SlowDatabase]:
    """alice and bob on IRC, logged in, commits held from now on."""
    database = SlowDatabase()
    harness = IRCHarness(Config(bcrypt_rounds=4, rate_limit=None, **settings), database=database)
    harness.account("alice")
    harness.account("bob")
    return harness, database


def logged_in(harness: IRCHarness, name: str, port: int, caps=()):
    """``name`` on IRC with ``caps``, its welcome read."""
    client = harness.irc_client(port=port)
    client.login_with_pass(name, caps=caps)
    client.lines()
    return client


@pytest.mark.parametrize("bytewise", [False, True])
def test_messages_wait_on_their_commits_together_and_a_command_after_them_waits(bytewise):
    """Three PRIVMSGs are all committing at once; the PING behind them is answered
    only after all three were shown (echo-message), in the order they were sent."""
    harness, database = held_harness()
    alice = logged_in(harness, "alice", 50001, caps=["echo-message"])
    bob = logged_in(harness, "bob", 50002)
    alice.lines()
    database.holding = True
    sent = alice.send("PRIVMSG #lobby :one", "PRIVMSG #lobby :two", "NOTICE #lobby :three",
                      "PING sync", bytewise=bytewise)
    assert sent == []
    assert len(database.pending) == 3
    while database.pending:
        harness.commit_held()
    shown = [(parse(line).verb, parse(line).params[-1]) for line in alice.lines()]
    assert [text for _, text in shown] == ["one", "two", "three", "sync"]
    assert shown[-1][0] == "PONG"
    assert [parse(line).params[-1] for line in bob.lines()] == ["one", "two", "three"]


def test_no_more_messages_are_in_flight_than_the_pipeline_depth():
    """CHATD_PIPELINE_DEPTH=2: the third message waits for the first two commits, then
    goes; nothing is lost or reordered."""
    harness, database = held_harness(pipeline_depth=2)
    alice = logged_in(harness, "alice", 50001)
    bob = logged_in(harness, "bob", 50002)
    database.holding = True
    alice.send("PRIVMSG #lobby :one", "PRIVMSG #lobby :two", "PRIVMSG #lobby :three")
    assert len(database.pending) == 2
    harness.commit_held()
    assert len(database.pending) == 1
    harness.commit_held()
    assert [parse(line).params[-1] for line in bob.lines()] == ["one", "two", "three"]


def test_a_labeled_message_still_holds_the_lines_behind_it():
    """labeled-response: a labeled PRIVMSG's reply must not mix with the next command's,
    so the next line waits for its commit as before."""
    harness, database = held_harness()
    alice = logged_in(harness, "alice", 50001, caps=["labeled-response", "echo-message"])
    database.holding = True
    alice.send("@label=a1 PRIVMSG #lobby :one", "PRIVMSG #lobby :two")
    assert len(database.pending) == 1
    while database.pending:
        harness.commit_held()
    lines = [parse(line) for line in alice.lines()]
    assert [m.params[-1] for m in lines] == ["one", "two"]
    assert lines[0].tags.get("label") == "a1"


def test_a_refused_message_in_the_pipeline_does_not_stop_the_others():
    """A message to a room alice is not in is refused (404) while the others commit."""
    harness, database = held_harness()
    alice = logged_in(harness, "alice", 50001)
    bob = logged_in(harness, "bob", 50002)
    bob.send("JOIN #elsewhere")
    database.holding = True
    while database.pending:
        harness.commit_held()
    database.holding = True
    replies = alice.send("PRIVMSG #lobby :one", "PRIVMSG #elsewhere :no", "PRIVMSG #lobby :two")
    while database.pending:
        harness.commit_held()
    replies += alice.lines()
    assert "404" in [parse(line).verb for line in replies]
    assert [parse(line).params[-1] for line in bob.lines()
            if parse(line).verb == "PRIVMSG"] == ["one", "two"]
