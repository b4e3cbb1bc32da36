"""The client's behaviour on top of a connection.

A ChatSession decides what each server line shows, remembers how to log in
again, and after a reconnect rejoins the user's rooms and shows only the
messages that were missed. It runs in the reactor thread and knows nothing of
terminals or pipes: it is given functions to show text with.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Sequence
from typing import TypeVar

from twisted.internet import defer, error
from twisted.python.failure import Failure

from chatd.client.commands import command_name, redact
from chatd.client.connection import ChatProtocol, PendingCommand, Purpose, describe_reason
from chatd.client.lines import ServerLine
from chatd.client.render import Renderer, raw_text
from chatd.client.state import ChatState

# Room messages remembered per room to tell, after a reconnect, which of the
# replayed history lines were missed; more than the server replays (50).
TAIL_LENGTH = 200

# BYE reasons after which coming back is the right thing to do; after any
# other (kicked, flood, ...) the client stops instead of knocking again.
RECONNECTABLE_BYE_REASONS = frozenset({"shutdown", "idle-timeout", "restart"})

T = TypeVar("T")


def first_unseen(seen: Sequence[T], history: Sequence[T]) -> int:
    """Where the messages not seen yet begin in a replayed history.

    ``seen`` is the end of the conversation as the client knew it, ``history``
    the server's replay, both oldest first. The replay is aligned at the most
    recent point where it agrees with the end of ``seen``; without any such
    point every replayed message counts as unseen.
    """
    seen = list(seen)
    if not seen:
        return 0
    for end in range(len(history), 0, -1):
        overlap = min(end, len(seen))
        if list(history[end - overlap : end]) == seen[-overlap:]:
            return end
    return 0


def _said(kind: str, sender: str, text: str) -> tuple[str, ...]:
    """A room message as the conversation's tail keeps it: an action is not the same words said."""
    if kind in ("ACTION", "HISTORYACTION"):
        return (sender, text, "action")
    return (sender, text)


def is_rate_limited(line: ServerLine) -> bool:
    """True for the reply that means "too fast, try that again later"."""
    return line.kind == "ERR" and line.fields[0] == "rate-limited"


def _replays_history(command: PendingCommand) -> bool:
    """True for the commands whose HISTORY lines are the end of a room's conversation."""
    return command_name(command.line) in ("login", "join")


class ChatSession:
    """What the client does with the lines of one connection after another.

    ``show`` prints a line for the user; ``show_problem`` prints an error
    (pipe mode sends those to stderr). ``raw`` shows protocol lines verbatim.
    """

    def __init__(
        self,
        state: ChatState,
        renderer: Renderer,
        *,
        show: Callable[[str], None],
        show_problem: Callable[[str], None] | None = None,
        raw: bool = False,
        raw_terminal: bool = False,
        address: str = "",
        show_greeting: bool = True,
    ) -> None:
        self.state = state
        self.renderer = renderer
        self._show = show
        self._show_problem = show_problem or show
        self.raw = raw
        self._raw_terminal = raw_terminal
        self.address = address
        self._show_greeting = show_greeting
        self.protocol: ChatProtocol | None = None
        self.credentials: tuple[str, str] | None = None
        self.ready = False
        self.connections = 0
        self._offline_queue: list[str] = []
        self._tails: dict[str, deque[tuple[str, ...]]] = {}
        self._arriving_history: dict[str, list[ServerLine]] = {}
        self._resume_plan: tuple[list[str], str | None] = ([], None)
        self._last_connect_failure: str | None = None
        self._leaving = False
        self.on_change: Callable[[], None] = lambda: None
        self.on_dismissed: Callable[[str], None] = lambda reason: None
        self.on_disconnected: Callable[[], None] = lambda: None

    # What the connection reports -------------------------------------------

    def connected(self, protocol: ChatProtocol) -> None:
        """A new connection: nothing may be sent on it until it is prepared."""
        self.protocol = protocol
        self.ready = False
        self.connections += 1
        self._last_connect_failure = None
        if self.connections > 1:
            self.state.hold_prompt()
        self.state.set_connected(True)
        self.on_change()

    def line_received(self, line: ServerLine, command: PendingCommand | None) -> None:
        """Learn from a server line and show what it means."""
        self.state.observe(line, command.line if command else None)
        self._remember_conversation(line, command)
        if self.raw:
            self._show(raw_text(line, terminal=self._raw_terminal))
        elif self._worth_showing(line, command):
            text = self.renderer.render(line)
            if text is not None:
                (self._show_problem if line.kind == "ERR" else self._show)(text)
        if line.is_final_reply and command is not None:
            self._settle_history(command)
        if line.kind == "BYE" and line.fields[0] not in RECONNECTABLE_BYE_REASONS | {"quit"}:
            self.on_dismissed(line.fields[0])
        self.on_change()

    def disconnected(self, reason: Failure) -> None:
        """The connection ended: keep what is needed to resume, and say so."""
        self.protocol = None
        self.ready = False
        self.state.set_connected(False)
        if self.state.user is not None:
            self._resume_plan = (self.state.rooms(), self.state.current_room)
        if not self._leaving:
            what = f"disconnected from {self.address}"
            if not reason.check(error.ConnectionDone):
                what += f": {describe_reason(reason)}"
            self._show_problem(self.renderer.problem(what))
        self.on_change()
        self.on_disconnected()

    def connect_failed(self, failure: Failure) -> None:
        """A connection attempt failed; the reason goes with the retry notice."""
        self._last_connect_failure = describe_reason(failure)

    def retrying_in(self, delay: float) -> None:
        """The next connection attempt is ``delay`` seconds away."""
        if self._leaving:
            return
        when = f"trying again in {delay:.1f} s"
        if self._last_connect_failure is not None:
            reason, self._last_connect_failure = self._last_connect_failure, None
            self._show_problem(
                self.renderer.problem(f"cannot connect to {self.address}: {reason}; {when}")
            )
        else:
            self._show(self.renderer.notice(when))

    # Preparing a connection ------------------------------------------------

    def prepare(self, _protocol: object = None) -> defer.Deferred:
        """Make a fresh connection ready: log in, and after a reconnect rejoin.

        This is ClientService's ``prepareConnection``; it fails only when the
        connection itself fails, so ClientService retries exactly then.
        """
        if self.connections <= 1:
            return self.start(Purpose.LOGIN)
        return self.resume()

    @defer.inlineCallbacks
    def start(self, purpose: Purpose):
        """Wait for HELLO and log in with the known credentials, if any.

        Fires with True when logged in, False when the login was refused, and
        None when there was nothing to log in with.
        """
        protocol = self.protocol
        yield protocol.greeted
        outcome = None
        if self.credentials is not None:
            outcome = yield self._login(protocol, purpose)
        self._become_ready()
        return outcome

    @defer.inlineCallbacks
    def resume(self):
        """After a reconnect: log in again, rejoin the rooms, make the same room current."""
        protocol = self.protocol
        yield protocol.greeted
        rooms, current = self._resume_plan
        self.state.hold_prompt()
        self.state.start_over()
        if self.credentials is None:
            self._show(self.renderer.notice(f"reconnected to {self.address} (not logged in)"))
            self._become_ready()
            return None
        logged_in = yield self._login(protocol, Purpose.RESUME)
        if logged_in:
            already = {room.lower() for room in self.state.rooms()}
            for room in rooms:
                if room.lower() not in already:
                    yield protocol.send_command(f"/join {room}", Purpose.RESUME)
            now_current = (self.state.current_room or "").lower()
            if current is not None and now_current != current.lower():
                yield protocol.send_command(f"/join {current}", Purpose.RESUME)
            joined = ", ".join(self.state.rooms()) or "no rooms"
            self._show(self.renderer.notice(f"reconnected as {self.state.user}; back in {joined}"))
        self._become_ready()
        return logged_in

    @defer.inlineCallbacks
    def _login(self, protocol: ChatProtocol, purpose: Purpose):
        user, password = self.credentials
        reply = yield protocol.send_command(f"/login {user} {password}", purpose)
        if reply.kind == "OK":
            return True
        if reply.fields[0] in ("bad-credentials", "banned"):
            # Knocking again with the same password would only count as
            # another failed login.
            self.credentials = None
        return False

    def _become_ready(self) -> None:
        self.ready = True
        self.state.release_prompt()
        queued, self._offline_queue = self._offline_queue, []
        for line in queued:
            self.send_typed(line).addErrback(lambda _: None)
        self.on_change()

    # What the user does ----------------------------------------------------

    def send_typed(self, line: str, purpose: Purpose = Purpose.TYPED) -> defer.Deferred:
        """Send a line the user typed; fires with its final reply.

        While there is no ready connection the line waits for the next one. If
        the connection ends before the reply, the user is told the line may not
        have arrived, and the result fails.
        """
        protocol = self.protocol
        if not self.ready or protocol is None or not protocol.usable:
            self._offline_queue.append(line)
            if protocol is None:
                self._show(self.renderer.notice("not connected; will send that when reconnected"))
            return defer.succeed(None)
        replied = protocol.send_command(line, purpose)
        replied.addCallbacks(
            self._typed_reply, self._typed_lost, callbackArgs=(line,), errbackArgs=(line,)
        )
        return replied

    def expect_close(self) -> None:
        """The client is closing the connection itself: that is no news to report."""
        self._leaving = True

    def leave(self, line: str = "/quit") -> defer.Deferred:
        """Say goodbye to the server; fires when it has answered or is gone."""
        self.expect_close()
        self._offline_queue.clear()
        protocol = self.protocol
        if protocol is None or not protocol.usable:
            return defer.succeed(None)
        return protocol.send_command(line, Purpose.TYPED).addErrback(lambda _: None)

    def _typed_reply(self, reply: ServerLine, line: str) -> ServerLine:
        if reply.kind != "OK":
            return reply
        command = command_name(line)
        words = line.split(" ", 2)
        if command == "login" and len(words) == 3:
            # The server spells the name as it was registered.
            registered = reply.fields[1].split(" ", 1)[0] or words[1]
            self.credentials = (registered, words[2])
        elif command == "passwd" and self.credentials is not None and len(line.split()) == 3:
            self.credentials = (self.credentials[0], line.split()[2])
        elif command == "password" and self.credentials is not None and "\t" in line:
            # /password <old>TAB<new>: the new password is everything after the first TAB.
            self.credentials = (self.credentials[0], line.split("\t", 1)[1])
        return reply

    def _typed_lost(self, failure: Failure, line: str) -> Failure:
        self._show_problem(
            self.renderer.problem(
                f"no reply to {redact(line)!r} before the connection ended; it may not have arrived"
            )
        )
        return failure

    # What is shown ---------------------------------------------------------

    def _worth_showing(self, line: ServerLine, command: PendingCommand | None) -> bool:
        purpose = command.purpose if command is not None else None
        if line.kind == "HELLO":
            return self._show_greeting and self.connections <= 1
        if purpose is Purpose.PONG:
            return False
        if purpose is Purpose.SCRIPTED and is_rate_limited(line):
            return False
        if purpose in (Purpose.QUIET_LOGIN, Purpose.RESUME):
            if line.kind in ("WHO", "TOPIC", "OPS", "HISTORY", "HISTORYACTION", "OK"):
                return False
            if line.kind in ("JOIN", "PART") and self.state.is_me(line.fields[1]):
                return False
        return True

    def _remember_conversation(self, line: ServerLine, command: PendingCommand | None) -> None:
        if line.kind in ("MSG", "ACTION"):
            room, sender, text = line.fields
            self._tail(room).append(_said(line.kind, sender, text))
        elif (
            line.kind in ("HISTORY", "HISTORYACTION")
            and command is not None
            and _replays_history(command)
        ):
            self._arriving_history.setdefault(line.fields[0].lower(), []).append(line)

    def _tail(self, room: str) -> deque[tuple[str, ...]]:
        return self._tails.setdefault(room.lower(), deque(maxlen=TAIL_LENGTH))

    def _settle_history(self, command: PendingCommand) -> None:
        arrived, self._arriving_history = self._arriving_history, {}
        for room, lines in arrived.items():
            messages = [_said(line.kind, line.fields[2], line.fields[3]) for line in lines]
            if command.purpose is Purpose.RESUME and not self.raw:
                for line in lines[first_unseen(self._tail(room), messages) :]:
                    self._show(self.renderer.render(line))
            tail = self._tail(room)
            tail.clear()
            tail.extend(messages)
