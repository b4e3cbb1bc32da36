"""Issue 9, item 13: rooms per user, new rooms per address and DMs stored per
address and account are capped, in-flight attempts included; empty rooms leave
nothing behind."""

import pytest
import pytest_twisted
from twisted.internet import defer

from chatd.config import Allowance, Config
from tests.netclient import connect, start_server
from tests.support import ChatHarness, SlowDatabase

TOO_MANY = "ERR too-many-rooms you are in 3 rooms already; /part one first"


def harness_with(database=None, **settings) -> ChatHarness:
    """A harness without the line rate limit, with ``settings``."""
    config = Config(bcrypt_rounds=4, rate_limit=None, **settings)
    return ChatHarness(config, database=database)


def final(lines: list[str]) -> str:
    """The last final reply (OK or ERR) among ``lines``."""
    return [line for line in lines if line.startswith(("OK ", "ERR "))][-1]


def rows(harness, sql: str) -> list:
    """Rows of a query on the harness's database."""
    return harness.database.connection.execute(sql).fetchall()


# --- rooms per user -----------------------------------------------------------------


def test_rooms_per_user_at_and_past_the_cap():
    """Cap 3: #lobby and two more; the third gets ERR too-many-rooms; a part makes room."""
    harness = harness_with(max_rooms_per_user=3)
    alice = harness.logged_in("alice")
    assert alice.send("/join #a")[-1] == "OK join #a"
    assert alice.send("/join #b")[-1] == "OK join #b"
    assert alice.send("/join #c") == [TOO_MANY]
    # Joining a room one is in only makes it current: no cap.
    assert alice.send("/join #a") == ["OK join #a"]
    alice.send("/part #b")
    assert alice.send("/join #c")[-1] == "OK join #c"


def test_the_cap_is_per_user_across_sessions():
    """A second session of the same user shares the count."""
    harness = harness_with(max_rooms_per_user=3)
    first = harness.logged_in("alice")
    second = harness.logged_in("alice")
    first.send("/join #a", "/join #b")
    assert final(second.send("/join #c")) == TOO_MANY
    assert harness.logged_in("bob").send("/join #c")[-1] == "OK join #c"


def test_parallel_joins_of_one_user_cannot_pass_the_cap():
    """Five sessions join five new rooms while commits wait: two pass (with #lobby, three)."""
    database = SlowDatabase()
    harness = harness_with(database, max_rooms_per_user=3)
    sessions = [harness.logged_in("alice") for _ in range(5)]
    database.holding = True
    for number, session in enumerate(sessions):
        session.feed(f"/join #room{number}\n".encode())
    for _ in range(5):
        harness.commit_held()
    finals = [final(session.lines()) for session in sessions]
    assert finals.count(TOO_MANY) == 3
    assert sorted(line for line in finals if line != TOO_MANY) == [
        "OK join #room0", "OK join #room1"
    ]
    assert not harness.factory.limits.joins_in_flight


# --- new rooms per address -----------------------------------------------------------


def test_new_rooms_per_address_at_and_past_the_limit():
    """2 per 60 s: two new rooms, the third refused; an open room costs nothing; 30 s buys one."""
    harness = harness_with(room_creation_limit=Allowance(2, 60.0))
    alice = harness.logged_in("alice")
    bob = harness.logged_in("bob")
    assert alice.send("/join #one")[-1] == "OK join #one"
    assert alice.send("/join #two")[-1] == "OK join #two"
    refused = bob.send("/join #three")
    assert refused == ["ERR too-many-rooms too many new rooms from your address; try again in 30 s"]
    # #one has a member: joining it opens nothing.
    assert bob.send("/join #one")[-1] == "OK join #one"
    harness.clock.advance(29.9)
    assert bob.send("/join #three")[0].startswith("ERR too-many-rooms")
    harness.clock.advance(0.1)
    assert bob.send("/join #three")[-1] == "OK join #three"
    # Another address has its own allowance.
    carol = harness.client(host="192.0.2.7")
    carol.login("carol")
    assert carol.send("/join #four")[-1] == "OK join #four"


def test_parallel_new_rooms_from_one_address_cannot_pass_the_limit():
    """Five users of one address open five rooms while commits wait: two pass."""
    database = SlowDatabase()
    harness = harness_with(database, room_creation_limit=Allowance(2, 3600.0))
    sessions = [harness.logged_in(f"user{n}") for n in range(5)]
    database.holding = True
    for number, session in enumerate(sessions):
        session.feed(f"/join #new{number}\n".encode())
    for _ in range(5):
        harness.commit_held()
    finals = [final(session.lines()) for session in sessions]
    assert sum(line.startswith("OK join") for line in finals) == 2
    assert sum(line.startswith("ERR too-many-rooms") for line in finals) == 3


def test_a_failed_join_gives_its_token_back():
    """A join whose commit fails (server-error) does not use up the address's allowance."""
    harness = harness_with(room_creation_limit=Allowance(1, 3600.0))
    alice = harness.logged_in("alice")
    harness.database.fail_writes = RuntimeError("disk full")
    assert alice.send("/join #x")[-1].startswith("ERR server-error")
    harness.database.fail_writes = None
    assert alice.send("/join #x")[-1] == "OK join #x"


def test_the_room_limits_are_settings():
    """CHATD_MAX_ROOMS_PER_USER and CHATD_ROOM_CREATION_LIMIT (or off)."""
    config = Config.from_environ(
        {"CHATD_MAX_ROOMS_PER_USER": "7", "CHATD_ROOM_CREATION_LIMIT": "off",
         "CHATD_STORED_MESSAGE_LIMIT": "5/10"}
    )
    assert config.max_rooms_per_user == 7 and config.room_creation_limit is None
    assert config.stored_message_limit == Allowance(5, 10.0)
    defaults = Config()
    assert defaults.max_rooms_per_user == 100
    assert defaults.room_creation_limit == Allowance(100, 3600.0)
    assert defaults.stored_message_limit == Allowance(100, 600.0)
    harness = harness_with(room_creation_limit=None)
    alice = harness.logged_in("alice")
    for number in range(60):
        assert alice.send(f"/join #r{number}", "/part")[-1].startswith("OK part")


# --- empty rooms ---------------------------------------------------------------------


def test_a_room_left_empty_is_forgotten_and_its_row_kept():
    """Made and left: gone from memory; its row stays (so it is shown as first created)."""
    harness = harness_with()
    alice = harness.logged_in("alice")
    alice.send("/join #Tmp", "/part #tmp")
    assert "#tmp" not in harness.chat.rooms
    assert rows(harness, "SELECT name FROM rooms ORDER BY name") == [("#Tmp",), ("#lobby",)]
    alice.send("/quit")
    assert harness.chat.rooms == {}


def test_fifty_thousand_rooms_cannot_be_made_by_one_account():
    """The issue's 50,000 rooms: one account holds at most the cap (100, #lobby included),
    its address makes at most 100 new rooms an hour, and nothing stays in memory after."""
    harness = harness_with()
    alice = harness.logged_in("alice")
    answers = alice.send(*[f"/join #r{n}" for n in range(500)])
    finals = [line for line in answers if line.startswith(("OK join", "ERR"))]
    assert finals.count("OK join #r0") == 1 and len(finals) == 500
    assert sum(line.startswith("OK join") for line in finals) == 99
    assert len(harness.chat.rooms) == 100
    alice.send(*[f"/part #r{n}" for n in range(99)])
    answers = alice.send(*[f"/join #s{n}" for n in range(99)])
    finals = [line for line in answers if line.startswith(("OK join", "ERR"))]
    # The address opened 99 new rooms this hour: one token of its 100 is left.
    assert sum(line.startswith("OK join") for line in finals) == 1
    assert finals[1].startswith("ERR too-many-rooms too many new rooms from your address")
    alice.send("/quit")
    assert harness.chat.rooms == {}
    assert rows(harness, "SELECT count(*) FROM rooms") == [(101,)]


# --- direct messages stored for people who are away --------------------------------


def test_stored_messages_per_account_and_address_at_and_past_the_limit():
    """3 per 60 s: three stored, the fourth rate-limited; delivered DMs are not counted."""
    harness = harness_with(stored_message_limit=Allowance(3, 60.0))
    harness.client().send("/register bob password1")
    carol = harness.logged_in("carol")
    alice = harness.logged_in("alice")
    for number in range(3):
        assert alice.send(f"/msg bob hi {number}")[-1] == "OK msg bob stored"
    refused = alice.send("/msg bob hi 3")
    assert refused == [
        "ERR rate-limited too many messages stored for people who are away; try again in 20 s"
    ]
    assert alice.send("/msg carol hi")[-1] == "OK msg carol delivered"
    # The address is spent: another account on it is refused too.
    assert final(carol.send("/msg bob from carol")).startswith("ERR rate-limited")
    harness.clock.advance(20)
    assert alice.send("/msg bob hi 4")[-1] == "OK msg bob stored"
    stored = rows(harness, "SELECT count(*) FROM stored_messages")
    assert stored == [(4,)]


def test_the_account_is_limited_from_any_address():
    """An account that spent its allowance is refused from a fresh address as well."""
    harness = harness_with(stored_message_limit=Allowance(2, 600.0))
    harness.client().send("/register bob password1")
    alice = harness.logged_in("alice")
    alice.send("/msg bob 1", "/msg bob 2")
    elsewhere = harness.client(host="192.0.2.9")
    elsewhere.login("alice")
    assert elsewhere.send("/msg bob 3")[0].startswith("ERR rate-limited")
    other = harness.client(host="192.0.2.10")
    other.login("dave")
    assert other.send("/msg bob 4")[-1] == "OK msg bob stored"


def test_parallel_stored_messages_cannot_pass_the_limit():
    """Five accounts of one address store at once while commits wait: three pass."""
    database = SlowDatabase()
    harness = harness_with(database, stored_message_limit=Allowance(3, 600.0))
    harness.client().send("/register bob password1")
    senders = [harness.logged_in(f"sender{n}") for n in range(5)]
    database.holding = True
    for sender in senders:
        sender.feed(b"/msg bob are you there\n")
    for _ in range(3):
        harness.commit_held()
    finals = [final(sender.lines()) for sender in senders]
    assert finals.count("OK msg bob stored") == 3
    assert sum(line.startswith("ERR rate-limited") for line in finals) == 2
    assert rows(harness, "SELECT count(*) FROM stored_messages") == [(3,)]


# --- the real server -----------------------------------------------------------------


@pytest.fixture
def server(tmp_path):
    """A real server with small caps: 5 rooms per user, 3 stored DMs per 10 minutes."""
    server, port = pytest_twisted.blockon(
        start_server(tmp_path, max_rooms_per_user=5, stored_message_limit=Allowance(3, 600.0))
    )
    server.port = port
    yield server
    pytest_twisted.blockon(server.stopService())


@pytest_twisted.inlineCallbacks
def test_parallel_joins_and_dms_on_a_real_server_hold_the_caps(server):
    """Twenty sessions of one user join twenty rooms at once: four pass (#lobby is the
    fifth); twenty sessions store DMs for an offline user at once: three pass."""
    register = yield connect(server.port)
    yield register.command("/register bob password1")
    sessions = yield defer.gatherResults([connect(server.port) for _ in range(20)])
    for session in sessions:
        yield session.login("alice")
    joins = yield defer.gatherResults(
        [session.command(f"/join #room{n}") for n, session in enumerate(sessions)]
    )
    finals = [lines[-1] for lines in joins]
    assert sum(line.startswith("OK join") for line in finals) == 4, finals
    assert sum(line.startswith("ERR too-many-rooms") for line in finals) == 16
    messages = yield defer.gatherResults(
        [session.command(f"/msg bob note {n}") for n, session in enumerate(sessions)]
    )
    finals = [lines[-1] for lines in messages]
    assert finals.count("OK msg bob stored") == 3, finals
    assert sum(line.startswith("ERR rate-limited") for line in finals) == 17
