"""Limits that keep one connection from hurting everyone else, shared by every door.

Everything here runs on the reactor thread and reads time from the clock it
is given (the reactor in the server, a ``task.Clock`` in tests), so every
limit can be driven to its edge without waiting.

- ``ConnectionCounter``: open connections in total and per source address.
- ``SendQueue``: a session's bounded output queue, registered with the
  transport as a push producer so Twisted tells it when the client stops
  reading; bulk replies are pulled from it a page at a time.
- ``ConnectionGuard``: one connection's share of all of that (its rate
  limit, its login and keep-alive timers, its place in the counts).
- ``Limits``: the server's limits built once from the configuration, with
  the throttles of ``chatd.auth.throttles``.

docs/security.md explains each defence and lists every setting."""

import secrets
import socket
import struct
from collections import deque
from collections.abc import Callable

from twisted.internet.interfaces import IPushProducer
from twisted.logger import Logger
from zope.interface import implementer

from chatd.auth.throttles import (
    _TOKEN_SLACK,
    KeyedAllowance,
    LoginThrottle,
    PasswordChangeLimit,
    RegistrationLimit,
    TokenBucket,
)
from chatd.config import Config
from chatd.core.interfaces import DisconnectReason
from chatd.frontends.sendnow import sender_for

try:
    import fcntl
    import termios

    _TIOCOUTQ: int | None = termios.TIOCOUTQ
except (ImportError, AttributeError):  # pragma: no cover - not on Linux
    _TIOCOUTQ = None

log = Logger()

# While pages of a bulk reply wait to be confirmed as handed over, how often
# the socket is asked (besides on every read and every drain of the transport).
HANDOVER_POLL_SECONDS = 0.05
# More bytes than any connection ever sends: "not handed over" when unsure.
_UNKNOWN = 1 << 62


class ConnectionCounter:
    """Open connections, in total and per source address."""

    def __init__(self, total: int, per_address: int) -> None:
        self.limit = total
        self.per_address = per_address
        self.total = 0
        self._by_address: dict[str, int] = {}

    def count(self, address: str) -> int:
        """How many connections ``address`` has open."""
        return self._by_address.get(address, 0)

    def admit(self, address: str) -> bool:
        """Count a new connection if both limits allow it; tell whether they did."""
        if self.total >= self.limit or self.count(address) >= self.per_address:
            return False
        self.total += 1
        self._by_address[address] = self.count(address) + 1
        return True

    def release(self, address: str) -> None:
        """Forget an admitted connection that closed."""
        self.total -= 1
        left = self._by_address[address] - 1
        if left:
            self._by_address[address] = left
        else:
            del self._by_address[address]


def unsent_bytes(transport) -> int:
    """Bytes written to ``transport`` that the client's side has not acknowledged yet.

    Twisted's own buffer, plus, where the kernel tells (Linux ``SIOCOUTQ``
    on TCP and unix sockets), what the socket still holds unacknowledged:
    for TCP what the peer's TCP has not acknowledged, for a unix socket what
    the peer has not read. Through TLS the socket's bytes are ciphertext,
    a little more than the lines they carry: the count errs on the safe side.
    A transport that tells nothing (a test's ``StringTransport``) has
    handed over everything written to it.
    """
    total = 0
    for _layer in range(4):
        if transport is None:
            break
        buffered = getattr(transport, "dataBuffer", None)
        if buffered is not None:
            total += len(buffered) - getattr(transport, "offset", 0)
            total += getattr(transport, "_tempDataLen", 0)
        total += sum(len(data) for data in getattr(transport, "_appSendBuffer", ()) or ())
        try:
            handle = transport.getHandle()
        except Exception:
            handle = None
        if isinstance(handle, socket.socket):
            return total + _socket_outq(handle)
        transport = getattr(transport, "transport", None)
    return total


def _socket_outq(handle: socket.socket) -> int:
    if _TIOCOUTQ is None:
        return 0
    try:
        raw = fcntl.ioctl(handle.fileno(), _TIOCOUTQ, b"\0\0\0\0")
    except (OSError, ValueError):
        # A closed socket: whatever it still held is not known to have arrived.
        return _UNKNOWN
    return struct.unpack("i", raw)[0]


@implementer(IPushProducer)
class SendQueue:
    """A session's output, bounded, fed to the transport as fast as the client reads.

    It registers with the transport as a streaming producer: while the
    transport's own buffer has room, writes go straight through; once Twisted
    pauses it (the client is not reading fast enough), writes wait here, in
    order, until Twisted resumes it. Waiting writes are the events' shared
    wire bytes, so a broadcast waiting for many slow sessions is held once.

    Past ``soft`` waiting bytes the session is slow: ``on_slow`` is called
    once, and ``on_drained`` when everything waiting has gone out. Past
    ``hard`` bytes the queue is dropped and ``on_overflow`` called, once.

    A ``BulkReply`` (``add_bulk``) takes its place in the same order, but
    its lines are pulled a page at a time, only while the transport has
    room: they never wait here and never count against either limit. What
    is written after it waits behind it (and counts), so every line still
    goes out in the order it was given.
    """

    # Thousands of sessions: no per-instance __dict__.
    __slots__ = (
        "_clock",
        "_confirming",
        "_on_drained",
        "_on_overflow",
        "_on_slow",
        "_poll",
        "_pumping",
        "_registered",
        "_transport",
        "_unsent",
        "_waiting",
        "_write",
        "hard",
        "paused",
        "queued",
        "sent",
        "slow",
        "soft",
        "stopped",
    )

    def __init__(
        self,
        transport,
        soft: int,
        hard: int,
        on_slow: Callable[[], None],
        on_drained: Callable[[], None],
        on_overflow: Callable[[], None],
        clock=None,
        unsent: Callable[[object], int] = unsent_bytes,
    ) -> None:
        self._transport = transport
        # Plain TCP is sent to at once while its buffer is empty (chatd.frontends.sendnow).
        self._write = sender_for(transport)
        self.soft = soft
        self.hard = hard
        self._on_slow = on_slow
        self._on_drained = on_drained
        self._on_overflow = on_overflow
        self._clock = clock
        self._unsent = unsent
        # Made when something has to wait: an idle session holds no empty deque.
        self._waiting: deque | None = None
        # (position in the stream, callback) of pages waiting to be handed over.
        self._confirming: deque | None = None
        self._poll = None
        self._pumping = False
        self.queued = 0
        self.sent = 0
        self.paused = False
        self.slow = False
        self.stopped = False
        self._registered = True
        transport.registerProducer(self, True)

    def _send(self, data: bytes) -> None:
        self.sent += len(data)
        self._write(data)

    def write(self, data: bytes) -> None:
        """Send ``data`` now if the client keeps up, else queue it."""
        if self.stopped:
            return
        if not self.paused and not self._waiting:
            self._send(data)
            return
        if self._waiting is None:
            self._waiting = deque()
        self._waiting.append(data)
        self.queued += len(data)
        if self.queued > self.hard:
            self.stopProducing()
            self._on_overflow()
        elif self.queued > self.soft and not self.slow:
            self.slow = True
            self._on_slow()

    def add_bulk(self, bulk) -> None:
        """Send ``bulk``'s pages after what waits, as the transport takes them."""
        if self.stopped:
            bulk.cancel()
            return
        bulk.wake = self._pump
        if self._waiting is None:
            self._waiting = deque()
        self._waiting.append(bulk)
        self._pump()

    def _pump(self) -> None:
        """Hand the transport what waits, in order, until it is full or a page is not there."""
        if self._pumping:
            return
        self._pumping = True
        try:
            while self._waiting and not self.paused and not self.stopped:
                head = self._waiting[0]
                if isinstance(head, bytes):
                    self._waiting.popleft()
                    self.queued -= len(head)
                    self._send(head)
                    continue
                taken = head.take()
                if taken is None:
                    # The page is being fetched; the bulk wakes us when it is here.
                    break
                lines, handed_over = taken
                if not lines:
                    self._waiting.popleft()
                    head.completed()
                    continue
                for data in lines:
                    self._send(data)
                if handed_over is not None:
                    self.when_handed_over(handed_over)
        finally:
            self._pumping = False
        if self._waiting is not None and not self._waiting:
            # An emptied deque keeps its block (about 700 bytes): an idle session holds none.
            self._waiting = None
        if self.slow and not self.queued:
            self.slow = False
            self._on_drained()

    def when_handed_over(self, callback: Callable[[bool], None]) -> None:
        """Call ``callback(True)`` once everything written so far reached the client's side.

        That is: left the transport and, where the kernel tells, was
        acknowledged by the client's TCP (see ``unsent_bytes``). It is
        checked whenever the transport drains, whenever ``check_handed_over``
        is called (the protocol does on every read) and, with a clock, every
        ``HANDOVER_POLL_SECONDS`` meanwhile. ``callback(False)`` if the
        connection goes first.
        """
        if self._confirming is None:
            self._confirming = deque()
        self._confirming.append((self.sent, callback))
        self.check_handed_over()

    def check_handed_over(self) -> None:
        """Call back the pages whose bytes have all reached the client's side."""
        if not self._confirming:
            return
        reached = self.sent - self._unsent(self._transport)
        while self._confirming and self._confirming[0][0] <= reached:
            _position, callback = self._confirming.popleft()
            callback(True)
        if not self._confirming:
            self._confirming = None
            self._stop_polling()
        elif self._poll is None and self._clock is not None:
            self._poll = self._clock.callLater(HANDOVER_POLL_SECONDS, self._polled)

    def _stop_polling(self) -> None:
        if self._poll is not None:
            if self._poll.active():
                self._poll.cancel()
            self._poll = None

    def _polled(self) -> None:
        self._poll = None
        self.check_handed_over()

    def pauseProducing(self) -> None:
        """The transport's buffer is full: queue from now on."""
        self.paused = True

    def resumeProducing(self) -> None:
        """The transport has room again: hand it what waits, until it is full again."""
        self.paused = False
        self._pump()
        self.check_handed_over()

    def stopProducing(self) -> None:
        """The connection is gone (or dropped for overflow): forget what waits."""
        self.stopped = True
        waiting, self._waiting = self._waiting, None
        self.queued = 0
        for entry in waiting or ():
            if not isinstance(entry, bytes):
                entry.cancel()
        self._stop_polling()
        confirming, self._confirming = self._confirming, None
        for _position, callback in confirming or ():
            callback(False)

    def finish(self) -> None:
        """Hand everything waiting to the transport and stop being its producer.

        Called before ``loseConnection``: a transport with a paused producer
        registered would otherwise wait for it forever instead of closing.
        Bulk replies not yet sent are dropped; pages already written may
        still be confirmed until the connection is gone.
        """
        while self._waiting and not self.stopped:
            entry = self._waiting.popleft()
            if isinstance(entry, bytes):
                self._send(entry)
            else:
                entry.cancel()
        self.queued = 0
        self.stopped = True
        if self._registered:
            self._registered = False
            self._transport.unregisterProducer()


class ConnectionGuard:
    """One connection's limits: line rate, flood, timers and its place in the counts.

    The protocol tells it what happens (``opened``, ``line``, ``logged_in``,
    ``closing``, ``lost``) and asks it what to do; it calls back into the
    protocol only through ``send_ping`` and ``disconnect``.
    """

    # Thousands of sessions: no per-instance __dict__.
    __slots__ = (
        "_admitted",
        "_answers_pings",
        "_bytes_bucket",
        "_clock",
        "_closer",
        "_disconnect",
        "_heard_at",
        "_limits",
        "_lines",
        "_lines_bucket",
        "_logged_in",
        "_refusing",
        "_send_ping",
        "_strikes",
        "_timer",
        "address",
        "first_refusal",
        "over_bytes",
    )

    def __init__(
        self,
        limits: "Limits",
        address: str,
        send_ping: Callable[[str], None],
        disconnect: Callable[[str], None],
    ) -> None:
        config = limits.config
        self._limits = limits
        self._clock = limits.clock
        self.address = address
        self._send_ping = send_ping
        self._disconnect = disconnect
        rate = config.rate_limit
        self._lines_bucket = (
            None if rate is None else TokenBucket(rate.per_second, rate.burst, self._clock)
        )
        byte_rate = config.byte_rate
        self._bytes_bucket = (
            None
            if rate is None or byte_rate is None
            else TokenBucket(byte_rate.per_second, byte_rate.burst, self._clock)
        )
        # One rate-limited line is forgiven a second: a paste that overruns
        # the burst costs a few ERR lines, a sustained flood ends the session.
        # Made at the first refusal: most sessions are never refused.
        self._strikes: TokenBucket | None = None
        self._admitted = False
        self._answers_pings = False
        self._logged_in = False
        self._refusing = False
        self.first_refusal = False
        # Whether the last refused line was refused for its bytes, not its count.
        self.over_bytes = False
        self._lines = 0
        self._heard_at = self._clock.seconds()
        self._timer = None
        self._closer = None

    # --- connection ---------------------------------------------------------

    def opened(self) -> bool:
        """Count the connection and start the login timer; False if over a limit."""
        self._admitted = self._limits.connections.admit(self.address)
        if not self._admitted:
            return False
        timeout = self._limits.config.login_timeout_seconds
        self._timer = self._clock.callLater(
            timeout, self._disconnect, DisconnectReason.LOGIN_TIMEOUT
        )
        return True

    def logged_in(self) -> None:
        """Stop the login timer; start watching for silence if the client answers PINGs."""
        self._cancel_timer()
        self._logged_in = True
        self._heard_at = self._clock.seconds()
        self._start_watching()

    def answers_pings(self) -> None:
        """The client sent ``/pong``: it answers PINGs, so silence may be checked with one.

        Only such a client is ever sent ``PING`` (and closed for not
        answering): a person on nc cannot be asked to answer, and TCP
        keep-alive finds their dead connections instead.
        """
        if not self._answers_pings:
            self._answers_pings = True
            self._start_watching()

    def _start_watching(self) -> None:
        if (
            self._logged_in
            and self._answers_pings
            and self._timer is None
            and self._limits.config.ping_interval_seconds is not None
        ):
            self._watch_silence()

    def closing(self, transport) -> None:
        """The connection is being closed: abort it if it lingers (a client not reading)."""
        self._logged_in = False
        self._cancel_timer()
        if self._closer is None:
            timeout = self._limits.config.close_timeout_seconds
            self._closer = self._clock.callLater(timeout, transport.abortConnection)

    def lost(self) -> None:
        """The connection is gone: stop every timer and free its place."""
        self._logged_in = False
        self._cancel_timer()
        if self._closer is not None and self._closer.active():
            self._closer.cancel()
        if self._admitted:
            self._admitted = False
            self._limits.connections.release(self.address)

    def _cancel_timer(self) -> None:
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None

    # --- lines ----------------------------------------------------------------

    def line(self, size: int = 1) -> str | None:
        """A line of ``size`` bytes arrived: None to run it, else ``rate-limited`` or ``flood``.

        Every line costs a line token, an empty one too, and its bytes (its
        line end included) from the byte budget; it runs only if both are there.
        """
        self.heard()
        lines, data = self._lines_bucket, self._bytes_bucket
        if lines is None or (
            lines.available() and (data is None or data.take(size)) and lines.take()
        ):
            self._refusing = False
            return None
        self.over_bytes = lines.available()
        # True for the first dropped line after one that got through.
        self.first_refusal = not self._refusing
        self._refusing = True
        if self._strikes is None:
            flood_limit = self._limits.config.flood_limit
            self._strikes = TokenBucket(1.0, flood_limit, self._clock)
        return "rate-limited" if self._strikes.take() else "flood"

    def heard(self) -> None:
        """Any line shows the client is there."""
        self._lines += 1
        self._heard_at = self._clock.seconds()

    # --- keep-alive -------------------------------------------------------------

    def _watch_silence(self) -> None:
        interval = self._limits.config.ping_interval_seconds
        silent = self._clock.seconds() - self._heard_at
        self._timer = self._clock.callLater(max(0.0, interval - silent), self._check_idle)

    def _check_idle(self) -> None:
        interval = self._limits.config.ping_interval_seconds
        if self._clock.seconds() - self._heard_at + _TOKEN_SLACK < interval:
            # A line came since the timer was set: wait out the rest of the silence.
            self._watch_silence()
            return
        self._send_ping(secrets.token_hex(4))
        timeout = self._limits.config.pong_timeout_seconds
        self._timer = self._clock.callLater(timeout, self._check_pong, self._lines)

    def _check_pong(self, lines_then: int) -> None:
        # Any line since the PING answers it: a client that talks is not idle.
        if self._lines == lines_then:
            self._timer = None
            self._disconnect(DisconnectReason.IDLE_TIMEOUT)
        else:
            self._watch_silence()


class Limits:
    """The server-wide limits, built from the configuration, shared by every connection."""

    def __init__(self, config: Config, clock) -> None:
        self.config = config
        self.clock = clock
        self.connections = ConnectionCounter(
            config.max_connections, config.max_connections_per_address
        )
        self.logins = LoginThrottle(
            clock,
            config.login_failures_per_address,
            config.login_failures_per_account,
            config.login_lockout_seconds,
            config.login_lockout_max_seconds,
            capacity=config.login_table_size,
        )
        self.registrations = RegistrationLimit(
            clock, config.registration_limit, capacity=config.login_table_size
        )
        self.password_changes = PasswordChangeLimit(
            clock, config.passwd_limit, capacity=config.login_table_size
        )
        self.room_creations = KeyedAllowance(
            clock, config.room_creation_limit, capacity=config.login_table_size
        )
        self.stored_messages = KeyedAllowance(
            clock, config.stored_message_limit, capacity=config.login_table_size
        )
        # Joins in flight per user (folded name): they count against the
        # rooms-per-user cap until they have finished.
        self.joins_in_flight: dict[str, int] = {}

    def join_started(self, user_key: str) -> None:
        """Count a join of ``user_key`` that is on its way."""
        self.joins_in_flight[user_key] = self.joins_in_flight.get(user_key, 0) + 1

    def join_ended(self, user_key: str) -> None:
        """A join of ``user_key`` finished, either way."""
        left = self.joins_in_flight[user_key] - 1
        if left:
            self.joins_in_flight[user_key] = left
        else:
            del self.joins_in_flight[user_key]

    def guard(self, address: str, send_ping, disconnect) -> ConnectionGuard:
        """The guard of one new connection from ``address``."""
        return ConnectionGuard(self, address, send_ping, disconnect)
