"""The wire contract, line by line, over StringTransport with a fake clock.

Each test runs three times: on SQLite with every line handed to the protocol
whole, and one byte per read, so framing never depends on how TCP splits the
data; and on PostgreSQL (``CHATD_DB=postgresql://``, a fresh database on the
session's private server, tests/services.py), lines whole: the whole contract
holds on a PostgreSQL single node. Framing does not depend on the database,
so PostgreSQL is not run byte by byte as well.
"""

import pytest

from chatd.config import Config
from chatd.frontends.line.render import format_timestamp
from tests import support
from tests.programs import require_module
from tests.support import ChatHarness, Client

# (database, bytewise) runs of each test; a test that does not take ``bytewise``
# runs once per database.
RUNS = [("sqlite", False), ("sqlite", True), ("postgres", False)]


def pytest_generate_tests(metafunc):
    """Every test on both databases; byte by byte only on SQLite."""
    if "bytewise" in metafunc.fixturenames:
        metafunc.parametrize(
            ("store", "bytewise"), RUNS, ids=["whole", "bytewise", "postgresql"], indirect=True
        )
    else:
        metafunc.parametrize("store", ["sqlite", "postgres"], ids=["sqlite", "postgresql"],
                             indirect=True)


class PostgresPool:
    """Migrated PostgreSQL databases kept for the module's tests and emptied for each
    (deleting the rows of a few small tables is far cheaper than a fresh database)."""

    def __init__(self, server) -> None:
        self._server = server
        self._urls: list[str] = []

    def take(self, index: int) -> support.InlinePostgresDatabase:
        """The ``index``-th database of a test, empty, its identities started over."""
        if index == len(self._urls):
            self._urls.append(self._server.fresh_database("contract"))
            return support.InlinePostgresDatabase(self._urls[index])
        database = support.InlinePostgresDatabase(self._urls[index])
        connection = database.connection
        tables = [row[0] for row in connection.execute(
            "SELECT tablename FROM pg_tables WHERE schemaname = 'public'"
            " AND tablename <> 'chatd_schema'"
        ).fetchall()]
        connection.execute("TRUNCATE " + ", ".join(tables) + " RESTART IDENTITY")
        return database


@pytest.fixture(scope="module")
def postgres_pool(request) -> PostgresPool:
    """The module's PostgreSQL databases on the session's private server."""
    require_module("psycopg", "psycopg[binary]")
    return PostgresPool(request.getfixturevalue("postgres_server"))


@pytest.fixture(autouse=True)
def store(request, monkeypatch):
    """The database every ChatHarness of the test is made on: an in-memory SQLite, or
    an empty PostgreSQL database."""
    if request.param == "sqlite":
        yield "sqlite"
        return
    pool = request.getfixturevalue("postgres_pool")
    opened: list = []

    def make() -> support.InlinePostgresDatabase:
        database = pool.take(len(opened))
        opened.append(database)
        return database

    monkeypatch.setattr(support, "make_inline_database", make)
    yield "postgres"
    for database in opened:
        database.connection.close()


@pytest.fixture
def bytewise(request) -> bool:
    """Whether input reaches the protocol one byte per read."""
    return request.param


@pytest.fixture
def chat(harness, bytewise):
    """A harness whose clients send whole or byte by byte."""
    original = harness.client

    def client(*args, **kwargs):
        made = original(*args, **kwargs)
        send = made.send
        made.send = lambda *lines, bytewise=bytewise: send(*lines, bytewise=bytewise)
        return made

    harness.client = client
    return harness


def test_each_run_is_on_its_database(harness, store):
    """The PostgreSQL runs really are on PostgreSQL (the harness took the pool's)."""
    expected = support.InlinePostgresDatabase if store == "postgres" else support.InlineDatabase
    assert type(harness.database) is expected
    client = harness.logged_in("alice")
    assert client.send("kept")[-1] == "OK say #lobby"


# --- framing ------------------------------------------------------------------


def test_hello_is_the_first_line(harness):
    """A new connection is greeted with HELLO, server name and protocol version 1."""
    client = Client(harness)
    assert client.lines() == ["HELLO chatd 1 welcome; /help lists commands"]


def test_crlf_and_bare_lf_are_both_line_ends(chat):
    """Clients may end lines with CRLF or LF; the server always answers with CRLF."""
    client = chat.client()
    assert client.send(b"/ping a\r\n", b"/ping b\n") == ["OK ping a", "OK ping b"]
    assert client.transport.value().endswith(b"OK ping b\r\n")


def test_empty_lines_get_no_reply(chat):
    """Empty lines, with or without CR, are ignored."""
    client = chat.client()
    assert client.send(b"\n", b"\r\n", b"/ping x\n") == ["OK ping x"]


def test_a_line_at_the_limit_is_read(chat):
    """A line of exactly the limit (4096 bytes by default) is an ordinary line."""
    client = chat.client()
    line = "/ping " + "x" * (4096 - len("/ping "))
    assert client.send(line.encode() + b"\r\n") == ["OK ping " + "x" * 4090]


def test_a_line_past_the_limit_is_refused_and_the_connection_lives(chat):
    """One byte over the limit: ERR line-too-long, and the next line works."""
    client = chat.client()
    line = "/ping " + "x" * (4097 - len("/ping "))
    assert client.send(line, "/ping after") == [
        "ERR line-too-long lines are limited to 4096 bytes",
        "OK ping after",
    ]


def test_an_endless_line_in_many_chunks_is_discarded_whole(harness):
    """A line that never ends is answered once, its bytes dropped, then reading goes on."""
    client = harness.client()
    for _ in range(100):
        client.feed(b"y" * 1000)
    assert client.lines() == ["ERR line-too-long lines are limited to 4096 bytes"]
    client.feed(b"still the same line\n/ping next\n")
    assert client.lines() == ["OK ping next"]
    assert len(client.protocol._buffer) == 0


def test_a_too_long_line_followed_by_lines_in_one_read(harness):
    """Lines after an over-long one in the same read are still answered."""
    client = harness.client()
    client.feed(b"z" * 5000 + b"\n/ping one\n/ping two\n")
    assert client.lines() == [
        "ERR line-too-long lines are limited to 4096 bytes",
        "OK ping one",
        "OK ping two",
    ]


def test_the_line_limit_is_a_setting():
    """CHATD_LINE_LIMIT moves the edge."""
    harness = ChatHarness(Config(bcrypt_rounds=4, rate_limit=None, line_limit=100))
    client = harness.client()
    assert client.send("/ping " + "x" * 94) == ["OK ping " + "x" * 94]
    assert client.send("/ping " + "x" * 95)[0].startswith("ERR line-too-long")


def test_bad_utf8_gets_bad_encoding_and_the_connection_lives(chat):
    """Invalid UTF-8 is answered ERR bad-encoding; the next line is read normally."""
    client = chat.client()
    assert client.send(b"/ping \xff\xfe\n", b"/ping ok\n") == [
        "ERR bad-encoding lines must be UTF-8",
        "OK ping ok",
    ]


def test_a_character_split_across_reads_is_decoded_whole(harness):
    """A multi-byte character cut between two reads arrives intact."""
    client = harness.logged_in("alice")
    data = "héllo wörld ✓\n".encode()
    cut = data.index("✓".encode()) + 1
    client.feed(data[:cut])
    client.feed(data[cut:])
    assert client.lines() == ["MSG #lobby alice héllo wörld ✓", "OK say #lobby"]


# --- before login -----------------------------------------------------------------


@pytest.mark.parametrize(
    "line", ["hello", "/join #a", "/msg bob hi", "/who", "/rooms", "/frobnicate", "//x", "/"]
)
def test_only_some_commands_work_before_login(chat, line):
    """Plain text, unknown commands and chat commands need a login first."""
    client = chat.client()
    assert client.send(line) == ["ERR auth-required log in first: /login <user> <password>"]


def test_ping_help_and_quit_work_before_login(chat):
    """/ping, /pong, /help and /quit need no login."""
    client = chat.client()
    assert client.send("/ping t") == ["OK ping t"]
    assert client.send("/pong t") == ["OK pong t"]
    help_lines = client.send("/help")
    assert help_lines[-1] == "OK help"
    assert all(line.startswith("INFO /") for line in help_lines[:-1])
    assert any("/login" in line for line in help_lines)
    assert client.send("/quit") == ["OK quit", "BYE quit"]
    assert client.transport.closed


# --- commands and arguments -----------------------------------------------------


def test_command_names_are_case_insensitive(chat):
    """/PING and /Join work like /ping and /join."""
    client = chat.client()
    assert client.send("/PING x") == ["OK ping x"]
    client.login("alice")
    assert client.send("/JoIn #a")[-1] == "OK join #a"


def test_unknown_command_after_login(chat):
    """Logged in, an unknown command is unknown-command."""
    client = chat.client()
    client.login("alice")
    assert client.send("/frobnicate now") == ["ERR unknown-command /help lists the commands"]


BAD_ARGUMENTS = [
    "/join",
    "/join #a #b",
    "/part #a #b",
    "/msg",
    "/msg bob",
    "/say",
    "/say #lobby",
    "/who #a #b",
    "/rooms now",
    "/history",
    "/history #lobby 0",
    "/history #lobby -1",
    "/history #lobby x",
    "/history #lobby 1.5",
    "/history #lobby 5 6",
    "/passwd",
    "/passwd onlyone1",
    "/passwd a b c",
    "/password",
    "/password password1 newpassword",
    "/password \tnewpassword",
    "/password password1\t",
    "/pong",
    "/help me",
    "/ping a b",
    "/pong a b",
]


@pytest.mark.parametrize("line", BAD_ARGUMENTS)
def test_missing_extra_and_malformed_arguments(chat, line):
    """Every command with the wrong arguments gets ERR bad-arguments, with its usage."""
    client = chat.client()
    client.login("alice")
    reply = client.send(line)
    assert len(reply) == 1 and reply[0].startswith("ERR bad-arguments "), reply
    assert "usage: /" in reply[0]


@pytest.mark.parametrize("line", ["/register", "/register bob", "/login", "/login bob"])
def test_bad_arguments_before_login(chat, line):
    """/register and /login with missing arguments are bad-arguments."""
    client = chat.client()
    assert client.send(line)[0].startswith("ERR bad-arguments ")


@pytest.mark.parametrize(
    "line",
    [
        "/join lobby",
        "/join #",
        "/join #" + "a" * 33,
        "/join #a/b",
        "/part nohash",
        "/who #bad!",
        "/history #bad! 5",
        "/say #bad! hi",
        "/msg 1bob hi",
        "/msg bob! hi",
        "/msg " + "b" * 33 + " hi",
    ],
)
def test_names_that_break_the_rules_are_invalid_name(chat, line):
    """A malformed user or room name gets ERR invalid-name."""
    client = chat.client()
    client.login("alice")
    reply = client.send(line)
    assert len(reply) == 1 and reply[0].startswith("ERR invalid-name "), reply


def test_longest_names_are_accepted(chat):
    """A 32-character user name and a 32-character room name are fine."""
    client = chat.client()
    name = "a" + "b" * 31
    client.login(name)
    assert client.send("/join #" + "r" * 32)[-1] == "OK join #" + "r" * 32


def test_words_may_be_separated_by_several_spaces(chat):
    """Extra spaces between words are tolerated; a rest argument keeps inner spaces."""
    client = chat.client()
    client.login("alice")
    assert client.send("/join   #a")[-1] == "OK join #a"
    assert client.send("/say #a  two  spaces")[0] == "MSG #a alice  two  spaces"


# --- registration -------------------------------------------------------------------


def test_register_creates_an_account_and_stays_logged_out(chat):
    """/register answers OK register and the session is still logged out."""
    client = chat.client()
    assert client.send("/register Alice password1") == ["OK register Alice"]
    assert client.send("hello")[0].startswith("ERR auth-required")


def test_register_a_taken_name_in_any_case(chat):
    """User names are unique case-insensitively."""
    client = chat.client()
    client.send("/register Alice password1")
    assert client.send("/register aLiCe password2") == ["ERR user-exists aLiCe is taken"]


@pytest.mark.parametrize(
    ("password", "accepted"),
    [("x" * 7, False), ("x" * 8, True), ("é" * 4, True), ("x" * 1024, True), ("x" * 1025, False)],
)
def test_password_length_edges(chat, password, accepted):
    """Passwords are 8 to 1024 bytes of UTF-8 (bytes, not characters)."""
    client = chat.client()
    reply = client.send(f"/register bob {password}")
    assert reply == ["OK register bob"] if accepted else reply[0].startswith("ERR weak-password")


def test_passwords_may_contain_spaces(chat):
    """In /register and /login the password is the rest of the line."""
    client = chat.client()
    assert client.send("/register bob correct horse battery") == ["OK register bob"]
    assert client.send("/login bob correct horse battery")[-1] == "OK login bob"


def test_long_passwords_count_every_byte_through_login(chat):
    """73 bytes: the 72-byte prefix is a wrong password; 1024 works; 1025 never does."""
    client = chat.client()
    long, longest, too_long = "p" * 72 + "q", "L" * 1024, "L" * 1025
    assert client.send(f"/register alice {long}") == ["OK register alice"]
    assert client.send(f"/login alice {long[:72]}") == [
        "ERR bad-credentials unknown user or wrong password"
    ]
    assert client.send(f"/login alice {long}")[-1] == "OK login alice"
    other = chat.client()
    assert other.send(f"/register bob {longest}") == ["OK register bob"]
    assert other.send(f"/register carol {too_long}")[0].startswith("ERR weak-password ")
    assert other.send(f"/login bob {too_long}") == [
        "ERR bad-credentials unknown user or wrong password"
    ]
    assert other.send(f"/login bob {longest}")[-1] == "OK login bob"


@pytest.mark.parametrize("line", ["/login 9lives password1", "/login bob! password1",
                                  "/login " + "b" * 33 + " password1"])
def test_login_with_a_malformed_name_is_invalid_name(chat, line):
    """/login with a name that breaks the rules gets ERR invalid-name, not bad-credentials."""
    reply = chat.client().send(line)
    assert len(reply) == 1 and reply[0].startswith("ERR invalid-name "), reply


def test_register_invalid_name(chat):
    """A malformed name cannot be registered."""
    assert chat.client().send("/register 9lives password1")[0].startswith("ERR invalid-name")


def test_register_while_logged_in(chat):
    """A logged-in session cannot register."""
    client = chat.client()
    client.login("alice")
    assert client.send("/register bob password1")[0].startswith("ERR already-logged-in")


def test_registration_closed():
    """With CHATD_REGISTRATION=closed, /register is refused."""
    harness = ChatHarness(Config(bcrypt_rounds=4, rate_limit=None, registration_open=False))
    reply = harness.client().send("/register bob password1")
    assert reply[0].startswith("ERR registration-closed")


# --- login --------------------------------------------------------------------------


def test_unknown_user_and_wrong_password_get_the_same_line(chat):
    """bad-credentials is the very same line for both."""
    chat.client().send("/register alice password1")
    client = chat.client()
    wrong = client.send("/login alice wrongpassword")
    unknown = client.send("/login nobody wrongpassword")
    assert wrong == unknown == ["ERR bad-credentials unknown user or wrong password"]


def test_login_joins_lobby_then_ok(chat):
    """The first session joins #lobby: JOIN, WHO, then OK login."""
    client = chat.client()
    client.send("/register alice password1")
    assert client.send("/login alice password1") == [
        "JOIN #lobby alice",
        "WHO #lobby alice",
        "OK login alice",
    ]


def test_login_is_case_insensitive_and_shows_the_registered_spelling(chat):
    """Logging in as ALICE gives the session of Alice."""
    client = chat.client()
    client.send("/register Alice password1")
    assert client.send("/login ALICE password1")[-1] == "OK login Alice"


def test_second_login_on_one_connection(chat):
    """A logged-in session cannot log in again."""
    client = chat.client()
    client.login("alice")
    assert client.send("/login alice password1")[0].startswith("ERR already-logged-in")


def test_login_replays_history_and_stored_messages_in_order(harness):
    """Login: WHO, the room's HISTORY, then STORED (oldest first), then OK login."""
    alice = harness.logged_in("alice")
    harness.client().send("/register bob password1")
    alice.send("first", "second")
    harness.clock.advance(1.5)
    alice.send("/msg bob are you there?", "/msg bob hello?")
    bob = harness.client()
    lines = bob.send("/login bob password1")
    now = int(harness.clock.seconds() * 1000)
    # Sent in the same millisecond: the second is kept a millisecond later.
    stamp, next_stamp = format_timestamp(now), format_timestamp(now + 1)
    assert lines[0] == "JOIN #lobby bob"
    assert lines[1] == "WHO #lobby alice bob"
    assert [line.split(" ", 3)[3] for line in lines[2:4]] == ["alice first", "alice second"]
    assert lines[2].startswith("HISTORY #lobby ")
    assert lines[4:6] == [
        f"STORED {stamp} alice are you there?",
        f"STORED {next_stamp} alice hello?",
    ]
    assert lines[6] == "OK login bob"
    again = harness.client()
    assert not [line for line in again.send("/login bob password1") if line.startswith("STORED")]


def test_banned_user_cannot_log_in(harness):
    """A banned account with the right password gets ERR banned; a wrong one bad-credentials."""
    from chatd.storage import transactions

    harness.client().send("/register mallory password1")
    harness.database.write(transactions.set_banned, "mallory", True, 0)
    client = harness.client()
    assert client.send("/login mallory password1")[0].startswith("ERR banned")
    assert client.send("/login mallory password2")[0].startswith("ERR bad-credentials")


# --- rooms ----------------------------------------------------------------------------


def test_plain_text_goes_to_every_member(chat):
    """Text goes to every session of every member, the sender's included, then OK say."""
    alice, bob = chat.client(), chat.client()
    alice.login("alice")
    bob.login("bob")
    alice.lines()
    assert alice.send("hi bob") == ["MSG #lobby alice hi bob", "OK say #lobby"]
    assert bob.lines() == ["MSG #lobby alice hi bob"]


def test_double_slash_sends_a_slash(chat):
    """//text sends /text as plain text."""
    alice = chat.client()
    alice.login("alice")
    assert alice.send("//shrug") == ["MSG #lobby alice /shrug", "OK say #lobby"]


def test_a_tab_in_text_is_relayed(chat):
    """TAB is the one control character text may hold: it reaches others as sent."""
    alice, bob = chat.client(), chat.client()
    alice.login("alice")
    bob.login("bob")
    alice.lines()
    assert alice.send("a\tb")[-1] == "OK say #lobby"
    assert alice.send("/msg bob c\td")[-1] == "OK msg bob delivered"
    assert bob.lines() == ["MSG #lobby alice a\tb", "DM alice bob c\td"]


CONTROL_TEXT = ["x\rMSG #lobby carol fake", "wipe\x1b[2K", "del\x7f", "c1\x9b31m", "nul\x00"]


@pytest.mark.parametrize("text", CONTROL_TEXT)
@pytest.mark.parametrize("form", ["{}", "/say #lobby {}", "/msg bob {}", "/quit {}"])
def test_control_characters_in_text_are_refused(chat, form, text):
    """CR mid-line, ESC, DEL, C1 and NUL in text: ERR bad-arguments, nobody sees a thing."""
    alice, bob = chat.client(), chat.client()
    alice.login("alice")
    bob.login("bob")
    alice.lines()
    reply = alice.send(form.format(text))
    assert len(reply) == 1 and reply[0].startswith(
        "ERR bad-arguments <text> may not contain control characters (other than TAB); usage: /"
    ), reply
    assert bob.lines() == []
    assert alice.send("/ping still-open") == ["OK ping still-open"]


def test_passwords_may_hold_control_characters(chat):
    """The rule is for relayed text: a password is never shown, so it is not affected."""
    client = chat.client()
    assert client.send("/register bob pass\x1bword\x7f") == ["OK register bob"]
    assert client.send("/login bob pass\x1bword\x7f")[-1] == "OK login bob"


def test_say_to_a_named_room(chat):
    """/say <room> <text> posts to a room the user is in, even if not current."""
    alice = chat.client()
    alice.login("alice")
    alice.send("/join #b")
    assert alice.send("/say #LOBBY hi") == ["MSG #lobby alice hi", "OK say #lobby"]
    assert alice.send("/say #elsewhere hi")[0].startswith("ERR not-in-room")


def test_join_creates_announces_and_shows_members_and_history(chat):
    """JOIN to all members (joiner included), WHO and HISTORY to the joiner, OK join."""
    alice, bob = chat.client(), chat.client()
    alice.login("alice")
    bob.login("bob")
    alice.lines()
    assert alice.send("/join #Rust") == [
        "JOIN #Rust alice",
        "WHO #Rust alice",
        "OPS #Rust alice",
        "OK join #Rust",
    ]
    alice.send("fearless")
    lines = bob.send("/join #rust")
    assert lines[:3] == ["JOIN #Rust bob", "WHO #Rust alice bob", "OPS #Rust alice"]
    assert lines[3].startswith("HISTORY #Rust ") and lines[3].endswith(" alice fearless")
    assert lines[4] == "OK join #Rust"
    assert alice.lines()[-1] == "JOIN #Rust bob"


def test_join_a_room_already_joined_only_makes_it_current(chat):
    """Re-joining answers just OK join and makes that room current."""
    alice = chat.client()
    alice.login("alice")
    alice.send("/join #a")
    assert alice.send("/join #lobby") == ["OK join #lobby"]
    assert alice.send("now") == ["MSG #lobby alice now", "OK say #lobby"]


def test_part_moves_to_the_most_recently_joined_room(chat):
    """After /part the current room is the most recently joined remaining one."""
    alice, bob = chat.client(), chat.client()
    alice.login("alice")
    bob.login("bob")
    alice.send("/join #a", "/join #b", "/join #c", "/join #a")
    assert alice.send("/part") == ["PART #a alice", "OK part #a"]
    assert alice.send("where")[0] == "MSG #c alice where"
    assert alice.send("/part #c")[-1] == "OK part #c"
    assert alice.send("where")[0] == "MSG #b alice where"


def test_part_is_seen_by_all_members(chat):
    """PART goes to every member, the leaver included."""
    alice, bob = chat.client(), chat.client()
    alice.login("alice")
    bob.login("bob")
    alice.lines()
    assert bob.send("/part #lobby") == ["PART #lobby bob", "OK part #lobby"]
    assert alice.lines() == ["PART #lobby bob"]


def test_not_in_any_room(chat):
    """With no room left, text and /part and /who have nowhere to go."""
    alice = chat.client()
    alice.login("alice")
    alice.send("/part")
    assert alice.send("hello")[0].startswith("ERR not-in-room")
    assert alice.send("/part")[0].startswith("ERR not-in-room")
    assert alice.send("/who")[0].startswith("ERR not-in-room")
    assert alice.send("/part #lobby")[0].startswith("ERR not-in-room")


def test_who_for_current_named_and_unknown_rooms(chat):
    """/who lists members sorted case-insensitively; an empty room is no-such-room."""
    for name in ("carol", "Bob", "alice"):
        chat.client().login(name)
    alice = chat.client()
    alice.login("alice")
    assert alice.send("/who") == ["WHO #lobby alice Bob carol", "OK who #lobby"]
    assert alice.send("/who #LOBBY") == ["WHO #lobby alice Bob carol", "OK who #lobby"]
    assert alice.send("/who #nowhere")[0].startswith("ERR no-such-room")


def test_rooms_lists_rooms_with_members(chat):
    """/rooms gives one ROOM line per room that has members, then OK rooms."""
    alice, bob = chat.client(), chat.client()
    alice.login("alice")
    bob.login("bob")
    alice.send("/join #zeta", "/join #alpha")
    bob.send("/join #Alpha")
    alice.send("/part #zeta")
    assert bob.send("/rooms") == ["ROOM #alpha 2", "ROOM #lobby 2", "OK rooms"]


def test_history_counts(harness):
    """/history gives the last n (default 50, at most 500), oldest first."""
    alice = harness.logged_in("alice")
    for number in range(600):
        alice.send(f"message {number}")
    default = alice.send("/history #lobby")
    assert len(default) == 51 and default[-1] == "OK history #lobby"
    assert default[0].endswith(" alice message 550") and default[49].endswith(" message 599")
    assert len(alice.send("/history #lobby 1")) == 2
    assert len(alice.send("/history #lobby 500")) == 501
    assert len(alice.send("/history #lobby 501")) == 501
    assert alice.send("/history #elsewhere 5")[0].startswith("ERR not-in-room")


def test_room_names_are_case_insensitive_and_shown_as_created(chat):
    """#Rust and #RUST are one room, shown as first created."""
    alice = chat.client()
    alice.login("alice")
    alice.send("/join #Rust")
    alice.send("/part #RUST")
    assert alice.send("/join #rUsT")[-1] == "OK join #Rust"


# --- direct messages ---------------------------------------------------------------


def test_direct_message_reaches_every_session_of_both(harness):
    """DM goes to all sessions of recipient and sender; OK msg <recipient> delivered."""
    alice1, alice2 = harness.logged_in("alice"), harness.logged_in("alice")
    bob1, bob2 = harness.logged_in("bob"), harness.logged_in("bob")
    for client in (alice1, alice2, bob1, bob2):
        client.lines()
    assert alice1.send("/msg BOB psst") == ["DM alice bob psst", "OK msg bob delivered"]
    assert alice2.lines() == bob1.lines() == bob2.lines() == ["DM alice bob psst"]


def test_direct_message_to_an_offline_user_is_stored(harness):
    """The sender still sees the DM; the reply says stored."""
    harness.client().send("/register bob password1")
    alice = harness.logged_in("alice")
    assert alice.send("/msg bob later") == ["DM alice bob later", "OK msg bob stored"]


def test_direct_message_to_nobody(harness):
    """A DM to a user who does not exist is no-such-user."""
    alice = harness.logged_in("alice")
    assert alice.send("/msg ghost boo")[0].startswith("ERR no-such-user")


def test_direct_message_to_oneself_arrives_once_per_session(harness):
    """Messaging yourself with three sessions open: each session gets the DM once
    (not once as sender and again as recipient)."""
    alice = harness.logged_in("alice")
    second, third = harness.client(), harness.client()
    second.send("/login alice password1")
    third.send("/login alice password1")
    bob = harness.logged_in("bob")
    alice.lines(), second.lines(), third.lines()
    assert alice.send("/msg alice note") == ["DM alice alice note", "OK msg alice delivered"]
    assert second.lines() == ["DM alice alice note"]
    assert third.lines() == ["DM alice alice note"]
    assert bob.lines() == []


# --- several sessions --------------------------------------------------------------


def test_a_user_with_several_sessions_is_one_member(harness):
    """Others see JOIN once; the second session gets WHO and HISTORY, no JOIN."""
    bob = harness.logged_in("bob")
    first = harness.logged_in("alice")
    first.send("/join #a")
    bob.lines()
    second = harness.client()
    lines = second.send("/login alice password1")
    assert lines == ["WHO #lobby alice bob", "WHO #a alice", "OPS #a alice", "OK login alice"]
    assert bob.lines() == []
    assert bob.send("/who") == ["WHO #lobby alice bob", "OK who #lobby"]


def test_current_room_belongs_to_each_session(harness):
    """Two sessions of one user can each have a different current room."""
    first = harness.logged_in("alice")
    first.send("/join #a")
    second = harness.logged_in("alice")
    second.send("/join #lobby")
    assert first.send("x")[0] == "MSG #a alice x"
    assert second.lines() == ["MSG #a alice x"]
    assert second.send("y")[0] == "MSG #lobby alice y"


def test_part_once_when_the_last_session_ends(harness):
    """Closing one of two sessions says nothing; closing the last says PART."""
    bob = harness.logged_in("bob")
    first, second = harness.logged_in("alice"), harness.logged_in("alice")
    bob.lines()
    first.close()
    assert bob.lines() == []
    second.close()
    assert bob.lines() == ["PART #lobby alice"]


def test_a_part_applies_to_all_sessions(harness):
    """Parting from one session leaves the room for the user: both sessions see PART."""
    first, second = harness.logged_in("alice"), harness.logged_in("alice")
    first.send("/join #a")
    second.lines()
    assert first.send("/part #a") == ["PART #a alice", "OK part #a"]
    assert second.lines() == ["PART #a alice"]


# --- passwords ----------------------------------------------------------------------


def test_passwd_changes_the_password(harness):
    """After /passwd the new password works and the old one does not."""
    alice = harness.logged_in("alice", "password1")
    assert alice.send("/passwd wrongpass newpassword")[0].startswith("ERR bad-credentials")
    assert alice.send("/passwd password1 short")[0].startswith("ERR weak-password")
    assert alice.send("/passwd password1 newpassword") == ["OK passwd"]
    other = harness.client()
    assert other.send("/login alice password1")[0].startswith("ERR bad-credentials")
    assert other.send("/login alice newpassword")[-1] == "OK login alice"


def test_password_changes_a_password_with_spaces(chat):
    """/password <old>TAB<new>: both may hold spaces; OK password; the new one logs in."""
    alice = chat.client()
    assert alice.send("/register alice my old pass") == ["OK register alice"]
    assert alice.send("/login alice my old pass")[-1] == "OK login alice"
    assert alice.send("/password my old pass\t new  pass\twith tab ") == ["OK password"]
    other = chat.client()
    assert other.send("/login alice my old pass")[0].startswith("ERR bad-credentials")
    assert other.send("/login alice  new  pass\twith tab ")[-1] == "OK login alice"


def test_password_refuses_a_wrong_old_password_and_a_weak_new_one(chat):
    """/password answers as /passwd does: bad-credentials, weak-password."""
    alice = chat.client()
    alice.login("alice")
    assert alice.send("/password not it at all\tnew password")[0].startswith("ERR bad-credentials")
    assert alice.send("/password password1\tshort")[0].startswith("ERR weak-password")


def test_passwd_keeps_splitting_at_spaces_when_a_password_holds_a_tab(chat):
    """The contract's /passwd form is unchanged: a TAB inside a word is part of it."""
    alice = chat.client()
    assert alice.send("/register alice tab\there1") == ["OK register alice"]
    alice.send("/login alice tab\there1")
    assert alice.send("/passwd tab\there1 new\tpassword") == ["OK passwd"]
    other = chat.client()
    assert other.send("/login alice new\tpassword")[-1] == "OK login alice"


def test_help_lists_password_and_quit_says_its_text_is_shown_to_no_one(chat):
    """/help shows the TAB form and does not claim anyone sees the /quit text."""
    alice = chat.client()
    alice.login("alice")
    lines = alice.send("/help")
    assert (
        "INFO /password <old>TAB<new> - change a password with spaces (one TAB between them)"
        in lines
    )
    quit_line = next(line for line in lines if line.startswith("INFO /quit"))
    assert "shown to no one" in quit_line


# --- the final-reply rule and quitting ---------------------------------------------


def test_pipelined_lines_are_answered_in_order(chat):
    """Many lines at once: one final reply each, in the order sent."""
    alice = chat.client()
    alice.send("/register alice password1")
    lines = alice.send(
        "/login alice password1", "/ping 1", "hello", "/join #x", "/frob", "/ping 2"
    )
    finals = [line for line in lines if line.startswith(("OK ", "ERR "))]
    assert finals == [
        "OK login alice",
        "OK ping 1",
        "OK say #lobby",
        "OK join #x",
        "ERR unknown-command /help lists the commands",
        "OK ping 2",
    ]


def test_quit_says_ok_then_bye_and_nothing_after(chat):
    """/quit: OK quit, BYE quit, closed; later lines are not answered."""
    alice = chat.client()
    alice.login("alice")
    assert alice.send("/quit see you", "/ping late") == ["OK quit", "BYE quit"]
    assert alice.transport.closed


def test_ping_without_a_token(chat):
    """/ping alone answers OK ping with nothing after it."""
    assert chat.client().send("/ping") == ["OK ping"]
