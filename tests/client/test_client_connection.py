"""The line protocol over an in-memory transport: replies paired with their lines."""

from __future__ import annotations

import pytest
from twisted.internet import error
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure

from chatd.client.connection import (
    ChatProtocol,
    NotConnected,
    Purpose,
    ServerClosedSession,
)


class RecordingListener:
    """Keeps what the protocol reports, in order."""

    def __init__(self) -> None:
        self.events: list[tuple[str, object, object]] = []

    def connected(self, protocol: ChatProtocol) -> None:
        """Record the connection."""
        self.events.append(("connected", protocol, None))

    def line_received(self, line, command) -> None:
        """Record the line and the command it arrived under."""
        self.events.append(("line", line.raw, command.line if command else None))

    def disconnected(self, reason: Failure) -> None:
        """Record the end."""
        self.events.append(("disconnected", reason.type, None))


def connect() -> tuple[ChatProtocol, StringTransport, RecordingListener]:
    """A protocol connected to a StringTransport, greeted by the server."""
    listener = RecordingListener()
    protocol = ChatProtocol(listener)
    transport = StringTransport()
    protocol.makeConnection(transport)
    protocol.dataReceived(b"HELLO chatd 1 welcome\r\n")
    return protocol, transport, listener


def test_hello_fires_greeted() -> None:
    """The first line tells the client the server is ready."""
    protocol, _, _ = connect()
    greeting = protocol.greeted.result
    assert (greeting.kind, greeting.fields) == ("HELLO", ("chatd", "1", "welcome"))


def test_each_line_gets_its_own_final_reply_in_order() -> None:
    """Two commands in flight are answered by the next two final replies, in order."""
    protocol, transport, listener = connect()
    first = protocol.send_command("/join #dev")
    second = protocol.send_command("/msg bob hi")
    assert transport.value() == b"/join #dev\n/msg bob hi\n"
    protocol.dataReceived(
        b"JOIN #dev alice\r\nWHO #dev alice\r\nOK join #dev\r\n"
        b"MSG #lobby carol unrelated\r\nDM alice bob hi\r\nOK msg bob delivered\r\n"
    )
    assert first.result.raw == "OK join #dev"
    assert second.result.raw == "OK msg bob delivered"
    lines = [(raw, command) for kind, raw, command in listener.events if kind == "line"]
    assert lines[1:] == [
        ("JOIN #dev alice", "/join #dev"),
        ("WHO #dev alice", "/join #dev"),
        ("OK join #dev", "/join #dev"),
        ("MSG #lobby carol unrelated", "/msg bob hi"),
        ("DM alice bob hi", "/msg bob hi"),
        ("OK msg bob delivered", "/msg bob hi"),
    ]


def test_events_with_nothing_pending_belong_to_no_command() -> None:
    """Lines arriving while no line waits are plain events."""
    protocol, _, listener = connect()
    protocol.dataReceived(b"MSG #lobby bob hi\r\n")
    assert listener.events[-1] == ("line", "MSG #lobby bob hi", None)


def test_lines_split_across_reads_and_bare_lf_are_handled() -> None:
    """TCP delivers bytes, not lines; a bare LF ends a line as well as CRLF."""
    protocol, _, listener = connect()
    replied = protocol.send_command("/ping x")
    protocol.dataReceived(b"OK pi")
    assert not replied.called
    protocol.dataReceived(b"ng x\r\nMSG #a b c\n")
    assert replied.result.raw == "OK ping x"
    assert listener.events[-1] == ("line", "MSG #a b c", None)


def test_invalid_utf8_from_the_server_is_replaced_not_fatal() -> None:
    """A bad byte must not take the client down."""
    protocol, _, listener = connect()
    protocol.dataReceived(b"MSG #lobby bob caf\xe9\r\n")
    assert listener.events[-1] == ("line", "MSG #lobby bob caf\ufffd", None)


def test_ping_is_answered_by_itself_and_its_reply_is_not_a_users() -> None:
    """Keep-alive needs no help; the OK pong settles the pong, not a user's command."""
    protocol, transport, listener = connect()
    typed = protocol.send_command("/who")
    protocol.dataReceived(b"PING 42\r\n")
    assert transport.value() == b"/who\n/pong 42\n"
    protocol.dataReceived(b"WHO #lobby alice\r\nOK who #lobby\r\nOK pong 42\r\n")
    assert typed.result.raw == "OK who #lobby"
    assert listener.events[-1] == ("line", "OK pong 42", "/pong 42")


def test_bye_fails_what_can_no_longer_be_answered() -> None:
    """After BYE no line is answered: waiting for replies would hang forever."""
    protocol, _, _ = connect()
    quitting = protocol.send_command("/quit")
    unanswered = protocol.send_command("/rooms")
    protocol.dataReceived(b"OK quit\r\nBYE quit\r\n")
    assert quitting.result.raw == "OK quit"
    assert unanswered.result.type is ServerClosedSession
    unanswered.addErrback(lambda _: None)
    assert not protocol.usable
    refused = protocol.send_command("/rooms")
    assert refused.result.type is NotConnected
    refused.addErrback(lambda _: None)


def test_losing_the_connection_fails_pending_lines_then_tells_the_listener() -> None:
    """A command in flight when the connection drops learns why."""
    protocol, _, listener = connect()
    waiting = protocol.send_command("/msg bob hi")
    protocol.connectionLost(Failure(error.ConnectionLost()))
    assert waiting.result.type is error.ConnectionLost
    waiting.addErrback(lambda _: None)
    assert listener.events[-1] == ("disconnected", error.ConnectionLost, None)


def test_losing_the_connection_before_hello_fails_greeted() -> None:
    """Whoever waits for HELLO hears about the failure instead of waiting forever."""
    listener = RecordingListener()
    protocol = ChatProtocol(listener)
    protocol.makeConnection(StringTransport())
    protocol.connectionLost(Failure(error.ConnectionRefusedError()))
    with pytest.raises(error.ConnectionRefusedError):
        protocol.greeted.result.raiseException()
    protocol.greeted.addErrback(lambda _: None)


def test_long_lines_are_fine_but_a_line_without_end_drops_the_connection() -> None:
    """Big WHO lines pass; a server that never ends a line is not buffered forever."""
    protocol, transport, listener = connect()
    members = " ".join(f"user{number}" for number in range(5000))
    protocol.dataReceived(f"WHO #big {members}\r\n".encode())
    assert listener.events[-1] == ("line", f"WHO #big {members}", None)
    protocol.dataReceived(b"x" * (protocol.MAX_LENGTH + 1))
    assert transport.disconnecting


def test_purpose_travels_with_the_command() -> None:
    """The session decides what to show by why a line was sent."""
    protocol, _, _ = connect()
    protocol.send_command("/login alice pw", Purpose.RESUME)
    assert protocol._pending[0].purpose is Purpose.RESUME
