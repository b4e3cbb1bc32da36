"""The ``chatd`` admin command line: accounts and the database file, directly.

``chatd user ...`` manages accounts; ``chatd room ...`` rooms (list, op,
deop, kick, ban, unban, topic); ``chatd db backup|check|stats`` (see
``chatd.ops.dbtools``) backs up, checks and measures the database, and
``chatd db init`` creates it. No other command creates a database: a
mistyped ``--db`` is an error, not a new empty file that ``user add`` would
then fill. Every failure is one line on stderr and a non-zero status.

It works while the server runs: SQLite's WAL and busy timeout let both
write, and the server notices bans, kicks, deletions and room changes within
a second (it polls the account events this writes) and shows them to the
sessions concerned.
Passwords come from a prompt that does not echo, or from standard input
with ``--password-stdin``; never from the command line, where other users
of the machine could read them.
"""

import argparse
import getpass
import inspect
import re
import sqlite3
import sys
import time
import warnings
from pathlib import Path

from chatd import __version__
from chatd.auth.passwords import hash_password
from chatd.config import Config, ConfigError
from chatd.core.errors import ChatError
from chatd.core.names import fold, require_room_name, require_strong_password, require_user_name
from chatd.ops import dbtools
from chatd.storage import backends, transactions
from chatd.storage.dialect import is_postgres_url
from chatd.storage.sqlite import schema


class AdminError(Exception):
    """A command that cannot be done; the message is for the operator."""


def _now() -> int:
    return int(time.time() * 1000)


def _read_password(args: argparse.Namespace) -> bytes:
    if args.password_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    else:
        password = _ask("password: ")
        if _ask("again: ") != password:
            raise AdminError("the passwords differ")
    try:
        return require_strong_password(password)
    except ChatError as error:
        raise AdminError(error.text) from None


def _ask(prompt: str) -> str:
    """Ask on the terminal without echo; with no terminal, refuse rather than read stdin.

    getpass falls back to reading standard input, with echo, when there is
    no terminal; a script (cron, a pipe) would then hang or fail with
    EOFError. It must say ``--password-stdin`` instead.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("error", getpass.GetPassWarning)
        try:
            return getpass.getpass(prompt)
        except (getpass.GetPassWarning, EOFError):
            raise AdminError(
                "no terminal to ask for the password on: give it on standard input"
                " with --password-stdin"
            ) from None


def _name(args: argparse.Namespace) -> str:
    try:
        return require_user_name(args.name)
    except ChatError as error:
        raise AdminError(error.text) from None


def user_add(args, connection, config) -> str:
    """Create an account."""
    name = _name(args)
    password_hash = hash_password(_read_password(args), config.bcrypt_rounds)
    try:
        with backends.transaction(connection):
            transactions.create_user(connection, name, password_hash, _now())
    except ChatError as error:
        raise AdminError(error.text) from None
    return f"added {name}"


def user_passwd(args, connection, config) -> str:
    """Set an account's password."""
    name = _name(args)
    password_hash = hash_password(_read_password(args), config.bcrypt_rounds)
    with backends.transaction(connection):
        if not transactions.set_password_hash(connection, fold(name), password_hash, _now()):
            raise AdminError(f"there is no user {name}")
    return f"password of {name} changed"


ERASE_WINDOW = 5000


def user_del(args, connection, config) -> str:
    """Delete an account, with the direct messages waiting for it.

    What the user left behind that no one else needs goes with the account:
    the direct messages waiting for them, which nobody else could ever read.
    What they sent stays by default, because others need it: room history is
    the room's, and a direct message waiting for someone is its recipient's.
    ``--erase-messages`` removes that too (an abuser's spam, a request to be
    forgotten), in short transactions so a running server is never held up,
    and tells the server to drop those lines from the history it keeps in
    memory as well. That is every message the account had acknowledged: a
    running server commits a message only in a transaction that finds its
    sender's account (``transactions.require_sender``), so none commits after the
    deletion, and every earlier one has an id up to the highest one read in
    the deleting transaction.
    """
    name = _name(args)
    key = fold(name)
    with backends.transaction(connection):
        # Read with the deletion: messages a new account of the same name sends later stay.
        _, last_id = transactions.message_id_range(connection)
        if not transactions.delete_user(connection, key, _now()):
            raise AdminError(f"there is no user {name}")
    if not args.erase_messages:
        return f"deleted {name}"
    erased = 0
    for first in range(1, last_id + 1, ERASE_WINDOW):
        with backends.transaction(connection):
            last = min(first + ERASE_WINDOW - 1, last_id)
            erased += transactions.erase_messages_from(connection, key, first, last)
    with backends.transaction(connection):
        transactions.record_account_event(connection, key, "erase", _now())
    return f"deleted {name} and {erased} messages they sent"


def _set_banned(banned: bool):
    def command(args, connection, config) -> str:
        name = _name(args)
        with backends.transaction(connection):
            if not transactions.set_banned(connection, fold(name), banned, _now()):
                raise AdminError(f"there is no user {name}")
        return f"{'banned' if banned else 'unbanned'} {name}"

    command.__doc__ = "Ban an account." if banned else "Lift an account's ban."
    return command


def user_kick(args, connection, config) -> str:
    """Close the account's live sessions (BYE kicked); it may log in again."""
    name = _name(args)
    with backends.transaction(connection):
        if not transactions.user_exists(connection, fold(name)):
            raise AdminError(f"there is no user {name}")
        transactions.record_account_event(connection, fold(name), "kick", _now())
    return f"kicked {name}"


def user_list(args, connection, config) -> str:
    """List the accounts."""
    users = transactions.list_users(connection)
    return "\n".join(f"{name}{'  (banned)' if banned else ''}" for name, banned in users)


USER_COMMANDS = {
    "add": user_add,
    "passwd": user_passwd,
    "del": user_del,
    "ban": _set_banned(True),
    "unban": _set_banned(False),
    "kick": user_kick,
    "list": user_list,
}


# As the protocol refuses them in relayed text: they would forge lines or drive terminals.
_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f-\x9f]")


def room_list(args, connection, config) -> str:
    """List the rooms: members, private or secret or not, operators, topic."""
    lines = []
    for room in transactions.list_rooms(connection):
        noun = "member" if room.members == 1 else "members"
        parts = [f"{room.name}  {room.members} {noun}"]
        if room.private:
            parts.append("private")
        if room.secret:
            parts.append("secret")
        if room.operators:
            parts.append("operators: " + " ".join(room.operators))
        if room.topic:
            parts.append(f"topic: {room.topic}")
        lines.append("  ".join(parts))
    return "\n".join(lines)


def _room_change(action: str, doc: str):
    def command(args, connection, config) -> str:
        try:
            room = require_room_name(args.room)
            user = "" if action == "topic" else require_user_name(args.user)
        except ChatError as error:
            raise AdminError(error.text) from None
        detail = args.text if action == "topic" else getattr(args, "reason", "") or ""
        if _CONTROL.search(detail):
            raise AdminError("the text may not contain control characters (other than TAB)")
        try:
            with backends.transaction(connection):
                return transactions.admin_room_change(
                    connection, action, fold(room), fold(user), detail, _now()
                )
        except ChatError as error:
            raise AdminError(error.text) from None

    command.__doc__ = doc
    return command


ROOM_COMMANDS = {
    "list": room_list,
    "op": _room_change("op", "Make a member an operator of a room."),
    "deop": _room_change("deop", "Take a member's operator status."),
    "kick": _room_change("kick", "Remove a member from a room (KICK ... by *admin)."),
    "ban": _room_change("ban", "Ban an account from a room, kicking it if a member."),
    "unban": _room_change("unban", "Lift an account's ban from a room."),
    "topic": _room_change("topic", "Set a room's topic (an empty text clears it)."),
}


def db_backup(args, path: str) -> str:
    """Copy the database, consistently, while the server runs (SQLite; PostgreSQL: pg_dump)."""
    if is_postgres_url(path):
        raise AdminError(
            "on PostgreSQL, back up with pg_dump (pg_dump -Fc -f chatd.dump URL;"
            " see docs/deploy.md), which also works while the server runs"
        )
    result = dbtools.backup(path, args.path)
    return f"backed up {path} to {result.path}: {result.bytes} bytes in {result.seconds:.2f}s"


def db_check(args, path: str) -> str:
    """Run SQLite's integrity check; exit status 1 when anything is wrong."""
    if is_postgres_url(path):
        problems = dbtools.postgres_problems(path)
        shown = backends.display_name(path)
        if problems:
            raise AdminError(f"{shown} has problems:\n" + "\n".join(problems))
        return f"{shown}: ok"
    connection = dbtools.open_existing(path)
    try:
        problems = dbtools.integrity_problems(connection)
    finally:
        connection.close()
    if problems:
        raise AdminError(f"{path} has problems:\n" + "\n".join(problems))
    return f"{path}: ok"


def db_stats(args, path: str) -> str:
    """Print row counts, time spans and sizes."""
    if is_postgres_url(path):
        return dbtools.postgres_stats_report(path)
    return dbtools.stats_report(path)


def db_init(args, path: str) -> str:
    """Create the database (or bring an existing one to this chatd's schema)."""
    if is_postgres_url(path):
        return _postgres_init(path)
    target = Path(path)
    if not target.parent.is_dir():
        raise AdminError(f"directory {target.parent} does not exist")
    existed = target.exists()
    connection = _connect(path)
    try:
        found = _schema_version(connection, path)
        schema.migrate(connection)
    finally:
        connection.close()
    if not existed:
        return f"created {path} at schema version {schema.SCHEMA_VERSION}"
    if found == schema.SCHEMA_VERSION:
        return f"{path} is already at schema version {found}"
    return f"upgraded {path} from schema version {found} to {schema.SCHEMA_VERSION}"


def _postgres_init(url: str) -> str:
    from chatd.storage.postgres import schema as postgres_schema

    shown = postgres_schema.display_url(url)
    connection = postgres_schema.connect(url)
    try:
        found = postgres_schema.schema_version(connection)
        if found > postgres_schema.SCHEMA_VERSION:
            raise AdminError(
                f"{shown}: schema version {found} is newer than this chatd's"
                f" ({postgres_schema.SCHEMA_VERSION}); use the chatd that wrote it"
            )
        postgres_schema.migrate(connection)
    finally:
        connection.close()
    version = postgres_schema.SCHEMA_VERSION
    if found == 0:
        return f"created chatd's tables in {shown} at schema version {version}"
    if found == version:
        return f"{shown} is already at schema version {found}"
    return f"upgraded {shown} from schema version {found} to {version}"


def db_copy(args, path: str) -> str:
    """Copy a single-node SQLite database into PostgreSQL, verified by row counts.

    Give the SQLite file and the postgresql:// URL of an empty database. Stop
    the server first: what it writes during the copy would not be copied.
    Every table is copied in one transaction, ids and all; the rows of each
    table are counted on both sides before it commits, and any difference
    keeps nothing.
    """
    from chatd.storage.postgres import copy

    if not is_postgres_url(args.target):
        raise AdminError(f"{args.target} is not a postgresql:// URL")
    source = dbtools.open_existing(args.source)
    try:
        result = copy.copy_sqlite_to_postgres(source, args.target)
    except copy.CopyError as error:
        raise AdminError(str(error)) from None
    finally:
        source.close()
    counts = ", ".join(f"{table} {rows}" for table, rows in result.rows.items())
    return (
        f"copied {args.source} to {backends.display_name(args.target)};"
        f" rows (equal on both sides): {counts}"
    )


DB_COMMANDS = {
    "init": db_init, "backup": db_backup, "check": db_check, "stats": db_stats, "copy": db_copy,
}


def _connect(path: str) -> sqlite3.Connection:
    if Path(path).is_dir():
        raise AdminError(f"{path} is a directory, not a database file")
    try:
        return schema.connect(path)
    except sqlite3.DatabaseError as error:
        raise AdminError(f"{path}: {_sqlite_problem(error)}") from None


def _sqlite_problem(error: sqlite3.Error) -> str:
    if "file is not a database" in str(error):
        return "not an SQLite database (file is not a database)"
    return str(error)


def _schema_version(connection: sqlite3.Connection, path: str) -> int:
    """The file's schema version; refuse one written by a newer chatd."""
    try:
        found = schema.schema_version(connection)
    except sqlite3.DatabaseError as error:
        raise AdminError(f"{path}: {_sqlite_problem(error)}") from None
    if found > schema.SCHEMA_VERSION:
        raise AdminError(
            f"{path}: schema version {found} is newer than this chatd's"
            f" ({schema.SCHEMA_VERSION}); use the chatd that wrote it"
        )
    return found


def open_chatd_database(path: str) -> sqlite3.Connection:
    """Open the chatd database at ``path`` for the user commands; never create one.

    An older schema is migrated (as the server would on start); a missing
    file, a file that is not a chatd database and a newer schema are errors.
    ``path`` may be a ``postgresql://`` URL: an empty database is an error there too.
    """
    if is_postgres_url(path):
        return _open_postgres(path)
    if not Path(path).exists():
        raise AdminError(f"there is no database at {path} (`chatd db init` creates one)")
    connection = _connect(path)
    try:
        if _schema_version(connection, path) == 0:
            raise AdminError(
                f"{path} is not a chatd database (empty; `chatd db init` makes it one)"
            )
        schema.migrate(connection)
    except BaseException:
        connection.close()
        raise
    return connection


def _open_postgres(url: str):
    from chatd.storage.postgres import schema as postgres_schema

    shown = postgres_schema.display_url(url)
    connection = postgres_schema.connect(url)
    try:
        found = postgres_schema.schema_version(connection)
        if found == 0:
            raise AdminError(
                f"{shown} is not a chatd database (empty; `chatd db init` makes it one)"
            )
        if found > postgres_schema.SCHEMA_VERSION:
            raise AdminError(
                f"{shown}: schema version {found} is newer than this chatd's"
                f" ({postgres_schema.SCHEMA_VERSION}); use the chatd that wrote it"
            )
        postgres_schema.migrate(connection)
    except BaseException:
        connection.close()
        raise
    return connection


def _tell_the_cluster(url: str) -> None:
    """Cluster mode: announce the change on Redis, so every node shows it at once; if
    Redis cannot be reached, the nodes' poll finds it (a warning says so)."""
    from chatd.cluster.notify import announce_account_events
    from chatd.config import redacted_url

    try:
        announce_account_events(url)
    except OSError as error:
        print(
            f"chatd: warning: CHATD_REDIS={redacted_url(url)}: could not announce the change"
            f" ({error or type(error).__name__}); the nodes see it within"
            " CHATD_ACCOUNT_POLL_SECONDS",
            file=sys.stderr,
        )


def _postgres_error(error: Exception) -> bool:
    """True for psycopg's errors (psycopg is imported only when PostgreSQL is used)."""
    return type(error).__module__.startswith("psycopg")


class _ParagraphsFormatter(argparse.HelpFormatter):
    """Wraps a description paragraph by paragraph, keeping the blank lines between them."""

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        return "\n\n".join(
            super(_ParagraphsFormatter, self)._fill_text(paragraph, width, indent)
            for paragraph in text.split("\n\n")
        )


def _help_of(command) -> tuple[str, str]:
    """A command's one-line summary (for the list of commands) and its description.

    The description is the whole docstring without its source indentation
    and reStructuredText quoting; argparse rewraps each paragraph to the
    terminal's width.
    """
    text = inspect.cleandoc(command.__doc__ or "").replace("``", "`")
    summary = text.split("\n\n", 1)[0].replace("\n", " ")
    return summary, text


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``chatd``."""
    parser = argparse.ArgumentParser(prog="chatd", description="chatd administration")
    parser.add_argument("--version", action="version", version=f"chatd {__version__}")
    parser.add_argument(
        "--db",
        help="the database file or postgresql:// URL (default: $CHATD_DB or chatd.sqlite3)",
    )
    areas = parser.add_subparsers(dest="area", required=True)
    user = areas.add_parser("user", help="manage accounts")
    actions = user.add_subparsers(dest="action", required=True)
    for action, command in USER_COMMANDS.items():
        summary, description = _help_of(command)
        sub = actions.add_parser(
            action, help=summary, description=description, formatter_class=_ParagraphsFormatter
        )
        # Accepted after the action too; SUPPRESS keeps it from hiding the global --db.
        sub.add_argument("--db", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
        if action != "list":
            sub.add_argument("name", help="the user name")
        if action in ("add", "passwd"):
            sub.add_argument(
                "--password-stdin", action="store_true", help="read the password from stdin"
            )
        if action == "del":
            sub.add_argument(
                "--erase-messages",
                action="store_true",
                help="also delete every room message and waiting direct message they sent",
            )
        sub.set_defaults(run=command)
    room = areas.add_parser("room", help="manage rooms")
    actions = room.add_subparsers(dest="action", required=True)
    for action, command in ROOM_COMMANDS.items():
        summary, description = _help_of(command)
        sub = actions.add_parser(
            action, help=summary, description=description, formatter_class=_ParagraphsFormatter
        )
        sub.add_argument("--db", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
        if action != "list":
            sub.add_argument("room")
        if action == "topic":
            sub.add_argument("text", help="the new topic; an empty string clears it")
        elif action != "list":
            sub.add_argument("user")
        if action == "kick":
            sub.add_argument("--reason", default="", help="shown to the room with the KICK")
        sub.set_defaults(run=command)
    database = areas.add_parser("db", help="back up, check and measure the database")
    actions = database.add_subparsers(dest="action", required=True)
    for action, command in DB_COMMANDS.items():
        summary, description = _help_of(command)
        sub = actions.add_parser(
            action, help=summary, description=description, formatter_class=_ParagraphsFormatter
        )
        sub.add_argument("--db", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
        if action == "backup":
            sub.add_argument("path", help="the backup file to write (replaced if it exists)")
        if action == "copy":
            sub.add_argument("source", help="the SQLite database file to copy")
            sub.add_argument("target", help="the postgresql:// URL of an empty database")
        sub.set_defaults(run=command)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run one admin command; 0 on success, 1 when it cannot be done, 2 on bad usage.

    Every failure is one line on stderr, never a traceback.
    """
    args = build_parser().parse_args(argv)
    try:
        config = Config.from_environ()
    except ConfigError as error:
        print(f"chatd: {error}", file=sys.stderr)
        return 2
    for warning in Config.unknown_variables():
        print(f"chatd: warning: {warning}", file=sys.stderr)
    path = args.db or config.db_path
    try:
        if args.area == "db":
            # Taken as it is: a backup or a check must not migrate what it reads.
            output = args.run(args, path)
        else:
            connection = open_chatd_database(path)
            try:
                output = args.run(args, connection, config)
            finally:
                connection.close()
            if config.redis_url is not None and args.action != "list":
                _tell_the_cluster(config.redis_url)
    except (AdminError, dbtools.DatabaseToolError) as error:
        print(f"chatd: {error}", file=sys.stderr)
        return 1
    except sqlite3.Error as error:
        print(f"chatd: {path}: {_sqlite_problem(error)}", file=sys.stderr)
        return 1
    except Exception as error:
        if not _postgres_error(error):
            raise
        reason = " ".join(str(error).split()) or type(error).__name__
        print(f"chatd: {backends.display_name(path)}: PostgreSQL: {reason}", file=sys.stderr)
        return 1
    except OSError as error:
        where = error.filename2 or error.filename
        print(f"chatd: {where}: {error.strerror}" if where else f"chatd: {error}",
              file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("chatd: interrupted", file=sys.stderr)
        return 130
    if output:
        print(output)
    return 0
