"""The IRC door: one connection of a standard IRC client, and its factory.

``IRCConnection`` is a thin parser and renderer, like the line door. It
frames bytes into lines (512 bytes, 8,191 more for tags), decodes UTF-8,
parses each line (``message.parse``), finds the verb in ``COMMANDS`` and
calls the avatar; once logged in it is the session's mind and renders the
core's events as IRC messages. The IRC-specific parts are registration
(CAP, NICK, USER, PASS, SASL PLAIN, NickServ, REGISTER), the numeric
replies, and the IRCv3 capabilities a client may ask for.

The nick is the account name. A client logs in with SASL PLAIN, with
``PASS`` (the password, the nick being the account, or ``account:password``),
or after registration with ``/msg NickServ IDENTIFY [account] password``;
until then it may only log in, register, ping and quit, and is told how in
a NOTICE.

The core delivers a session's first events (the rooms it rejoins) as soon
as the login is accepted, which for SASL is before IRC registration ends:
they wait in ``_early`` and are rendered after the welcome burst.
"""

from __future__ import annotations

import base64
import binascii
import calendar
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from fnmatch import fnmatchcase
from functools import lru_cache

from twisted.cred.error import UnauthorizedLogin
from twisted.internet import defer
from twisted.internet.protocol import Protocol, ServerFactory
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from chatd.auth.gate import Gate
from chatd.auth.throttles import address_key
from chatd.core.bulk import BulkReply, PageSource
from chatd.core.errors import ChatError
from chatd.core.events import (
    ACTION,
    BAN,
    MODERATED,
    NOTICE,
    PRIVATE,
    SAY,
    SECRET,
    TOPIC_OPEN,
    VOICE,
    Away,
    DirectHistoryLine,
    DirectMessage,
    Event,
    HistoryLine,
    Invited,
    Joined,
    Kicked,
    Members,
    Notice,
    Operators,
    Parted,
    RoomMessage,
    RoomMessages,
    RoomModeChanged,
    RoomSummary,
    StoredMessage,
    TagMessage,
    Topic,
    WhoisInfo,
    is_client_tag_key,
)
from chatd.core.interfaces import DisconnectReason, IChatClient, IChatSession
from chatd.core.names import fold, is_user_name
from chatd.frontends.irc import numerics as n
from chatd.frontends.irc.message import (
    CLIENT_TAGS_LIMIT,
    LINE_LIMIT,
    MalformedMessage,
    Message,
    escape_tag_value,
    parse,
    parse_tags,
    serialize,
    serialize_tags,
    trailing,
)
from chatd.frontends.limits import Limits, SendQueue
from chatd.ops.telemetry import Telemetry
from chatd.storage.rows import HistoryMark

log = Logger()

# What this door offers in CAP LS, with each capability's value.
CAPABILITIES: dict[str, str] = {
    "sasl": "PLAIN",
    "message-tags": "",
    "server-time": "",
    "echo-message": "",
    "batch": "",
    "account-tag": "",
    "multi-prefix": "",
    "away-notify": "",
    "labeled-response": "",
    "draft/chathistory": "",
    "userhost-in-names": "",
}
NICKSERV = "NickServ"
NICKSERV_KEY = fold(NICKSERV)
HISTORY_BATCH = "chathistory"
# The most messages one CHATHISTORY request gets (ISUPPORT CHATHISTORY).
CHATHISTORY_LIMIT = 100
# The most base64 a SASL PLAIN login may take: two names and the longest
# password, with room to spare.
SASL_LIMIT = 4000
# The most targets of one PRIVMSG or NOTICE (ISUPPORT TARGMAX).
MESSAGE_TARGETS = 4
# The longest user name (USER) shown by WHO and WHOIS.
USERNAME_LIMIT = 10
# Commands held while registration waits on a login; more are answered 451.
HELD_LIMIT = 32
# The users whose QUIT one connection remembers having shown (_render_parted).
QUIT_KEPT = 256
# Messages whose commits a connection may wait on at once, reading on behind them
# (at most CHATD_PIPELINE_DEPTH, as on the line door): unlabeled, they have no reply
# but a refusal, so nothing after them needs to wait for their commit.
PIPELINED_VERBS = frozenset({"PRIVMSG", "NOTICE"})


def irc_time(milliseconds: int) -> str:
    """An IRCv3 ``server-time`` value: UTC, ISO 8601 with milliseconds."""
    # Messages of one batch mostly share a second: its text is made once.
    second, millisecond = divmod(milliseconds, 1000)
    return f"{_second_text(second)}.{millisecond:03d}Z"


@lru_cache(maxsize=8)
def _second_text(second: int) -> str:
    """``second`` (Unix time) as UTC, ISO 8601 without the fraction."""
    return datetime.fromtimestamp(second, UTC).strftime("%Y-%m-%dT%H:%M:%S")


@dataclass(frozen=True)
class Command:
    """A row of the IRC command table: the handler, how many parameters it needs, when allowed.

    ``stage`` is ``"any"`` (before and after registration), ``"registered"``
    (after the welcome burst, logged in or not) or ``"session"`` (logged in).
    """

    handler: str
    min_params: int = 0
    stage: str = "session"


COMMANDS: dict[str, Command] = {
    "CAP": Command("irc_CAP", 1, "any"),
    "NICK": Command("irc_NICK", 0, "any"),
    "USER": Command("irc_USER", 4, "any"),
    "PASS": Command("irc_PASS", 1, "any"),
    "AUTHENTICATE": Command("irc_AUTHENTICATE", 1, "any"),
    "REGISTER": Command("irc_REGISTER", 3, "any"),
    "PING": Command("irc_PING", 1, "any"),
    "PONG": Command("irc_PONG", 0, "any"),
    "QUIT": Command("irc_QUIT", 0, "any"),
    "MOTD": Command("irc_MOTD", 0, "registered"),
    "PRIVMSG": Command("irc_PRIVMSG", 0, "registered"),
    "NOTICE": Command("irc_NOTICE", 0, "registered"),
    "TAGMSG": Command("irc_TAGMSG", 1),
    "JOIN": Command("irc_JOIN", 1),
    "PART": Command("irc_PART", 1),
    "NAMES": Command("irc_NAMES", 0),
    "WHO": Command("irc_WHO", 0),
    "WHOIS": Command("irc_WHOIS", 1),
    "LIST": Command("irc_LIST", 0),
    "MODE": Command("irc_MODE", 1),
    "TOPIC": Command("irc_TOPIC", 1),
    "KICK": Command("irc_KICK", 2),
    "INVITE": Command("irc_INVITE", 2),
    "AWAY": Command("irc_AWAY", 0),
    "OPER": Command("irc_OPER", 2),
    "CHATHISTORY": Command("irc_CHATHISTORY", 1),
    "TIME": Command("irc_TIME", 0, "registered"),
}

# WHOX fields (``WHO <mask> %<fields>[,<token>]``), in the order 354 gives them.
WHOX_FIELDS = "tcuihsnfdlaor"
# chatd's errors as the numerics IRC clients know.
_ERROR_NUMERICS = {
    "forbidden": n.ERR_CHANOPRIVSNEEDED,
    "not-in-room": n.ERR_NOTONCHANNEL,
    "no-such-user": n.ERR_NOSUCHNICK,
    "no-such-room": n.ERR_NOSUCHCHANNEL,
}


@implementer(IChatClient)
class IRCConnection(Protocol):
    """One IRC client: registration, the command table, and the session's mind."""

    def __init__(self, server: IRCFactory) -> None:
        self.server = server
        self._buffer = b""
        # Where the lines not yet run start in the buffer.
        self._start = 0
        self._discarding = False
        self.nick: str | None = None
        self._user_seen = False
        self.realname = ""
        self.username = ""
        self._password: str | None = None
        self._negotiating = False
        self.caps: set[str] = set()
        # Which tags room messages carry for this client (see _tags_shown), kept with caps.
        self._tags_shown = _tags_shown(self.caps)
        self._sasl: str | None = None
        self._sasl_chunks: list[str] = []
        self.registered = False
        self.session: IChatSession | None = None
        self._logout: Callable[[], None] | None = None
        self._logging_in = False
        self._early: list[Event] | None = None
        # Commands that came before the welcome, while registration waited on a
        # login, or while a labeled command's reply was still being gathered.
        self._held: list[Message] = []
        # labeled-response: the labeled command being answered, and the Deferreds
        # its reply waits for (None when no labeled command is running).
        self._label: _Label | None = None
        self._waits: list[defer.Deferred] | None = None
        # A command's reply waits on the core: the next lines wait for it
        # (read no further than the buffer), so replies come in command order.
        self._waiting = False
        # Pipelined messages (PRIVMSG, NOTICE) whose commits are still awaited; any
        # other command waits until they are all answered ("draining").
        self._posts_in_flight = 0
        self._draining = False
        self._output_slow = False
        self._held_reading = False
        self._reading_paused = False
        self._closing = False
        self._lost = False
        self._quit_reason = "Connection closed"
        self.peer = ""
        self.address = ""
        self.guard = None
        self.output: SendQueue | None = None
        self._history_open = False
        self._batch_serial = 0
        # The tags of the command being run (its client-only tags are passed on).
        self._tags_in: dict[str, str] = {}
        # While a bulk reply's page is encoded, rendered lines are collected here.
        self._collecting: list[bytes] | None = None
        self._invisible = False
        # The rooms this connection has shown its client joining (folded names).
        self._in_rooms: set[str] = set()
        # Users whose QUIT this client was shown (folded names, the latest
        # QUIT_KEPT): the PARTs of the same departure from the other rooms are
        # not shown again (cluster mode: a user of another node leaves each
        # room by a PART of its own) until the user JOINs again.
        self._quit_shown: dict[str, None] = {}
        # The operators this client was shown per room (folded room -> folded
        # names), so a change of the core's list is rendered as MODE +o/-o.
        self._shown_ops: dict[str, set[str]] = {}
        # Rooms whose topic was just shown in the join burst: the core's
        # Topic that follows it is not a change.
        self._topic_shown: set[str] = set()
        # WHOIS targets found offline: their away text is not shown as 301.

    # --- connection ---------------------------------------------------------

    @property
    def host(self) -> str:
        """The server's name, as the source of its own messages."""
        return self.server.config.server_name

    def connectionMade(self) -> None:
        """Count the connection against the limits; IRC has no greeting of its own."""
        peer = self.transport.getPeer()
        self.peer = f"{getattr(peer, 'host', 'unix')}:{getattr(peer, 'port', 0)}"
        self.address = address_key(peer)
        self.server.connections.add(self)
        if hasattr(self.transport, "setTcpNoDelay"):
            self.transport.setTcpNoDelay(True)
        config = self.server.config
        self.output = SendQueue(
            self.transport,
            config.send_queue_soft,
            config.send_queue_limit,
            self._output_filling,
            self._output_drained,
            self._overflowed,
            clock=self.server.clock,
        )
        self.guard = self.server.limits.guard(self.address, self._ping, self.disconnect)
        if not self.guard.opened():
            self.disconnect(DisconnectReason.TOO_MANY_CONNECTIONS)

    def _output_filling(self) -> None:
        self._output_slow = True
        self._update_reading()

    def _output_drained(self) -> None:
        self._output_slow = False
        self._update_reading()

    def _update_reading(self) -> None:
        """Read from the client unless its output is backed up or its lines are held."""
        if self._lost:
            return
        wanted = self._output_slow or self._held_reading
        if wanted and not self._reading_paused:
            self._reading_paused = True
            self.transport.pauseProducing()
        elif not wanted and self._reading_paused:
            self._reading_paused = False
            self.transport.resumeProducing()

    def _overflowed(self) -> None:
        self.server.telemetry.disconnected("slow-reader", self.peer, self._user_name())
        self._closing = True
        self.server.clock.callLater(0, self.transport.abortConnection)

    def connectionLost(self, reason=None) -> None:
        """End the session, if any, and forget the connection."""
        self._lost = True
        self._closing = True
        self.connected = False
        if self.guard is not None:
            self.guard.lost()
            self.output.stopProducing()
        self.server.connections.discard(self)
        early, self._early = self._early, None
        for waiting in early or ():
            if isinstance(waiting, _EarlyBulk):
                bulk = BulkReply(waiting.source, self._encode)
                bulk.cancel()
                bulk.done.chainDeferred(waiting.done)
        if self._logout is not None:
            logout, self._logout = self._logout, None
            # The rooms' other IRC members see QUIT (with this reason) as the
            # user leaves its rooms, if this was its last session.
            key = self.session.user.key if self.session is not None else ""
            self.server.quit_reasons[key] = self._quit_reason
            try:
                logout()
            finally:
                self.server.quit_reasons.pop(key, None)

    def _user_name(self) -> str | None:
        return self.session.name if self.session is not None else None

    # --- output ---------------------------------------------------------------

    def send(self, message: Message) -> None:
        """Write one message (tags the client did not ask for are left out).

        While a labeled command runs, what it causes is gathered for its reply
        (``labeled-response``), or once that reply is a batch already on its
        way, tagged as part of it.
        """
        if self._closing:
            return
        label = self._label
        if label is not None:
            if label.batch is None:
                label.lines.append(message)
                return
            if "batch" not in message.tags:
                message = _with_tags(message, batch=label.batch)
        data = (serialize(_as_asked(message, self.caps)) + "\r\n").encode("utf-8")
        if self._collecting is not None:
            self._collecting.append(data)
            return
        self.server.telemetry.sent(len(data))
        self.output.write(data)

    def reply(self, numeric: str, *params: str) -> None:
        """A numeric reply to this client: ``:server NUMERIC nick params...``."""
        self.send(Message(numeric, (self.nick or "*", *params), self.host))

    def notice(self, text: str, source: str | None = None) -> None:
        """A NOTICE to this client from the server (or from ``source``)."""
        self.send(Message("NOTICE", (self.nick or "*", text), source or self.host))

    def fail(self, command: str, code: str, *context: str) -> None:
        """An IRCv3 standard reply: ``FAIL <command> <code> [context...] :text``."""
        self.send(Message("FAIL", (command, code, *context), self.host))

    def source_of(self, name: str) -> str:
        """The ``nick!user@host`` a user's messages come from."""
        return _source(name, self.host)

    def _ping(self, token: str) -> None:
        self.send(Message("PING", (token,), self.host))

    def disconnect(self, reason: DisconnectReason) -> None:
        """Say ``ERROR`` with the reason and close; nothing is answered after it."""
        if self._closing:
            return
        if self._label is not None:
            self._finish_label(run_held=False)
        self.server.telemetry.disconnected(reason, self.peer, self._user_name())
        self.send(Message("ERROR", (f"Closing link: {reason}",)))
        self._closing = True
        self.output.finish()
        self.guard.closing(self.transport)
        self.transport.loseConnection()

    # --- framing ----------------------------------------------------------------

    def dataReceived(self, data: bytes) -> None:
        """Frame lines on LF (a CR before it is dropped), skipping the rest of an over-long one."""
        # The client reads what it was sent: a good moment to see what arrived.
        self.output.check_handed_over()
        if self._closing:
            return
        if self._start:
            # The lines already run leave the buffer here, once per read.
            self._buffer = self._buffer[self._start :] + data
            self._start = 0
        else:
            self._buffer += data
        if self._waiting and not self._held_reading and len(self._buffer) > LINE_LIMIT:
            # A command is still answered and a line already waits behind it:
            # stop reading until it is, so the buffer stays bounded.
            self._held_reading = True
            self._update_reading()
        self._frame_lines()

    def _frame_lines(self) -> None:
        """Run the buffer's complete lines, from ``_start`` on.

        Lines are found by searching forward from an offset: cutting the
        buffer after each line would copy its rest every time, quadratic in
        a read of many short lines.
        """
        while not self._closing and not self._waiting:
            buffer, start = self._buffer, self._start
            end = buffer.find(b"\n", start)
            if end < 0:
                if len(buffer) - start > self.server.max_line_bytes:
                    self._buffer, self._start = b"", 0
                    if not self._discarding:
                        self._discarding = True
                        self.reply(n.ERR_INPUTTOOLONG, "Input line was too long")
                return
            self._start = end + 1
            if self._discarding:
                self._discarding = False
                continue
            self.line_received(buffer[start:end].rstrip(b"\r"))

    def line_received(self, line: bytes) -> None:
        """Check one line against the limits, decode and parse it, and run it.

        Every line costs rate budget (a line token and its bytes, line end
        included), an empty one too, as on the line door: an empty line gets
        no reply, but a flood of them ends the connection.
        """
        verdict = self.guard.line(len(line) + 2)
        if not line.strip(b" "):
            if verdict == "flood":
                self.disconnect(DisconnectReason.FLOOD)
            return
        if verdict == "flood":
            self.disconnect(DisconnectReason.FLOOD)
            return
        if verdict is not None:
            self.fail("*", "RATE_LIMITED", "too many lines; this one was dropped")
            return
        tags_part = b""
        body = line
        if line.startswith(b"@"):
            tags_part, _, body = line.partition(b" ")
        # IRCv3: at most 4,094 bytes of tags from a client, not counting the
        # '@' before them (nor the space after).
        if len(tags_part) - 1 > CLIENT_TAGS_LIMIT or len(body) + 2 > LINE_LIMIT:
            self.reply(n.ERR_INPUTTOOLONG, "Input line was too long")
            return
        try:
            text = line.decode("utf-8")
        except UnicodeDecodeError:
            refusal = Message(
                "FAIL", ("*", "INVALID_UTF8", "lines must be UTF-8; this one was dropped"),
                self.host,
            )
            label = _label_of(tags_part) if "labeled-response" in self.caps else ""
            self.send(_with_tags(refusal, label=label) if label else refusal)
            return
        try:
            message = parse(text)
        except MalformedMessage:
            return
        self.run(message)

    # --- commands -------------------------------------------------------------------

    def run(self, message: Message) -> None:
        """Run one command; a labeled one (``labeled-response``) gets its reply gathered.

        Commands that come while a labeled command's reply is still being
        gathered wait for it (at most ``HELD_LIMIT``; more are dropped with
        a ``FAIL``), so no other reply gets mixed into it.
        """
        if self._label is not None:
            if len(self._held) >= HELD_LIMIT:
                self.fail("*", "RATE_LIMITED", "too many commands at once; this one was dropped")
            else:
                self._held.append(message)
            return
        label = message.tags.get("label") if "labeled-response" in self.caps else None
        pipelined = not label and message.command in PIPELINED_VERBS
        in_flight = self._posts_in_flight
        if in_flight and (not pipelined or in_flight >= self.server.config.pipeline_depth):
            # Anything else (or one message too many) runs once the messages in
            # flight are answered, so its effects and replies come after theirs.
            self._held.insert(0, message)
            self._waiting = self._draining = True
            return
        if label:
            self._label = _Label(label)
        self._waits = []
        try:
            self._run(message)
        finally:
            waits, self._waits = self._waits, None
            if waits:
                # One wait (a message to one target) is waited on as it is: a
                # DeferredList for it would cost more than the message's own work.
                # Its failure, already answered by the command's own errbacks,
                # ends in _post_answered or _answered, which return None.
                gathered = (
                    waits[0]
                    if len(waits) == 1
                    else defer.DeferredList(waits, consumeErrors=True)
                )
                if pipelined:
                    self._posts_in_flight += 1
                    gathered.addBoth(self._post_answered)
                else:
                    self._waiting = True
                    gathered.addBoth(self._answered)
            elif self._label is not None:
                self._finish_label()

    def _post_answered(self, _) -> None:
        """A pipelined message is answered; the last of them lets a waiting command run."""
        self._posts_in_flight -= 1
        if self._draining and not self._posts_in_flight:
            self._draining = False
            self._answered(None)

    def _answered(self, _) -> None:
        """The command that held the next lines is answered: run them now."""
        self._waiting = False
        if self._label is not None:
            self._finish_label(run_held=False)
        self._held_reading = False
        self._update_reading()
        self._run_held()
        if not self._waiting and self._label is None:
            self._frame_lines()

    def _track(self, waiting: defer.Deferred) -> defer.Deferred:
        """Note that the running command's reply is complete only once ``waiting`` fires."""
        if self._waits is not None:
            self._waits.append(waiting)
        return waiting

    def _stream_label(self) -> None:
        """Open the labeled reply's batch now (a long reply is coming) and send what waited."""
        label = self._label
        if label is None or label.batch is not None:
            return
        self._batch_serial += 1
        label.batch = f"l{self._batch_serial}"
        waiting, label.lines = label.lines, []
        self._label = None
        self.send(Message(
            "BATCH", (f"+{label.batch}", "labeled-response"), self.host, {"label": label.label}
        ))
        self._label = label
        for message in waiting:
            self.send(message)

    def _finish_label(self, run_held: bool = True) -> None:
        """Send a labeled command's reply: ACK for none, one tagged line, or a batch."""
        label, self._label = self._label, None
        if label is None:
            return
        if label.batch is not None:
            self.send(Message("BATCH", (f"-{label.batch}",), self.host))
        elif not label.lines:
            self.send(Message("ACK", (), self.host, {"label": label.label}))
        elif len(label.lines) == 1 or "batch" not in self.caps:
            first, *rest = label.lines
            self.send(_with_tags(first, label=label.label))
            for message in rest:
                self.send(message)
        else:
            self._label = label
            self._stream_label()
            self._label = None
            self.send(Message("BATCH", (f"-{label.batch}",), self.host))
        if run_held:
            self._run_held()

    def _run(self, message: Message) -> None:
        """Find the verb in the table, check its stage and parameters, and call it."""
        verb = message.command
        command = COMMANDS.get(verb)
        if command is None:
            if self.registered:
                self.reply(n.ERR_UNKNOWNCOMMAND, verb, "Unknown command")
            return
        if command.stage != "any" and not self.registered:
            if self._logging_in and len(self._held) < HELD_LIMIT:
                # Sent right behind NICK/USER while the login (or the guest's
                # check) is in flight: run once it has ended.
                self._held.append(message)
                return
            self.reply(n.ERR_NOTREGISTERED, "You have not registered")
            return
        if command.stage == "session" and self.session is None:
            self._tell_how_to_log_in()
            return
        if len(message.params) < command.min_params:
            self.reply(n.ERR_NEEDMOREPARAMS, verb, "Not enough parameters")
            return
        self._tags_in = message.tags
        try:
            getattr(self, command.handler)(*message.params)
        except ChatError as error:
            self.notice(f"{verb}: {error.text}")
        finally:
            self._tags_in = {}

    def _client_tags_in(self) -> tuple[tuple[str, str], ...]:
        """The running command's client-only tags (``+key``), from a client that asked for
        message-tags; other tags, and keys that are not well formed, are not passed on."""
        if "message-tags" not in self.caps:
            return ()
        return tuple(
            (key, value) for key, value in self._tags_in.items() if is_client_tag_key(key)
        )

    def _tell_how_to_log_in(self) -> None:
        self.notice(
            "Log in first: /msg NickServ IDENTIFY <password>, or register with"
            " /msg NickServ REGISTER <password> (your nick is the account name)"
        )

    # registration ------------------------------------------------------------------

    def irc_CAP(self, subcommand: str, *arguments: str) -> None:
        """CAP LS/LIST/REQ/END: capability negotiation, which holds registration open."""
        sub = subcommand.upper()
        if sub == "LS":
            if not self.registered:
                self._negotiating = True
            values = [name + (f"={value}" if value else "") for name, value in CAPABILITIES.items()]
            offered = " ".join(values) if arguments and arguments[0] >= "302" else " ".join(
                CAPABILITIES
            )
            self.send(Message("CAP", (self.nick or "*", "LS", offered), self.host))
        elif sub == "LIST":
            listed = " ".join(sorted(self.caps))
            self.send(Message("CAP", (self.nick or "*", "LIST", listed), self.host))
        elif sub == "REQ":
            if not self.registered:
                self._negotiating = True
            wanted = arguments[0].split() if arguments else []
            known = all(name.lstrip("-") in CAPABILITIES for name in wanted)
            answer = "ACK" if known and wanted else "NAK"
            if answer == "ACK":
                for name in wanted:
                    if name.startswith("-"):
                        self.caps.discard(name[1:])
                    else:
                        self.caps.add(name)
                self._tags_shown = _tags_shown(self.caps)
            self.send(Message("CAP", (self.nick or "*", answer, " ".join(wanted)), self.host))
        elif sub == "END":
            if self._negotiating and not self.registered:
                self._negotiating = False
                if self._sasl is not None:
                    # IRCv3 SASL: ending registration aborts an exchange still
                    # waiting for its payload; the client comes in without one.
                    self._sasl, self._sasl_chunks = None, []
                    self.reply(n.ERR_SASLABORTED, "SASL authentication aborted")
                self._maybe_register()
        else:
            self.reply(n.ERR_INVALIDCAPCMD, subcommand, "Invalid CAP command")

    def irc_NICK(self, nick: str | None = None, *_: str) -> None:
        """Set the nick before registration; afterwards only the account's own name."""
        if not nick:
            self.reply(n.ERR_NONICKNAMEGIVEN, "No nickname given")
            return
        if not is_user_name(nick) or fold(nick) == NICKSERV_KEY:
            self.reply(n.ERR_ERRONEUSNICKNAME, nick, "Erroneous nickname")
            return
        if self.registered:
            if self.nick is not None and fold(nick) == fold(self.nick):
                return
            self.reply(n.ERR_ERRONEUSNICKNAME, nick, "Your nick is your account name here")
            return
        self.nick = nick
        self._maybe_register()

    def irc_USER(self, _user: str, _mode: str, _unused: str, realname: str, *_: str) -> None:
        """USER: the user name and the real name are shown by WHO and WHOIS."""
        if self.registered:
            self.reply(n.ERR_ALREADYREGISTERED, "You may not reregister")
            return
        if not realname:
            self.reply(n.ERR_NEEDMOREPARAMS, "USER", "Not enough parameters")
            return
        self.realname = realname
        # Shown by WHO and WHOIS; the source of messages stays nick!nick@server.
        self.username = _user[:USERNAME_LIMIT] if is_user_name(_user[:USERNAME_LIMIT]) else ""
        self._user_seen = True
        self._maybe_register()

    def irc_PASS(self, password: str, *_: str) -> None:
        """PASS before registration: the password, or ``account:password``."""
        if self.registered:
            self.reply(n.ERR_ALREADYREGISTERED, "You may not reregister")
            return
        self._password = password

    def irc_AUTHENTICATE(self, payload: str, *_: str) -> None:
        """SASL PLAIN (RFC 4616), base64 in chunks of at most 400 bytes."""
        if (self.session is not None and not self.session.guest) or self._logging_in:
            self.reply(n.ERR_SASLALREADY, "You have already authenticated")
            return
        if self._sasl is None:
            if payload.upper() != "PLAIN":
                self.reply(n.RPL_SASLMECHS, "PLAIN", "are available SASL mechanisms")
                self.reply(n.ERR_SASLFAIL, "SASL authentication failed")
                return
            self._sasl = "PLAIN"
            self._sasl_chunks = []
            self.send(Message("AUTHENTICATE", ("+",)))
            return
        if payload == "*":
            self._sasl = None
            self.reply(n.ERR_SASLABORTED, "SASL authentication aborted")
            return
        if len(payload) > 400:
            self._sasl = None
            self.reply(n.ERR_SASLTOOLONG, "SASL message too long")
            return
        if payload != "+":
            self._sasl_chunks.append(payload)
            if sum(len(chunk) for chunk in self._sasl_chunks) > SASL_LIMIT:
                # No PLAIN login is this long: a client that keeps sending is refused.
                self._sasl, self._sasl_chunks = None, []
                self.reply(n.ERR_SASLFAIL, "SASL authentication failed: too long")
                return
            if len(payload) == 400:
                return
        encoded, self._sasl, self._sasl_chunks = "".join(self._sasl_chunks), None, []
        try:
            authzid, authcid, password = base64.b64decode(encoded, validate=True).split(b"\0")
            account = (authcid or authzid).decode("utf-8")
            secret = password.decode("utf-8")
        except (binascii.Error, ValueError, UnicodeDecodeError):
            self.reply(n.ERR_SASLFAIL, "SASL authentication failed")
            return
        if authzid and authcid and fold(authzid.decode("utf-8", "replace")) != fold(account):
            self.reply(n.ERR_SASLFAIL, "SASL authentication failed")
            return
        self._track(
            self._log_in(account, secret).addCallbacks(self._sasl_succeeded, self._sasl_failed)
        )

    def _sasl_succeeded(self, name: str) -> None:
        self.reply(n.RPL_LOGGEDIN, self.source_of(name), name, f"You are now logged in as {name}")
        self.reply(n.RPL_SASLSUCCESS, "SASL authentication successful")

    def _sasl_failed(self, failure: Failure) -> None:
        self.reply(n.ERR_SASLFAIL, f"SASL authentication failed: {self._why(failure)}")

    def _maybe_register(self) -> None:
        """Registration ends once NICK and USER are in and no CAP negotiation is open."""
        if self.registered or self._negotiating or self.nick is None or not self._user_seen:
            return
        if self.session is None and self._password is not None and not self._logging_in:
            account, colon, password = self._password.partition(":")
            if not colon:
                account, password = self.nick, self._password
            self._password = None
            logging_in = self._log_in(account, password)
            logging_in.addCallbacks(lambda _: self._welcome(), self._pass_failed)
            return
        if self._logging_in:
            return  # SASL still checking: the welcome follows its outcome
        if self.session is None and self.server.config.guests:
            self._start_guest()
            return
        self._welcome()

    def _start_guest(self) -> None:
        """Chat as a guest under the nick (``CHATD_GUESTS=on``), through the gate.

        Before the welcome a nick that is an account's or in use is answered
        433 and the client may send another; after it (a failed login of a
        guest), the client is told in a NOTICE.
        """
        nick = self.nick
        self._logging_in = True
        try:
            starting = self.server.gate.guest(nick, self.peer, self)
        except ChatError as error:
            starting = defer.fail(error)

        def started(login) -> None:
            self._logging_in = False
            session, logout = login
            if self._lost:
                logout()
                return
            self.guard.answers_pings()
            self.guard.logged_in()
            self.session, self._logout = session, logout
            if self._invisible:
                session.set_invisible(True)
            self._welcome()

        def refused(failure: Failure) -> None:
            self._logging_in = False
            if self._lost:
                return
            if self.registered:
                self.notice(f"You are not logged in: {self._why(failure)}")
                return
            self.nick = None
            self.reply(n.ERR_NICKNAMEINUSE, nick, self._why(failure))
            self._run_held()

        starting.addCallbacks(started, refused)

    def _end_guest(self) -> None:
        """A guest logs in: its guest session ends, and its client leaves the guest's rooms."""
        if self.session is None or not self.session.guest:
            return
        for room in self._joined_rooms():
            self.send(Message("PART", (room,), self.source_of(self.nick or "")))
        self._in_rooms.clear()
        self._shown_ops.clear()
        logout, self._logout, self.session = self._logout, None, None
        if logout is not None:
            logout()

    def _pass_failed(self, failure: Failure) -> None:
        self.reply(n.ERR_PASSWDMISMATCH, f"Password incorrect: {self._why(failure)}")
        self.disconnect(DisconnectReason.BAD_CREDENTIALS)

    def _welcome(self) -> None:
        """The welcome burst (001 to 005, MOTD), then whatever the core sent meanwhile."""
        if self.registered or self._closing:
            return
        self.registered = True
        config = self.server.config
        if self.session is not None:
            self.nick = self.session.name
        self.reply(n.RPL_WELCOME, f"Welcome to {config.server_name}, {self.nick}")
        self.reply(n.RPL_YOURHOST, f"Your host is {self.host}, running chatd")
        self.reply(n.RPL_CREATED, "This server speaks chatd's rooms over IRC")
        self.reply(n.RPL_MYINFO, self.host, "chatd", "i", "biot")
        tokens = self.server.isupport()
        for start in range(0, len(tokens), 12):
            self.reply(n.RPL_ISUPPORT, *tokens[start : start + 12], "are supported by this server")
        self.irc_MOTD()
        if self.session is None:
            self._tell_how_to_log_in()
        self._release_early()
        self._run_held()

    def _run_held(self) -> None:
        """Run the commands that waited, until one of them has to wait again."""
        while self._held and self._label is None and not self._waiting and not self._closing:
            if self._logging_in and not self.registered:
                return
            self.run(self._held.pop(0))

    def _release_early(self) -> None:
        early, self._early = self._early, None
        for event in early or ():
            if isinstance(event, _EarlyBulk):
                self.deliver_bulk(event.source).chainDeferred(event.done)
            else:
                self.deliver(event)

    def irc_MOTD(self, *_: str) -> None:
        """The message of the day: how to use chatd over IRC."""
        self.reply(n.RPL_MOTDSTART, f"- {self.host} Message of the day -")
        for line in self.server.motd:
            self.reply(n.RPL_MOTD, f"- {line}")
        self.reply(n.RPL_ENDOFMOTD, "End of /MOTD command")

    # logging in --------------------------------------------------------------------

    def _log_in(self, name: str, password: str) -> defer.Deferred:
        """Log in through the gate (the line door's throttles and checks); fire with the name."""
        if not is_user_name(name):
            return defer.fail(ChatError("bad-credentials", "unknown user or wrong password"))
        was_guest = self.session is not None
        self._end_guest()
        self._logging_in = True
        # The session's first events wait until the door has said what comes
        # before them: the welcome burst, or NickServ's nick change.
        self._early = []
        logging_in = defer.maybeDeferred(
            self.server.gate.login, name, password, self.address, self.peer, self
        )

        def succeeded(login) -> str:
            self._logging_in = False
            session, logout = login
            if self._lost:
                logout()
                raise ChatError("server-error", "the connection is gone")
            # Every IRC client answers PING: it is checked on silence from the start.
            self.guard.answers_pings()
            self.guard.logged_in()
            self.session, self._logout = session, logout
            if self._invisible:
                session.set_invisible(True)
            return session.name

        def failed(failure: Failure):
            self._logging_in = False
            self._early = None
            if was_guest and not self._lost:
                self._start_guest()  # back to chatting as the guest it was
            elif self.registered or not self._negotiating:
                self._maybe_register_after_failure()
            return failure

        return logging_in.addCallbacks(succeeded, failed)

    def _maybe_register_after_failure(self) -> None:
        # SASL failed outside negotiation (the client sent CAP END already): it
        # may still come in unauthenticated and use NickServ.
        if not self.registered and not self._negotiating:
            self.server.clock.callLater(0, self._maybe_register)

    @staticmethod
    def _why(failure: Failure) -> str:
        if failure.check(ChatError):
            return failure.value.text
        if failure.check(UnauthorizedLogin):
            return "unknown user or wrong password"
        log.failure("IRC login failed", failure)
        return "the server failed; try again"

    def _identified(self, name: str) -> None:
        """A NickServ login succeeded: take the account's nick and show its rooms."""
        if self.nick != name:
            self.send(Message("NICK", (name,), self.source_of(self.nick or name)))
            self.nick = name
        self.reply(n.RPL_LOGGEDIN, self.source_of(name), name, f"You are now logged in as {name}")
        self.notice(f"You are now identified as {name}", self.source_of(NICKSERV))
        self._release_early()

    def irc_REGISTER(self, account: str, _email: str, password: str, *_: str) -> None:
        """draft/account-registration: ``REGISTER <account> <email> <password>``."""
        name = self.nick if account == "*" else account
        if name is None:
            self.fail("REGISTER", "NEED_NICK", "*", "Send NICK first")
            return
        registering = self._register(name, password)

        def done(created: str) -> None:
            self.send(Message("REGISTER", ("SUCCESS", created, "Account created"), self.host))

        def failed(failure: Failure) -> None:
            code = failure.value.code if failure.check(ChatError) else "server-error"
            self.fail("REGISTER", _REGISTER_FAILS.get(code, "ACCOUNT_NAME_INVALID"), name,
                      self._why(failure))

        self._track(registering.addCallbacks(done, failed))

    def _register(self, name: str, password: str) -> defer.Deferred:
        """Create an account through the gate, under the line door's ``/register`` limits."""
        if self.session is not None and not self.session.guest:
            return defer.fail(ChatError("already-logged-in", "you are logged in already"))
        return defer.maybeDeferred(
            self.server.gate.register, name, password, self.address, self.peer, self.session
        )

    def _nickserv(self, text: str) -> None:
        """``/msg NickServ IDENTIFY [account] <password>`` or ``REGISTER <password>``."""
        words = text.split(" ")
        verb = words[0].upper() if words else ""
        reply = lambda line: self.notice(line, self.source_of(NICKSERV))  # noqa: E731
        if verb == "IDENTIFY" and len(words) in (2, 3):
            if self.session is not None and not self.session.guest:
                reply("You are already identified")
                return
            account, password = (words[1], words[2]) if len(words) == 3 else (self.nick, words[1])
            logging_in = self._log_in(account, password)
            self._track(logging_in).addCallbacks(
                self._identified, lambda failure: reply(f"Login failed: {self._why(failure)}")
            )
        elif verb == "REGISTER" and len(words) == 2:
            registering = self._register(self.nick, words[1])
            self._track(registering).addCallbacks(
                lambda name: reply(f"Account {name} created; /msg NickServ IDENTIFY <password>"),
                lambda failure: reply(f"Registration failed: {self._why(failure)}"),
            )
        else:
            reply("Commands: IDENTIFY [<account>] <password>, REGISTER <password>")

    # chat ------------------------------------------------------------------------------

    def irc_PING(self, token: str, *_: str) -> None:
        """PING from the client: PONG with the same token."""
        self.send(Message("PONG", (self.host, token), self.host))

    def irc_PONG(self, *_: str) -> None:
        """An answer to our PING: hearing anything is enough for the keep-alive."""

    def irc_QUIT(self, reason: str | None = None, *_: str) -> None:
        """Leave: ERROR, then the connection closes; the others see QUIT with the reason."""
        self._quit_reason = f"Quit: {reason}" if reason else "Quit"
        self.disconnect(DisconnectReason.QUIT)

    def irc_TIME(self, *_: str) -> None:
        """TIME: the server's time (391)."""
        now = datetime.fromtimestamp(self.server.clock.seconds(), UTC)
        self.reply(n.RPL_TIME, self.host, now.strftime("%A %B %d %Y -- %H:%M:%S +00:00"))

    def irc_PRIVMSG(self, targets: str | None = None, text: str | None = None, *_: str) -> None:
        """PRIVMSG to rooms and users; NickServ gets its commands."""
        self._message("PRIVMSG", targets, text)

    def irc_NOTICE(self, targets: str | None = None, text: str | None = None, *_: str) -> None:
        """NOTICE: chatd's notice kind of message, which never causes an error reply
        (RFC 2812); it reaches IRC clients as NOTICE and is kept in history as one."""
        self._message("NOTICE", targets, text)

    def irc_TAGMSG(self, targets: str, *_: str) -> None:
        """TAGMSG: client-only tags alone (typing, reactions) to rooms or users online.

        Only from a client that asked for message-tags (others have no tags to
        send: ignored, as Ergo does); delivered live to clients that asked for
        message-tags, never stored.
        """
        if "message-tags" not in self.caps:
            return
        tags = self._client_tags_in()
        if targets.count(",") >= MESSAGE_TARGETS:
            self.reply(n.ERR_TOOMANYTARGETS, targets, f"At most {MESSAGE_TARGETS} targets")
            return
        for target in targets.split(","):
            if fold(target) == NICKSERV_KEY:
                continue
            try:
                self.session.tag(target, tags)
            except ChatError as error:
                if target.startswith("#"):
                    self.reply(n.ERR_CANNOTSENDTOCHAN, target, error.text)
                else:
                    self.reply(n.ERR_NOSUCHNICK, target, "No such nick")

    def _message(self, verb: str, targets: str | None, text: str | None) -> None:
        quiet = verb == "NOTICE"
        if not targets:
            if not quiet:
                self.reply(n.ERR_NORECIPIENT, f"No recipient given ({verb})")
            return
        if not text:
            if not quiet:
                self.reply(n.ERR_NOTEXTTOSEND, "No text to send")
            return
        if targets.count(",") >= MESSAGE_TARGETS:
            if not quiet:
                self.reply(n.ERR_TOOMANYTARGETS, targets, f"At most {MESSAGE_TARGETS} targets")
            return
        tags = self._client_tags_in()
        for target in targets.split(","):
            if fold(target) == NICKSERV_KEY:
                self._nickserv(text)
            elif self.session is None:
                self._tell_how_to_log_in()
            elif target.startswith("#"):
                self._say(target, text, quiet, tags)
            else:
                self._direct(target, text, quiet, tags)

    def _say(self, room: str, text: str, quiet: bool, tags=()) -> None:
        action = text.startswith(CTCP_ACTION) and text.endswith("\x01") and len(text) > 9
        if action and not quiet:
            # CTCP ACTION (/me in IRC clients) is chatd's action: ACTION on the line door.
            text = text[len(CTCP_ACTION) : -1]
        try:
            if quiet:
                posting = self.session.notice(text, room, tags)
            elif action:
                posting = self.session.act(text, room, tags)
            else:
                posting = self.session.say(text, room, tags)
        except ChatError as error:
            if not quiet:
                self.reply(n.ERR_CANNOTSENDTOCHAN, room, error.text)
            return

        def refused(failure: Failure) -> None:
            if not quiet:
                self.reply(n.ERR_CANNOTSENDTOCHAN, room, self._why(failure))

        self._track(posting.addErrback(refused))

    def _direct(self, target: str, text: str, quiet: bool, tags=()) -> None:
        try:
            # Through the gate: storing for someone away is limited as on every door.
            sending = self.server.gate.message(
                self.session, target, text, self.address, NOTICE if quiet else SAY, tags
            )
        except ChatError as error:
            if quiet:
                return
            if error.code == "rate-limited":
                self.fail("PRIVMSG", "CANNOT_SEND", target, error.text)
            elif error.code == "forbidden":
                self.reply(n.ERR_NOSUCHNICK, target, f"No such nick ({error.text})")
            else:
                self.reply(n.ERR_NOSUCHNICK, target, "No such nick")
            return

        def refused(failure: Failure) -> None:
            if quiet:
                return
            if failure.check(ChatError) and failure.value.code == "no-such-user":
                self.reply(n.ERR_NOSUCHNICK, target, "No such nick")
            else:
                self.fail("PRIVMSG", "CANNOT_SEND", target, self._why(failure))

        self._track(sending.addErrback(refused))

    def irc_JOIN(self, rooms: str, keys: str | None = None, *_: str) -> None:
        """JOIN one or several rooms; rooms have no keys here, so a key is refused."""
        if rooms == "0":
            for room in list(self._joined_rooms()):
                self.session.part(room)
            return
        for index, room in enumerate(rooms.split(",")):
            if keys and index < len(keys.split(",")) and keys.split(",")[index]:
                self.reply(n.ERR_BADCHANNELKEY, room, "Rooms here have no keys")
                continue
            if not room.startswith("#"):
                self.reply(n.ERR_NOSUCHCHANNEL, room, "No such channel")
                continue
            try:
                # Through the gate: the caps on rooms are every door's.
                joining = self.server.gate.join(self.session, room, self.address)
            except ChatError as error:
                self._refuse_join(room, error)
                continue
            self._track(joining).addCallbacks(
                lambda name, room=room: self._joined(name),
                lambda failure, room=room: self._join_failed(room, failure),
            )

    def _joined(self, name: str) -> None:
        self._close_history()

    def _join_failed(self, room: str, failure: Failure) -> None:
        if failure.check(ChatError):
            self._refuse_join(room, failure.value)
        else:
            self.reply(n.ERR_NOSUCHCHANNEL, room, self._why(failure))

    def _refuse_join(self, room: str, error: ChatError) -> None:
        numeric = n.ERR_NOSUCHCHANNEL
        if error.code == "too-many-rooms":
            numeric = n.ERR_TOOMANYCHANNELS
        elif error.code == "forbidden":
            banned = "banned" in error.text
            numeric = n.ERR_BANNEDFROMCHAN if banned else n.ERR_INVITEONLYCHAN
        self.reply(numeric, room, error.text)

    def _joined_rooms(self) -> list[str]:
        user = getattr(self.session, "user", None)
        return [room.name for room in user.rooms.values()] if user is not None else []

    def irc_PART(self, rooms: str, reason: str | None = None, *_: str) -> None:
        """PART one or several rooms, with an optional reason every member's client sees."""
        for room in rooms.split(","):
            try:
                parting = self.session.part(room, reason or "")
            except ChatError:
                self.reply(n.ERR_NOTONCHANNEL, room, "You're not on that channel")
                continue
            self._track(parting).addErrback(self._refused("PART", room))

    def irc_NAMES(self, rooms: str | None = None, *_: str) -> None:
        """NAMES for the named room: 353s then 366; for several (``#a,#b``) the 353s of
        each, then one 366 naming them all as asked; without one, every room you may
        see (yours, and the public ones with members), then one 366."""
        if not rooms:
            self._names_of_all()
            return
        for room in rooms.split(","):
            if not room:
                continue
            try:
                roster = self.session.who(room)
            except ChatError:
                continue
            self._names_lines(
                roster.room, self._names_shown(roster), _folded(roster.operators),
                roster.secret,
            )
        self.reply(n.RPL_ENDOFNAMES, rooms, "End of /NAMES list")

    def _names_of_all(self) -> None:
        chat = self.server.chat
        # Cluster mode: rooms whose members are all on other nodes too.
        keys = set(chat.rooms) | set(chat.fanout.presence.room_keys())
        for key in sorted(keys):
            try:
                roster = chat.roster(key, self.session.user)
            except ChatError:
                continue  # nobody in it, or private or secret and not ours
            self._names_lines(
                roster.room, self._names_shown(roster), _folded(roster.operators),
                roster.secret,
            )
        self.reply(n.RPL_ENDOFNAMES, "*", "End of /NAMES list")

    def _names_shown(self, roster) -> tuple[str, ...]:
        """The members ``NAMES`` lists to this client: all of them to a member of the
        room; to anyone else, those without user mode +i (RFC 2812 3.2.5), on any node."""
        user = self.session.user
        if fold(roster.room) in user.rooms:
            return roster.members
        return tuple(
            name for name in roster.members
            if fold(name) == user.key or not self.server.is_invisible(fold(name))
        )

    def irc_WHO(self, mask: str | None = None, options: str | None = None, *_: str) -> None:
        """WHO for a room (352 per member) or a nick, then 315; WHOX (354) with ``%fields``."""
        why = "who"
        if options and options.startswith("%"):
            why = "who" + options
        if mask and mask.startswith("#"):
            try:
                roster = self.session.who(mask)
            except ChatError:
                self.reply(n.RPL_ENDOFWHO, mask, "End of WHO list")
                return
            operators, voiced = _folded(roster.operators), self._voiced_in(roster.room)
            for member in roster.members:
                marks = self._prefix(fold(member), operators, voiced)
                self._who_reply(roster.room, member, marks, _whox(why))
            self.reply(n.RPL_ENDOFWHO, roster.room, "End of WHO list")
            return
        if mask and ("*" in mask or "?" in mask):
            # A mask: the online users it matches, but those invisible (+i)
            # unless they share a room with you.
            pattern, mine = fold(mask), self.session.user.rooms
            chat = self.server.chat
            shown = {}
            for key, user in chat.users.items():
                visible = user is self.session.user or not self.server.is_invisible(key) or any(
                    room in mine for room in user.rooms
                )
                if visible and fnmatchcase(key, pattern):
                    shown[key] = user.name
            # Cluster mode: users of other nodes, by the same rule (their nodes tell
            # whether a session there is invisible).
            presence = chat.fanout.presence
            for key, name in presence.users().items():
                if key in shown or key in chat.users or not fnmatchcase(key, pattern):
                    continue
                state = presence.user(key)
                if state is None:
                    continue
                if not chat.is_invisible(key) or any(
                    seat.room_key in mine for seat in state.rooms
                ):
                    shown[key] = name
            for key in sorted(shown):
                self._who_reply("*", shown[key], "", _whox(why))
        elif mask and fold(mask) in (online := self.server.online_names()):
            self._who_reply("*", online[fold(mask)], "", _whox(why))
        self.reply(n.RPL_ENDOFWHO, mask or "*", "End of WHO list")

    def _who_reply(
        self, channel: str, name: str, marks: str, whox: tuple[str, str] | None
    ) -> None:
        """One 352 (or WHOX 354) line: G when away, then the member's prefix (@, +)."""
        away = self.server.chat.away_of(fold(name))
        oper = self.server.chat.is_oper(fold(name))
        flags = ("G" if away else "H") + ("*" if oper else "") + marks
        username, realname = self.server.identity_of(name)
        if whox is None:
            self.reply(n.RPL_WHOREPLY, channel, username, self.host, self.host, name, flags,
                       f"0 {realname}")
            return
        fields, token = whox
        account = "0" if self.server.chat.is_guest(fold(name)) else name
        values = {
            "t": token, "c": channel, "u": username, "i": "255.255.255.255", "h": self.host,
            "s": self.host, "n": name, "f": flags, "d": "0", "l": "0", "a": account,
            "o": "n/a", "r": realname,
        }
        self.reply(n.RPL_WHOSPCRPL, *(values[field] for field in WHOX_FIELDS if field in fields))

    def irc_WHOIS(self, *targets: str) -> None:
        """WHOIS: the account, the rooms you share, its away text; 401 when offline."""
        nick = targets[-1]
        user = self.server.chat.users.get(fold(nick))
        if user is not None and user.guest:
            # A guest has no account to read: what there is is in memory.
            mine = self.session.user.rooms
            shared = [room.name for key, room in user.rooms.items() if key in mine]
            self._whois_reply(WhoisInfo(user.name, True, None, tuple(shared), user.away))
            self.reply(n.RPL_ENDOFWHOIS, nick, "End of /WHOIS list")
            return
        elsewhere = self.server.chat.fanout.presence.user(fold(nick))
        if user is None and elsewhere is not None and elsewhere.guest:
            # A guest of another node (cluster mode): what there is is in its state.
            mine = self.session.user.rooms
            shared = [seat.room_name for seat in elsewhere.rooms if seat.room_key in mine]
            self._whois_reply(
                WhoisInfo(elsewhere.name, True, None, tuple(shared), elsewhere.away)
            )
            self.reply(n.RPL_ENDOFWHOIS, nick, "End of /WHOIS list")
            return
        asking = defer.maybeDeferred(self.session.whois, nick)
        asking.addCallback(self._whois_reply)

        def ended(_) -> None:
            self.reply(n.RPL_ENDOFWHOIS, nick, "End of /WHOIS list")

        def unknown(failure: Failure) -> None:
            failure.trap(ChatError)
            self.reply(n.ERR_NOSUCHNICK, nick, "No such nick")

        asking.addErrback(unknown).addCallback(ended)
        asking.addErrback(lambda failure: log.failure("WHOIS", failure))
        self._track(asking)

    def _refused(self, verb: str, *context: str) -> Callable[[Failure], None]:
        """An errback answering a refused command with the numeric IRC clients know."""

        def refused(failure: Failure) -> None:
            if not failure.check(ChatError):
                log.failure(verb, failure)
                self.notice(f"{verb}: the server failed; try again")
                return
            error = failure.value
            numeric = _ERROR_NUMERICS.get(error.code)
            if numeric is None:
                self.notice(f"{verb}: {error.text}")
            elif numeric == n.ERR_NOSUCHNICK and verb in ("KICK", "MODE"):
                self.reply(n.ERR_USERNOTINCHANNEL, context[-1], context[0], error.text)
            elif numeric == n.ERR_NOSUCHNICK:
                self.reply(numeric, context[-1], error.text)
            else:
                self.reply(numeric, context[0], error.text)

        return refused

    def _live_room(self, room: str):
        """The core's room of that name, if this user is a member of it."""
        return self.session.user.rooms.get(fold(room))

    def irc_TOPIC(self, room: str, text: str | None = None, *_: str) -> None:
        """TOPIC: show it (332/333, or 331), or set it (the change reaches every member)."""
        if text is None:
            try:
                topic = self.session.topic(room)
            except ChatError:
                if fold(room) in self.server.chat.rooms:
                    self.reply(n.ERR_NOTONCHANNEL, room, "You're not on that channel")
                else:
                    self.reply(n.ERR_NOSUCHCHANNEL, room, "No such channel")
                return
            if topic.text:
                self._show_topic(topic)
            else:
                self.reply(n.RPL_NOTOPIC, topic.room, "No topic is set")
            return
        setting = defer.maybeDeferred(self.session.set_topic, room, text)
        self._track(setting.addErrback(self._refused("TOPIC", room)))

    def _show_topic(self, topic: Topic) -> None:
        self.reply(n.RPL_TOPIC, topic.room, topic.text)
        if topic.at:
            self.reply(n.RPL_TOPICWHOTIME, topic.room, topic.setter, str(topic.at // 1000))

    def irc_KICK(self, room: str, nicks: str, reason: str | None = None, *_: str) -> None:
        """KICK members out of a room (operators only); everyone in it sees the KICK."""
        for nick in nicks.split(","):
            kicking = defer.maybeDeferred(self.session.kick, room, nick, reason or self.nick)
            self._track(kicking.addErrback(self._refused("KICK", room, nick)))

    def irc_INVITE(self, nick: str, room: str, *_: str) -> None:
        """INVITE a user into a room: 341 to you, an INVITE to them (if online)."""
        state = self._live_room(room)
        if state is not None and fold(nick) in state.members:
            self.reply(n.ERR_USERONCHANNEL, nick, room, "is already on channel")
            return
        inviting = defer.maybeDeferred(self.session.invite, room, nick)
        self._track(inviting).addCallbacks(
            lambda name: self.reply(n.RPL_INVITING, nick, name),
            self._refused("INVITE", room, nick),
        )

    def irc_AWAY(self, text: str | None = None, *_: str) -> None:
        """AWAY with a text marks you away (306), without one back (305)."""
        setting = defer.maybeDeferred(self.session.away, text or None)

        def done(now: str) -> None:
            if now:
                self.reply(n.RPL_NOWAWAY, "You have been marked as being away")
            else:
                self.reply(n.RPL_UNAWAY, "You are no longer marked as being away")

        self._track(setting.addCallbacks(done, self._refused("AWAY", "*")))

    def irc_LIST(self, *_: str) -> None:
        """LIST: 321, a 322 per room with members, 323."""
        self.reply(n.RPL_LISTSTART, "Channel", "Users  Name")
        # The rooms are read from the database: 323 once their 322s are out.
        def listed(summaries: list[RoomSummary]) -> None:
            for summary in summaries:
                self.reply(n.RPL_LIST, summary.room, str(summary.member_count), "")
            self.reply(n.RPL_LISTEND, "End of /LIST")

        listing = self.session.rooms().addCallback(listed)
        self._track(listing.addErrback(lambda failure: log.failure("LIST", failure)))

    def irc_MODE(self, target: str, *changes: str) -> None:
        """MODE: your own modes (+i only); a room's +o, +v, +b (by nick mask), +i, +m, +s
        (+p the same), +t."""
        if target.startswith("#"):
            self._room_mode(target, changes)
            return
        if fold(target) != fold(self.nick or ""):
            self.reply(n.ERR_USERSDONTMATCH, "Can't change mode for other users")
        elif not changes:
            modes = ("i" if self._invisible else "") + ("o" if self.session.oper else "")
            self.reply(n.RPL_UMODEIS, "+" + modes)
        elif changes[0] == "-o":
            # An operator may give its status up; only OPER gives it (+o is ignored).
            if self.session.oper:
                self.session.set_oper(False)
                self.send(Message("MODE", (self.nick, "-o"), self.source_of(self.nick)))
        elif changes[0] == "+o":
            pass
        elif changes[0] in ("+i", "-i"):
            # WHO by mask leaves out an invisible user (its sessions on any node)
            # unless the asker shares a room with it.
            self._invisible = changes[0] == "+i"
            if self.session is not None:
                self.session.set_invisible(self._invisible)
            self.send(Message("MODE", (self.nick, changes[0]), self.source_of(self.nick)))
        else:
            self.reply(n.ERR_UMODEUNKNOWNFLAG, "Unknown MODE flag")

    def irc_OPER(self, account: str, password: str, *_: str) -> None:
        """OPER <account> <password>: the password of an account in ``CHATD_OPERATORS``
        makes this user a server operator (381 and ``MODE +o``); 464 for a wrong
        password or an unknown account, 491 for an account not listed."""
        opering = defer.maybeDeferred(
            self.server.gate.oper, self.session, account, password, self.address
        )

        def done(_name: str) -> None:
            self.reply(n.RPL_YOUREOPER, "You are now an IRC operator")
            self.send(Message("MODE", (self.nick, "+o"), self.source_of(self.nick)))

        def failed(failure: Failure) -> None:
            if not failure.check(ChatError):
                log.failure("OPER", failure)
                self.notice("OPER: the server failed; try again")
            elif failure.value.code == "forbidden":
                self.reply(n.ERR_NOOPERHOST, "No O-lines for your host")
            elif failure.value.code in ("bad-credentials", "too-many-attempts"):
                self.reply(n.ERR_PASSWDMISMATCH, failure.value.text)
            else:
                self.notice(f"OPER: {failure.value.text}")

        self._track(opering.addCallbacks(done, failed))

    def _room_mode(self, room: str, changes: tuple[str, ...]) -> None:
        state = self._live_room(room)
        if state is None:
            self.reply(n.ERR_NOTONCHANNEL, room, "You're not on that channel")
            return
        if not changes:
            # t: only operators may set the topic (a room without any has no lock).
            modes = (
                "+" + ("i" if state.private else "") + ("m" if state.moderated else "")
                + ("s" if state.secret else "") + ("t" if state.topic_locked() else "")
            )
            self.reply(n.RPL_CHANNELMODEIS, state.name, modes)
            return
        arguments = list(changes[1:])
        sign = "+"
        done: set[str] = set()
        for letter in changes[0]:
            if letter in "+-":
                sign = letter
            elif letter in "sp":
                # +p (RFC 1459's private) is +s's older synonym here: one change,
                # shown as +s, however many times one MODE names either.
                if sign + "s" in done:
                    continue
                done.add(sign + "s")
                setting = defer.maybeDeferred(self.session.set_secret, room, sign == "+")
                self._track(setting.addErrback(self._refused("MODE", room)))
            elif letter == "b" and not arguments:
                self._list_bans(state.name)
            elif letter in "obv":
                if not arguments:
                    self.reply(n.ERR_NEEDMOREPARAMS, "MODE", "Not enough parameters")
                    return
                argument = arguments.pop(0)
                if letter == "v":
                    setting = defer.maybeDeferred(
                        self.session.set_voice, room, argument, sign == "+"
                    )
                    self._track(setting.addErrback(self._refused("MODE", room, argument)))
                elif letter == "o":
                    setting = defer.maybeDeferred(
                        self.session.set_operator, room, argument, sign == "+"
                    )
                    self._track(setting.addErrback(self._refused("MODE", room, argument)))
                else:
                    self._ban(state.name, sign, argument)
            elif letter == "i":
                private = sign == "+"
                setting = defer.maybeDeferred(self.session.set_private, room, private)
                self._track(setting.addErrback(self._refused("MODE", room)))
            elif letter == "m":
                setting = defer.maybeDeferred(self.session.set_moderated, room, sign == "+")
                self._track(setting.addErrback(self._refused("MODE", room)))
            elif letter == "t":
                setting = defer.maybeDeferred(self.session.set_topic_open, room, sign == "-")
                self._track(setting.addErrback(self._refused("MODE", room)))
            else:
                self.reply(n.ERR_UNKNOWNMODE, letter, "is unknown mode char to me")

    def _ban(self, room: str, sign: str, mask: str) -> None:
        """+b/-b by nick mask (``nick``, ``nick!*`` or ``nick!*@*``): bans are of accounts."""
        nick, bang, rest = mask.partition("!")
        if rest not in ("", "*", "*@*") or (bang and not rest) or not is_user_name(nick):
            self.notice(f"MODE: bans here are of accounts: give {room} +b nick!*@*, not {mask}")
            return
        banning = defer.maybeDeferred(self.session.ban, room, nick, sign == "+")
        self._track(banning.addErrback(self._refused("MODE", room, nick)))

    def _list_bans(self, room: str) -> None:
        """``MODE #room b``: 367 for each banned account, then 368."""
        listing = defer.maybeDeferred(self.session.bans, room)

        def show(bans: list[tuple[str, str, int]]) -> None:
            for name, by, when in bans:
                self.reply(n.RPL_BANLIST, room, f"{name}!*@*", by, str(when // 1000))
            self.reply(n.RPL_ENDOFBANLIST, room, "End of channel ban list")

        self._track(listing.addCallbacks(show, self._refused("MODE", room)))

    def irc_CHATHISTORY(self, subcommand: str, *arguments: str) -> None:
        """draft/chathistory: a room's messages from the database, in a chathistory batch.

        ``LATEST <room> <* | mark> <limit>``, ``BEFORE``/``AFTER``/``AROUND <room>
        <mark> <limit>``, ``BETWEEN <room> <mark> <mark> <limit>`` (a mark is
        ``msgid=<id>`` or ``timestamp=<time>``), and ``TARGETS <timestamp>
        <timestamp> <limit>`` for the rooms you are in and the people you have
        exchanged direct messages with. A nick as target reads your conversation
        with it (an account's history; a guest keeps none).
        """
        sub = subcommand.upper()
        shapes = {"LATEST": 3, "BEFORE": 3, "AFTER": 3, "AROUND": 3, "BETWEEN": 4, "TARGETS": 3}
        if sub not in shapes:
            self.fail("CHATHISTORY", "INVALID_PARAMS", subcommand, "Unknown subcommand")
            return
        if len(arguments) < shapes[sub]:
            self.fail("CHATHISTORY", "NEED_MORE_PARAMS", sub, "Not enough parameters")
            return
        try:
            limit = int(arguments[shapes[sub] - 1])
        except ValueError:
            limit = 0
        if limit < 1:
            self.fail("CHATHISTORY", "INVALID_PARAMS", sub, arguments[shapes[sub] - 1],
                      "The limit must be a positive number")
            return
        limit = min(limit, CHATHISTORY_LIMIT)
        if sub == "TARGETS":
            self._history_targets(arguments[0], arguments[1], limit)
            return
        target = arguments[0]
        direct = not target.startswith("#")
        try:
            marks = [
                None if (sub == "LATEST" and raw == "*") else _history_mark(raw)
                for raw in arguments[1 : shapes[sub] - 1]
            ]
        except ValueError:
            self.fail("CHATHISTORY", "INVALID_PARAMS", sub, " ".join(arguments[1:-1]),
                      "A mark is msgid=<id> or timestamp=<YYYY-MM-DDThh:mm:ss.sssZ>")
            return
        session = self.session
        # A nick's history is your conversation with it (both ways).
        window = session.direct_history_window if direct else session.history_window
        around = session.direct_history_around if direct else session.history_around
        try:
            if sub == "LATEST":
                reading = window(target, marks[0], None, limit, True)
            elif sub == "BEFORE":
                reading = window(target, None, marks[0], limit, True)
            elif sub == "AFTER":
                reading = window(target, marks[0], None, limit, False)
            elif sub == "AROUND":
                reading = around(target, marks[0], limit)
            else:
                first, second = marks
                if _later(first, second):
                    reading = window(target, second, first, limit, True)
                else:
                    reading = window(target, first, second, limit, False)
        except ChatError as error:
            why = error.text if direct else "You are not in that room"
            self.fail("CHATHISTORY", "INVALID_TARGET", sub, target, why)
            return

        def unknown(failure: Failure) -> None:
            failure.trap(ChatError)
            self.fail("CHATHISTORY", "INVALID_TARGET", sub, target, failure.value.text)
            return None

        reading.addErrback(unknown)
        reading.addCallback(self._send_history, target)
        reading.addErrback(self._refused("CHATHISTORY", target))
        self._track(reading)

    def _send_history(self, lines, target: str) -> None:
        """A chathistory batch of history events (None: the request failed already)."""
        if lines is None:
            return
        batch = None
        if "batch" in self.caps:
            self._batch_serial += 1
            batch = f"h{self._batch_serial}"
            self.send(Message("BATCH", (f"+{batch}", HISTORY_BATCH, target), self.host))
        for event in lines:
            tags = _message_tags(event.sender, event.at, event.message_id)
            if batch is not None:
                tags["batch"] = batch
            # A room's line is to the room; a conversation's to whom it was sent.
            to = event.recipient if isinstance(event, DirectHistoryLine) else event.room
            self.send(Message(
                _verb(event), (to, _ctcp_action(event)), self.source_of(event.sender),
                tags,
            ))
        if batch is not None:
            self.send(Message("BATCH", (f"-{batch}",), self.host))

    def _history_targets(self, first: str, second: str, limit: int) -> None:
        """``CHATHISTORY TARGETS``: your rooms with their last message between two times."""
        try:
            times = sorted(_history_mark(raw, timestamps_only=True).time for raw in (first, second))
        except ValueError:
            self.fail("CHATHISTORY", "INVALID_PARAMS", "TARGETS", f"{first} {second}",
                      "TARGETS takes two timestamp=<time> marks")
            return
        reading = self.session.history_targets(times[0], times[1], limit)

        def show(targets: list[tuple[str, int]]) -> None:
            batch = None
            if "batch" in self.caps:
                self._batch_serial += 1
                batch = f"t{self._batch_serial}"
                self.send(Message("BATCH", (f"+{batch}", "draft/chathistory-targets"), self.host))
            for name, when in targets:
                tags = {"batch": batch} if batch else {}
                self.send(Message(
                    "CHATHISTORY", ("TARGETS", name, irc_time(when)), self.host, tags
                ))
            if batch is not None:
                self.send(Message("BATCH", (f"-{batch}",), self.host))

        self._track(reading.addCallbacks(show, self._refused("CHATHISTORY", "*")))

    # --- IChatClient: rendering the core's events -----------------------------------

    def deliver(self, event: Event) -> None:
        """Render an event of the core as IRC messages (after the welcome burst)."""
        if self._closing:
            return
        if self._early is not None:
            self._early.append(event)
            return
        if type(event) in _ROOM_MESSAGE_EVENTS:
            # Every room message to every connection: the hot path, counted where written.
            self._render_room_messages(event)
            return
        self.server.telemetry.delivered(type(event).__name__, 0, event.count)
        render = _RENDERERS.get(type(event))
        if render is not None:
            render(self, event)

    def deliver_bulk(self, source: PageSource) -> defer.Deferred:
        """Send a long reply (history, stored messages) page by page as the client reads it."""
        if self._early is not None:
            # Still before the welcome: the pages wait for it like any event.
            # The core is not kept waiting (the login it is part of would never
            # end); what it delivers next queues behind them in order.
            self._early.append(_EarlyBulk(source, defer.Deferred()))
            return defer.succeed(None)
        if self._label is not None and "batch" in self.caps:
            # A long reply to a labeled command: its batch opens now, and the
            # pages are tagged as part of it as they are sent.
            self._stream_label()
        bulk = BulkReply(source, encode=self._encode)
        if self._closing:
            bulk.cancel()
        else:
            self.output.add_bulk(bulk)
        return bulk.done.addCallback(lambda _: self._close_history())

    def _encode(self, event: Event) -> list[bytes]:
        """An event's IRC lines as bytes, rendered now but not written."""
        self._collecting = collected = []
        try:
            self.deliver(event)
        finally:
            self._collecting = None
        return collected

    def _render_room_message(self, event: RoomMessage) -> None:
        self._close_history()
        if self._hides_own(event):
            return
        self.send(_room_message(event, self.host))

    def _hides_own(self, event: RoomMessage) -> bool:
        """Whether this is this connection's own message, hidden without echo-message
        (with it, the message is shown as anyone's); other sessions of the user see it."""
        return self._is_own_echo(event.origin) and "echo-message" not in self.caps

    def _is_own_echo(self, origin: int | None) -> bool:
        """Whether an event came from this connection's own session (the core's ``origin``)."""
        return origin is not None and self.session is not None and origin == self.session.origin

    def _render_room_messages(self, event: RoomMessage | RoomMessages) -> None:
        """Write room messages as rendered once for every connection that shows them alike.

        Rendering each message for each of a room's connections (tags, time,
        serialising) was most of the door's time under load. The lines differ
        only by the tags a client asked for, so each is rendered once per event
        and choice of tags (``IRCFactory.rendered``); a connection only decides
        whether its own messages are hidden. This runs once per event and
        connection, the door's hottest path. While a bulk reply collects lines,
        or a labeled command's reply is gathered, they are rendered one by one.
        """
        telemetry = self.server.telemetry
        if self._collecting is not None or self._label is not None:
            # Collected for a bulk reply, or part of a labeled command's reply
            # (its own echo): rendered one by one, through send.
            telemetry.delivered(type(event).__name__, 0, event.count)
            for message in event.messages if type(event) is RoomMessages else (event,):
                self._render_room_message(message)
            return
        if self._history_open:  # checked here first: a call per delivery saved
            self._close_history()
        rendered = self.server.rendered(event, self._tags_shown)
        session = self.session
        if session is None or session.origin not in rendered.origins or "echo-message" in self.caps:
            # Nothing of this connection's own to hide: the event's lines as all see them.
            data = rendered.whole
        else:
            own = session.origin
            data = b"".join([line for origin, line in rendered.lines if origin != own])
        telemetry.delivered(type(event).__name__, len(data), event.count)
        if data:
            self.output.write(data)

    def _render_direct(self, event: DirectMessage) -> None:
        # A live DM carries the time it was sent (server-time).
        sent_at = event.at or int(self.server.clock.seconds() * 1000)
        tags = _message_tags(event.sender, sent_at, event.message_id)
        tags.update(event.tags)
        verb = "NOTICE" if event.kind == NOTICE else "PRIVMSG"
        self._send_direct(event, Message(
            verb, (event.recipient, event.text), self.source_of(event.sender), tags
        ))

    def _send_direct(self, event: DirectMessage | TagMessage, message: Message) -> None:
        """A direct message (or TAGMSG) as this connection shows it.

        The sender's other sessions see it, and this one with echo-message. A
        message to oneself is shown as received; with echo-message it comes
        twice, as Ergo sends it: the delivery, then the echo, which alone is the
        labeled reply (labeled-response).
        """
        own = self._is_own_echo(event.origin)
        echo = "echo-message" in self.caps
        to_me = self._is_me(event.recipient if isinstance(event, DirectMessage) else event.target)
        if own and not echo and not to_me:
            return
        if own and echo and to_me:
            self._send_unlabeled(message)
        self.send(message)

    def _send_unlabeled(self, message: Message) -> None:
        """Send ``message`` outside the running labeled command's reply."""
        label, self._label = self._label, None
        try:
            self.send(message)
        finally:
            self._label = label

    def _render_tag(self, event: TagMessage) -> None:
        """Client-only tags alone, as TAGMSG: only to clients that asked for message-tags."""
        if "message-tags" not in self.caps:
            return
        self._close_history()
        tags = _message_tags(event.sender, event.at, event.message_id)
        tags.update(event.tags)
        message = Message("TAGMSG", (event.target,), self.source_of(event.sender), tags)
        if event.target.startswith("#"):
            if self._is_own_echo(event.origin) and "echo-message" not in self.caps:
                return
            self.send(message)
            return
        self._send_direct(event, message)

    def _render_stored(self, event: StoredMessage) -> None:
        # A notice kept for you arrives as the NOTICE it was sent as.
        verb = "NOTICE" if event.kind == NOTICE else "PRIVMSG"
        self.send(Message(
            verb, (self.nick or "*", event.text), self.source_of(event.sender),
            _message_tags(event.sender, event.at, event.message_id),
        ))

    def _is_me(self, name: str) -> bool:
        return fold(name) == fold(self.nick or "")

    def _render_joined(self, event: Joined) -> None:
        self._close_history()
        if self._is_me(event.user):
            self._in_rooms.add(fold(event.room))
        self._quit_shown.pop(fold(event.user), None)
        self.send(Message("JOIN", (event.room,), self.source_of(event.user)))

    def _render_parted(self, event: Parted) -> None:
        self._close_history()
        if self._is_me(event.user):
            self._in_rooms.discard(fold(event.room))
            self._shown_ops.pop(fold(event.room), None)
        key = fold(event.user)
        if self.server.chat.is_online(key) or self._is_me(event.user):
            # Online still (cluster mode: on another node, maybe): it left this room only.
            params = (event.room, event.reason) if event.reason else (event.room,)
            self.send(Message("PART", params, self.source_of(event.user)))
            return
        # Its last session ended: IRC says QUIT, once, when the last room
        # this client shares with the user lets it go.
        for room_key in self._in_rooms:
            state = self.server.chat.rooms.get(room_key)
            if room_key != fold(event.room) and state is not None and key in state.members:
                return
        if key in self._quit_shown:
            return
        self._quit_shown[key] = None
        if len(self._quit_shown) > QUIT_KEPT:
            del self._quit_shown[next(iter(self._quit_shown))]
        reason = self.server.quit_reasons.get(key, "Connection closed")
        self.send(Message("QUIT", (reason,), self.source_of(event.user)))

    def _render_members(self, event: Members) -> None:
        """A room shown to this session (joined, or entered by a further session): NAMES."""
        self._close_history()
        key = fold(event.room)
        if key not in self._in_rooms:
            # The core shows a further session of the user a room the user is
            # in already: no JOIN went out, but an IRC client needs its own
            # JOIN to open the channel, so this connection gets one.
            self._in_rooms.add(key)
            self.send(Message("JOIN", (event.room,), self.source_of(self.nick or "")))
        state = self.server.chat.rooms.get(key)
        operators = dict(state.operators) if state is not None else {}
        self._shown_ops[key] = operators
        if state is not None and state.topic:
            # The topic belongs in the join burst; the core's Topic after it is no change.
            self._show_topic(self.session.topic(event.room))
            self._topic_shown.add(key)
        secret = state is not None and state.secret
        self._names_reply(event.room, event.members, set(operators), secret)

    def _names_reply(
        self, room: str, members: tuple[str, ...], operators: set[str], secret: bool = False
    ) -> None:
        """353s, as many names to a line as fit, then 366; @ marks an operator."""
        self._names_lines(room, members, operators, secret)
        self.reply(n.RPL_ENDOFNAMES, room, "End of /NAMES list")

    def _voiced_in(self, room: str) -> dict[str, str]:
        """The voiced members (+v) of a room this server has loaded (folded names)."""
        state = self.server.chat.rooms.get(fold(room))
        return state.voiced if state is not None else {}

    def _prefix(self, key: str, operators, voiced) -> str:
        """A member's prefix: ``@`` for an operator, ``+`` for voice; both with
        multi-prefix, else the higher."""
        marks = ("@" if key in operators else "") + ("+" if key in voiced else "")
        return marks if "multi-prefix" in self.caps else marks[:1]

    def _names_lines(self, room: str, members, operators, secret: bool = False) -> None:
        """353 lines for a room's members (``@`` for operators, ``+`` for voice; folded
        names), split to fit the line limit; with userhost-in-names each is
        ``nick!user@host``. The channel symbol is ``@`` for a secret room, else ``=``
        (RFC 2812)."""
        symbol = "@" if secret else "="
        voiced = self._voiced_in(room)
        line: list[str] = []
        budget = LINE_LIMIT - 100 - len(self.host) - len(room)
        for member in members:
            shown = self._prefix(fold(member), operators, voiced) + (
                self.source_of(member) if "userhost-in-names" in self.caps else member
            )
            if line and sum(len(name) + 1 for name in line) + len(shown) > budget:
                self.reply(n.RPL_NAMREPLY, symbol, room, " ".join(line))
                line = []
            line.append(shown)
        if line:
            self.reply(n.RPL_NAMREPLY, symbol, room, " ".join(line))

    def _render_topic(self, event: Topic) -> None:
        self._close_history()
        key = fold(event.room)
        if key in self._topic_shown:
            self._topic_shown.discard(key)
            return
        self.send(Message("TOPIC", (event.room, event.text), self.source_of(event.setter)))

    def _render_operators(self, event: Operators) -> None:
        """A change of a room's operators, as MODE +o/-o from the server."""
        self._close_history()
        key = fold(event.room)
        now = {fold(name): name for name in event.operators}
        before = self._shown_ops.get(key)
        self._shown_ops[key] = now
        if before is None:
            return
        for name_key, name in now.items():
            if name_key not in before:
                self.send(Message("MODE", (event.room, "+o", name), self.host))
        for name_key, name in before.items():
            if name_key not in now:
                self.send(Message("MODE", (event.room, "-o", name), self.host))

    def _render_mode_changed(self, event: RoomModeChanged) -> None:
        """A room's feature switched, as ``MODE`` from whoever switched it."""
        self._close_history()
        letter = _MODE_LETTERS[event.feature]
        # +t locks the topic: the core's "topic open" is its opposite.
        on = event.on != (event.feature == TOPIC_OPEN)
        arguments: tuple[str, ...] = ()
        if event.feature == VOICE:
            arguments = (event.user,)
        elif event.feature == BAN:
            arguments = (f"{event.user}!*@*",)
        self.send(Message(
            "MODE", (event.room, ("+" if on else "-") + letter, *arguments),
            self.source_of(event.by),
        ))

    def _render_kicked(self, event: Kicked) -> None:
        self._close_history()
        if self._is_me(event.user):
            self._in_rooms.discard(fold(event.room))
            self._shown_ops.pop(fold(event.room), None)
        self.send(Message(
            "KICK", (event.room, event.user, event.reason), self.source_of(event.by)
        ))

    def _render_invited(self, event: Invited) -> None:
        self.send(Message("INVITE", (self.nick or "*", event.room), self.source_of(event.by)))

    def _render_away(self, event: Away) -> None:
        self.reply(n.RPL_AWAY, event.user, event.text)

    def _whois_reply(self, event: WhoisInfo) -> None:
        """311, 319 (shared rooms), 312, 330 and 301 when away; 401 for an offline account."""
        if not event.online:
            self.reply(n.ERR_NOSUCHNICK, event.user, "No such nick (the account is offline)")
            return
        name = event.user
        username, realname = self.server.identity_of(name)
        self.reply(n.RPL_WHOISUSER, name, username, self.host, "*", realname)
        rooms = []
        for room in event.shared_rooms:
            state = self.server.chat.rooms.get(fold(room))
            operator = state is not None and fold(name) in state.operators
            rooms.append(("@" if operator else "") + room)
        if rooms:
            self.reply(n.RPL_WHOISCHANNELS, name, " ".join(rooms))
        self.reply(n.RPL_WHOISSERVER, name, self.host, "chatd")
        if self.server.chat.is_oper(fold(name)):
            self.reply(n.RPL_WHOISOPERATOR, name, "is an IRC operator")
        if not self.server.chat.is_guest(fold(name)):
            self.reply(n.RPL_WHOISACCOUNT, name, name, "is logged in as")
        if event.away:
            self.reply(n.RPL_AWAY, name, event.away)

    def _render_history(self, event: HistoryLine) -> None:
        if "server-time" not in self.caps:
            return  # without times, old lines would read as new ones
        tags = _message_tags(event.sender, event.at, event.message_id)
        if "batch" in self.caps:
            if not self._history_open:
                self._batch_serial += 1
                self._history_open = True
                self._history_id = f"h{self._batch_serial}"
                self.send(Message(
                    "BATCH", (f"+{self._history_id}", HISTORY_BATCH, event.room), self.host
                ))
            tags["batch"] = self._history_id
        text = _ctcp_action(event)
        self.send(Message(_verb(event), (event.room, text), self.source_of(event.sender), tags))

    def _close_history(self) -> None:
        if self._history_open:
            self._history_open = False
            self.send(Message("BATCH", (f"-{self._history_id}",), self.host))

    def _render_notice(self, event: Notice) -> None:
        self.notice(event.text)


class RenderedEvent:
    """A room event's messages as IRC lines for one choice of tags, made once per event.

    ``whole`` is what a connection with nothing of its own to hide is sent;
    ``lines`` pairs each line with the session (the core's ``origin``) that
    sent it, and ``origins`` names those sessions, so that a connection that
    hides its own messages (no echo-message) leaves them out in one pass.
    """

    __slots__ = ("lines", "origins", "whole")

    def __init__(self, lines: list[tuple[int | None, bytes]]) -> None:
        self.lines = lines
        self.origins = frozenset(origin for origin, _ in lines if origin is not None)
        self.whole = b"".join([line for _, line in lines])


@dataclass
class _Label:
    """A labeled command's reply (``labeled-response``) while it is gathered."""

    label: str
    lines: list[Message] = field(default_factory=list)
    # The id of the reply's batch once it is on its way.
    batch: str | None = None


# The capabilities that decide which tags a room message carries.
_ROOM_TAG_CAPS = frozenset({"message-tags", "server-time", "account-tag"})


# Each choice of those capabilities as one object, so that the connections sharing
# it find their lines (IRCFactory.rendered) by identity, without comparing sets.
_TAG_CHOICES: dict[frozenset[str], frozenset[str]] = {}


def _tags_shown(caps: set[str]) -> frozenset[str]:
    """The capabilities of ``caps`` that decide a room message's tags: connections
    with the same ones are sent the same line."""
    choice = _ROOM_TAG_CAPS.intersection(caps)
    return _TAG_CHOICES.setdefault(choice, choice)


def _as_asked(message: Message, caps: set[str] | frozenset[str]) -> Message:
    """``message`` without the tags a client with ``caps`` did not ask for: all of them
    are kept with message-tags, else only those of server-time, account-tag, batch
    and labeled-response."""
    if not message.tags or "message-tags" in caps:
        return message
    kept = {
        key: value
        for key, value in message.tags.items()
        if (key == "time" and "server-time" in caps)
        or (key == "account" and "account-tag" in caps)
        or (key == "batch" and "batch" in caps)
        or (key == "label" and "labeled-response" in caps)
    }
    return Message(message.verb, message.params, message.source, kept)


def _source(name: str, host: str) -> str:
    """The ``nick!user@host`` a user's messages come from (the nick is the account)."""
    return f"{name}!{name}@{host}"


def _message_tags(
    sender: str | None, timestamp: int | None, message_id: str = ""
) -> dict[str, str]:
    """The tags of a message: ``msgid`` (the core's id) goes only with message-tags."""
    tags: dict[str, str] = {}
    if message_id:
        tags["msgid"] = message_id
    if timestamp is not None:
        tags["time"] = irc_time(timestamp)
    if sender is not None:
        tags["account"] = sender
    return tags


def _room_message(event: RoomMessage, host: str) -> Message:
    """A room message with all its tags (``_as_asked`` leaves out what a client did
    not ask for), client-only tags included."""
    tags = _message_tags(event.sender, event.at, event.message_id)
    if event.tags:
        tags.update(event.tags)
    params = (event.room, _ctcp_action(event))
    return Message(_verb(event), params, _source(event.sender, host), tags)


def room_line(event: RoomMessage, host: str, shown_as: frozenset[str]) -> bytes:
    """A room message's line, CR LF included, for a client whose tag capabilities are
    ``shown_as``: what ``serialize(_as_asked(_room_message(event, host), shown_as))``
    gives, made directly.

    Every room message is rendered here once per choice of tags: building the
    ``Message`` with all its tags and then filtering them was a large part of
    the door's time under load.
    """
    if "message-tags" in shown_as:
        # Every tag, client-only ones included: the general path.
        tags = serialize_tags(_room_message(event, host).tags) + " "
    else:
        kept = []
        if "server-time" in shown_as:
            kept.append("time=" + irc_time(event.at))
        if "account-tag" in shown_as:
            kept.append("account=" + escape_tag_value(event.sender))
        tags = "@" + ";".join(kept) + " " if kept else ""
    source = _source(event.sender, host)
    text = trailing(_ctcp_action(event))
    return f"{tags}:{source} {_verb(event)} {event.room} {text}\r\n".encode()


def _label_of(tags_part: bytes) -> str:
    """The ``label`` tag of a line's tags part (``@...``), read even if the line is not UTF-8."""
    try:
        return parse_tags(tags_part[1:].decode("utf-8")).get("label", "")
    except (UnicodeDecodeError, ValueError):
        return ""


def _with_tags(message: Message, **tags: str) -> Message:
    """``message`` with ``tags`` added to its own."""
    return Message(message.verb, message.params, message.source, {**message.tags, **tags})


@dataclass(frozen=True)
class _EarlyBulk:
    """A bulk reply the core started before the welcome burst: sent after it."""

    source: PageSource
    done: defer.Deferred


_REGISTER_FAILS = {
    "user-exists": "ACCOUNT_EXISTS",
    "invalid-name": "BAD_ACCOUNT_NAME",
    "weak-password": "WEAK_PASSWORD",
    "registration-closed": "TEMPORARILY_UNAVAILABLE",
    "too-many-attempts": "TEMPORARILY_UNAVAILABLE",
    "already-logged-in": "ALREADY_AUTHENTICATED",
}

CTCP_ACTION = "\x01ACTION "


def _folded(names: tuple[str, ...]) -> set[str]:
    """The folded forms of names, to test membership case-insensitively."""
    return {fold(name) for name in names}


def _history_mark(raw: str, timestamps_only: bool = False) -> HistoryMark:
    """A chathistory mark: ``msgid=<id>`` or ``timestamp=<ISO 8601 UTC>``; ValueError if not."""
    kind, equals, value = raw.partition("=")
    if not equals or not value:
        raise ValueError(raw)
    if kind == "msgid" and not timestamps_only:
        return HistoryMark(msgid=value)
    if kind != "timestamp":
        raise ValueError(raw)
    text = value[:-1] if value.endswith("Z") else value
    for layout in ("%Y-%m-%dT%H:%M:%S.%f", "%Y-%m-%dT%H:%M:%S"):
        try:
            moment = datetime.strptime(text, layout).replace(tzinfo=UTC)
            break
        except ValueError:
            continue
    else:
        raise ValueError(raw)
    return HistoryMark(time=calendar.timegm(moment.timetuple()) * 1000 + moment.microsecond // 1000)


def _later(first: HistoryMark, second: HistoryMark) -> bool:
    """Whether ``first`` names a later point than ``second`` (a BETWEEN going backwards).

    Message ids begin with their time in hex (chatd.ids), so marks of either
    kind compare by time; two ids of one millisecond compare as text.
    """
    def moment(mark: HistoryMark) -> tuple[int, str]:
        if mark.msgid:
            try:
                return int(mark.msgid[:11], 16), mark.msgid
            except ValueError:
                return 0, mark.msgid
        return mark.time, ""

    return moment(first) > moment(second)


def _whox(why: str) -> tuple[str, str] | None:
    """The WHOX fields and token of a ``who%fields,token`` request; None for plain WHO."""
    if not why.startswith("who%"):
        return None
    fields, _, token = why[4:].partition(",")
    return fields, token or "0"


def _verb(event: RoomMessage | HistoryLine) -> str:
    """The IRC verb of a room message: NOTICE for chatd's notice kind, else PRIVMSG."""
    return "NOTICE" if event.kind == NOTICE else "PRIVMSG"


def _ctcp_action(event: RoomMessage | HistoryLine) -> str:
    """A room message's text, or an action's as IRC's CTCP ACTION (``/me``)."""
    if event.kind == ACTION:
        return f"{CTCP_ACTION}{event.text}\x01"
    return event.text


# The IRC channel mode of each of a room's features (chatd.core.events).
_MODE_LETTERS = {PRIVATE: "i", SECRET: "s", MODERATED: "m", TOPIC_OPEN: "t", VOICE: "v", BAN: "b"}

# The events IRCConnection.deliver hands straight to _render_room_messages (the
# hot path, which counts them itself); every other kind is rendered by _RENDERERS.
_ROOM_MESSAGE_EVENTS = frozenset({RoomMessage, RoomMessages})

_RENDERERS: dict[type, Callable[[IRCConnection, Event], None]] = {
    DirectMessage: IRCConnection._render_direct,
    TagMessage: IRCConnection._render_tag,
    StoredMessage: IRCConnection._render_stored,
    Joined: IRCConnection._render_joined,
    Parted: IRCConnection._render_parted,
    Members: IRCConnection._render_members,
    HistoryLine: IRCConnection._render_history,
    Notice: IRCConnection._render_notice,
    Topic: IRCConnection._render_topic,
    Operators: IRCConnection._render_operators,
    RoomModeChanged: IRCConnection._render_mode_changed,
    Kicked: IRCConnection._render_kicked,
    Invited: IRCConnection._render_invited,
    Away: IRCConnection._render_away,
}


class IRCFactory(ServerFactory):
    """Builds an ``IRCConnection`` per client; shares the line door's limits and portal."""

    noisy = False

    def __init__(
        self, config, accounts, portal, clock, chat,
        limits: Limits | None = None, telemetry: Telemetry | None = None,
        gate: Gate | None = None,
    ):
        self.config = config
        self.accounts = accounts
        self.portal = portal
        self.clock = clock
        self.chat = chat
        self.limits = limits or Limits(config, clock)
        self.telemetry = telemetry or Telemetry()
        # Logins, registrations and the per-user limits: the same gate as the line door's.
        self.gate = gate or Gate(
            config, self.limits, accounts, portal, self.telemetry, chat=chat
        )
        self.connections: set[IRCConnection] = set()
        # The QUIT reason of each user whose last IRC session is ending now.
        self.quit_reasons: dict[str, str] = {}
        watchers = getattr(chat, "away_watchers", None)
        if watchers is not None:
            watchers.append(self._away_changed)
        # The longest line read: 512 bytes of message and up to 8,191 of tags.
        self.max_line_bytes = LINE_LIMIT + CLIENT_TAGS_LIMIT + 2
        # The last room event rendered, and its lines per choice of tags.
        self._rendered: tuple[Event | None, dict[frozenset[str], RenderedEvent]] = (None, {})
        self.motd = (
            f"Welcome to {config.server_name}: the same rooms and people as its other doors.",
            "Your nick is your account name. Log in with SASL PLAIN, PASS, or",
            "/msg NickServ IDENTIFY <password>; new here? /msg NickServ REGISTER <password>.",
        )

    def rendered(
        self, event: RoomMessage | RoomMessages, shown_as: frozenset[str]
    ) -> RenderedEvent:
        """``event``'s room messages as IRC lines, shown with ``shown_as`` tags.

        The core hands one event to every session of a room in turn, so the
        lines are made once per event and choice of tags, and only the last
        event's are kept.
        """
        last, views = self._rendered
        if last is not event:
            views = {}
            self._rendered = (event, views)
        rendered = views.get(shown_as)
        if rendered is None:
            messages = event.messages if type(event) is RoomMessages else (event,)
            rendered = views[shown_as] = RenderedEvent(
                [(message.origin, self._shared_line(message, shown_as)) for message in messages]
            )
        return rendered

    def _shared_line(self, message: RoomMessage, shown_as: frozenset[str]) -> bytes:
        """One room message as every connection whose tags capabilities are ``shown_as``
        sees it: the line ``IRCConnection.send`` would write to each of them."""
        return room_line(message, self.config.server_name, shown_as)

    def _away_changed(self, user, text: str) -> None:
        """away-notify: tell clients that share a room with ``user`` (not its own)."""
        rooms = set(user.rooms)
        for connection in list(self.connections):
            session = connection.session
            if (
                session is None or "away-notify" not in connection.caps
                or session.user is user or not rooms.intersection(session.user.rooms)
            ):
                continue
            connection.send(Message(
                "AWAY", (text,) if text else (), connection.source_of(user.name)
            ))

    def buildProtocol(self, addr) -> IRCConnection:
        """A connection for one new client."""
        return IRCConnection(self)

    def is_invisible(self, key: str) -> bool:
        """Whether a connection of the user of folded name ``key`` set user mode +i (on
        this node or, in cluster mode, another)."""
        return self.chat.is_invisible(key)

    def identity_of(self, name: str) -> tuple[str, str]:
        """The user name and real name an IRC connection of ``name`` gave in USER
        (the nick for either when none did, as for line-door users)."""
        key = fold(name)
        for connection in self.connections:
            session = connection.session
            if session is not None and session.user.key == key and connection.realname:
                return connection.username or name, connection.realname
        return name, name

    def online_names(self) -> dict[str, str]:
        """Display names of the users online now (cluster mode: on any node), by folded name."""
        names = self.chat.fanout.presence.users()
        names.update((key, user.name) for key, user in self.chat.users.items())
        return names

    def isupport(self) -> list[str]:
        """The 005 tokens: only what is true of chatd."""
        config = self.config
        return [
            "CASEMAPPING=ascii",
            "CHANTYPES=#",
            "CHANNELLEN=33",
            "NICKLEN=32",
            f"NETWORK={config.server_name}",
            "PREFIX=(ov)@+",
            "CHANMODES=b,,,imst",
            "UTF8ONLY",
            f"LINELEN={LINE_LIMIT}",
            "WHOX",
            f"CHATHISTORY={CHATHISTORY_LIMIT}",
            f"TARGMAX=JOIN:,PART:,NAMES:,KICK:,PRIVMSG:{MESSAGE_TARGETS},"
            f"NOTICE:{MESSAGE_TARGETS},TAGMSG:{MESSAGE_TARGETS}",
            "MSGREFTYPES=msgid,timestamp",
            # No CLIENTTAGDENY: every well-formed client-only tag is passed on.
        ]

    def disconnect_all(self, reason: DisconnectReason) -> defer.Deferred:
        """Tell every client ``ERROR`` and close; fire once asked of all (stopping the server)."""
        for connection in list(self.connections):
            connection.disconnect(reason)
        return defer.succeed(None)
