"""Login throttling by address and by account, registration limits, and the bounded bcrypt queue."""

from twisted.internet import defer, task
from twisted.internet.address import IPv4Address, IPv6Address, UNIXAddress

from chatd.auth.passwords import PasswordHasher
from chatd.auth.throttles import ExpiringTable, LoginThrottle, RegistrationLimit, address_key
from chatd.config import Allowance, Config
from tests.support import ChatHarness, InlineHasher

BAD = "ERR bad-credentials unknown user or wrong password"


def harness_with(**settings) -> ChatHarness:
    """A harness with the shipped limits, the rate limit off so only the throttle speaks."""
    return ChatHarness(Config(bcrypt_rounds=4, rate_limit=None, **settings))


def clock_at_epoch() -> task.Clock:
    """A clock at a realistic time, where float rounding is as coarse as in production."""
    clock = task.Clock()
    clock.advance(1_764_064_800)
    return clock


def attempt(client, password: str = "wrong-password", name: str = "alice") -> str:
    """One login; return its final reply."""
    return client.send(f"/login {name} {password}")[-1]


# --- addresses ----------------------------------------------------------------


def test_address_keys():
    """IPv4 by address, IPv6 by /64 (loopback alone), mapped IPv4 as IPv4, unix as one."""
    assert address_key(IPv4Address("TCP", "203.0.113.9", 1)) == "203.0.113.9"
    assert address_key(IPv6Address("TCP", "2001:db8:1:2:3:4:5:6", 1)) == "2001:db8:1:2::/64"
    assert address_key(IPv6Address("TCP", "2001:db8:1:2::ff", 1)) == "2001:db8:1:2::/64"
    assert address_key(IPv6Address("TCP", "::ffff:198.51.100.7", 1)) == "198.51.100.7"
    assert address_key(IPv6Address("TCP", "::1", 1)) == "::1"
    assert address_key(IPv6Address("TCP", "fe80::1%lo", 1)) == "fe80::/64"
    assert address_key(UNIXAddress(None)) == "unix"


def test_expiring_table_forgets_by_age_and_by_count():
    """Records go ttl seconds after their last store, and the oldest go past the capacity."""
    clock = clock_at_epoch()
    table = ExpiringTable(clock, ttl=10.0, capacity=3)
    table.put("a", 1)
    clock.advance(5)
    table.put("b", 2)
    clock.advance(4.9)
    assert table.get("a") == 1
    clock.advance(0.1)
    assert table.get("a") is None and table.get("b") == 2
    for key in "cdef":
        table.put(key, key)
    assert len(table) == 3 and table.get("b") is None and table.get("c") is None


# --- the throttle on its own ------------------------------------------------------


def test_lockouts_double_up_to_the_maximum():
    """After the limit each failure locks the address twice as long, up to the cap."""
    clock = clock_at_epoch()
    throttle = LoginThrottle(clock, per_address=3, per_account=1000, lockout=1.0, lockout_max=5.0)
    for _ in range(2):
        throttle.failed("a", "alice")
        assert not throttle.locked("a")
    lockouts = []
    for _ in range(5):
        throttle.failed("a", "alice")
        locked_for = 0.0
        while throttle.locked("a"):
            clock.advance(0.25)
            locked_for += 0.25
        lockouts.append(locked_for)
    assert lockouts == [1.0, 2.0, 4.0, 5.0, 5.0]


def test_a_success_ends_the_row():
    """Failures in a row: a right password in between starts the count afresh."""
    clock = clock_at_epoch()
    throttle = LoginThrottle(clock, per_address=3, per_account=1000, lockout=1.0, lockout_max=9.0)
    for _ in range(2):
        throttle.failed("a", "alice")
    throttle.succeeded("a", "alice")
    for _ in range(2):
        throttle.failed("a", "alice")
    assert not throttle.locked("a")
    throttle.failed("a", "alice")
    assert throttle.locked("a")


def test_a_login_leaves_no_record_for_its_account_unless_others_are_in_flight():
    """A success keeps nothing per account but what still counts: attempts in flight.

    Thousands of idle logged-in accounts must not each hold an empty record;
    an attempt still being checked keeps its place after another succeeds.
    """
    clock = clock_at_epoch()
    throttle = LoginThrottle(clock, per_address=10, per_account=10, lockout=1.0, lockout_max=9.0)
    throttle.failed("a", "alice")
    throttle.admit("a", "alice").succeeded()
    assert len(throttle._accounts) == 0
    first, second = throttle.admit("a", "alice"), throttle.admit("b", "alice")
    first.succeeded()
    assert throttle._accounts.get("alice").pending == 1
    second.failed()
    assert throttle._accounts.get("alice").count == 1


def test_failures_are_forgotten_an_hour_after_the_longest_lockout():
    """Records do not pile up: an address quiet for lockout_max + 1 h starts afresh."""
    clock = clock_at_epoch()
    throttle = LoginThrottle(clock, per_address=2, per_account=1000, lockout=1.0, lockout_max=9.0)
    throttle.failed("a", "alice")
    clock.advance(9 + 3600)
    throttle.failed("a", "alice")
    assert not throttle.locked("a")


# --- through the protocol -------------------------------------------------------------


def test_an_address_is_locked_after_ten_failures_in_a_row():
    """The shipped limit: ten wrong passwords get bad-credentials, the eleventh try is refused."""
    harness = harness_with()
    harness.logged_in("alice").close()
    guesser = harness.client(host="198.51.100.1")
    assert [attempt(guesser) for _ in range(10)] == [BAD] * 10
    assert attempt(guesser, "password1") == (
        "ERR too-many-attempts too many failed logins from your address; try again in 2 s"
    )


def test_the_contract_twenty_failures_then_too_many_attempts_and_another_address_works():
    """PROTOCOL.md: after at most 20 failures in a row, too-many-attempts for a while;
    the right password from another address still logs in."""
    harness = harness_with()
    harness.logged_in("alice").close()
    guesser = harness.client(host="198.51.100.1")
    replies = [attempt(guesser) for _ in range(20)]
    assert replies[:10] == [BAD] * 10
    assert all(reply.startswith("ERR too-many-attempts ") for reply in replies[10:])
    # "For a while": half a minute later the address is still locked out.
    harness.clock.advance(30)
    assert "too-many-attempts" in attempt(guesser, "password1")
    owner = harness.client(host="203.0.113.5")
    assert attempt(owner, "password1") == "OK login alice"


def test_refused_attempts_make_the_lockout_longer():
    """Hammering a locked address only locks it longer: 1 s, then 2, 4, 8 ... up to 15 min."""
    harness = harness_with()
    guesser = harness.client(host="198.51.100.1")
    for _ in range(10):
        attempt(guesser)
    waits = [attempt(guesser).rsplit(" in ", 1)[1] for _ in range(12)]
    assert waits == ["2 s", "4 s", "8 s", "16 s", "32 s", "64 s", "128 s", "256 s", "512 s",
                     "900 s", "900 s", "900 s"]


def test_a_lockout_ends_and_the_next_failure_locks_for_longer():
    """Waiting out the lockout gives one more try; failing it doubles the wait."""
    harness = harness_with(login_failures_per_address=2)
    guesser = harness.client(host="198.51.100.1")
    assert [attempt(guesser) for _ in range(2)] == [BAD, BAD]
    harness.clock.advance(0.99)
    # Refused at 0.99 s, which counts as the third failure: locked 2 s from now.
    assert attempt(guesser).endswith("try again in 2 s")
    harness.clock.advance(2.0)
    assert attempt(guesser) == BAD
    assert attempt(guesser).endswith("try again in 8 s")


def test_the_right_password_ends_the_row_for_the_address():
    """Nine failures, a success, nine failures: never locked."""
    harness = harness_with()
    harness.logged_in("alice").close()
    client = harness.client(host="198.51.100.1")
    assert [attempt(client) for _ in range(9)] == [BAD] * 9
    assert attempt(client, "password1") == "OK login alice"
    again = harness.client(host="198.51.100.1")
    assert [attempt(again) for _ in range(9)] == [BAD] * 9


def test_unknown_users_and_overlong_passwords_count_as_failures():
    """Guessing names is guessing too; so is a password past 1024 bytes."""
    harness = harness_with(login_failures_per_address=3)
    client = harness.client(host="198.51.100.1")
    assert attempt(client, name="nobody") == BAD
    assert attempt(client, "p" * 1025) == BAD
    assert attempt(client, name="someone") == BAD
    assert "too-many-attempts" in attempt(client)


def test_guessing_spread_over_addresses_locks_the_account_for_those_addresses():
    """Twenty failures to one account from twenty addresses: each of them is refused on it,
    an address that has not guessed still logs in, and the guessers can log in elsewhere."""
    harness = harness_with()
    harness.logged_in("alice").close()
    harness.logged_in("mallory").close()
    guessers = [harness.client(host=f"198.51.100.{n}") for n in range(1, 21)]
    assert [attempt(guesser) for guesser in guessers] == [BAD] * 20
    assert attempt(guessers[0]) == (
        "ERR too-many-attempts too many failed logins to alice; try again in 1 s"
    )
    assert attempt(guessers[1], "password1", name="mallory") == "OK login mallory"
    owner = harness.client(host="203.0.113.5")
    assert attempt(owner, "password1") == "OK login alice"


def test_a_fresh_address_gets_one_guess_while_the_account_is_locked():
    """While alice is locked, a new address may try once; after failing it is refused too."""
    harness = harness_with(login_failures_per_account=2)
    harness.logged_in("alice").close()
    first, second, third = (harness.client(host=f"198.51.100.{n}") for n in (1, 2, 3))
    assert attempt(first) == BAD
    assert attempt(second) == BAD
    assert attempt(third) == BAD
    assert "too-many-attempts" in attempt(third)
    assert "too-many-attempts" in attempt(first)


def test_an_account_lock_ends():
    """Once the account's lockout is over, its guessers may try again."""
    harness = harness_with(login_failures_per_account=2)
    harness.logged_in("alice").close()
    first, second = (harness.client(host=f"198.51.100.{n}") for n in (1, 2))
    attempt(first)
    attempt(second)
    harness.clock.advance(0.5)
    assert "too-many-attempts" in attempt(first)
    harness.clock.advance(0.5)
    assert attempt(first, "password1") == "OK login alice"


def test_a_banned_account_with_the_right_password_is_not_a_guess():
    """banned means the password matched: it does not count toward a lockout."""
    from chatd.storage import transactions

    harness = harness_with(login_failures_per_address=2)
    harness.logged_in("alice").close()
    harness.database.write(transactions.set_banned, "alice", True, 0)
    client = harness.client(host="198.51.100.1")
    assert attempt(client) == BAD
    for _ in range(5):
        assert attempt(client, "password1") == "ERR banned this account is banned"


def test_wrong_old_passwords_in_passwd_are_throttled_like_logins():
    """/passwd guesses count: after the limit, too-many-attempts, and the login is locked too."""
    harness = harness_with(login_failures_per_address=3)
    session = harness.logged_in("alice")
    wrong = "ERR bad-credentials the old password is wrong"
    assert [session.send("/passwd guess-one newpassword1")[-1] for _ in range(3)] == [wrong] * 3
    assert session.send("/passwd password1 newpassword1")[-1].startswith("ERR too-many-attempts")
    assert "too-many-attempts" in attempt(harness.client(), "password1")
    # Three failures locked 1 s; the two refusals doubled it twice: 4 s in all.
    harness.clock.advance(4.0)
    assert session.send("/passwd password1 newpassword1") == ["OK passwd"]
    assert attempt(harness.client(), "newpassword1") == "OK login alice"


# --- registrations ---------------------------------------------------------------------


def test_registrations_per_address_are_limited():
    """CHATD_REGISTRATION_LIMIT=3/60: three accounts, then too-many-attempts, then one per 20 s."""
    harness = harness_with(registration_limit=Allowance(3, 60.0))
    client = harness.client(host="198.51.100.1")
    for name in ("ann", "ben", "cat"):
        assert client.send(f"/register {name} password1") == [f"OK register {name}"]
    refused = client.send("/register dan password1")
    assert refused == [
        "ERR too-many-attempts too many new accounts from your address; try again later"
    ]
    other = harness.client(host="198.51.100.2")
    assert other.send("/register dan password1") == ["OK register dan"]
    harness.clock.advance(19.9)
    assert "too-many-attempts" in client.send("/register eve password1")[0]
    harness.clock.advance(0.1)
    assert client.send("/register eve password1") == ["OK register eve"]


def test_failed_registrations_do_not_use_the_allowance():
    """A taken name or a weak password creates nothing and costs nothing."""
    harness = harness_with(registration_limit=Allowance(1, 3600.0))
    harness.logged_in("alice").close()
    client = harness.client(host="198.51.100.1")
    assert client.send("/register alice password1")[0].startswith("ERR user-exists")
    assert client.send("/register bob short")[0].startswith("ERR weak-password")
    assert client.send("/register bob password1") == ["OK register bob"]
    assert "too-many-attempts" in client.send("/register carl password1")[0]


def test_the_registration_limit_can_be_off():
    """CHATD_REGISTRATION_LIMIT=off: three hundred accounts from one address."""
    harness = harness_with(registration_limit=None)
    client = harness.client()
    for number in range(300):
        assert client.send(f"/register user{number} password1") == [f"OK register user{number}"]


def test_the_shipped_registration_limit_allows_256_an_hour():
    """The default 256/3600: the 257th account in a burst is refused."""
    clock = clock_at_epoch()
    limit = RegistrationLimit(clock, Config().registration_limit)
    for _ in range(256):
        limit.check("a")
        limit.created("a")
    try:
        limit.check("a")
    except Exception as error:
        assert error.code == "too-many-attempts"
    else:
        raise AssertionError("the 257th registration was allowed")


# --- the bcrypt queue -------------------------------------------------------------------


class HeldHasher(InlineHasher):
    """bcrypt jobs that finish only when the test says so, to fill the queue."""

    def __init__(self, threads: int, queue_limit: int) -> None:
        PasswordHasher.__init__(self, None, 4, threads, queue_limit=queue_limit)
        self.held: list[tuple[defer.Deferred, object, tuple]] = []
        self.holding = False

    def _run(self, function, *args) -> defer.Deferred:
        if not self.holding:
            return super()._run(function, *args)
        done: defer.Deferred = defer.Deferred()
        self.held.append((done, function, args))
        return done

    def release_one(self) -> None:
        """Finish the oldest held job."""
        done, function, args = self.held.pop(0)
        done.callback(function(*args))


def test_a_full_bcrypt_queue_answers_too_many_attempts_at_once():
    """Two threads and a queue of two: the fifth concurrent login is refused at once."""
    hasher = HeldHasher(threads=2, queue_limit=2)
    harness = ChatHarness(Config(bcrypt_rounds=4, rate_limit=None), hasher=hasher)
    harness.logged_in("alice").close()
    hasher.holding = True
    waiting = [harness.client(host=f"198.51.100.{n}") for n in range(4)]
    for client in waiting:
        assert client.send("/login alice password1") == []
    late = harness.client(host="198.51.100.9")
    assert late.send("/login alice password1", "/register zed password1") == [
        "ERR too-many-attempts the server is busy checking passwords; try again",
        "ERR too-many-attempts the server is busy checking passwords; try again",
    ]
    hasher.release_one()
    assert waiting[0].lines()[-1] == "OK login alice"
    assert late.send("/login alice password1") == []
    while hasher.held:
        hasher.release_one()
    assert late.lines()[-1] == "OK login alice"
    assert all(client.lines()[-1] == "OK login alice" for client in waiting[1:])


def test_a_busy_refusal_is_not_counted_as_a_failure():
    """Being refused for a full queue does not bring the address closer to a lockout."""
    hasher = HeldHasher(threads=1, queue_limit=0)
    harness = ChatHarness(
        Config(bcrypt_rounds=4, rate_limit=None, login_failures_per_address=1), hasher=hasher
    )
    harness.logged_in("alice").close()
    hasher.holding = True
    blocker = harness.client(host="198.51.100.1")
    blocker.send("/login alice password1")
    client = harness.client(host="198.51.100.2")
    for _ in range(5):
        assert "busy" in attempt(client, "password1")
    hasher.holding = False
    hasher.release_one()
    assert attempt(client, "password1") == "OK login alice"
