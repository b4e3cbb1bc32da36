"""The admin command line, run in-process on a real database file."""

import sqlite3
import subprocess
import sys

import pytest

from chatd.auth.passwords import check_password
from chatd.core.errors import ChatError
from chatd.storage import transactions
from chatd.storage.sqlite import schema
from tests.serverproc import ROOT


@pytest.fixture(autouse=True)
def database(run):
    """Each test starts with an empty chatd database made by ``chatd db init``."""
    assert run("db", "init")[0] == 0


def test_add_list_and_delete(run):
    """Accounts added from stdin show in the list and can be deleted."""
    assert run("user", "add", "Alice", "--password-stdin", stdin="password1\n")[0] == 0
    assert run("user", "add", "bob", "--password-stdin", stdin="password2\n")[0] == 0
    assert run("user", "list") == (0, "Alice\nbob\n", "")
    assert run("user", "del", "alice") == (0, "deleted alice\n", "")
    assert run("user", "list") == (0, "bob\n", "")


def test_add_refuses_taken_names_and_weak_passwords(run):
    """Errors exit 1 with a message on stderr."""
    run("user", "add", "alice", "--password-stdin", stdin="password1\n")
    code, _, err = run("user", "add", "ALICE", "--password-stdin", stdin="password1\n")
    assert code == 1 and "taken" in err
    code, _, err = run("user", "add", "bob", "--password-stdin", stdin="short\n")
    assert code == 1 and "at least 8" in err
    code, _, err = run("user", "add", "9bob", "--password-stdin", stdin="password1\n")
    assert code == 1 and "user names" in err


def test_passwd_ban_unban(run):
    """passwd replaces the hash; ban and unban flip the flag; each records an event
    (the password change too: it ends the account's sessions and logins in progress)."""
    run("user", "add", "alice", "--password-stdin", stdin="password1\n")
    assert run("user", "passwd", "alice", "--password-stdin", stdin="another-pass\n")[0] == 0
    assert run("user", "ban", "alice")[1] == "banned alice\n"
    assert run("user", "list")[1] == "alice  (banned)\n"
    assert run("user", "unban", "alice")[1] == "unbanned alice\n"
    connection = schema.open_database_file(run.path)
    account = transactions.find_account(connection, "alice")
    assert check_password(b"another-pass", account.password_hash)
    assert not account.banned
    actions = [event.action for event in transactions.account_events_since(connection, 0)]
    assert actions == ["create", "passwd", "ban", "unban"]


def test_kick_records_an_event(run):
    """kick leaves the account as it is and records a kick for the server to act on."""
    run("user", "add", "alice", "--password-stdin", stdin="password1\n")
    assert run("user", "kick", "alice") == (0, "kicked alice\n", "")
    connection = schema.open_database_file(run.path)
    events = transactions.account_events_since(connection, 0)
    assert [e.action for e in events] == ["create", "kick"]


def test_unknown_user(run):
    """Acting on a missing account exits 1."""
    for action in ("del", "ban", "unban", "kick"):
        code, _, err = run("user", action, "ghost")
        assert code == 1 and "no user ghost" in err
    code, _, err = run("user", "passwd", "ghost", "--password-stdin", stdin="password1\n")
    assert code == 1


def test_password_is_never_an_argument(run):
    """There is no way to give the password on the command line."""
    with pytest.raises(SystemExit):
        run("user", "add", "alice", "password1")


def test_prompted_password_must_be_typed_twice_alike(run, monkeypatch):
    """Without --password-stdin the password is asked twice, without echo."""
    answers = iter(["password1", "password2"])
    monkeypatch.setattr("getpass.getpass", lambda prompt: next(answers))
    code, _, err = run("user", "add", "alice")
    assert code == 1 and "differ" in err
    answers = iter(["password1", "password1"])
    assert run("user", "add", "alice")[0] == 0


# --- chatd room ... ------------------------------------------------------------------


def room_with_members(run) -> None:
    """alice created #a (its operator) and bob joined it; both are in #lobby."""
    connection = schema.open_database_file(run.path)
    with schema.transaction(connection):
        for name in ("alice", "bob"):
            transactions.create_user(connection, name, "hash", 0)
            transactions.arrive(connection, name, 0)
        transactions.join_room(connection, "#a", "alice", 1)
        transactions.join_room(connection, "#a", "bob", 2)
    connection.close()


def test_room_list_op_deop_topic(run):
    """room list shows members, operators, privacy and topic; op/deop/topic change them."""
    room_with_members(run)
    assert run("room", "list") == (
        0,
        "#a  2 members  operators: alice\n#lobby  2 members\n",
        "",
    )
    assert run("room", "op", "#A", "BOB")[1] == "bob is now an operator of #a\n"
    assert run("room", "deop", "#a", "alice")[1] == "alice is no longer an operator of #a\n"
    assert run("room", "topic", "#a", "all about a")[1] == "topic of #a set\n"
    assert run("room", "list")[1].splitlines()[0] == (
        "#a  2 members  operators: bob  topic: all about a"
    )
    assert run("room", "topic", "#a", "")[1] == "topic of #a cleared\n"
    connection = schema.open_database_file(run.path)
    # Leaving out the accounts' create events.
    events = [e for e in transactions.account_events_since(connection, 0) if e.action != "create"]
    assert [(e.action, e.room_key, e.name_key) for e in events] == [
        ("room-op", "#a", "bob"),
        ("room-deop", "#a", "alice"),
        ("room-topic", "#a", ""),
        ("room-topic", "#a", ""),
    ]
    assert events[2].detail == "all about a"


def test_room_kick_ban_unban(run):
    """kick ends a membership; ban also keeps the user out until unban."""
    room_with_members(run)
    assert run("room", "kick", "#a", "bob", "--reason", "be nice")[1] == "kicked bob from #a\n"
    code, _, err = run("room", "kick", "#a", "bob")
    assert code == 1 and "bob is not a member" in err
    assert run("room", "ban", "#a", "alice")[1] == "banned alice from #a\n"
    connection = schema.open_database_file(run.path)
    with pytest.raises(ChatError, match="banned"), schema.transaction(connection):
        transactions.join_room(connection, "#a", "alice", 3)
    assert run("room", "unban", "#a", "alice")[1] == "lifted the ban of alice from #a\n"
    with schema.transaction(connection):
        assert transactions.join_room(connection, "#a", "alice", 4) == "#a"
    events = [e for e in transactions.account_events_since(connection, 0) if e.action != "create"]
    assert [(e.action, e.user_name, e.detail) for e in events] == [
        ("room-kick", "bob", "be nice"),
        # "banned": alice was a member, whom every node kicks (as a session's ban).
        ("room-ban", "alice", "banned"),
        ("room-unban", "alice", ""),
    ]


def test_room_commands_refuse_what_cannot_be(run):
    """Unknown rooms and users, bad names and control characters exit 1 with a reason."""
    room_with_members(run)
    for argv, expected in (
        (("room", "op", "#nowhere", "alice"), "no room #nowhere"),
        (("room", "ban", "#a", "ghost"), "no user ghost"),
        (("room", "op", "nohash", "alice"), "room names"),
        (("room", "kick", "#a", "9x"), "user names"),
        (("room", "topic", "#a", "bell\x07"), "control characters"),
        (("room", "op", "#a", "ghost"), "no user ghost"),
    ):
        code, _, err = run(*argv)
        assert code == 1 and expected in err, (argv, err)


def test_user_commands_never_create_a_database(run, tmp_path):
    """Issue 9 item 19: a mistyped --db is an error; no file appears, nothing is added."""
    typo = tmp_path / "typo.sqlite3"
    commands = (["user", "list"], ["user", "add", "bob", "--password-stdin"], ["user", "kick", "b"])
    for argv in commands:
        code, out, err = run("--db", str(typo), *argv, stdin="password1\n")
        assert (code, out) == (1, "")
        assert err == f"chatd: there is no database at {typo} (`chatd db init` creates one)\n"
        assert not typo.exists()


def test_db_init_creates_upgrades_and_refuses(run, tmp_path):
    """``chatd db init`` is the one command that creates a database; it never harms one."""
    fresh = tmp_path / "fresh.sqlite3"
    assert run("--db", str(fresh), "db", "init") == (
        0, f"created {fresh} at schema version {schema.SCHEMA_VERSION}\n", ""
    )
    assert run("--db", str(fresh), "db", "init") == (
        0, f"{fresh} is already at schema version {schema.SCHEMA_VERSION}\n", ""
    )
    old = tmp_path / "old.sqlite3"
    connection = sqlite3.connect(old)
    connection.executescript(schema.MIGRATIONS[0] + "PRAGMA user_version = 1;")
    connection.close()
    assert run("--db", str(old), "db", "init")[1] == (
        f"upgraded {old} from schema version 1 to {schema.SCHEMA_VERSION}\n"
    )
    missing = tmp_path / "missing" / "chatd.sqlite3"
    assert run("--db", str(missing), "db", "init") == (
        1, "", f"chatd: directory {missing.parent} does not exist\n"
    )
    assert not missing.parent.exists()


def newer_database(path) -> None:
    """A chatd database written by a later chatd (schema version past ours)."""
    connection = schema.open_database_file(str(path))
    connection.execute(f"PRAGMA user_version = {schema.SCHEMA_VERSION + 1}")
    connection.close()


@pytest.mark.parametrize("command", [["user", "list"], ["db", "init"], ["db", "stats"],
                                     ["db", "backup", "copy.sqlite3"]])
def test_files_that_are_not_our_database_get_one_line(run, tmp_path, command, monkeypatch):
    """A text file, a newer schema, a directory: one line on stderr, status 1, no traceback."""
    monkeypatch.chdir(tmp_path)
    text = tmp_path / "notes.txt"
    text.write_text("not a database\n" * 100)
    newer = tmp_path / "newer.sqlite3"
    newer_database(newer)
    cases = {
        text: "not an SQLite database (file is not a database)",
        tmp_path: "is a directory",
    }
    if command[0] == "user" or command[1] == "init":
        cases[newer] = f"schema version {schema.SCHEMA_VERSION + 1} is newer than this chatd's"
    for path, reason in cases.items():
        code, out, err = run("--db", str(path), *command)
        assert (code, out) == (1, ""), err
        assert err.count("\n") == 1 and err.startswith("chatd: ") and reason in err, err
    assert text.read_text() == "not a database\n" * 100


def test_backup_to_a_missing_directory_is_one_line(run, tmp_path):
    """``chatd db backup`` into a directory that does not exist: a message, not a traceback."""
    target = tmp_path / "no-such-dir" / "backup.sqlite3"
    assert run("db", "backup", str(target)) == (
        1, "", f"chatd: directory {target.parent} does not exist\n"
    )


def test_user_add_without_a_terminal_says_how_to_give_the_password(tmp_path):
    """No terminal and no --password-stdin: one line naming the option, status 1."""
    path = tmp_path / "chatd.sqlite3"
    environment = {"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin", "CHATD_BCRYPT_ROUNDS": "4"}
    chatd = [sys.executable, "-m", "chatd", "--db", str(path)]
    subprocess.run([*chatd, "db", "init"], check=True, env=environment, timeout=60)
    # A new session has no controlling terminal: getpass cannot open /dev/tty.
    added = subprocess.run(
        [*chatd, "user", "add", "bob"], stdin=subprocess.DEVNULL, capture_output=True,
        text=True, env=environment, timeout=60, start_new_session=True,
    )
    assert (added.returncode, added.stdout) == (1, "")
    assert added.stderr == (
        "chatd: no terminal to ask for the password on: give it on standard input"
        " with --password-stdin\n"
    )


def test_unknown_variables_are_named_by_the_admin_command_line(run, monkeypatch):
    """Issue 9 item 20: the admin command line reads CHATD_* too, and says what it ignores."""
    monkeypatch.setenv("CHATD_BCRYPT_ROUDS", "4")
    code, out, err = run("user", "list")
    assert (code, out) == (0, "")
    assert err == (
        "chatd: warning: unknown variable CHATD_BCRYPT_ROUDS ignored"
        " (did you mean CHATD_BCRYPT_ROUNDS?)\n"
    )
