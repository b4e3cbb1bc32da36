"""labeled-response: a client's ``label`` tag comes back on the reply to its command."""

import pytest

from chatd.frontends.irc.message import parse
from tests.frontends.irc.support import IRCHarness

CAPS = ("labeled-response", "batch", "echo-message", "message-tags", "server-time")


@pytest.fixture
def irc() -> IRCHarness:
    """An in-memory server with accounts alice and bob."""
    harness = IRCHarness()
    harness.account("alice")
    harness.account("bob")
    return harness


def logged_in(irc, name, caps=CAPS):
    """An IRC client logged in with PASS and ``caps``, its welcome read."""
    client = irc.irc_client()
    client.login_with_pass(name, caps=caps)
    return client


def test_labeled_response_is_offered(irc):
    """CAP LS lists labeled-response."""
    client = irc.irc_client()
    lines = client.send("CAP LS 302")
    assert "labeled-response" in parse(lines[0]).params[-1].split()


@pytest.mark.parametrize("bytewise", [False, True])
def test_a_single_line_reply_carries_the_label(irc, bytewise):
    """PING with a label: the PONG has the label tag."""
    client = logged_in(irc, "alice")
    lines = client.send("@label=abc PING token", bytewise=bytewise)
    assert len(lines) == 1
    message = parse(lines[0])
    assert message.verb == "PONG" and message.tags["label"] == "abc"


def test_a_command_without_reply_gets_ack(irc):
    """PONG answers nothing: the label comes back on an ACK."""
    client = logged_in(irc, "alice")
    assert client.send("@label=q1 PONG :x") == ["@label=q1 :chatd ACK"]


def test_an_echoed_room_message_is_the_labeled_reply(irc):
    """With echo-message, PRIVMSG to a room is answered by its own echo, labeled;
    the other member sees no label."""
    alice = logged_in(irc, "alice")
    bob = logged_in(irc, "bob")
    alice.lines()
    lines = alice.send("@label=m1 PRIVMSG #lobby :hello")
    assert len(lines) == 1
    message = parse(lines[0])
    assert message.verb == "PRIVMSG" and message.tags["label"] == "m1"
    heard = [parse(line) for line in bob.lines() if "PRIVMSG" in line]
    assert heard and "label" not in heard[-1].tags


def test_several_lines_come_in_a_labeled_response_batch(irc):
    """NAMES (353 and 366) with a label: one labeled-response batch around both."""
    client = logged_in(irc, "alice")
    lines = [parse(line) for line in client.send("@label=n1 NAMES #lobby")]
    assert lines[0].verb == "BATCH" and lines[0].tags["label"] == "n1"
    batch_id = lines[0].params[0][1:]
    assert lines[0].params[1] == "labeled-response"
    assert [m.verb for m in lines[1:-1]] == ["353", "366"]
    assert all(m.tags["batch"] == batch_id for m in lines[1:-1])
    assert lines[-1].verb == "BATCH" and lines[-1].params == (f"-{batch_id}",)


def test_a_join_with_history_is_one_batch_with_the_history_nested(irc):
    """JOIN of a room with history: the labeled batch holds JOIN, NAMES and the
    chathistory batch, which is nested in it."""
    bob = logged_in(irc, "bob")
    bob.send("JOIN #den", "PRIVMSG #den :earlier")
    client = logged_in(irc, "alice")
    lines = [parse(line) for line in client.send("@label=j1 JOIN #den")]
    outer = lines[0]
    assert outer.verb == "BATCH" and outer.tags["label"] == "j1"
    outer_id = outer.params[0][1:]
    verbs = [m.verb for m in lines]
    assert "JOIN" in verbs and "366" in verbs and "PRIVMSG" in verbs
    inner = next(m for m in lines[1:] if m.verb == "BATCH" and m.params[0].startswith("+"))
    assert inner.params[1] == "chathistory" and inner.tags["batch"] == outer_id
    history = next(m for m in lines if m.verb == "PRIVMSG")
    assert history.tags["batch"] == inner.params[0][1:]
    assert lines[-1].params == (f"-{outer_id}",)


def test_commands_behind_a_labeled_one_wait_for_its_reply(irc):
    """A command sent while a labeled one is answered runs after it: no mixing."""
    client = logged_in(irc, "alice")
    lines = client.send("@label=w1 NAMES #lobby", "PING after")
    assert parse(lines[-1]).verb == "PONG"
    assert parse(lines[-2]).verb == "BATCH" and parse(lines[-2]).params[0].startswith("-")


def test_without_the_capability_the_label_is_ignored(irc):
    """A client that did not ask for labeled-response gets no label and no ACK."""
    client = logged_in(irc, "alice", caps=("message-tags",))
    assert client.send("@label=x PONG :y") == []
    assert "label" not in parse(client.send("@label=x PING t")[0]).tags
