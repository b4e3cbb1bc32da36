"""Pipe mode's logic: one line at a time, exit codes, and patience with rate limits.

The server is played over StringTransport and time runs on a ``task.Clock``;
the end-to-end pipe tests against the real server are in test_client_e2e.
"""

from __future__ import annotations

from twisted.internet import error, task

from chatd.client.runners import (
    EXIT_COMMAND_FAILED,
    EXIT_LOGIN_FAILED,
    EXIT_NO_CONNECTION,
    EXIT_OK,
    QUIT_TIMEOUT,
    RATE_LIMIT_ATTEMPTS,
    PipeClient,
)
from tests.client.test_client_session import Screen, ScriptedEndpoint, make_session


class PipeRun:
    """A PipeClient wired to a scripted endpoint, a clock and two screens."""

    def __init__(self, *failures: Exception, user: str | None = "alice") -> None:
        self.clock = task.Clock()
        self.stdout = Screen()
        self.stderr = Screen()
        self.endpoint = ScriptedEndpoint(*failures)
        self.session = make_session(self.stdout, show_problem=self.stderr.show, show_greeting=False)
        if user is not None:
            self.session.credentials = (user, "pw")
        self.stopped = False
        self.input_started = False
        self.client = PipeClient(
            self.clock,
            self.session,
            self.endpoint,
            show=self.stdout.show,
            show_problem=self.stderr.show,
            stop_reactor=self._stop,
            start_input=self._start_input,
        )

    def _stop(self) -> None:
        self.stopped = True

    def _start_input(self) -> None:
        self.input_started = True

    @property
    def server(self):
        """The test's end of the current connection."""
        return self.endpoint.servers[-1]

    def start_logged_in(self) -> None:
        """Connect and answer the login."""
        self.client.start()
        self.server.send("HELLO chatd 1 hi")
        assert self.server.received() == ["/login alice pw"]
        self.server.send("JOIN #lobby alice", "WHO #lobby alice", "OK login alice")

    def finish(self) -> None:
        """End of input: the client says /quit; the server answers and closes."""
        self.client.input_ended()
        assert self.server.received() == ["/quit"]
        self.server.send("OK quit", "BYE quit")
        self.server.close()


def test_input_is_read_only_after_the_login_succeeded() -> None:
    """A script's lines must not race the login."""
    run = PipeRun()
    run.client.start()
    assert not run.input_started
    run.server.send("HELLO chatd 1 hi")
    run.server.received()
    run.server.send("OK login alice")
    assert run.input_started


def test_each_line_waits_for_the_reply_to_the_one_before() -> None:
    """Sequential, as the final-reply rule allows a script to rely on."""
    run = PipeRun()
    run.start_logged_in()
    run.client.line_available("first\n")
    run.client.line_available("/msg bob second\n")
    assert run.server.received() == ["first"]
    run.server.send("MSG #lobby alice first", "OK say #lobby")
    assert run.server.received() == ["/msg bob second"]
    run.server.send("DM alice bob second", "OK msg bob delivered")
    run.finish()
    assert run.stopped
    assert run.client.exit_code == EXIT_OK
    assert run.stdout.take() == ["[#lobby] <alice> first", "[DM alice -> bob] second"]
    assert run.stderr.take() == []


def test_an_err_reply_makes_the_exit_code_one_and_goes_to_stderr() -> None:
    """Later lines still run; the script learns something failed."""
    run = PipeRun()
    run.start_logged_in()
    run.client.line_available("/who #nowhere\n")
    run.server.send("ERR not-in-room you are not in #nowhere")
    run.client.line_available("/ping\n")
    assert run.server.received() == ["/who #nowhere", "/ping"]
    run.server.send("OK ping")
    run.finish()
    assert run.client.exit_code == EXIT_COMMAND_FAILED
    assert run.stderr.take() == ["! not-in-room: you are not in #nowhere"]


def test_help_is_local_and_quit_ends_the_input() -> None:
    """/help prints the client's help; nothing after /quit is sent."""
    run = PipeRun()
    run.start_logged_in()
    run.client.line_available("/help quit\n")
    run.client.line_available("/quit bye now\n")
    run.client.line_available("never sent\n")
    assert run.server.received() == ["/quit bye now"]
    run.server.send("OK quit", "BYE quit")
    run.server.close()
    assert run.stopped
    assert run.client.exit_code == EXIT_OK
    assert run.stdout.take()[0].startswith("/quit [<text>]")


def test_a_rate_limited_line_is_sent_again_with_growing_waits() -> None:
    """The refused line was not carried out, so trying it again later is safe."""
    run = PipeRun()
    run.start_logged_in()
    run.client.line_available("hello\n")
    waits = []
    for _ in range(3):
        assert run.server.received() == ["hello"]
        run.server.send("ERR rate-limited slow down")
        waits.append(run.clock.getDelayedCalls()[0].getTime() - run.clock.seconds())
        run.clock.advance(waits[-1])
    assert waits == [0.25, 0.5, 1.0]
    assert run.server.received() == ["hello"]
    run.server.send("MSG #lobby alice hello", "OK say #lobby")
    run.finish()
    assert run.client.exit_code == EXIT_OK
    assert run.stderr.take() == []


def test_a_line_rate_limited_every_time_finally_counts_as_failed() -> None:
    """Patience has an end; then the error is shown like any other."""
    run = PipeRun()
    run.start_logged_in()
    run.client.line_available("hello\n")
    for attempt in range(1, RATE_LIMIT_ATTEMPTS + 1):
        assert run.server.received() == ["hello"]
        run.server.send("ERR rate-limited slow down")
        if attempt < RATE_LIMIT_ATTEMPTS:
            run.clock.advance(run.clock.getDelayedCalls()[0].getTime() - run.clock.seconds())
    run.finish()
    assert run.client.exit_code == EXIT_COMMAND_FAILED
    assert run.stderr.take() == ["! rate-limited: slow down"]


def test_cannot_connect_exits_three() -> None:
    """Nothing to talk to: exit 3 with the reason."""
    run = PipeRun(error.ConnectionRefusedError("nobody home"))
    run.client.start()
    assert run.stopped
    assert run.client.exit_code == EXIT_NO_CONNECTION
    assert run.stderr.take() == [
        "! cannot connect to chat.example:8004: Connection was refused by other side: nobody home"
    ]


def test_a_refused_login_exits_four() -> None:
    """A script must not carry on as nobody."""
    run = PipeRun()
    run.client.start()
    run.server.send("HELLO chatd 1 hi", "ERR bad-credentials unknown user or wrong password")
    assert run.stopped
    assert not run.input_started
    assert run.client.exit_code == EXIT_LOGIN_FAILED
    assert run.stderr.take() == [
        "! bad-credentials: unknown user or wrong password",
        "! login failed",
    ]


def test_losing_the_connection_mid_script_exits_three() -> None:
    """An unanswered line is reported, and the script fails."""
    run = PipeRun()
    run.start_logged_in()
    run.client.line_available("/msg bob important\n")
    run.server.drop()
    assert run.stopped
    assert run.client.exit_code == EXIT_NO_CONNECTION
    problems = run.stderr.take()
    assert problems[0].startswith("! no reply to '/msg bob important'")


def test_losing_the_connection_between_lines_exits_three() -> None:
    """Even with nothing in flight, a vanished server fails the run."""
    run = PipeRun()
    run.start_logged_in()
    run.server.send("BYE shutdown")
    run.server.close()
    assert run.stopped
    assert run.client.exit_code == EXIT_NO_CONNECTION
    assert run.stdout.take()[-1] == "* the server closed the connection (shutdown)"


def test_without_credentials_the_script_runs_as_a_guest() -> None:
    """No --user: lines such as /register or /login come from the script itself."""
    run = PipeRun(user=None)
    run.client.start()
    run.server.send("HELLO chatd 1 hi")
    assert run.input_started
    run.client.line_available("/login carol\n")
    assert run.server.received() == ["/login carol"]


def test_the_closing_quit_is_patient_with_the_rate_limit_too() -> None:
    """The /quit at the end of the input is a line like the others."""
    run = PipeRun()
    run.start_logged_in()
    run.client.input_ended()
    assert run.server.received() == ["/quit"]
    run.server.send("ERR rate-limited slow down")
    run.clock.advance(0.25)
    assert run.server.received() == ["/quit"]
    assert not run.stopped
    run.server.send("OK quit", "BYE quit")
    run.server.close()
    assert run.stopped
    assert run.client.exit_code == EXIT_OK
    assert run.stderr.take() == []


def test_a_server_that_never_closes_after_quit_is_left_after_a_while() -> None:
    """The client waits for the close only so long, then closes itself."""
    run = PipeRun()
    run.start_logged_in()
    run.client.input_ended()
    run.server.received()
    run.server.send("OK quit")
    assert not run.stopped
    run.clock.advance(QUIT_TIMEOUT)
    assert run.stopped
    assert run.server.transport.disconnecting
