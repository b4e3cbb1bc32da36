"""Limits that keep one client from hurting everyone else.

Everything here runs on the reactor thread and reads time from the clock it
is given (the reactor in the server, a ``task.Clock`` in tests), so every
limit can be driven to its edge without waiting.

- ``TokenBucket``: a rate with a burst; the per-session line rate limit,
  the flood allowance and the per-address registration limit are buckets.
- ``LoginThrottle``: failed logins by source address and by account, with
  lockouts that double with each further failure.
- ``RegistrationLimit``: accounts created per source address.
- ``ConnectionCounter``: open connections in total and per source address.
- ``SendQueue``: a session's bounded output queue, registered with the
  transport as a push producer so Twisted tells it when the client stops
  reading.
- ``ConnectionGuard``: one connection's share of all of that (its rate
  limit, its login and keep-alive timers, its place in the counts).

docs/security.md explains each defence and lists every setting.
"""

import ipaddress
import math
import secrets
import socket
import struct
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass, field

from twisted.internet.interfaces import IPushProducer
from twisted.logger import Logger
from zope.interface import implementer

from chatd.config import Allowance, Config
from chatd.errors import ChatError

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

# Clock readings near 1.7e9 seconds carry rounding errors of about 2e-7 s, so
# a bucket that should hold exactly one token may hold 0.9999998: a token
# counts as there when this close to whole.
_TOKEN_SLACK = 1e-3

# Per-key records (addresses, accounts) kept at most this many at once; the
# least recently touched go first. A flood of fresh addresses or invented user
# names costs memory up to this bound and no further. The login throttle's
# bound is CHATD_LOGIN_TABLE_SIZE (Config.login_table_size), of the same default.
TABLE_CAPACITY = 100_000

# While an account is locked, the addresses that already failed on it are
# remembered, up to this many; the oldest are forgotten first.
ACCOUNT_ADDRESS_MEMORY = 4096


class TokenBucket:
    """``rate`` tokens a second, at most ``burst`` saved up; starts full.

    Time comes from ``clock.seconds()``, so a test moves it with
    ``task.Clock.advance``.
    """

    __slots__ = ("_clock", "_stamp", "burst", "rate", "tokens")

    def __init__(self, rate: float, burst: float, clock) -> None:
        self.rate = rate
        self.burst = burst
        self.tokens = float(burst)
        self._clock = clock
        self._stamp = clock.seconds()

    def _refill(self) -> None:
        now = self._clock.seconds()
        if now > self._stamp:
            self.tokens = min(self.burst, self.tokens + (now - self._stamp) * self.rate)
        self._stamp = now

    def available(self, cost: float = 1) -> bool:
        """Tell whether ``cost`` tokens are there now, without taking them."""
        self._refill()
        return self.tokens + _TOKEN_SLACK >= cost

    def take(self, cost: float = 1) -> bool:
        """Take ``cost`` tokens if they are there; tell whether they were."""
        if not self.available(cost):
            return False
        self.tokens = max(0.0, self.tokens - cost)
        return True


class ExpiringTable:
    """Records by key, each forgotten ``ttl`` seconds after it was last stored.

    At most ``capacity`` records are kept: storing past that forgets the
    least recently stored. Records are kept in the order they were last
    stored, so forgetting old ones only ever looks at the front.
    """

    def __init__(self, clock, ttl: float, capacity: int = TABLE_CAPACITY) -> None:
        self._clock = clock
        self.ttl = ttl
        self.capacity = capacity
        self._records: OrderedDict[str, tuple[float, object]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._records)

    def get(self, key: str):
        """The record stored under ``key``, or None if there is none or it expired."""
        self._prune()
        found = self._records.get(key)
        return None if found is None else found[1]

    def put(self, key: str, record) -> None:
        """Store ``record`` under ``key``, restarting its time to live."""
        self._records[key] = (self._clock.seconds(), record)
        self._records.move_to_end(key)
        self._prune()

    def pop(self, key: str) -> None:
        """Forget ``key``."""
        self._records.pop(key, None)

    def _prune(self) -> None:
        oldest = self._clock.seconds() - self.ttl
        while self._records:
            key, (stored, _record) = next(iter(self._records.items()))
            if stored > oldest and len(self._records) <= self.capacity:
                break
            del self._records[key]


def address_key(address) -> str:
    """The source address that connection and login limits count by.

    IPv4 addresses count one by one; IPv6 ones by their /64 network (what one
    customer usually gets, so a client cannot dodge a limit by hopping
    addresses inside it), except loopback; IPv4 mapped into IPv6 counts as
    the IPv4 address. Every unix-socket client counts as the one address
    ``unix``.
    """
    host = getattr(address, "host", None)
    if host is None:
        return "unix"
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return str(host)
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        if not ip.is_loopback:
            return str(ipaddress.IPv6Network((int(ip), 64), strict=False))
    return str(ip)


def _too_many(text: str) -> ChatError:
    return ChatError("too-many-attempts", text)


# The addresses a successful login to an account came from, kept per account
# (at most this many, the least recent forgotten) for this long: the owner's
# known-good addresses, which the account-wide lock does not apply to.
KNOWN_ADDRESSES_PER_ACCOUNT = 16
KNOWN_ADDRESS_SECONDS = 30 * 24 * 3600.0

# An address's failures are kept by the account they were made on, for at most
# this many accounts; the failures on further accounts are pooled under None,
# which no success ever clears.
ACCOUNTS_PER_ADDRESS_MEMORY = 64


@dataclass
class _Failures:
    """Failed logins in a row and attempts in flight, for one address or one account."""

    count: int = 0
    locked_until: float = 0.0
    # Attempts admitted whose password check has not ended yet.
    pending: int = 0
    # For an account: the addresses that failed on it, oldest first.
    addresses: dict[str, None] = field(default_factory=dict)
    # For an address: its failures by the account they were made on (the
    # (address, account) pairs), so a success clears only its own account's.
    by_account: dict[str | None, int] = field(default_factory=dict)

    def admits(self, now: float, limit: int) -> bool:
        """Whether one more attempt may start: not locked, and the failures so far
        plus the attempts in flight (each of which may yet fail) stay under the
        limit; past the limit, once a lockout is over, one attempt at a time."""
        return now >= self.locked_until and self.pending < max(1, limit - self.count)


class LoginAttempt:
    """One admitted login (or ``/passwd`` check) while its password is checked.

    It holds a place in its address's and account's count of attempts in
    flight until it ends, exactly once, by ``failed``, ``succeeded`` or
    ``abandoned`` (refused for a busy server, or failed on the server's side:
    not a guess either way).
    """

    __slots__ = ("_throttle", "account", "address", "ended")

    def __init__(self, throttle: "LoginThrottle", address: str, account: str) -> None:
        self._throttle = throttle
        self.address = address
        self.account = account
        self.ended = False

    def _end(self) -> bool:
        if self.ended:
            return False
        self.ended = True
        self._throttle._release(self.address, self.account)
        return True

    def failed(self) -> None:
        """A wrong password (or unknown user): counts for the address and the account."""
        if self._end():
            self._throttle.failed(self.address, self.account)

    def succeeded(self) -> None:
        """The right password: clears this account's failures only."""
        if self._end():
            self._throttle.succeeded(self.address, self.account)

    def abandoned(self) -> None:
        """Not a guess: free the place without counting anything."""
        self._end()


class LoginThrottle:
    """Failed logins by source address and by account, with growing lockouts.

    Every limit counts the attempts still in flight: an attempt is admitted
    (``admit``) only if the failures so far plus the attempts whose password
    is still being checked stay under the limit, so 250 wrong logins sent at
    once from one address get at most ``per_address`` bcrypt checks.

    After ``per_address`` failed logins in a row an address is locked out
    for ``lockout`` seconds, doubled for every further failure up to
    ``lockout_max``. While locked, its logins are refused with
    ``too-many-attempts`` without checking the password, and each refusal
    counts as one more failure, so hammering only makes the lockout longer.
    An address's failures are kept by the account they were made on: a
    successful login clears that account's failures only, so a guesser who
    owns an account cannot wipe his guesses on another by logging into his own.

    After ``per_account`` failed logins in a row to one account, from all
    addresses together, the account is locked the same way, but only for the
    addresses that already failed on it and are not among the account's
    known-good addresses (those a login to it succeeded from, remembered for
    ``KNOWN_ADDRESS_SECONDS``): each other address still gets its attempt.
    So guessing spread over many addresses gets one guess per address per
    lockout, while the owner - from home, even after a typo there - still
    logs in. A successful login to the account ends its row.
    """

    def __init__(
        self,
        clock,
        per_address: int,
        per_account: int,
        lockout: float,
        lockout_max: float,
        capacity: int = TABLE_CAPACITY,
    ) -> None:
        self._clock = clock
        self.per_address = per_address
        self.per_account = per_account
        self.lockout = lockout
        self.lockout_max = lockout_max
        # Failures are forgotten an hour after the longest lockout would end.
        ttl = lockout_max + 3600
        self._addresses = ExpiringTable(clock, ttl, capacity)
        self._accounts = ExpiringTable(clock, ttl, capacity)
        self._known = ExpiringTable(clock, KNOWN_ADDRESS_SECONDS, capacity)

    def delay(self, excess: int) -> float:
        """The lockout for the ``excess``-th failure since the limit was reached (from 1)."""
        exponent = min(excess - 1, 64)
        return min(self.lockout * 2.0**exponent, self.lockout_max)

    def _wait_text(self, until: float) -> str:
        return f"try again in {max(1, math.ceil(until - self._clock.seconds()))} s"

    def known_good(self, address: str, account: str) -> bool:
        """Whether a login to ``account`` succeeded from ``address`` lately."""
        known = self._known.get(account)
        return known is not None and address in known

    def admit(self, address: str, account: str) -> LoginAttempt:
        """Admit one attempt, counted in flight until it ends; or raise ``too-many-attempts``.

        A refusal while locked out counts as one more failure of the address
        (on ``account``); one for the attempts in flight does not.
        """
        self.check(address, account)
        for table, key in ((self._addresses, address), (self._accounts, account)):
            held = table.get(key) or _Failures()
            held.pending += 1
            table.put(key, held)
        return LoginAttempt(self, address, account)

    def check(self, address: str, account: str) -> None:
        """Raise ``too-many-attempts`` if a login must not even be tried now; admit
        nothing."""
        now = self._clock.seconds()
        record = self._addresses.get(address)
        if record is not None and now < record.locked_until:
            self._address_failed(address, account)
            raise _too_many(
                "too many failed logins from your address; "
                + self._wait_text(self._addresses.get(address).locked_until)
            )
        if record is not None and not record.admits(now, self.per_address):
            # Refused for the attempts in flight, which may all yet fail: costs
            # no bcrypt, and is not counted (those attempts will be).
            raise _too_many("too many logins from your address at once; try again")
        guarded = self._accounts.get(account)
        if (
            guarded is not None
            and address in guarded.addresses
            and not self.known_good(address, account)
            and not guarded.admits(now, self.per_account)
        ):
            self._address_failed(address, account)
            until = max(guarded.locked_until, now + self.lockout)
            raise _too_many(f"too many failed logins to {account}; " + self._wait_text(until))

    def _release(self, address: str, account: str) -> None:
        for table, key in ((self._addresses, address), (self._accounts, account)):
            held = table.get(key)
            if held is not None and held.pending > 0:
                held.pending -= 1

    def failed(self, address: str, account: str) -> None:
        """Count a wrong password (or unknown user) for the address and the account."""
        self._address_failed(address, account)
        record = self._accounts.get(account) or _Failures()
        record.count += 1
        record.addresses.pop(address, None)
        record.addresses[address] = None
        while len(record.addresses) > ACCOUNT_ADDRESS_MEMORY:
            del record.addresses[next(iter(record.addresses))]
        self._lock(record, self.per_account)
        self._accounts.put(account, record)

    def succeeded(self, address: str, account: str) -> None:
        """A right password: the account starts afresh, the address only as far as its
        failures were on this account; the address becomes one of the account's known-good."""
        record = self._addresses.get(address)
        if record is not None:
            record.count -= record.by_account.pop(account, 0)
            if record.count < self.per_address:
                record.locked_until = 0.0
        guarded = self._accounts.get(account)
        if guarded is not None:
            # Attempts still in flight keep their places; only the row ends.
            self._accounts.put(account, _Failures(pending=guarded.pending))
        known = self._known.get(account) or {}
        known.pop(address, None)
        known[address] = None
        while len(known) > KNOWN_ADDRESSES_PER_ACCOUNT:
            del known[next(iter(known))]
        self._known.put(account, known)

    def _address_failed(self, address: str, account: str) -> None:
        record = self._addresses.get(address) or _Failures()
        record.count += 1
        key: str | None = account
        full = len(record.by_account) >= ACCOUNTS_PER_ADDRESS_MEMORY
        if account not in record.by_account and full:
            key = None
        record.by_account[key] = record.by_account.get(key, 0) + 1
        self._lock(record, self.per_address)
        self._addresses.put(address, record)

    def _lock(self, record: _Failures, limit: int) -> None:
        excess = record.count - limit + 1
        if excess >= 1:
            until = self._clock.seconds() + self.delay(excess)
            record.locked_until = max(record.locked_until, until)

    def locked(self, address: str) -> bool:
        """Tell whether ``address`` is locked out now."""
        record = self._addresses.get(address)
        return record is not None and self._clock.seconds() < record.locked_until

    def in_flight(self, address: str) -> int:
        """How many attempts from ``address`` are being checked now."""
        record = self._addresses.get(address)
        return 0 if record is None else record.pending


class Reservation:
    """A place held in an ``AllowanceLimit`` until the attempt ends, exactly once."""

    __slots__ = ("_bucket", "_limit", "ended")

    def __init__(self, limit: "AllowanceLimit", bucket: "_HeldBucket | None") -> None:
        self._limit = limit
        self._bucket = bucket
        self.ended = False

    def used(self) -> None:
        """The attempt happened: it takes its token."""
        if not self.ended:
            self.ended = True
            if self._bucket is not None:
                self._bucket.pending -= 1
                self._bucket.bucket.take()

    def abandoned(self) -> None:
        """The attempt did not happen (refused, failed early): its token stays."""
        if not self.ended:
            self.ended = True
            if self._bucket is not None:
                self._bucket.pending -= 1


@dataclass
class _HeldBucket:
    bucket: TokenBucket
    pending: int = 0


class AllowanceLimit:
    """``count`` attempts per ``seconds`` per key, as a token bucket, counting the
    attempts in flight: one is admitted only while the tokens left cover it and
    every attempt admitted before it that has not ended yet."""

    refusal = "too many attempts; try again later"

    def __init__(self, clock, allowance: Allowance | None, capacity: int = TABLE_CAPACITY):
        self._clock = clock
        self.allowance = allowance
        ttl = allowance.seconds if allowance is not None else 1.0
        # A bucket untouched for the whole period is full again: as good as forgotten.
        self._buckets = ExpiringTable(clock, ttl, capacity)

    def admit(self, key: str) -> Reservation:
        """Hold a place for one attempt by ``key``, or raise ``too-many-attempts``."""
        if self.allowance is None:
            return Reservation(self, None)
        self.check(key)
        held = self._buckets.get(key)
        if held is None:
            rate = self.allowance.count / self.allowance.seconds
            held = _HeldBucket(TokenBucket(rate, self.allowance.count, self._clock))
        held.pending += 1
        self._buckets.put(key, held)
        return Reservation(self, held)

    def check(self, key: str) -> None:
        """Raise ``too-many-attempts`` if ``key`` may not make an attempt now: the
        tokens left do not cover it and the attempts in flight. Admits nothing."""
        held = None if self.allowance is None else self._buckets.get(key)
        if held is None:
            return
        held.bucket.available()
        if held.bucket.tokens + _TOKEN_SLACK < held.pending + 1:
            raise _too_many(self.refusal)


class RegistrationLimit(AllowanceLimit):
    """Accounts created per source address: ``count`` per ``seconds``, counting the
    registrations still in flight (a name check and a bcrypt hash each)."""

    refusal = "too many new accounts from your address; try again later"

    def created(self, address: str) -> None:
        """Count an account created from ``address`` outside ``admit`` (tests, tools)."""
        if self.allowance is None:
            return
        held = self._buckets.get(address)
        if held is None:
            rate = self.allowance.count / self.allowance.seconds
            held = _HeldBucket(TokenBucket(rate, self.allowance.count, self._clock))
        held.bucket.take()
        self._buckets.put(address, held)


class PasswordChangeLimit(AllowanceLimit):
    """``/passwd`` attempts per account, right or wrong old password alike."""

    refusal = "too many password changes for this account; try again later"


@dataclass
class _Allowed:
    """One key's bucket, and its attempts admitted but not yet finished."""

    bucket: TokenBucket
    in_flight: int = 0


class Admission:
    """An attempt admitted by a ``KeyedAllowance``: end it with ``spent`` or ``unused``."""

    __slots__ = ("_allowance", "_records", "done")

    def __init__(self, allowance: "KeyedAllowance", records: list[tuple[str, _Allowed]]):
        self._allowance = allowance
        self._records = records
        self.done = False

    def spent(self) -> None:
        """The attempt did what the allowance counts: it takes a token from every key."""
        self._end(spent=True)

    def unused(self) -> None:
        """The attempt failed or turned out not to count: its keys get their room back."""
        self._end(spent=False)

    def _end(self, spent: bool) -> None:
        if self.done:
            return
        self.done = True
        for key, record in self._records:
            record.in_flight -= 1
            if spent:
                record.bucket.take()
            self._allowance.keep(key, record)


class KeyedAllowance:
    """Events per key (an address, an account): ``count`` per ``seconds`` as token buckets.

    ``admit`` counts an attempt against every key it names while it is in
    flight, so parallel attempts cannot all pass on the same token: a key
    with ``n`` attempts in flight admits another only with ``n + 1`` tokens.
    With no allowance (``off``) everything is admitted.
    """

    def __init__(self, clock, allowance: Allowance | None, capacity: int = TABLE_CAPACITY):
        self._clock = clock
        self.allowance = allowance
        ttl = allowance.seconds if allowance is not None else 1.0
        # A bucket untouched for the whole period is full again: as good as forgotten.
        self._records = ExpiringTable(clock, ttl, capacity)

    def admit(self, *keys: str) -> Admission | None:
        """An ``Admission`` for one attempt by ``keys``, or None if any of them is over."""
        if self.allowance is None:
            return Admission(self, [])
        records = []
        for key in keys:
            record = self._records.get(key)
            if record is None:
                rate = self.allowance.count / self.allowance.seconds
                record = _Allowed(TokenBucket(rate, self.allowance.count, self._clock))
            if not record.bucket.available(record.in_flight + 1):
                return None
            records.append((key, record))
        for key, record in records:
            record.in_flight += 1
            self.keep(key, record)
        return Admission(self, records)

    def keep(self, key: str, record: _Allowed) -> None:
        """Store ``record`` under ``key`` again (its time to live starts over)."""
        self._records.put(key, record)

    def wait_text(self, *keys: str) -> str:
        """How long until every one of ``keys`` has a token free, for people."""
        seconds = 0.0
        for key in keys:
            record = self._records.get(key)
            if record is not None:
                missing = record.in_flight + 1 - record.bucket.tokens
                seconds = max(seconds, missing / record.bucket.rate)
        return f"try again in {max(1, math.ceil(seconds))} s"


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
        self._transport.write(data)

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
        self._strikes = TokenBucket(1.0, config.flood_limit, self._clock)
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
        self._timer = self._clock.callLater(timeout, self._disconnect, "login-timeout")
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
            self._disconnect("idle-timeout")
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
