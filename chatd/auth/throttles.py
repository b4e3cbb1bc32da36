"""Throttles on who may try to come in: logins, registrations, password changes.

Everything here runs on the reactor thread and reads time from the clock it
is given (the reactor in the server, a ``task.Clock`` in tests), so every
limit can be driven to its edge without waiting. Attempts still in flight
count at admission (``Admission``, ``Reservation``), so parallel attempts
cannot slip past a limit.

- ``TokenBucket``: a rate with a burst (the line rate, the flood allowance
  and the per-address registration limit are buckets).
- ``LoginThrottle``: failed logins per (address, account) pair and per
  address, with lockouts that double with each further failure; a success
  clears only its own share, so nobody can lock an owner out.
- ``RegistrationLimit``, ``PasswordChangeLimit``, ``KeyedAllowance``: what
  one address or account may start per period.

docs/security.md explains each defence and lists every setting."""

import ipaddress
import math
from collections import OrderedDict
from dataclasses import dataclass, field

from chatd.config import Allowance
from chatd.core.errors import ChatError

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


# The refusal of a login for the attempts from its address already in flight.
IN_FLIGHT_REFUSAL = "too many logins from your address at once; try again"


@dataclass(slots=True)
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
        # Cluster mode: called with ("failed" | "succeeded", address, account) for
        # each login ended here, so the other nodes count it too (chatd/cluster).
        self.on_change = None

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
            raise _too_many(IN_FLIGHT_REFUSAL)
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
        self.failed_elsewhere(address, account)
        if self.on_change is not None:
            self.on_change("failed", address, account)

    def failed_elsewhere(self, address: str, account: str) -> None:
        """Count a failure another node of the cluster saw (or this one): no attempt of
        this node ends, only the counts and lockouts change."""
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
        self.succeeded_elsewhere(address, account)
        if self.on_change is not None:
            self.on_change("succeeded", address, account)

    def succeeded_elsewhere(self, address: str, account: str) -> None:
        """A success another node of the cluster saw (or this one), as ``succeeded``."""
        record = self._addresses.get(address)
        if record is not None:
            record.count -= record.by_account.pop(account, 0)
            if record.count < self.per_address:
                record.locked_until = 0.0
        guarded = self._accounts.get(account)
        if guarded is not None and guarded.pending:
            # Attempts still in flight keep their places; only the row ends.
            self._accounts.put(account, _Failures(pending=guarded.pending))
        elif guarded is not None:
            # Nothing left to count: an account that logged in keeps no record
            # here (thousands of idle accounts would each hold an empty one).
            self._accounts.pop(account)
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

    def room(self, address: str) -> int:
        """How many attempts from ``address`` may be in flight at once now: the
        failures it has left before its limit, at least one (the cluster's count of
        attempts in flight is held to this, chatd/cluster/policy.py)."""
        record = self._addresses.get(address)
        return max(1, self.per_address - (0 if record is None else record.count))

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
