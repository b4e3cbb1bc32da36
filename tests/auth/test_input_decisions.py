"""Input decisions of issue 9: huge /history counts, a leading BOM, reordering
characters in text, look-alike user names, and Unicode-normalised passwords.

Protocol tests run whole and byte by byte (the ``chat`` fixture).
"""

import random
import unicodedata

import pytest

from chatd.auth.passwords import hash_password
from chatd.config import Config
from chatd.core.names import normalize_password, password_candidates, skeleton
from chatd.storage import transactions
from chatd.storage.sqlite import schema
from tests.support import ChatHarness

# Lines long enough for the 4301-digit count.
WIDE = Config(bcrypt_rounds=4, rate_limit=None, line_limit=8192)
NFC_PASSWORD = unicodedata.normalize("NFC", "pässwörd-1")
NFD_PASSWORD = unicodedata.normalize("NFD", "pässwörd-1")


@pytest.fixture(params=[False, True], ids=["whole", "bytewise"])
def chat(request) -> ChatHarness:
    """A harness whose clients send whole or one byte per read."""
    harness = ChatHarness(WIDE)
    original = harness.client

    def client(*args, **kwargs):
        made = original(*args, **kwargs)
        send = made.send
        made.send = lambda *lines: send(*lines, bytewise=request.param)
        return made

    harness.client = client
    return harness


# --- /history counts ------------------------------------------------------------


def test_a_count_of_4301_digits_counts_as_500(chat):
    """Past Python's int-conversion limit: 500 lines and OK, not ERR server-error."""
    alice = chat.logged_in("alice")
    for number in range(510):
        alice.send(f"message {number}")
    replies = alice.send("/history #lobby " + "9" * 4301)
    assert len(replies) == 501 and replies[-1] == "OK history #lobby"
    assert replies[0].endswith(" alice message 10")


@pytest.mark.parametrize(
    ("count", "lines"), [("1", 1), ("007", 7), ("499", 499), ("500", 500), ("501", 500),
                         ("0" * 4000 + "3", 3), ("1" + "0" * 5000, 500)]
)
def test_history_counts_at_and_past_the_edges(count, lines):
    """Leading zeros are fine; every whole number from 1 is accepted, over 500 counts as 500."""
    harness = ChatHarness(WIDE)
    alice = harness.logged_in("alice")
    alice.feed(b"".join(f"m {n}\n".encode() for n in range(600)))
    alice.lines()
    replies = alice.send(f"/history #lobby {count}")
    assert len(replies) == lines + 1 and replies[-1] == "OK history #lobby"


@pytest.mark.parametrize("count", ["0", "0" * 4301, "-1", "1.5", "x", "٣", "1e3"])
def test_history_counts_that_are_not_whole_numbers_from_1(chat, count):
    """Zero in any length, signs, fractions and non-ASCII digits are bad-arguments."""
    alice = chat.logged_in("alice")
    assert alice.send(f"/history #lobby {count}")[-1].startswith("ERR bad-arguments")


# --- a byte order mark ------------------------------------------------------------


def test_a_bom_before_a_command_is_dropped(chat):
    """'\\ufeff/ping x' is /ping (before login: not auth-required for text)."""
    client = chat.client()
    assert client.send("\ufeff/ping x") == ["OK ping x"]
    alice = chat.logged_in("alice")
    assert alice.send("\ufeff/join #den")[-1] == "OK join #den"


def test_a_bom_alone_is_answered_and_a_bom_inside_text_is_kept(chat):
    """Only a leading BOM goes: a line of a BOM alone is not empty, so it is answered
    (as empty text: bad-arguments); inside text a BOM stays."""
    alice = chat.logged_in("alice")
    assert alice.send("\ufeff")[0].startswith("ERR bad-arguments")
    assert alice.send("a\ufeffb") == ["MSG #lobby alice a\ufeffb", "OK say #lobby"]
    assert alice.send("\ufeff\ufeffx") == ["MSG #lobby alice \ufeffx", "OK say #lobby"]


# --- characters that reorder text -------------------------------------------------

REORDERING = [chr(c) for c in (*range(0x202A, 0x202F), *range(0x2066, 0x206A), 0x2028, 0x2029)]


@pytest.mark.parametrize("character", REORDERING, ids=lambda c: f"U+{ord(c):04X}")
@pytest.mark.parametrize("form", ["{}", "/say #lobby {}", "/msg bob {}"])
def test_bidi_controls_and_line_separators_are_refused_in_text(chat, character, form):
    """RLO and friends in relayed text: ERR bad-arguments, and nobody sees anything."""
    bob = chat.logged_in("bob")
    alice = chat.logged_in("alice")
    bob.lines()
    replies = alice.send(form.format(f"evil {character}txt.exe"))
    assert len(replies) == 1 and replies[0].startswith("ERR bad-arguments <text> may not")
    assert bob.lines() == []


@pytest.mark.parametrize(
    "text",
    ["family \U0001f468\u200d\U0001f469\u200d\U0001f467", "mi\u200cdarm", "a\u200bb",
     "\u05e9\u05dc\u05d5\u05dd\u200f!", "word\u2060joiner", "left\u200eright"],
)
def test_zero_width_characters_are_relayed(chat, text):
    """Joiners, marks and zero-width spaces are part of emoji and scripts: relayed as sent."""
    alice = chat.logged_in("alice")
    assert alice.send(text) == [f"MSG #lobby alice {text}", "OK say #lobby"]


# --- look-alike names -------------------------------------------------------------


@pytest.mark.parametrize(
    ("first", "second"),
    [("alice", "aIice"), ("alice", "a1ice"), ("aIice", "alice"), ("mallory", "rnallory"),
     ("rnallory", "mallory"), ("wendy", "vvendy"), ("bob", "b0b"), ("Boot", "b0Ot"),
     ("lan", "Ian")],
)
def test_a_look_alike_of_an_account_cannot_register(chat, first, second):
    """Names with one skeleton (I/l/1, O/0, rn/m, vv/w folded) are user-exists."""
    client = chat.client()
    assert client.send(f"/register {first} password1") == [f"OK register {first}"]
    assert client.send(f"/register {second} password1") == [
        f"ERR user-exists {second} is taken: it looks like {first}"
    ]


def test_names_that_only_share_letters_register(chat):
    """Sharing letters is not looking alike: alicia registers beside alice."""
    client = chat.client()
    for name in ("alice", "alicia", "bobby", "bob2", "rm", "vw"):
        assert client.send(f"/register {name} password1") == [f"OK register {name}"]


def test_the_admin_command_line_refuses_look_alikes(run):
    """chatd user add goes through the same check."""
    assert run("db", "init")[0] == 0
    assert run("user", "add", "alice", "--password-stdin", stdin="password1\n")[0] == 0
    code, _out, err = run("user", "add", "aIice", "--password-stdin", stdin="password1\n")
    assert code != 0 and "looks like alice" in err


def test_the_sql_skeleton_is_the_python_skeleton():
    """schema.SKELETON_SQL (the index) and names.skeleton agree on every kind of name."""
    connection = schema.connect(":memory:")
    schema.migrate(connection)
    alphabet = "aAiIlL1oO0rRnNmMvVwW_.-x"
    chooser = random.Random(9)
    names = ["rnrn", "vvv", "rrnn", "iI1l", "0oO", "vvvv", "rnvv1"] + [
        "".join(chooser.choice(alphabet) for _ in range(chooser.randint(1, 12)))
        for _ in range(2000)
    ]
    for name in names:
        (sql,) = connection.execute(
            f"SELECT {schema.SKELETON_SQL} FROM (SELECT ? AS name_key)", (name.lower(),)
        ).fetchone()
        assert sql == skeleton(name), name


def test_look_alikes_registered_before_the_check_still_log_in(tmp_path):
    """A database that already holds alice and aIice migrates, and both accounts work."""
    path = str(tmp_path / "old.sqlite3")
    connection = schema.connect(path)
    connection.execute("PRAGMA user_version = 0")
    for version in range(2):
        for statement in schema.MIGRATIONS[version].split(";"):
            if statement.strip():
                connection.execute(statement)
    connection.execute("PRAGMA user_version = 2")
    for name in ("alice", "aIice"):
        connection.execute(
            "INSERT INTO users (name_key, name, password_hash, created_at) VALUES (?, ?, ?, 0)",
            (name.lower(), name, hash_password(b"password1", 4)),
        )
    connection.commit()
    connection.close()
    from tests.support import InlineDatabase

    harness = ChatHarness(database=InlineDatabase(path))
    assert harness.logged_in("aIice").send("/who")[-1] == "OK who #lobby"
    assert harness.logged_in("alice").send("/who")[-1] == "OK who #lobby"


# --- passwords in NFC -------------------------------------------------------------


def test_password_forms():
    """NFC first; the typed bytes only when they differ."""
    assert normalize_password(NFD_PASSWORD) == NFC_PASSWORD
    assert password_candidates(NFC_PASSWORD) == (NFC_PASSWORD.encode(),)
    assert password_candidates(NFD_PASSWORD) == (NFC_PASSWORD.encode(), NFD_PASSWORD.encode())


@pytest.mark.parametrize(
    ("registered", "typed"),
    [(NFC_PASSWORD, NFD_PASSWORD), (NFD_PASSWORD, NFC_PASSWORD), (NFD_PASSWORD, NFD_PASSWORD)],
    ids=["nfc-then-nfd", "nfd-then-nfc", "nfd-then-nfd"],
)
def test_a_password_logs_in_in_either_normal_form(chat, registered, typed):
    """ä composed or decomposed is one password, at login and as /passwd's old password."""
    client = chat.client()
    assert client.send(f"/register alice {registered}") == ["OK register alice"]
    assert client.send(f"/login alice {typed}")[-1] == "OK login alice"
    assert client.send(f"/passwd {typed} plainpassword")[-1] == "OK passwd"


def test_a_hash_made_before_normalisation_still_matches(chat):
    """An account hashed from NFD bytes (registered before this change) logs in as typed."""
    chat.database.write(
        transactions.create_user, "alice", hash_password(NFD_PASSWORD.encode(), 4), 0
    )
    client = chat.client()
    assert client.send(f"/login alice {NFD_PASSWORD}")[-1] == "OK login alice"
    assert client.send(f"/passwd {NFD_PASSWORD} plainpassword")[-1] == "OK passwd"
    other = chat.client()
    assert other.send("/login alice plainpassword")[-1] == "OK login alice"


def test_a_wrong_password_in_another_form_is_one_failure(chat):
    """Trying the second form does not count a second failure against the address."""
    client = chat.client()
    client.send(f"/register alice {NFC_PASSWORD}")
    assert client.send("/login alice wrong\u0308password") == [
        "ERR bad-credentials unknown user or wrong password"
    ]
    record = chat.factory.limits.logins._addresses.get("127.0.0.1")
    assert record.count == 1
