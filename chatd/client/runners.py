"""The two ways the client runs: at a terminal, and in a pipe.

Both run in the reactor thread; the input thread reaches them only through
``reactor.callFromThread``.
"""

from __future__ import annotations

import random
from collections import deque
from collections.abc import Callable

from twisted.application.internet import ClientService, backoffPolicy
from twisted.internet import defer
from twisted.internet.interfaces import IStreamClientEndpoint
from twisted.python.failure import Failure

from chatd.client.commands import (
    Action,
    AskPassword,
    AskPasswordChange,
    Quit,
    SendLine,
    ShowHelp,
    help_lines,
    parse_input,
)
from chatd.client.connection import ChatFactory, Purpose, ReportingEndpoint, describe_reason
from chatd.client.session import ChatSession, is_rate_limited

# Exit codes, documented in docs/client.md.
EXIT_OK = 0
EXIT_COMMAND_FAILED = 1
EXIT_USAGE = 2
EXIT_NO_CONNECTION = 3
EXIT_LOGIN_FAILED = 4

# How long /quit may wait for the server before the client leaves anyway.
QUIT_TIMEOUT = 5.0

# A script may send faster than the server's rate limit allows. A line the
# server refused as rate-limited was not carried out, so sending it again is
# safe: after 0.25 s, then twice as long each time up to 4 s, 8 times at most.
RATE_LIMIT_FIRST_WAIT = 0.25
RATE_LIMIT_LONGEST_WAIT = 4.0
RATE_LIMIT_ATTEMPTS = 8


def rate_limit_wait(attempt: int) -> float:
    """Seconds to wait before sending again a line refused at ``attempt`` (1, 2, ...)."""
    return min(RATE_LIMIT_FIRST_WAIT * 2 ** (attempt - 1), RATE_LIMIT_LONGEST_WAIT)


def default_retry_policy() -> Callable[[int], float]:
    """Reconnect backoff: about 1, 2, 4, 8 then 15 s apart, with jitter.

    The first retry comes soon because the usual cause is a server restart;
    the jitter keeps many clients from knocking at the same instant.
    """
    return backoffPolicy(initialDelay=0.5, factor=2.0, maxDelay=15.0, jitter=_jitter)


def _jitter() -> float:
    return random.random() * 0.5


def announcing(policy: Callable[[int], float], announce: Callable[[float], None]):
    """A retry policy that also tells ``announce`` how long the wait will be."""

    def delay_for_attempt(attempt: int) -> float:
        delay = policy(attempt)
        announce(delay)
        return delay

    return delay_for_attempt


class InteractiveClient:
    """The client at a terminal: keeps connected, reconnecting with backoff.

    ``terminal`` is the input thread's controller (TerminalInput or a test
    double with ``redraw``, ``request_stop``); ``stop_reactor`` ends the run.

    Typed lines go out one at a time, each after the previous one's final
    reply, like a pipe's: a paste of many lines then meets the server's rate
    limit one line at a time, and a line refused as ``rate-limited`` (which
    the server did not carry out) is sent again after a growing wait before
    any later line goes, so no line is lost and none overtakes another. The
    lines still waiting then follow that far apart, until none is left.
    """

    def __init__(
        self,
        reactor,
        session: ChatSession,
        endpoint: IStreamClientEndpoint,
        *,
        show: Callable[[str], None],
        stop_reactor: Callable[[], None],
        retry_policy: Callable[[int], float] | None = None,
    ) -> None:
        self._reactor = reactor
        self.session = session
        self._show = show
        self._stop_reactor = stop_reactor
        self.exit_code = EXIT_OK
        self.terminal = None
        self.service = ClientService(
            ReportingEndpoint(endpoint, session.connect_failed),
            ChatFactory(session),
            retryPolicy=announcing(retry_policy or default_retry_policy(), session.retrying_in),
            clock=reactor,
            prepareConnection=session.prepare,
        )
        session.on_dismissed = self._dismissed
        self._finishing = False
        # Lines (and a Quit) waiting to be sent; one is in flight at most.
        self._outbox: deque[str | Quit] = deque()
        self._sending = False
        self._retry = None
        self._slowed = False
        # Seconds between lines while the server's rate limit is being met.
        self._interval = 0.0

    def attach_terminal(self, terminal) -> None:
        """Redraw this terminal's prompt whenever the session changes."""
        self.terminal = terminal
        self.session.on_change = terminal.redraw

    def start(self) -> None:
        """Start connecting (and reconnecting)."""
        self.service.startService()

    def deliver(self, action: Action) -> None:
        """A line from the input thread, already understood."""
        if isinstance(action, ShowHelp):
            for line in help_lines(action.topic):
                self._show(line)
        elif isinstance(action, Quit):
            # After every line typed before it: leaving must not drop a paste.
            self._outbox.append(action)
        elif isinstance(action, AskPassword):
            self._outbox.append(action.prefix)
        elif isinstance(action, SendLine):
            self._outbox.append(action.line)
        self._send_next()

    @property
    def waiting_lines(self) -> int:
        """How many typed lines have not been answered yet (the one in flight included)."""
        return len(self._outbox) + self._sending

    def _send_next(self) -> None:
        while not self._sending and not self._finishing and self._retry is None:
            if not self._outbox:
                # Nothing waits: the next line, typed later, goes at once.
                self._interval, self._slowed = 0.0, False
                return
            item = self._outbox.popleft()
            if isinstance(item, Quit):
                self._outbox.clear()
                self.finish(item.line)
                return
            self._sending = True
            self._send(item, attempt=1)

    def _send(self, line: str, attempt: int) -> None:
        self._retry = None
        if self._finishing:
            return
        replied = self.session.send_typed(line, Purpose.SCRIPTED)
        replied.addCallbacks(self._answered, self._unanswered, callbackArgs=(line, attempt))

    def _answered(self, reply, line: str, attempt: int) -> None:
        if reply is not None and is_rate_limited(reply):
            if attempt < RATE_LIMIT_ATTEMPTS and not self._finishing:
                if not self._slowed:
                    self._slowed = True
                    self._show(
                        self.session.renderer.notice(
                            "the server limits how fast lines may come;"
                            " the waiting lines follow as it allows"
                        )
                    )
                # The lines after it go as far apart as this one had to wait:
                # a long paste then costs a few refusals, not one per line
                # (each refusal counts towards the server's BYE flood).
                self._interval = min(
                    max(self._interval * 2, RATE_LIMIT_FIRST_WAIT), RATE_LIMIT_LONGEST_WAIT
                )
                self._retry = self._reactor.callLater(self._interval, self._send, line, attempt + 1)
                return
            self._show(self.session.renderer.render(reply))
        self._sent()

    def _unanswered(self, _failure: Failure) -> None:
        # The session has told the user which line went unanswered.
        self._sent()

    def _sent(self) -> None:
        self._sending = False
        if self._interval and self._outbox and not self._finishing:
            self._retry = self._reactor.callLater(self._interval, self._paced)
            return
        self._send_next()

    def _paced(self) -> None:
        self._retry = None
        self._send_next()

    def finish(self, line: str = "/quit", exit_code: int = EXIT_OK) -> defer.Deferred:
        """Leave: say /quit if connected, stop reconnecting, stop the reactor."""
        if self._finishing:
            return defer.succeed(None)
        self._finishing = True
        self.exit_code = exit_code
        if self._retry is not None and self._retry.active():
            self._retry.cancel()
        said = self.session.leave(line)
        said.addTimeout(QUIT_TIMEOUT, self._reactor).addErrback(lambda _: None)
        said.addCallback(lambda _: self.service.stopService())
        said.addBoth(self._stopped)
        return said

    def _stopped(self, _result: object) -> None:
        if self.terminal is not None:
            self.terminal.request_stop()
        self._stop_reactor()

    def _dismissed(self, reason: str) -> None:
        # BYE kicked, flood, ...: reconnecting would only knock again.
        self._show(self.session.renderer.problem(f"not reconnecting after BYE {reason}"))
        self.finish(exit_code=EXIT_NO_CONNECTION)


class PipeClient:
    """The client in a pipe: one line at a time, each waiting for its final reply.

    Exit codes: 0 when every line was answered OK, 1 when any was answered
    ERR, 3 when the connection could not be made or ended early, 4 when the
    ``--user`` login failed.
    """

    def __init__(
        self,
        reactor,
        session: ChatSession,
        endpoint: IStreamClientEndpoint,
        *,
        show: Callable[[str], None],
        show_problem: Callable[[str], None],
        stop_reactor: Callable[[], None],
        start_input: Callable[[], None],
    ) -> None:
        self._reactor = reactor
        self.session = session
        self._endpoint = endpoint
        self._show = show
        self._show_problem = show_problem
        self._stop_reactor = stop_reactor
        self._start_input = start_input
        self.exit_code = EXIT_OK
        self._lines: deque[str] = deque()
        self._input_ended = False
        self._busy = True
        self._quitting = False
        self._finished = False
        self._closed: defer.Deferred[None] = defer.Deferred()

    @defer.inlineCallbacks
    def start(self):
        """Connect, log in, then take lines from the input."""
        try:
            yield self._endpoint.connect(ChatFactory(self.session))
        except Exception as problem:
            self._fail(
                EXIT_NO_CONNECTION,
                f"cannot connect to {self.session.address}: {describe_reason(problem)}",
            )
            return
        self.session.on_disconnected = self.connection_lost
        try:
            logged_in = yield self.session.start(Purpose.QUIET_LOGIN)
        except Exception as problem:
            self._fail(
                EXIT_NO_CONNECTION,
                f"lost the connection to {self.session.address}: {describe_reason(problem)}",
            )
            return
        if logged_in is False:
            self._fail(EXIT_LOGIN_FAILED, "login failed")
            return
        self._busy = False
        self._start_input()
        self._next()

    def line_available(self, line: str) -> None:
        """A line from the pipe (reactor thread)."""
        self._lines.append(line)
        self._next()

    def input_ended(self) -> None:
        """The pipe reached its end (reactor thread)."""
        self._input_ended = True
        self._next()

    def connection_lost(self) -> None:
        """The connection ended; unless the client was leaving, that is a failure."""
        if not self._closed.called:
            self._closed.callback(None)
        if not self._finished and not self._busy:
            self._fail(EXIT_NO_CONNECTION)

    def _next(self) -> None:
        while not self._busy and not self._finished:
            if not self._lines:
                if self._input_ended:
                    self._quit("/quit")
                return
            action = parse_action(self._lines.popleft())
            if isinstance(action, ShowHelp):
                for line in help_lines(action.topic):
                    self._show(line)
            elif isinstance(action, Quit):
                self._quit(action.line)
            elif isinstance(action, SendLine):
                self._busy = True
                self._send(action.line, attempt=1)

    def _send(self, line: str, attempt: int) -> None:
        if self._finished:
            return
        replied = self.session.send_typed(line, Purpose.SCRIPTED)
        replied.addCallbacks(self._answered, self._unanswered, callbackArgs=(line, attempt))

    def _answered(self, reply, line: str, attempt: int) -> None:
        if reply is not None and is_rate_limited(reply):
            if attempt < RATE_LIMIT_ATTEMPTS:
                self._reactor.callLater(rate_limit_wait(attempt), self._send, line, attempt + 1)
                return
            self._show_problem(self.session.renderer.render(reply))
        if reply is None or reply.kind != "OK":
            self.exit_code = EXIT_COMMAND_FAILED
        if self._quitting:
            self._finished = True
            # After OK quit the server sends BYE and closes; waiting for the
            # close lets every line it sent be shown.
            closed = self._closed.addTimeout(QUIT_TIMEOUT, self._reactor)
            closed.addErrback(lambda _: None).addBoth(lambda _: self._close())
            return
        self._busy = False
        self._next()

    def _unanswered(self, _failure: Failure) -> None:
        # The session has told the user which line went unanswered.
        self._busy = False
        self._fail(EXIT_NO_CONNECTION)

    def _quit(self, line: str) -> None:
        # /quit goes like any other line, rate limit included; its reply ends the run.
        self._quitting = True
        self._busy = True
        self.session.expect_close()
        self._send(line, attempt=1)

    def _close(self) -> None:
        self.session.expect_close()
        protocol = self.session.protocol
        if protocol is not None and protocol.transport is not None:
            protocol.transport.loseConnection()
        self._stop_reactor()

    def _fail(self, exit_code: int, message: str | None = None) -> None:
        if self._finished:
            return
        self._finished = True
        self.exit_code = exit_code
        if message is not None:
            self._show_problem(self.session.renderer.problem(message))
        self._close()


def parse_action(text: str) -> Action | None:
    """Like parse_input, but a pipe cannot be asked for a password: send the line as it is
    (a bare ``/passwd`` then gets the server's ``ERR bad-arguments``)."""
    action = parse_input(text)
    if isinstance(action, AskPassword | AskPasswordChange):
        return SendLine(text.rstrip("\r\n"))
    return action
