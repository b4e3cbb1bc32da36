"""The session on top of the protocol: logging in, showing, resuming after a reconnect.

The server is played by the test over StringTransport; reconnect timing runs
on a ``task.Clock``.
"""

from __future__ import annotations

import datetime
from collections import deque

from hypothesis import given
from hypothesis import strategies as st
from twisted.application.internet import backoffPolicy
from twisted.internet import defer, error, task
from twisted.internet.interfaces import IStreamClientEndpoint
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure
from zope.interface import implementer

from chatd.client.commands import Quit, SendLine, ShowHelp
from chatd.client.connection import ChatFactory, Purpose
from chatd.client.render import Renderer
from chatd.client.runners import InteractiveClient, default_retry_policy
from chatd.client.session import ChatSession, first_unseen
from chatd.client.state import ChatState

NOW = datetime.datetime(2026, 11, 25, 12, 0, tzinfo=datetime.UTC)
T1 = "2026-11-25T10:00:00.000Z"
T2 = "2026-11-25T10:01:00.000Z"
T3 = "2026-11-25T10:02:00.000Z"


class ServerSide:
    """The test's end of one connection: what the client sent, and lines to send it."""

    def __init__(self, protocol, transport: StringTransport) -> None:
        self.protocol = protocol
        self.transport = transport

    def received(self) -> list[str]:
        """The lines the client sent since the last call."""
        data = self.transport.value().decode()
        self.transport.clear()
        return data.splitlines()

    def send(self, *lines: str) -> None:
        """Deliver server lines to the client."""
        self.protocol.dataReceived("".join(f"{line}\r\n" for line in lines).encode())

    def drop(self) -> None:
        """The connection breaks."""
        self.protocol.connectionLost(Failure(error.ConnectionLost("cable cut")))

    def close(self) -> None:
        """The server closes the connection cleanly."""
        self.protocol.connectionLost(Failure(error.ConnectionDone()))


@implementer(IStreamClientEndpoint)
class ScriptedEndpoint:
    """Fails the connection attempts it is told to fail, connects the others in memory."""

    def __init__(self, *failures: Exception) -> None:
        self.failures = deque(failures)
        self.servers: list[ServerSide] = []
        self.attempts = 0

    def connect(self, factory):
        """One attempt: a scripted failure, or a connection to a StringTransport."""
        self.attempts += 1
        if self.failures:
            return defer.fail(self.failures.popleft())
        protocol = factory.buildProtocol(None)
        transport = StringTransport()
        protocol.makeConnection(transport)
        self.servers.append(ServerSide(protocol, transport))
        return defer.succeed(protocol)


class Screen:
    """Collects what the client shows, problems included."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def show(self, text: str) -> None:
        """Record a shown line."""
        self.lines.append(text)

    def take(self) -> list[str]:
        """What was shown since the last call."""
        taken, self.lines = self.lines, []
        return taken


def make_session(screen: Screen, *, raw: bool = False, **options) -> ChatSession:
    """A colourless session showing onto ``screen``, with times in UTC."""
    state = ChatState()
    renderer = Renderer(colour=False, whoami=state.me, timezone=datetime.UTC, now=lambda: NOW)
    return ChatSession(
        state, renderer, show=screen.show, raw=raw, address="chat.example:8004", **options
    )


def connect(session: ChatSession, endpoint: ScriptedEndpoint | None = None) -> ServerSide:
    """Connect the session through a fresh in-memory connection."""
    endpoint = endpoint or ScriptedEndpoint()
    endpoint.connect(ChatFactory(session))
    return endpoint.servers[-1]


def log_in(session: ChatSession, server: ServerSide, purpose: Purpose = Purpose.LOGIN):
    """Start the session as alice, the server answering like a first login."""
    session.credentials = ("alice", "correct horse")
    started = session.start(purpose)
    server.send("HELLO chatd 1 welcome")
    assert server.received() == ["/login alice correct horse"]
    server.send(
        "JOIN #lobby alice",
        "WHO #lobby alice bob",
        f"HISTORY #lobby {T1} bob good morning",
        "OK login alice",
    )
    return started


def test_first_login_shows_greeting_room_and_history() -> None:
    """An interactive login shows everything it brings, history marked as past."""
    screen = Screen()
    session = make_session(screen)
    server = connect(session)
    started = log_in(session, server)
    assert started.result is True
    assert screen.take() == [
        "* connected to chatd (protocol 1): welcome",
        "* alice joined #lobby",
        "* in #lobby (2): alice, bob",
        "(past 10:00) [#lobby] <bob> good morning",
        "* logged in as alice",
    ]
    assert session.ready


def test_quiet_login_shows_only_what_would_otherwise_be_lost() -> None:
    """Pipe mode's login hides room noise but never stored messages."""
    screen = Screen()
    session = make_session(screen)
    server = connect(session)
    session.credentials = ("alice", "pw")
    started = session.start(Purpose.QUIET_LOGIN)
    server.send("HELLO chatd 1 welcome")
    server.received()
    server.send(
        "JOIN #lobby alice",
        "WHO #lobby alice",
        f"HISTORY #lobby {T1} bob old news",
        f"STORED {T2} bob call me",
        "OK login alice",
    )
    assert started.result is True
    assert screen.take() == [
        "* connected to chatd (protocol 1): welcome",
        "(stored 10:01) [DM bob -> alice] call me",
    ]


def test_a_refused_login_is_reported_and_not_retried_with_the_same_password() -> None:
    """Bad credentials are forgotten, so a reconnect does not knock with them again."""
    screen = Screen()
    session = make_session(screen)
    server = connect(session)
    session.credentials = ("alice", "wrong")
    started = session.start(Purpose.LOGIN)
    server.send("HELLO chatd 1 hi")
    server.received()
    server.send("ERR bad-credentials unknown user or wrong password")
    assert started.result is False
    assert screen.take()[-1] == "! bad-credentials: unknown user or wrong password"
    assert session.credentials is None
    assert session.ready


def test_lines_typed_before_the_session_is_ready_wait_for_it() -> None:
    """Text typed while the login is answered goes out after it, not before."""
    screen = Screen()
    session = make_session(screen)
    server = connect(session)
    session.credentials = ("alice", "pw")
    session.start(Purpose.LOGIN)
    session.send_typed("hello everyone")
    server.send("HELLO chatd 1 hi")
    assert server.received() == ["/login alice pw"]
    server.send("OK login alice")
    assert server.received() == ["hello everyone"]


def test_a_typed_login_is_remembered_for_reconnects_and_passwd_updates_it() -> None:
    """The client can log in again only if it knows how; /passwd changes that."""
    screen = Screen()
    session = make_session(screen)
    server = connect(session)
    session.start(Purpose.LOGIN)
    server.send("HELLO chatd 1 hi")
    session.send_typed("/login ALICE pass with spaces")
    server.send("JOIN #lobby alice", "WHO #lobby alice", "OK login alice")
    assert session.credentials == ("alice", "pass with spaces")
    session.send_typed("/passwd whatever newpassword")
    server.send("OK passwd")
    assert session.credentials == ("alice", "newpassword")


def test_a_line_left_unanswered_by_a_dropped_connection_is_reported() -> None:
    """The user learns the line may not have arrived; the password never appears."""
    screen = Screen()
    session = make_session(screen)
    server = connect(session)
    log_in(session, server)
    screen.take()
    pending = session.send_typed("/passwd old-secret new-secret")
    server.drop()
    assert pending.called
    pending.addErrback(lambda _: None)
    assert screen.take() == [
        "! no reply to '/passwd' before the connection ended; it may not have arrived",
        "! disconnected from chat.example:8004: Connection to the other side was lost "
        "in a non-clean fashion: cable cut",
    ]


def test_lines_typed_while_offline_are_sent_after_reconnecting() -> None:
    """Typing on while the server restarts loses nothing."""
    screen = Screen()
    session = make_session(screen)
    endpoint = ScriptedEndpoint()
    log_in(session, connect(session, endpoint))
    endpoint.servers[-1].drop()
    screen.take()
    session.send_typed("anyone here?")
    assert screen.take() == ["* not connected; will send that when reconnected"]
    server = connect(session, endpoint)
    session.resume()
    server.send("HELLO chatd 1 hi")
    server.received()
    server.send("JOIN #lobby alice", "WHO #lobby alice", "OK login alice")
    assert server.received() == ["anyone here?"]


def test_resume_rejoins_rooms_restores_the_current_room_and_shows_only_missed_messages() -> None:
    """After a reconnect the user is back where they were, without replayed noise."""
    screen = Screen()
    session = make_session(screen)
    endpoint = ScriptedEndpoint()
    server = connect(session, endpoint)
    log_in(session, server)
    session.send_typed("/join #dev")
    server.send(
        "JOIN #dev alice", "WHO #dev alice", f"HISTORY #dev {T1} carol dev talk", "OK join #dev"
    )
    session.send_typed("/join #lobby")
    server.send("OK join #lobby")
    server.send("MSG #lobby bob still there?")
    assert session.state.current_room == "#lobby"
    server.received()
    server.drop()
    screen.take()

    server = connect(session, endpoint)
    resumed = session.resume()
    server.send("HELLO chatd 1 welcome back")
    assert server.received() == ["/login alice correct horse"]
    server.send(
        "JOIN #lobby alice",
        "WHO #lobby alice",
        f"HISTORY #lobby {T1} bob good morning",
        f"HISTORY #lobby {T2} bob still there?",
        f"HISTORY #lobby {T3} bob you missed this",
        "OK login alice",
    )
    assert server.received() == ["/join #dev"]
    assert session.state.prompt_view().text() == "(offline) alice #lobby> "
    server.send(
        "JOIN #dev alice", "WHO #dev alice", f"HISTORY #dev {T1} carol dev talk", "OK join #dev"
    )
    assert server.received() == ["/join #lobby"]
    server.send("OK join #lobby")
    assert resumed.result is True
    assert screen.take() == [
        "(past 10:02) [#lobby] <bob> you missed this",
        "* reconnected as alice; back in #lobby, #dev",
    ]
    assert session.state.current_room == "#lobby"
    assert session.state.prompt_view().text() == "alice #lobby> "


def test_resume_without_credentials_says_it_is_not_logged_in() -> None:
    """A guest that reconnects is told it has to log in."""
    screen = Screen()
    session = make_session(screen)
    endpoint = ScriptedEndpoint()
    connect(session, endpoint).drop()
    server = connect(session, endpoint)
    session.resume()
    server.send("HELLO chatd 1 hi")
    assert screen.take()[-1] == "* reconnected to chat.example:8004 (not logged in)"
    assert server.received() == []


def test_bye_that_forbids_coming_back_is_passed_on() -> None:
    """Kicked means stop; shutdown means come back later."""
    screen = Screen()
    session = make_session(screen)
    dismissals: list[str] = []
    session.on_dismissed = dismissals.append
    server = connect(session)
    server.send("HELLO chatd 1 hi", "BYE shutdown")
    assert dismissals == []
    server = connect(session)
    server.send("HELLO chatd 1 hi", "BYE kicked")
    assert dismissals == ["kicked"]


def test_raw_mode_shows_every_line_as_it_came() -> None:
    """--raw hides nothing, not even keep-alives, and renders nothing."""
    screen = Screen()
    session = make_session(screen, raw=True)
    server = connect(session)
    server.send("HELLO chatd 1 hi", "PING 7", "MSG #lobby bob hi")
    assert screen.take() == ["HELLO chatd 1 hi", "PING 7", "MSG #lobby bob hi"]
    assert server.received() == ["/pong 7"]


def test_first_unseen_aligns_the_replay_with_what_was_seen() -> None:
    """Examples: nothing seen, nothing new, some new, and a replay that disagrees."""
    assert first_unseen([], ["a", "b"]) == 0
    assert first_unseen(["a", "b"], ["a", "b"]) == 2
    assert first_unseen(["x", "a", "b"], ["a", "b", "c", "d"]) == 2
    assert first_unseen(["a", "b"], ["p", "q"]) == 0
    assert first_unseen(["hi", "hi"], ["hi", "hi", "hi"]) == 3


@given(
    seen=st.lists(st.sampled_from(["hi", "ok", "yes", "no"]), max_size=80),
    new=st.lists(st.integers(min_value=0, max_value=9).map(lambda n: f"new {n}"), max_size=20),
)
def test_first_unseen_shows_exactly_the_new_messages(seen: list[str], new: list[str]) -> None:
    """Whatever was seen, a replay of its end plus new messages shows just the new ones."""
    history = (seen + new)[-50:]
    assert history[first_unseen(seen, history) :] == new[-50:]


class FakeTerminal:
    """Stands in for the input thread's controller."""

    def __init__(self) -> None:
        self.redraws = 0
        self.stopped = False

    def redraw(self) -> None:
        """Count redraws."""
        self.redraws += 1

    def request_stop(self) -> None:
        """Remember that the client asked the input to stop."""
        self.stopped = True


def make_interactive(endpoint: ScriptedEndpoint, clock: task.Clock, screen: Screen):
    """An InteractiveClient over the scripted endpoint, backoff without jitter."""
    session = make_session(screen)
    session.credentials = ("alice", "pw")
    stops: list[bool] = []
    client = InteractiveClient(
        clock,
        session,
        endpoint,
        show=screen.show,
        stop_reactor=lambda: stops.append(True),
        retry_policy=backoffPolicy(initialDelay=0.5, factor=2.0, maxDelay=15.0, jitter=lambda: 0),
    )
    terminal = FakeTerminal()
    client.attach_terminal(terminal)
    return client, session, terminal, stops


def test_cannot_connect_retries_with_growing_delays_and_says_so() -> None:
    """Each failed attempt is reported with the wait before the next one."""
    clock = task.Clock()
    screen = Screen()
    refused = [error.ConnectionRefusedError("refused") for _ in range(6)]
    endpoint = ScriptedEndpoint(*refused)
    client, session, _, _ = make_interactive(endpoint, clock, screen)
    client.start()
    delays = []
    for _ in range(6):
        pending = clock.getDelayedCalls()
        assert len(pending) == 1
        delays.append(pending[0].getTime() - clock.seconds())
        clock.advance(delays[-1])
    assert delays == [1.0, 2.0, 4.0, 8.0, 15.0, 15.0]
    assert endpoint.attempts == 7
    shown = screen.take()
    assert shown[0].startswith("! cannot connect to chat.example:8004: Connection was refused")
    assert shown[0].endswith("; trying again in 1.0 s")
    assert session.protocol is not None


def test_a_dropped_connection_is_announced_reconnected_and_resumed() -> None:
    """Server restart: the user sees the drop, the wait, and the return."""
    clock = task.Clock()
    screen = Screen()
    endpoint = ScriptedEndpoint()
    client, session, terminal, _ = make_interactive(endpoint, clock, screen)
    client.start()
    server = endpoint.servers[-1]
    server.send("HELLO chatd 1 hi")
    assert server.received() == ["/login alice pw"]
    server.send("JOIN #lobby alice", "WHO #lobby alice", "OK login alice")
    screen.take()

    server.send("BYE shutdown")
    server.close()
    assert screen.take() == [
        "* the server closed the connection (shutdown)",
        "! disconnected from chat.example:8004",
        "* trying again in 1.0 s",
    ]
    assert session.state.prompt_view().text() == "(offline) alice #lobby> "
    clock.advance(1.0)
    server = endpoint.servers[-1]
    server.send("HELLO chatd 1 back")
    assert server.received() == ["/login alice pw"]
    server.send("JOIN #lobby alice", "WHO #lobby alice", "OK login alice")
    assert screen.take() == ["* reconnected as alice; back in #lobby"]
    assert session.state.prompt_view().text() == "alice #lobby> "
    assert terminal.redraws > 0


def test_the_default_backoff_starts_soon_and_caps_at_fifteen_seconds() -> None:
    """A restart is usually over in a second; a long outage is polled gently."""
    policy = default_retry_policy()
    assert 1.0 <= policy(1) < 1.5
    assert 15.0 <= policy(30) < 15.5


def test_quit_says_goodbye_stops_reconnecting_and_ends_the_run() -> None:
    """/quit is answered, the service stops, the input thread and reactor are told."""
    clock = task.Clock()
    screen = Screen()
    endpoint = ScriptedEndpoint()
    client, _, terminal, stops = make_interactive(endpoint, clock, screen)
    client.start()
    server = endpoint.servers[-1]
    server.send("HELLO chatd 1 hi")
    server.send("OK login alice")
    server.received()
    client.deliver(Quit("/quit later"))
    assert server.received() == ["/quit later"]
    server.send("OK quit", "BYE quit")
    assert server.transport.disconnecting
    server.drop()
    assert stops == [True]
    assert terminal.stopped
    assert clock.getDelayedCalls() == []
    assert client.exit_code == 0


def test_help_is_answered_locally_and_text_is_sent() -> None:
    """/help never reaches the server; other lines do."""
    clock = task.Clock()
    screen = Screen()
    endpoint = ScriptedEndpoint()
    client, _, _, _ = make_interactive(endpoint, clock, screen)
    client.start()
    server = endpoint.servers[-1]
    server.send("HELLO chatd 1 hi", "OK login alice")
    server.received()
    screen.take()
    client.deliver(ShowHelp("msg"))
    client.deliver(SendLine("hello"))
    assert screen.take()[0].startswith("/msg <user> <text>")
    assert server.received() == ["hello"]


def test_being_kicked_ends_the_client_instead_of_reconnecting() -> None:
    """Coming straight back after a kick would defeat it."""
    clock = task.Clock()
    screen = Screen()
    endpoint = ScriptedEndpoint()
    client, _, terminal, stops = make_interactive(endpoint, clock, screen)
    client.start()
    server = endpoint.servers[-1]
    server.send("HELLO chatd 1 hi", "OK login alice")
    server.send("BYE kicked")
    server.drop()
    assert "! not reconnecting after BYE kicked" in screen.take()
    assert stops == [True]
    assert terminal.stopped
    assert clock.getDelayedCalls() == []
    assert client.exit_code == 3


def logged_in_interactive(clock: task.Clock, screen: Screen):
    """An InteractiveClient logged in as alice over an in-memory connection."""
    endpoint = ScriptedEndpoint()
    client, _, _, stops = make_interactive(endpoint, clock, screen)
    client.start()
    server = endpoint.servers[-1]
    server.send("HELLO chatd 1 hi", "JOIN #lobby alice", "WHO #lobby alice", "OK login alice")
    server.received()
    screen.take()
    return client, server, stops


def test_typed_lines_go_one_at_a_time_in_order() -> None:
    """A paste is sent line by line, each after the previous line's final reply."""
    clock = task.Clock()
    screen = Screen()
    client, server, _ = logged_in_interactive(clock, screen)
    for number in range(3):
        client.deliver(SendLine(f"line {number}"))
    assert server.received() == ["line 0"]
    assert client.waiting_lines == 3
    server.send("MSG #lobby alice line 0", "OK say #lobby")
    assert server.received() == ["line 1"]
    server.send("MSG #lobby alice line 1", "OK say #lobby")
    assert server.received() == ["line 2"]
    server.send("MSG #lobby alice line 2", "OK say #lobby")
    assert server.received() == []
    assert client.waiting_lines == 0


def test_a_rate_limited_typed_line_is_sent_again_before_any_later_line() -> None:
    """ERR rate-limited: the line goes again after 0.25 s, then 0.5 s; nothing is lost,
    nothing overtakes it, and the user sees one notice instead of the errors. The
    lines still waiting follow 0.5 s apart; once none waits, a typed line goes at once."""
    clock = task.Clock()
    screen = Screen()
    client, server, _ = logged_in_interactive(clock, screen)
    client.deliver(SendLine("first"))
    client.deliver(SendLine("second"))
    assert server.received() == ["first"]
    server.send("ERR rate-limited over 1 lines a second (bursts of 2); line dropped")
    shown = screen.take()
    assert len(shown) == 1 and "limits how fast" in shown[0]
    assert server.received() == []
    clock.advance(0.25)
    assert server.received() == ["first"]
    server.send("ERR rate-limited over 1 lines a second (bursts of 2); line dropped")
    clock.advance(0.25)
    assert server.received() == []
    clock.advance(0.25)
    assert server.received() == ["first"]
    server.send("MSG #lobby alice first", "OK say #lobby")
    assert server.received() == []
    clock.advance(0.5)
    assert server.received() == ["second"]
    server.send("MSG #lobby alice second", "OK say #lobby")
    assert screen.take() == ["[#lobby] <alice> first", "[#lobby] <alice> second"]
    client.deliver(SendLine("typed later"))
    assert server.received() == ["typed later"]
    assert clock.getDelayedCalls() == []


def test_a_line_refused_eight_times_is_reported_and_the_next_one_goes() -> None:
    """The retries are bounded: after the eighth refusal the error is shown."""
    clock = task.Clock()
    screen = Screen()
    client, server, _ = logged_in_interactive(clock, screen)
    client.deliver(SendLine("stubborn"))
    client.deliver(SendLine("after"))
    refusal = "ERR rate-limited over 1 lines a second (bursts of 2); line dropped"
    for attempt in range(1, 9):
        assert server.received() == ["stubborn"], attempt
        server.send(refusal)
        clock.advance(4.0)
    assert server.received() == ["after"]
    assert any("rate-limited" in line or "too fast" in line for line in screen.take()[1:])


def test_quit_waits_for_the_lines_typed_before_it() -> None:
    """Ctrl-D right after a paste: every pasted line is sent before /quit."""
    clock = task.Clock()
    screen = Screen()
    client, server, stops = logged_in_interactive(clock, screen)
    client.deliver(SendLine("pasted"))
    client.deliver(Quit("/quit"))
    assert server.received() == ["pasted"]
    server.send("ERR rate-limited over 1 lines a second (bursts of 2); line dropped")
    clock.advance(0.25)
    assert server.received() == ["pasted"]
    server.send("MSG #lobby alice pasted", "OK say #lobby")
    clock.advance(0.25)
    assert server.received() == ["/quit"]
    server.send("OK quit", "BYE quit")
    server.drop()
    assert stops == [True]
