"""The wire protocol: lines in, one command table, lines out.

``ChatProtocol`` is a thin parser. It frames and decodes a line, looks the
command up in ``COMMANDS`` (name, argument shape, whether a login is
needed), parses the arguments by that shape, calls the session (or, before
login, the accounts and the portal) and writes exactly one final reply per
line. It holds no SQL, no bcrypt and no room state; once logged in it is the
session's mind, writing the events the service delivers.

Final replies go out in the order of the client's lines: while a command
waits on a Deferred (a commit, a bcrypt check) later lines stay buffered.
"""

from dataclasses import dataclass

from twisted.internet import defer
from twisted.internet.protocol import ServerFactory
from twisted.logger import Logger
from twisted.protocols.basic import LineReceiver
from twisted.python.failure import Failure
from zope.interface import implementer

from chatd.auth.gate import Gate
from chatd.auth.throttles import address_key
from chatd.core.bulk import BulkReply, PageSource
from chatd.core.errors import ChatError
from chatd.core.events import (
    Away,
    Event,
    Members,
    Notice,
    Operators,
    RoomSummary,
    TagMessage,
    WhoisInfo,
)
from chatd.core.interfaces import DisconnectReason, IChatClient, IChatSession
from chatd.core.rooms import HISTORY_MAX
from chatd.frontends.keepalive import enable_tcp_keepalive
from chatd.frontends.limits import Limits, SendQueue
from chatd.frontends.line.commands import COMMANDS, PLAIN_TEXT, Command
from chatd.frontends.line.render import LineEncoder, encode, line_type
from chatd.frontends.line.wire import encode_line
from chatd.ops.telemetry import Telemetry

PROTOCOL_VERSION = "1"
log = Logger()

# The place of a BYE flood among the replies in flight: it is said when every
# line before it has been answered.
_FLOOD = object()


@dataclass(eq=False)
class _Reply:
    """The final reply of one command in flight, written once those before it are."""

    command: Command | None
    settled: bool = False
    outcome: object = None

    @property
    def pipelined(self) -> bool:
        """Whether a pipelined command may start behind this one (a refusal has no effects)."""
        return self.command is None or self.command.pipelined


@implementer(IChatClient)
class ChatProtocol(LineReceiver):
    """One client connection: framing, the command table, and the session's mind."""

    delimiter = b"\n"

    def __init__(self, server: "ChatServerFactory") -> None:
        self.server = server
        self.line_limit = server.config.line_limit
        # A line may end in CR LF: the CR does not count against the limit.
        self.MAX_LENGTH = self.line_limit + 1
        self.session: IChatSession | None = None
        self._logout = None
        self._logging_in = False
        self._closing = False
        self._lost = False
        self._discarding = False
        # Framing: the bytes read, where the next line starts, and whether a
        # line is being run (a nested read only adds to the buffer).
        self._buffer = b""
        self._start = 0
        self._framing = False
        self._reading_paused = False
        # Reading stops while a command runs with a full line waiting behind
        # it, or while the client is not reading what we send (a slow reader).
        self._held_reading = False
        self._output_slow = False
        # Commands waiting on a Deferred, in line order, and a line that waits for them.
        self._in_flight: list[_Reply] = []
        self._postponed: str | None = None
        self.peer = ""
        self.address = ""
        self.guard = None
        self.output = None

    # --- connection ------------------------------------------------------

    def connectionMade(self) -> None:
        """Greet the client."""
        config = self.server.config
        self.peer = _describe(self.transport.getPeer())
        self.address = address_key(self.transport.getPeer())
        self.server.connections.add(self)
        if hasattr(self.transport, "setTcpNoDelay"):
            # Chat lines are small and each should leave at once; Nagle's
            # algorithm would hold them back for up to tens of milliseconds.
            self.transport.setTcpNoDelay(True)
        if config.tcp_keepalive is not None:
            # The kernel finds dead peers; PING is only for clients that answer it.
            keepalive = config.tcp_keepalive
            enable_tcp_keepalive(
                self.transport, keepalive.idle, keepalive.interval, keepalive.count
            )
        self.output = SendQueue(
            self.transport,
            config.send_queue_soft,
            config.send_queue_limit,
            self._output_backed_up,
            self._output_drained,
            self._output_overflowed,
            clock=self.server.clock,
        )
        self.guard = self.server.limits.guard(self.address, self._ping, self.disconnect)
        greeting = "welcome; /help lists commands"
        self._send("HELLO", config.server_name, PROTOCOL_VERSION, greeting)
        if not self.guard.opened():
            self.disconnect(DisconnectReason.TOO_MANY_CONNECTIONS)

    def connectionLost(self, reason=None) -> None:
        """End the session, if any, and forget the connection."""
        self._lost = True
        self._closing = True
        # BaseProtocol sets it when connected; the service reads it as IChatClient.connected.
        self.connected = False
        if self.guard is not None:
            self.guard.lost()
            self.output.stopProducing()
        self.server.connections.discard(self)
        if self._logout is not None:
            logout, self._logout = self._logout, None
            logout()
        self.server.connection_closed()

    def _send(self, *fields: str) -> None:
        if not self._closing:
            line = encode_line(*fields)
            self.server.telemetry.sent(len(line))
            self.output.write(line)

    def _ping(self, token: str) -> None:
        self._send("PING", token)

    # --- IChatClient ----------------------------------------------------

    def deliver(self, event: Event) -> None:
        """Write an event the service sent this session.

        Client-only tags alone (IRC's TAGMSG) have no line here: the line
        protocol carries no tags, so such an event is ignored.
        """
        if type(event) is TagMessage:
            return
        if not self._closing:
            wire, kind = self.server.encoder(event)
            self.server.telemetry.delivered(kind, len(wire), event.count)
            self.output.write(wire)

    def deliver_bulk(self, source: PageSource) -> defer.Deferred:
        """Send a long reply page by page as the client reads it; fire once all is written."""
        telemetry = self.server.telemetry
        bulk = BulkReply(
            source,
            lambda event: [encode(event)],
            lambda event, size: telemetry.delivered(line_type(event), size, 1),
        )
        if self._closing:
            bulk.cancel()
        else:
            self.output.add_bulk(bulk)
        return bulk.done

    def disconnect(self, reason: DisconnectReason) -> None:
        """Say ``BYE <reason>`` and close; nothing is answered after it."""
        if not self._closing:
            user = None if self.session is None else self.session.name
            self.server.telemetry.disconnected(reason, self.peer, user)
            self._send("BYE", reason.value)
            self._closing = True
            # Whatever waits for a slow reader goes to the transport first; a
            # client that never reads it is cut off after the close timeout.
            self.output.finish()
            self.guard.closing(self.transport)
            self.transport.loseConnection()

    # --- slow readers ------------------------------------------------------

    def _output_backed_up(self) -> None:
        """Past the soft limit: read nothing more from a client that does not read."""
        self.server.telemetry.limit_hit(
            "send-queue", self.peer, self._user_name(), queued_bytes=self.output.queued
        )
        self._output_slow = True
        self._update_reading()

    def _output_drained(self) -> None:
        self._output_slow = False
        self._update_reading()

    def _output_overflowed(self) -> None:
        """Past the hard limit: drop the connection (it cannot be told BYE)."""
        self.server.telemetry.disconnected(
            "slow-reader", self.peer, self._user_name(), limit_bytes=self.output.hard
        )
        self._closing = True
        # Later, not now: this runs inside a broadcast, which must not see the
        # room's members change under it.
        self.server.clock.callLater(0, self.transport.abortConnection)

    def _user_name(self) -> str | None:
        return self.session.name if self.session is not None else None

    def _update_reading(self) -> None:
        wanted = (self._held_reading or self._output_slow) and not self._lost
        if wanted and not self._reading_paused:
            self._reading_paused = True
            self.transport.pauseProducing()
        elif not wanted and self._reading_paused and not self._lost:
            self._reading_paused = False
            self.transport.resumeProducing()

    # --- framing ---------------------------------------------------------

    def dataReceived(self, data: bytes) -> None:
        """Frame lines, discarding the rest of a line that grew past the limit.

        Lines are found by searching forward from an offset and the buffer is
        cut once per read: a read of 64 KiB of bare LFs is 65,536 lines in
        linear time, where splitting the buffer line by line copies its rest
        each time (quadratic, enough to stall the reactor for everyone).
        """
        if self.output is not None:
            # The client reads what it was sent: a good moment to see what arrived.
            self.output.check_handed_over()
        if self._closing:
            return
        self._buffer += data
        if self._framing:
            # A line being run caused this (a released hold): the loop below goes on.
            return
        self._framing = True
        try:
            self._frame_lines()
        finally:
            self._framing = False
            if self._start:
                self._buffer = self._buffer[self._start :]
                self._start = 0
        if self.paused and not self._held_reading and len(self._buffer) > self.MAX_LENGTH:
            # A command is still running and a full line already waits:
            # stop reading until it is answered, so the buffer stays bounded.
            self._held_reading = True
            self._update_reading()

    def _frame_lines(self) -> None:
        while not self.paused and not self._closing:
            buffer, start = self._buffer, self._start
            if self._discarding:
                end = buffer.find(b"\n", start)
                if end < 0:
                    self._start = len(buffer)
                    return
                self._discarding = False
                self._start = end + 1
                continue
            end = buffer.find(b"\n", start, start + self.MAX_LENGTH + 1)
            if end < 0:
                if len(buffer) - start > self.MAX_LENGTH:
                    # No line end within the limit: answer now, skip to its end.
                    self._discarding = True
                    self._start = start + self.MAX_LENGTH + 1
                    self.lineLengthExceeded(b"")
                    continue
                return
            self._start = end + 1
            self.lineReceived(buffer[start:end])

    def lineLengthExceeded(self, line: bytes) -> None:
        """Answer an over-long line; the framing skips the rest of it."""
        verdict = self.guard.line(self.MAX_LENGTH)
        if verdict is not None:
            self._refuse_line(verdict)
        else:
            self._refuse("line-too-long", f"lines are limited to {self.line_limit} bytes")

    def lineReceived(self, line: bytes) -> None:
        """Decode one line and run it.

        Every line costs rate budget, an empty one too (it gets no reply, as
        the protocol says, but a flood of them ends in ``BYE flood``).
        """
        if self._closing:
            return
        if line.endswith(b"\r"):
            line = line[:-1]
        verdict = self.guard.line(len(line) + 1)
        if not line:
            if verdict == "flood":
                self._refuse_line(verdict)
            return
        if verdict is not None:
            self._refuse_line(verdict)
            return
        if len(line) > self.line_limit:
            self._refuse("line-too-long", f"lines are limited to {self.line_limit} bytes")
            return
        try:
            text = line.decode("utf-8")
        except UnicodeDecodeError:
            self._refuse("bad-encoding", "lines must be UTF-8")
            return
        # A UTF-8 byte order mark some editors and terminals put first is not
        # part of the line: stripped, so "\ufeff/ping" is the command /ping.
        # A line of a BOM alone was not empty: it is answered like empty text.
        self.run_line(text.removeprefix("\ufeff"))

    def _refuse_line(self, verdict: str) -> None:
        """Drop a line past the rate limit: ``ERR rate-limited``, or ``BYE flood``.

        ``BYE flood`` comes after the replies of the lines before it (some may
        be waiting on a commit), so every line up to it is answered in order
        and the sender knows exactly which were accepted.
        """
        if verdict == "flood":
            if self._in_flight:
                self._in_flight.append(_Reply(None, settled=True, outcome=_FLOOD))
                # Nothing after the flood line is read or run.
                self._hold()
                self._held_reading = True
                self._update_reading()
            else:
                self.disconnect(DisconnectReason.FLOOD)
        else:
            rate = self.server.config.rate_limit
            if self.guard.first_refusal:
                # Once per run of dropped lines, not per line: a flood is one event.
                self.server.telemetry.limit_hit(
                    "rate", self.peer, self._user_name(), lines_per_second=rate.per_second
                )
            if self.guard.over_bytes:
                rate = self.server.config.byte_rate
                over = f"over {rate.per_second:g} bytes a second (bursts of {rate.burst})"
            else:
                over = f"over {rate.per_second:g} lines a second (bursts of {rate.burst})"
            self._refuse("rate-limited", over + "; line dropped")

    # --- commands ----------------------------------------------------------

    def run_line(self, line: str) -> None:
        """Find the command for ``line`` in the table and run it."""
        if line.startswith("/") and not line.startswith("//"):
            name, _, arguments = line[1:].partition(" ")
            command = COMMANDS.get(name.lower())
        else:
            command, arguments = PLAIN_TEXT, line[1:] if line.startswith("//") else line
        if self._in_flight and not (
            command is not None
            and command.pipelined
            and self._in_flight[-1].pipelined
            and len(self._in_flight) < self.server.config.pipeline_depth
        ):
            # It may depend on what runs before it, and must be answered after:
            # it waits, and no line is read, until every reply has been written.
            self._postponed = line
            self._hold()
            return
        if command is None or (command.login_required and self.session is None):
            if self.session is None:
                self._final("ERR", "auth-required", "log in first: /login <user> <password>")
            else:
                self._final("ERR", "unknown-command", "/help lists the commands")
            return
        try:
            handler = getattr(self, "do_" + command.name)
            result = handler(*command.parse(arguments))
        except Exception as error:
            result = Failure(error)
        if not self._in_flight and not isinstance(result, defer.Deferred):
            self._answer(command, result)
            return
        reply = _Reply(command)
        self._in_flight.append(reply)
        if not isinstance(result, defer.Deferred):
            result = defer.fail(result) if isinstance(result, Failure) else defer.succeed(result)
        result.addBoth(self._settled, reply)
        if self._in_flight and not command.pipelined:
            self._hold()

    def _settled(self, outcome, reply: "_Reply") -> None:
        """A command in flight has its outcome: write every reply now due, in line order."""
        reply.outcome, reply.settled = outcome, True
        in_flight = self._in_flight
        while in_flight and in_flight[0].settled:
            done = in_flight.pop(0)
            if done.outcome is _FLOOD:
                in_flight.clear()
                self.disconnect(DisconnectReason.FLOOD)
                break
            self._answer(done.command, done.outcome)
        if not in_flight and self.paused:
            self._release()

    def _answer(self, command: Command | None, outcome) -> None:
        if isinstance(outcome, Failure | Exception):
            self._failed(outcome, command)
        else:
            self._succeeded(outcome, command)

    def _succeeded(self, text: str | None, command: Command) -> None:
        self._final("OK", command.name, text or "")
        if command.name == "quit":
            self.disconnect(DisconnectReason.QUIT)

    def _failed(self, error, command: Command | None) -> None:
        failure = error if isinstance(error, Failure) else Failure(error)
        if failure.check(ChatError):
            self._final("ERR", failure.value.code, failure.value.text)
        else:
            log.failure("command {command} failed", failure, command=command.name)
            self._final("ERR", "server-error", "the server failed; try again")

    def _final(self, kind: str, code: str, text: str) -> None:
        self._send(kind, code, text)

    def _refuse(self, code: str, text: str) -> None:
        """Answer ``ERR`` to a line refused before it ran, after the replies in flight."""
        if self._in_flight:
            self._in_flight.append(_Reply(None, settled=True, outcome=ChatError(code, text)))
        else:
            self._final("ERR", code, text)

    def _hold(self) -> None:
        """Take no more lines from the buffer until the commands in flight are answered."""
        self.paused = True

    def _release(self) -> None:
        """Every command in flight was answered: run the line that waited, then the rest."""
        self.paused = False
        self._held_reading = False
        self._update_reading()
        if self._closing:
            return
        if self._postponed is not None:
            line, self._postponed = self._postponed, None
            self.run_line(line)
        if not self.paused:
            self.dataReceived(b"")

    # The handlers: each returns the final reply's text, or a Deferred of it.

    def do_register(self, name: str, password: str) -> defer.Deferred:
        if self.session is not None or self._logging_in:
            raise ChatError("already-logged-in", "you are logged in already")
        return self.server.gate.register(name, password, self.address, self.peer)

    def do_login(self, name: str, password: str) -> defer.Deferred:
        if self.session is not None or self._logging_in:
            raise ChatError("already-logged-in", "you are logged in already")
        logging_in = self.server.gate.login(name, password, self.address, self.peer, self)
        self._logging_in = True
        return logging_in.addCallbacks(self._logged_in, self._login_failed)

    def _logged_in(self, login) -> str:
        self._logging_in = False
        session, logout = login
        if self._lost:
            logout()
            raise ChatError("server-error", "the connection is gone")
        self.guard.logged_in()
        self.session, self._logout = session, logout
        return session.name

    def _login_failed(self, failure):
        self._logging_in = False
        return failure

    def do_say(self, room: str | None, text: str | None = None):
        if text is None:
            # Plain text: the only argument is the text, for the current room.
            return self.session.say(room)
        return self.session.say(text, room)

    def do_join(self, room: str) -> defer.Deferred:
        return self.server.gate.join(self.session, room, self.address)

    def do_part(self, room: str | None) -> defer.Deferred:
        return self.session.part(room)

    def do_msg(self, user: str, text: str) -> defer.Deferred:
        return self.server.gate.message(self.session, user, text, self.address).addCallback(
            " ".join
        )

    def do_who(self, room: str | None) -> str:
        roster = self.session.who(room)
        self.deliver(Members(roster.room, roster.members))
        if roster.operators:
            self.deliver(Operators(roster.room, roster.operators))
        return roster.room

    def do_rooms(self) -> defer.Deferred:
        def show(summaries: list[RoomSummary]) -> None:
            for summary in summaries:
                self.deliver(summary)

        return self.session.rooms().addCallback(show)

    def do_history(self, room: str, count: str | None) -> defer.Deferred:
        if count is None:
            wanted = 50
        elif count.isascii() and count.isdigit() and count.strip("0"):
            # Any whole number from 1 will do, however many digits: more than
            # 500 counts as 500, so a huge one is not even converted.
            digits = count.lstrip("0")
            wanted = HISTORY_MAX if len(digits) > len(str(HISTORY_MAX)) else int(digits)
        else:
            raise COMMANDS["history"].bad_arguments("<count> is a whole number from 1")
        if not room.startswith("#"):
            # A user: your conversation with them, both ways (an extension).
            conversation = self.session.direct_history(room, wanted)
            return self.deliver_bulk(conversation).addCallback(lambda _: conversation.peer)
        history = self.session.history(room, wanted)
        # Answered once the last line is written: a client that does not read
        # holds one page in memory, and its next line waits unread.
        return self.deliver_bulk(history).addCallback(lambda _: history.room_name)

    def do_me(self, text: str) -> defer.Deferred:
        return self.session.act(text)

    def do_topic(self, room: str, text: str | None):
        if text is not None:
            return self.session.set_topic(room, text)
        topic = self.session.topic(room)
        if topic.text:
            self.deliver(topic)
        return topic.room

    def do_op(self, room: str, user: str) -> defer.Deferred:
        return self.session.set_operator(room, user, True)

    def do_deop(self, room: str, user: str) -> defer.Deferred:
        return self.session.set_operator(room, user, False)

    def do_kick(self, room: str, user: str, reason: str | None) -> defer.Deferred:
        return self.session.kick(room, user, reason or "")

    def do_ban(self, room: str, user: str) -> defer.Deferred:
        return self.session.ban(room, user, True)

    def do_unban(self, room: str, user: str) -> defer.Deferred:
        return self.session.ban(room, user, False)

    def do_private(self, room: str, setting: str) -> defer.Deferred:
        if setting.lower() not in ("on", "off"):
            raise COMMANDS["private"].bad_arguments("say on or off")
        return self.session.set_private(room, setting.lower() == "on")

    def do_secret(self, room: str, setting: str) -> defer.Deferred:
        """Extension: make a room secret (listed, and shown to /who, for its members
        only) or not: ``OK secret <room>``."""
        if setting.lower() not in ("on", "off"):
            raise COMMANDS["secret"].bad_arguments("say on or off")
        return self.session.set_secret(room, setting.lower() == "on")

    def do_invite(self, room: str, user: str) -> defer.Deferred:
        return self.session.invite(room, user)

    def do_away(self, text: str | None) -> defer.Deferred:
        return self.session.away(text)

    def do_whois(self, user: str) -> defer.Deferred:
        def show(known: WhoisInfo) -> str:
            self.deliver(known)
            if known.away:
                self.deliver(Away(known.user, known.away))
            return known.user

        return self.session.whois(user).addCallback(show)

    def do_passwd(self, old: str, new: str) -> defer.Deferred:
        return self.server.gate.change_password(self.session, old, new, self.address, self.peer)

    def do_oper(self, account: str, password: str) -> defer.Deferred:
        # The OK carries nothing: the account's name is the operator's secret to keep.
        opering = self.server.gate.oper(self.session, account, password, self.address)
        return opering.addCallback(lambda _name: None)

    def do_password(self, old: str, new: str) -> defer.Deferred:
        # The same change as /passwd, with both passwords free to hold spaces.
        return self.do_passwd(old, new)

    def do_ping(self, token: str | None) -> str:
        return token or ""

    def do_pong(self, token: str) -> str:
        self.guard.answers_pings()
        return token

    def do_help(self) -> None:
        for command in COMMANDS.values():
            if command.login_required and self.session is None:
                continue
            usage = f"/{command.name} {command.usage}".rstrip()
            self.deliver(Notice(f"{usage} - {command.summary}"))
        if self.session is not None:
            self.deliver(Notice(f"<text...> - {PLAIN_TEXT.summary}; //text sends /text"))

    def do_quit(self, text: str | None) -> None:
        return None


def _describe(address) -> str:
    host = getattr(address, "host", None)
    if host is None:
        return str(getattr(address, "name", None) or "unix")
    return f"{host}:{address.port}"


class ChatServerFactory(ServerFactory):
    """Builds a ``ChatProtocol`` per connection and knows every open connection."""

    noisy = False

    def __init__(
        self, config, accounts, portal, clock, telemetry: Telemetry | None = None, chat=None
    ):
        self.config = config
        self.telemetry = telemetry or Telemetry()
        # Every event this door's sessions get is encoded once, here.
        self.encoder = LineEncoder()
        self.accounts = accounts
        self.portal = portal
        self.clock = clock
        self.limits = Limits(config, clock)
        # Policy (throttles, limits, the portal) lives in the gate, shared with the other doors.
        self.gate = Gate(config, self.limits, accounts, portal, self.telemetry, chat=chat)
        self.connections: set[ChatProtocol] = set()
        self._all_closed: list[defer.Deferred] = []

    def buildProtocol(self, addr) -> ChatProtocol:
        """A protocol for one new connection."""
        return ChatProtocol(self)

    def connection_closed(self) -> None:
        """Wake whoever waits for the last connection to close."""
        if not self.connections:
            waiting, self._all_closed = self._all_closed, []
            for closed in waiting:
                closed.callback(None)

    def disconnect_all(self, reason: DisconnectReason) -> defer.Deferred:
        """Say ``BYE reason`` to every connection; fire once all are closed."""
        closed: defer.Deferred = defer.Deferred()
        if not self.connections:
            closed.callback(None)
            return closed
        self._all_closed.append(closed)
        for protocol in list(self.connections):
            protocol.disconnect(reason)
        return closed
