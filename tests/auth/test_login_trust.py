"""Issue 9, items 8 to 11 and 15, without a network: limits that count the attempts in
flight, logins checked again when their session starts, sessions bound to the account,
a throttled /passwd that ends the other sessions, the owner's known-good addresses, and
hashes at another cost. The real-socket versions are in test_login_trust_e2e.py."""

import pytest
from twisted.internet import task

from chatd.auth.passwords import _padded, check_password, hash_cost, hash_password
from chatd.auth.throttles import LoginThrottle, PasswordChangeLimit, RegistrationLimit
from chatd.config import Allowance, Config
from chatd.core.errors import ChatError
from chatd.storage import transactions
from tests.auth.test_login_throttle import BAD, HeldHasher, attempt, harness_with
from tests.support import ChatHarness, InlineHasher


def clock_at_epoch() -> task.Clock:
    """A clock at a realistic time."""
    clock = task.Clock()
    clock.advance(1_764_064_800)
    return clock


def throttle(per_address: int = 3, per_account: int = 1000) -> LoginThrottle:
    """A throttle on a fake clock, lockouts from 1 s up to 60 s."""
    return LoginThrottle(clock_at_epoch(), per_address, per_account, 1.0, 60.0)


def refused(admitting) -> bool:
    """Whether the admission raised too-many-attempts."""
    try:
        admitting()
    except ChatError as error:
        assert error.code == "too-many-attempts"
        return True
    return False


# --- item 8: every limit counts the attempts in flight ------------------------------------


def test_attempts_in_flight_count_against_the_address_limit_at_and_past_its_edge():
    """per_address=3: three attempts in flight fill it and the fourth is refused (not
    counted: no bcrypt ran); an ended attempt frees its place unless it failed."""
    limits = throttle(per_address=3)
    attempts = [limits.admit("a", "alice") for _ in range(3)]
    assert limits.in_flight("a") == 3
    assert refused(lambda: limits.admit("a", "alice"))
    attempts[0].failed()
    # One failure and two in flight: still full.
    assert refused(lambda: limits.admit("a", "alice"))
    attempts[1].abandoned()
    third = limits.admit("a", "alice")
    assert refused(lambda: limits.admit("a", "alice"))
    attempts[2].succeeded()
    third.abandoned()
    assert limits.in_flight("a") == 0 and not limits.locked("a")
    assert not refused(lambda: limits.admit("a", "alice"))


def test_a_lockout_that_ended_admits_one_attempt_at_a_time():
    """Past the limit, once the lockout is over, one attempt may be in flight, not more."""
    limits = throttle(per_address=2)
    for _ in range(2):
        limits.admit("a", "alice").failed()
    assert limits.locked("a")
    limits._clock.advance(1.0)
    first = limits.admit("a", "alice")
    assert refused(lambda: limits.admit("a", "alice"))
    first.failed()
    assert limits.locked("a")


def test_a_success_clears_only_its_own_accounts_failures():
    """An attacker with his own account cannot wipe his guesses on alice by logging in."""
    limits = throttle(per_address=3)
    limits.admit("a", "alice").failed()
    limits.admit("a", "alice").failed()
    limits.admit("a", "mallory").succeeded()
    # Still two failures on alice from this address: one more locks it.
    limits.admit("a", "alice").failed()
    assert limits.locked("a")
    assert refused(lambda: limits.admit("a", "mallory"))


def test_a_success_does_not_forget_attempts_still_in_flight():
    """Guesses in flight when a success ends the row still count when they fail."""
    limits = throttle(per_address=3)
    limits.failed("a", "mallory")
    guesses = [limits.admit("a", "alice") for _ in range(2)]
    limits.succeeded("a", "alice")
    assert limits.in_flight("a") == 2
    for guess in guesses:
        guess.failed()
    assert limits.locked("a")


def test_an_attempt_ends_once():
    """Ending an attempt twice changes nothing the second time."""
    limits = throttle(per_address=3)
    guess = limits.admit("a", "alice")
    guess.failed()
    guess.failed()
    guess.succeeded()
    limits.admit("a", "alice").failed()
    assert not limits.locked("a")


def test_registrations_in_flight_count_at_and_past_the_edge():
    """5/3600: five registrations in flight fill the allowance; an abandoned one frees its
    place, a used one keeps it taken."""
    limit = RegistrationLimit(clock_at_epoch(), Allowance(5, 3600.0))
    held = [limit.admit("a") for _ in range(5)]
    assert refused(lambda: limit.admit("a"))
    held[0].abandoned()
    again = limit.admit("a")
    assert refused(lambda: limit.admit("a"))
    for reservation in [*held[1:], again]:
        reservation.used()
    assert refused(lambda: limit.admit("a"))
    # One token back every 720 s.
    limit._clock.advance(719)
    assert refused(lambda: limit.admit("a"))
    limit._clock.advance(1)
    assert not refused(lambda: limit.admit("a"))


def test_parallel_registrations_through_the_protocol_stop_at_the_limit():
    """Ten /register in flight at once from one address with a limit of 5: five are
    hashed and created, five refused before any bcrypt work."""
    hasher = HeldHasher(threads=64, queue_limit=64)
    harness = ChatHarness(
        Config(bcrypt_rounds=4, rate_limit=None, registration_limit=Allowance(5, 3600.0)),
        hasher=hasher,
    )
    hasher.holding = True
    clients = [harness.client() for _ in range(10)]
    replies = [client.send(f"/register user{n} password1") for n, client in enumerate(clients)]
    assert len(hasher.held) == 5
    assert sum(1 for reply in replies if reply and "too-many-attempts" in reply[-1]) == 5
    while hasher.held:
        hasher.release_one()
    created = [client.lines() for client in clients]
    assert sum(1 for lines in created if lines and lines[-1].startswith("OK register")) == 5


# --- item 9: account state is checked again when the session starts -----------------------


def held_login(harness, hasher, password: str = "password1"):
    """alice's login, stopped inside its bcrypt check."""
    hasher.holding = True
    client = harness.client(host="198.51.100.7")
    assert client.send(f"/login alice {password}") == []
    hasher.holding = False
    return client


@pytest.fixture
def held():
    """A harness whose bcrypt jobs can be held, with alice and bob registered."""
    hasher = HeldHasher(threads=2, queue_limit=8)
    harness = ChatHarness(Config(bcrypt_rounds=4, rate_limit=None), hasher=hasher)
    harness.chat.startService()
    harness.logged_in("bob").close()
    harness.logged_in("alice").close()
    return harness, hasher


@pytest.mark.parametrize(
    ("change", "reply"),
    [
        (lambda db: db.write(transactions.set_banned, "alice", True, 1), "ERR banned"),
        (lambda db: db.write(transactions.delete_user, "alice", 1), "ERR bad-credentials"),
        (lambda db: db.write(transactions.record_account_event, "alice", "kick", 1), "ERR kicked"),
        (
            lambda db: db.write(transactions.set_password_hash, "alice", hash_password(b"x", 4), 1),
            "ERR bad-credentials",
        ),
    ],
    ids=["ban", "delete", "kick", "passwd"],
)
def test_a_change_made_while_the_password_is_checked_stops_the_login(held, change, reply):
    """A ban, deletion, kick or password change made during the bcrypt check is not
    missed: the login that had the right password is refused, and no session starts."""
    harness, hasher = held
    client = held_login(harness, hasher)
    change(harness.database)
    hasher.release_one()
    assert client.lines()[-1].startswith(reply + " ")
    assert "alice" not in harness.chat.users


def test_a_deleted_and_registered_again_name_is_another_account(held):
    """The dead account's open session ends when the name is registered again, and never
    receives the new owner's direct messages."""
    harness, _hasher = held
    old = harness.logged_in("alice")
    harness.database.write(transactions.delete_user, "alice", 1)
    newcomer = harness.client(host="203.0.113.9")
    assert newcomer.send("/register alice password2") == ["OK register alice"]
    assert old.lines()[-1] == "BYE account-deleted"
    bob = harness.logged_in("bob")
    assert bob.send("/msg alice for the new alice")[-1] == "OK msg alice stored"
    assert old.lines() == []
    login = newcomer.send("/login alice password2")
    assert login[-1] == "OK login alice"
    assert any(line.endswith("for the new alice") for line in login)


def test_a_name_registered_again_elsewhere_ends_the_old_session_at_the_next_poll(held):
    """Deleted and added again by the admin command line (another process): the poll's
    create event ends the dead account's session; the new owner's login ends it at once."""
    harness, _hasher = held
    old = harness.logged_in("alice")
    harness.database.write(transactions.delete_user, "alice", 1)
    harness.database.write(transactions.create_user, "alice", hash_password(b"password2", 4), 2)
    newcomer = harness.client(host="203.0.113.9")
    assert newcomer.send("/login alice password2")[-1] == "OK login alice"
    assert old.lines()[-1] == "BYE account-deleted"
    bob = harness.logged_in("bob")
    assert bob.send("/msg alice hello")[-1] == "OK msg alice delivered"
    assert old.lines() == []
    harness.clock.advance(1.0)
    assert harness.chat.users["alice"].sessions[0].mind is newcomer.protocol


def deleted_and_added_again_elsewhere(harness) -> None:
    """The admin command line (another process) deletes alice and adds her again:
    nothing tells the server until its next account-event poll."""
    harness.database.write(transactions.delete_user, "alice", 1)
    harness.database.write(transactions.create_user, "alice", hash_password(b"password2", 4), 2)


def test_before_the_poll_the_dead_session_gets_no_dm_for_the_new_owner(held):
    """Deleted and added again elsewhere, before the poll: a DM to alice does not reach the
    dead account's session (it ends, BYE account-deleted); it is stored for the new owner."""
    harness, _hasher = held
    old = harness.logged_in("alice")
    bob = harness.logged_in("bob")
    old.lines()
    deleted_and_added_again_elsewhere(harness)
    assert bob.send("/msg alice for the new alice")[-1] == "OK msg alice stored"
    assert old.lines() == ["BYE account-deleted"]
    newcomer = harness.client(host="203.0.113.9")
    login = newcomer.send("/login alice password2")
    assert login[-1] == "OK login alice"
    assert any(line.endswith("for the new alice") for line in login)


@pytest.mark.parametrize(
    "line", ["posing as the new alice", "/me poses", "/msg bob posing as the new alice"]
)
def test_before_the_poll_the_dead_session_cannot_post_as_the_new_owner(held, line):
    """Deleted and added again elsewhere, before the poll: the dead account's session can
    neither say, act nor send a DM under the name; nothing of it reaches anyone."""
    harness, _hasher = held
    old = harness.logged_in("alice")
    bob = harness.logged_in("bob")
    bob.lines()
    deleted_and_added_again_elsewhere(harness)
    assert old.send(line)[-1] == "ERR forbidden your account has been deleted"
    harness.clock.advance(0)
    assert not [text for text in bob.lines() if "pos" in text]
    stored = harness.database.connection.execute(
        "SELECT count(*) FROM room_messages WHERE text LIKE '%pos%'"
    ).fetchone()[0]
    assert stored == 0


# --- items 9 and 10: /passwd ---------------------------------------------------------------


def test_a_password_change_ends_the_other_sessions_and_logins_in_progress(held):
    """The changer keeps its session; the account's others get BYE password-changed; a
    login with the old password still being checked is refused."""
    harness, hasher = held
    changer = harness.logged_in("alice")
    other = harness.logged_in("alice")
    in_progress = held_login(harness, hasher)
    assert changer.send("/passwd password1 newpassword1") == ["OK passwd"]
    assert other.lines()[-1] == "BYE password-changed"
    hasher.release_one()
    assert in_progress.lines()[-1].startswith("ERR bad-credentials ")
    # The poll sees the change too, and leaves the changer alone.
    harness.clock.advance(1.0)
    assert changer.send("/ping still-here") == ["OK ping still-here"]
    assert attempt(harness.client(), "newpassword1") == "OK login alice"


def test_passwd_is_throttled_right_or_wrong():
    """CHATD_PASSWD_LIMIT=2/3600: two changes (one right, one wrong), then too-many-attempts
    even with the right old password."""
    harness = harness_with(passwd_limit=Allowance(2, 3600.0))
    session = harness.logged_in("alice")
    assert session.send("/passwd password1 password1") == ["OK passwd"]
    assert session.send("/passwd wrong-password password1")[-1].startswith("ERR bad-credentials")
    assert session.send("/passwd password1 password1")[-1] == (
        "ERR too-many-attempts too many password changes for this account; try again later"
    )
    harness.clock.advance(1800)
    assert session.send("/passwd password1 password1")[-1] == "OK passwd"


def test_passwd_changes_in_flight_count_against_the_allowance():
    """Many sessions of one account sending /passwd at once: only the allowance is hashed."""
    hasher = HeldHasher(threads=64, queue_limit=64)
    harness = ChatHarness(
        Config(bcrypt_rounds=4, rate_limit=None, passwd_limit=Allowance(3, 3600.0)),
        hasher=hasher,
    )
    sessions = [harness.logged_in("alice") for _ in range(8)]
    hasher.holding = True
    replies = [session.send("/passwd password1 password1") for session in sessions]
    assert len(hasher.held) == 3
    assert sum(1 for reply in replies if reply and "too-many-attempts" in reply[-1]) == 5


PASSWD_LIMIT_CONFIG = Config().passwd_limit


def test_the_shipped_passwd_limit():
    """Five /passwd attempts per account an hour, by default."""
    limit = PasswordChangeLimit(clock_at_epoch(), PASSWD_LIMIT_CONFIG)
    for _ in range(5):
        limit.admit("alice").used()
    assert refused(lambda: limit.admit("alice"))
    assert not refused(lambda: limit.admit("bob"))


# --- item 11: the owner still logs in from home ----------------------------------------------


def test_the_owner_logs_in_from_home_while_others_guess():
    """One typo at home, one failure from each of 25 other addresses: the owner's right
    password from home still logs in; a guesser that failed is locked out of alice."""
    harness = harness_with()
    harness.logged_in("alice").close()
    home = harness.client(host="203.0.113.5")
    assert attempt(home, "password1") == "OK login alice"
    home.close()
    home = harness.client(host="203.0.113.5")
    assert attempt(home, "typo-password") == BAD
    guessers = [harness.client(host=f"198.51.100.{n}") for n in range(1, 26)]
    assert [attempt(guesser) for guesser in guessers] == [BAD] * 25
    assert "too-many-attempts" in attempt(guessers[0], "password1")
    harness.clock.advance(30)
    assert "too-many-attempts" in attempt(guessers[1], "password1")
    assert attempt(home, "password1") == "OK login alice"


def test_known_good_addresses_are_still_limited_by_address():
    """The owner's address is spared the account-wide lock, not the per-address one."""
    limits = throttle(per_address=3, per_account=2)
    limits.admit("home", "alice").succeeded()
    for _ in range(3):
        limits.admit("home", "alice").failed()
    assert refused(lambda: limits.admit("home", "alice"))


def test_an_address_that_never_logged_in_is_locked_with_the_account():
    """The account-wide lock still applies to guessers, at and past its edge."""
    limits = throttle(per_address=10, per_account=2)
    limits.admit("x", "alice").failed()
    assert not refused(lambda: limits.admit("x", "alice").abandoned())
    limits.admit("y", "alice").failed()
    assert refused(lambda: limits.admit("x", "alice"))
    assert not refused(lambda: limits.admit("fresh", "alice").abandoned())


# --- item 15: hashes at another cost --------------------------------------------------------


def test_the_dummy_hash_has_the_configured_cost():
    """Unknown users are checked against a hash at the current cost, like real accounts."""
    hasher = InlineHasher(rounds=5)
    hasher.start()
    assert hash_cost(hasher.dummy_hash) == 5


def test_a_hash_at_another_cost_is_rehashed_at_the_next_login():
    """alice's hash made at cost 5 by an older configuration becomes cost 4 at her next
    successful login; a wrong password changes nothing."""
    harness = harness_with()
    harness.database.write(transactions.create_user, "alice", hash_password(b"password1", 5), 0)
    assert attempt(harness.client(), "wrong-password") == BAD
    account = transactions.find_account(harness.database.connection, "alice")
    assert hash_cost(account.password_hash) == 5
    assert attempt(harness.client(), "password1") == "OK login alice"
    stored = transactions.find_account(harness.database.connection, "alice").password_hash
    assert hash_cost(stored) == 4 and check_password(b"password1", stored)


def test_a_check_of_a_cheaper_hash_is_padded_to_the_current_cost():
    """A hash at a lower cost is checked through the padding wrapper, told how long a
    check at the current cost takes, so it answers no sooner than an unknown user."""
    hasher = HeldHasher(threads=1, queue_limit=4)
    hasher.rounds = 6
    hasher.current_cost_seconds = 0.25
    hasher.holding = True
    hasher.check(b"password1", hash_password(b"password1", 4))
    hasher.check(b"password1", hash_password(b"password1", 6))
    _done, function, args = hasher.held[0]
    assert function is _padded and args[0] == 0.25 and args[1] is check_password
    hasher.release_one()
    _done, function, _args = hasher.held[0]
    assert function is check_password
