"""Shared policy: limits that count the whole cluster's attempts, kept in Redis.

A node's own limits (``chatd.auth.throttles``, the bcrypt queue) count what
reaches that node; in cluster mode an attacker spreading attempts over N
nodes would get N times the budget. The limits here count every node's
attempts in one place, Redis, and each is checked *as well as* the node's
own (which can only be stricter on one node's share, never looser):

- **registrations** per source address (``CHATD_REGISTRATION_LIMIT``): one
  token bucket per address for the cluster, and the registrations still in
  flight on any node count at admission, exactly as on one node;
- **bcrypt jobs** per source address (``CHATD_BCRYPT_PER_ADDRESS``): the
  jobs waiting or running on every node's queue together;
- **logins in flight** per source address: the password checks under way
  on every node count against the address's login limit, together with its
  failures so far (``LoginThrottle``'s counts, shared on ``chatd:logins``).

An attempt in flight is a member of a sorted set in Redis scored by a
deadline (``IN_FLIGHT_SECONDS`` from its admission): it leaves the set when
it ends, and one whose node died on it stops counting at its deadline. The
checks and the admissions run as one script each, so two nodes admitting at
the same moment cannot both take the last place.

**When Redis is away** (not connected, an error, or no answer within
``ANSWER_SECONDS``) every attempt is admitted by the node's own limits
alone, as on a single node: a Redis outage makes the limits per node for
its length (an attacker's budget times the number of nodes), and never
refuses anyone, so an owner is never locked out because Redis is down.
"""

import uuid

from twisted.internet import defer
from twisted.logger import Logger

log = Logger()

LIMIT_KEY = "chatd:limit:"
# An attempt in flight whose node died on it stops counting after this long.
IN_FLIGHT_SECONDS = 120.0
# Redis slower than this to answer an admission is taken as away for it.
ANSWER_SECONDS = 2.0

# Admit one attempt under every (key, cap) given, or none: KEYS are sorted
# sets of attempts in flight, ARGV = now_ms, deadline_ms, member, caps...
# Answers 0 when admitted, else the (1-based) index of the key at its cap.
_ADMIT = """
for i, key in ipairs(KEYS) do
  redis.call('ZREMRANGEBYSCORE', key, '-inf', ARGV[1])
  if redis.call('ZCARD', key) >= tonumber(ARGV[3 + i]) then return i end
end
for _, key in ipairs(KEYS) do
  redis.call('ZADD', key, ARGV[2], ARGV[3])
  redis.call('PEXPIRE', key, tonumber(ARGV[2]) - tonumber(ARGV[1]))
end
return 0
"""

# A token bucket with its attempts in flight: KEYS[1] the bucket (a hash of
# tokens t and stamp s), KEYS[2] the sorted set in flight. ARGV = now (s),
# now_ms, deadline_ms, member, rate, burst, bucket ttl (ms). Admitted (1)
# only while the tokens cover this attempt and every one in flight.
_BUCKET_ADMIT = """
local now = tonumber(ARGV[1])
local rate, burst = tonumber(ARGV[5]), tonumber(ARGV[6])
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', ARGV[2])
local tokens = tonumber(redis.call('HGET', KEYS[1], 't') or burst)
local stamp = tonumber(redis.call('HGET', KEYS[1], 's') or now)
if now > stamp then tokens = math.min(burst, tokens + (now - stamp) * rate) end
if tokens + 0.001 < redis.call('ZCARD', KEYS[2]) + 1 then return 0 end
redis.call('HSET', KEYS[1], 't', tostring(tokens), 's', tostring(math.max(now, stamp)))
redis.call('PEXPIRE', KEYS[1], ARGV[7])
redis.call('ZADD', KEYS[2], ARGV[3], ARGV[4])
redis.call('PEXPIRE', KEYS[2], tonumber(ARGV[3]) - tonumber(ARGV[2]))
return 1
"""

# An attempt of a bucket ends: ARGV = member, used (1: it takes its token),
# now (s), rate, burst, bucket ttl (ms).
_BUCKET_END = """
redis.call('ZREM', KEYS[2], ARGV[1])
if ARGV[2] == '1' then
  local now = tonumber(ARGV[3])
  local rate, burst = tonumber(ARGV[4]), tonumber(ARGV[5])
  local tokens = tonumber(redis.call('HGET', KEYS[1], 't') or burst)
  local stamp = tonumber(redis.call('HGET', KEYS[1], 's') or now)
  if now > stamp then tokens = math.min(burst, tokens + (now - stamp) * rate) end
  redis.call('HSET', KEYS[1], 't', tostring(tokens - 1), 's', tostring(math.max(now, stamp)))
  redis.call('PEXPIRE', KEYS[1], ARGV[6])
end
return 1
"""

_END = """
for _, key in ipairs(KEYS) do redis.call('ZREM', key, ARGV[1]) end
return 1
"""


class Ticket:
    """One attempt admitted by the cluster's count; end it exactly once with ``end``.

    A ticket admitted while Redis was away (``shared`` False) holds no place
    and ends without a word to Redis.
    """

    __slots__ = ("_end", "ended", "shared")

    def __init__(self, end=None) -> None:
        self._end = end
        self.shared = end is not None
        self.ended = False

    def end(self, used: bool = False) -> defer.Deferred:
        """The attempt is over; ``used`` when it did what the limit counts (an
        account created), so it takes its token. Nobody needs to wait for the
        Deferred (fired once Redis has it; tests wait)."""
        if self.ended or self._end is None:
            self.ended = True
            return defer.succeed(None)
        self.ended = True
        return self._end(used)


UNSHARED = Ticket()


class SharedLimits:
    """The cluster's counts of registrations, bcrypt jobs and logins in flight.

    ``redis`` runs a script: ``redis.script(source, keys, args)`` fires with
    its answer or fails (``RedisFanout.script``); ``clock`` tells the time
    (the reactor). Every ``admit_*`` fires with a ``Ticket`` when admitted
    (by the cluster's count, or by the node alone while Redis is away) and
    with None when the cluster's count is full.
    """

    def __init__(self, redis, clock, registration=None, bcrypt_per_address=None) -> None:
        self._redis = redis
        self._clock = clock
        self.registration = registration
        self.bcrypt_per_address = bcrypt_per_address
        # Admissions decided by the node alone (Redis away), for metrics and tests.
        self.unshared = 0

    def _now_ms(self) -> int:
        return int(self._clock.seconds() * 1000)

    def _ask(self, script: str, keys: list[str], args: list) -> defer.Deferred:
        """Run a script; fires with its answer, or None when Redis did not give one."""
        try:
            asking = self._redis.script(script, keys, [str(arg) for arg in args])
        except Exception as error:
            asking = defer.fail(error)
        asking.addTimeout(ANSWER_SECONDS, self._clock)

        def away(failure) -> None:
            self.unshared += 1
            log.warn("shared limits: redis did not answer ({error}): this node counts alone",
                     error=failure.getErrorMessage())
            return None

        return asking.addErrback(away)

    def _end_later(self, script: str, keys: list[str], args: list) -> defer.Deferred:
        return self._ask(script, keys, args)

    def admit_in_flight(self, caps: list[tuple[str, int]]) -> defer.Deferred:
        """Admit one attempt under every ``(key, cap)``: fewer than ``cap`` attempts of
        the cluster in flight under each key. Fires with a Ticket, or None when full."""
        if not caps:
            return defer.succeed(UNSHARED)
        keys = [LIMIT_KEY + key for key, _cap in caps]
        member = uuid.uuid4().hex
        now = self._now_ms()
        deadline = now + int(IN_FLIGHT_SECONDS * 1000)
        asking = self._ask(_ADMIT, keys, [now, deadline, member, *(cap for _key, cap in caps)])

        def answered(answer):
            if answer is None:
                return UNSHARED
            if int(answer) != 0:
                return None
            return Ticket(lambda used: self._end_later(_END, keys, [member]))

        return asking.addCallback(answered)

    def admit_registration(self, address: str) -> defer.Deferred:
        """A registration from ``address``: the cluster's bucket covers it and every
        registration from there still in flight. Fires with a Ticket, or None."""
        allowance = self.registration
        if allowance is None:
            return defer.succeed(UNSHARED)
        keys = [LIMIT_KEY + "reg:" + address, LIMIT_KEY + "reg-flight:" + address]
        member = uuid.uuid4().hex
        now = self._clock.seconds()
        now_ms = int(now * 1000)
        rate = allowance.count / allowance.seconds
        ttl_ms = int(allowance.seconds * 1000) + 1000
        deadline = now_ms + int(IN_FLIGHT_SECONDS * 1000)
        asking = self._ask(
            _BUCKET_ADMIT, keys,
            [repr(now), now_ms, deadline, member, repr(rate), allowance.count, ttl_ms],
        )

        def end(used: bool) -> defer.Deferred:
            return self._end_later(_BUCKET_END, keys, [
                member, int(used), repr(self._clock.seconds()), repr(rate), allowance.count,
                ttl_ms,
            ])

        def answered(answer):
            if answer is None:
                return UNSHARED
            return Ticket(end) if int(answer) == 1 else None

        return asking.addCallback(answered)

    def admit_bcrypt(self, address: str | None) -> defer.Deferred:
        """A bcrypt job for ``address``: fewer than ``CHATD_BCRYPT_PER_ADDRESS`` of its
        jobs waiting or running on all nodes together."""
        if address is None or self.bcrypt_per_address is None:
            return defer.succeed(UNSHARED)
        return self.admit_in_flight([("bcrypt:" + address, self.bcrypt_per_address)])

    def admit_login(self, address: str, cap: int) -> defer.Deferred:
        """A login from ``address`` whose limit leaves room for ``cap`` attempts in flight
        (its failures so far counted): fewer than ``cap`` under way on all nodes."""
        return self.admit_in_flight([("login:" + address, cap)])
