"""chatd's named transactions: every read and write of its data, as SQL.

Every function taking a ``connection`` first is a transaction body: it runs
inside a transaction that its caller opens and commits (``Database.write``
in the server, ``schema.transaction`` in the admin command line), so the
same code serves both. A Deferred returned by ``Database.write`` fires only
after the batch holding that write has been committed, which is what lets
the server answer ``OK`` only for data that survives ``kill -9``."""

import secrets
from collections.abc import Callable, Sequence
from contextlib import suppress
from typing import Any

from chatd.core.errors import ChatError
from chatd.core.names import skeleton
from chatd.storage.dialect import INSERT_ROOM_MESSAGE, Connection, dialect_of
from chatd.storage.rows import (
    ADMIN,
    LOBBY_KEY,
    SAY,
    Account,
    AccountEvent,
    Arrival,
    Banned,
    DatabaseStats,
    DirectRow,
    HistoryMark,
    HistoryRow,
    RoomListing,
    RoomState,
    StoredRow,
    TableStats,
    Whois,
)
from chatd.storage.sqlite.schema import SKELETON_SQL

# --- accounts --------------------------------------------------------------


def create_user(
    connection: Connection, name: str, password_hash: str, now: int
) -> int:
    """Add an account; return its id; raise ``user-exists`` if the name is taken in any case.

    A name that looks like an existing one (``aIice`` beside ``alice``: the
    same ``names.skeleton``) counts as taken too. A ``create`` event tells
    running servers that any session still open under this name belongs to
    an account gone before it.
    """
    look_alike = connection.execute(
        f"SELECT name FROM users WHERE {SKELETON_SQL} = ? AND name_key != ?",
        (skeleton(name), name.lower()),
    ).fetchone()
    if look_alike is not None:
        raise ChatError("user-exists", f"{name} is taken: it looks like {look_alike[0]}")
    created = connection.execute(
        "INSERT INTO users (name_key, name, password_hash, created_at, incarnation)"
        " VALUES (?, ?, ?, ?, ?) ON CONFLICT DO NOTHING RETURNING id",
        (name.lower(), name, password_hash, now, secrets.randbits(62) + 1),
    ).fetchone()
    if created is None:
        raise ChatError("user-exists", f"{name} is taken")
    record_account_event(connection, name.lower(), "create", now)
    return created[0]


def find_account(connection: Connection, name_key: str) -> Account | None:
    """Return the account stored under ``name_key``, or None."""
    row = connection.execute(
        "SELECT name, password_hash, banned, id, incarnation FROM users WHERE name_key = ?",
        (name_key,),
    ).fetchone()
    return None if row is None else Account(row[0], row[1], bool(row[2]), row[3], row[4])


def find_account_for_login(
    connection: Connection, name_key: str
) -> tuple[Account | None, int]:
    """The account under ``name_key`` and the newest account event id, read together.

    A login notes the event id before its password check, so the check made
    again when its session starts sees every change made meanwhile.
    """
    return find_account(connection, name_key), last_account_event_id(connection)


def account_changes_since(
    connection: Connection, name_key: str, after_id: int
) -> tuple[Account | None, list[str], int]:
    """The account under ``name_key`` now, the actions on that name since event
    ``after_id`` (oldest first), and the newest event id."""
    account = find_account(connection, name_key)
    rows = connection.execute(
        "SELECT action FROM account_events WHERE name_key = ? AND id > ? ORDER BY id",
        (name_key, after_id),
    )
    return account, [action for (action,) in rows], last_account_event_id(connection)


def change_password_hash(
    connection: Connection, identity: tuple[int, int], password_hash: str, now: int
) -> int | None:
    """Set the password of the account ``identity`` (a password change); return the id
    of the ``passwd`` event that ends the account's other sessions, None if it is gone."""
    account_id, incarnation = identity
    row = connection.execute(
        "SELECT name_key FROM users WHERE id = ? AND incarnation = ?", (account_id, incarnation)
    ).fetchone()
    if row is None:
        return None
    connection.execute(
        "UPDATE users SET password_hash = ? WHERE id = ?", (password_hash, account_id)
    )
    record_account_event(connection, row[0], "passwd", now)
    return last_account_event_id(connection)


def upgrade_password_hash(
    connection: Connection, account_id: int, old_hash: str, new_hash: str
) -> bool:
    """Replace an account's hash by the same password at the current cost, unless the
    password changed meanwhile; not a password change, so no event."""
    cursor = connection.execute(
        "UPDATE users SET password_hash = ? WHERE id = ? AND password_hash = ?",
        (new_hash, account_id, old_hash),
    )
    return cursor.rowcount == 1


def user_exists(connection: Connection, name_key: str) -> bool:
    """Tell whether an account is stored under ``name_key``."""
    row = connection.execute("SELECT 1 FROM users WHERE name_key = ?", (name_key,)).fetchone()
    return row is not None


def set_password_hash(
    connection: Connection, name_key: str, password_hash: str, now: int | None = None
) -> bool:
    """Replace an account's password hash; return False if there is no such account.

    Given ``now``, it is a password change: a ``passwd`` event ends the
    account's sessions and the logins in progress.
    """
    cursor = connection.execute(
        "UPDATE users SET password_hash = ? WHERE name_key = ?", (password_hash, name_key)
    )
    if cursor.rowcount == 1 and now is not None:
        record_account_event(connection, name_key, "passwd", now)
    return cursor.rowcount == 1


def set_banned(connection: Connection, name_key: str, banned: bool, now: int) -> bool:
    """Ban or unban an account; return False if there is no such account."""
    cursor = connection.execute(
        "UPDATE users SET banned = ? WHERE name_key = ?", (banned, name_key)
    )
    if cursor.rowcount != 1:
        return False
    record_account_event(connection, name_key, "ban" if banned else "unban", now)
    return True


def delete_user(connection: Connection, name_key: str, now: int) -> bool:
    """Delete an account and the direct messages waiting for it."""
    cursor = connection.execute("DELETE FROM users WHERE name_key = ?", (name_key,))
    if cursor.rowcount != 1:
        return False
    record_account_event(connection, name_key, "delete", now)
    return True


def list_users(connection: Connection) -> list[tuple[str, bool]]:
    """Every account's name and whether it is banned, sorted case-insensitively."""
    rows = connection.execute("SELECT name, banned FROM users ORDER BY name_key")
    return [(name, bool(banned)) for name, banned in rows]


def record_account_event(
    connection: Connection, name_key: str, action: str, now: int
) -> None:
    """Note a change the running server must act on (a ban, a deletion)."""
    dialect_of(connection).serialize_account_events(connection)
    connection.execute(
        "INSERT INTO account_events (name_key, action, at) VALUES (?, ?, ?)",
        (name_key, action, now),
    )


def last_account_event_id(connection: Connection) -> int:
    """The id of the newest account event, 0 when there is none."""
    return connection.execute("SELECT coalesce(max(id), 0) FROM account_events").fetchone()[0]


def account_events_since(connection: Connection, after_id: int) -> list[AccountEvent]:
    """Account events newer than ``after_id``, oldest first."""
    rows = connection.execute(
        "SELECT id, name_key, action, room_key, user_name, detail, actor, at FROM account_events"
        " WHERE id > ? ORDER BY id",
        (after_id,),
    )
    return [AccountEvent(*row) for row in rows]


# --- rooms and their history -------------------------------------------------


def open_room(
    connection: Connection, name: str, now: int, history_limit: int
) -> tuple[int, str, list[HistoryRow]]:
    """Find or create a room; return its id, display name and recent history."""
    connection.execute(
        "INSERT INTO rooms (name_key, name, created_at) VALUES (?, ?, ?) ON CONFLICT DO NOTHING",
        (name.lower(), name, now),
    )
    room_id, display_name = connection.execute(
        "SELECT id, name FROM rooms WHERE name_key = ?", (name.lower(),)
    ).fetchone()
    return room_id, display_name, recent_room_messages(connection, room_id, history_limit)


def require_sender(
    connection: Connection, sender: str, account: tuple[int, int] | None = None
) -> None:
    """Raise ``forbidden`` unless the account of ``sender`` (a display name) still exists,
    and is still ``account`` (its identity) when a session bound to one sends: a
    name deleted and registered again (the admin command line, in another
    process) is another account, whose name the old sessions must not use.

    Checked inside the transaction that stores the message: a deletion
    committed before it is seen, so no message of a deleted account is ever
    committed (or answered ``OK``) after the deletion, and erasing its
    messages once the deletion has committed finds every one of them.
    """
    if account is None:
        exists = user_exists(connection, sender.lower())
    else:
        exists = account_identities(connection, (sender.lower(),)).get(sender.lower()) == account
    if not exists:
        raise ChatError("forbidden", "your account has been deleted")


def account_identities(
    connection: Connection, name_keys: tuple[str, ...]
) -> dict[str, tuple[int, int]]:
    """The identity (users.id, users.incarnation) of each of ``name_keys`` that is an account."""
    if not name_keys:
        return {}
    marks = ", ".join("?" * len(name_keys))
    rows = connection.execute(
        f"SELECT name_key, id, incarnation FROM users WHERE name_key IN ({marks})", name_keys
    ).fetchall()
    return {name_key: (user_id, incarnation) for name_key, user_id, incarnation in rows}


def post_room_message(
    connection: Connection,
    room_id: int,
    sender: str,
    text: str,
    now: int,
    kind: str = SAY,
    account: tuple[int, int] | None = None,
    msgid: str | None = None,
) -> int:
    """What a session's room message commits: ``add_room_message`` if its sender still
    exists (as ``account``, the identity its session is bound to, if given)."""
    if account is not None and msgid is not None:
        # The hot path: check, number and insert in as few statements as the
        # database allows (one on PostgreSQL); nothing is written if the check fails.
        seq = dialect_of(connection).append_room_message(
            connection,
            _SENDER_IS_ACCOUNT,
            (sender.lower(), *account),
            (room_id, sender, text, now, kind, msgid),
        )
        if seq is not None:
            return seq
    require_sender(connection, sender, account)
    return add_room_message(connection, room_id, sender, text, now, kind, msgid)


def post_room_messages(connection: Connection, posts: Sequence[tuple]) -> list[int | ChatError]:
    """``post_room_message`` for a run of posts, in their order: the writer's form for
    many posts in one batch (``RUN_TOGETHER``).

    Each post is ``post_room_message``'s arguments after the connection. Each
    distinct sender is checked (all in one query), each room is numbered once
    for all of its posts, and the rows go in together (the dialect's
    ``insert_room_messages``): a few statements for the run instead of one or
    two per post. A room's numbers are taken in the posts' order, so the
    writer still reports each room's commits in sequence order. Rooms are
    numbered in the order of their ids: two nodes' runs over the same rooms
    take the rooms' row locks in one order, so they never deadlock.

    Returns each post's seq, or the ``ChatError`` that refuses it (nothing is
    written for a refused post). Posts without an account or a msgid (never
    the service's) are run one by one, as ``post_room_message`` runs them.
    """
    if any(len(post) < 7 or post[5] is None or post[6] is None for post in posts):
        return [_refusal_or(post_room_message, connection, *post) for post in posts]
    # require_sender's check, once for each sender.
    identities = account_identities(connection, tuple({post[1].lower() for post in posts}))
    results: list[int | ChatError | None] = [None] * len(posts)
    by_room: dict[int, list[int]] = {}
    for index, (room_id, sender, _text, _now, _kind, account, _msgid) in enumerate(posts):
        if identities.get(sender.lower()) == tuple(account):
            by_room.setdefault(room_id, []).append(index)
        else:
            # Refused as one post is, with the same error.
            results[index] = _refusal_or(require_sender, connection, sender, account)
    rows = []
    for room_id in sorted(by_room):
        indexes = by_room[room_id]
        (last,) = connection.execute(
            "UPDATE rooms SET last_seq = last_seq + ? WHERE id = ? RETURNING last_seq",
            (len(indexes), room_id),
        ).fetchone()
        for seq, index in enumerate(indexes, last - len(indexes) + 1):
            results[index] = seq
            _, sender, text, now, kind, _, msgid = posts[index]
            rows.append((room_id, sender, text, now, kind, seq, msgid))
    if rows:
        dialect_of(connection).insert_room_messages(connection, rows)
    if None in results:
        raise AssertionError("a post was neither numbered nor refused")
    return results


def _refusal_or(body: Callable[..., Any], connection: Connection, *args: Any) -> Any:
    """``body``'s result, or the ChatError it refuses with (other errors propagate)."""
    try:
        return body(connection, *args)
    except ChatError as refusal:
        return refusal


# Transactions with a form for a run of them (the writer's ``RUN_TOGETHER``):
# one call of the form, given each write's arguments, returns each write's
# result or the ChatError refusing it, as the writes one by one would.
RUN_TOGETHER: dict[Callable[..., Any], Callable[[Connection, Sequence[tuple]], list]] = {
    post_room_message: post_room_messages,
}


# ``append_room_message``'s conditions: the sender is still the account its
# session is bound to; the guest's name is still no account's.
_SENDER_IS_ACCOUNT = (
    "EXISTS (SELECT 1 FROM users WHERE name_key = ? AND id = ? AND incarnation = ?)"
)
_NAME_IS_NO_ACCOUNT = "NOT EXISTS (SELECT 1 FROM users WHERE name_key = ?)"


def post_guest_message(
    connection: Connection,
    room_id: int,
    sender: str,
    text: str,
    now: int,
    kind: str = SAY,
    msgid: str | None = None,
) -> int:
    """What a guest's room message commits (``CHATD_GUESTS``): ``add_room_message``
    unless an account has taken the guest's name meanwhile (``forbidden``)."""
    if msgid is not None:
        seq = dialect_of(connection).append_room_message(
            connection,
            _NAME_IS_NO_ACCOUNT,
            (sender.lower(),),
            (room_id, sender, text, now, kind, msgid),
        )
        if seq is not None:
            return seq
    if user_exists(connection, sender.lower()):
        raise ChatError("forbidden", f"{sender} is an account now: log in to speak as {sender}")
    return add_room_message(connection, room_id, sender, text, now, kind, msgid)


def add_room_message(
    connection: Connection,
    room_id: int,
    sender: str,
    text: str,
    now: int,
    kind: str = SAY,
    msgid: str | None = None,
) -> int:
    """Append a message (``SAY``) or an action (``ACTION``) to a room's history.

    Returns the message's sequence number in the room: the room's next,
    taken in this transaction, so a room's numbers have no gaps and a
    rolled-back message gives its number back. ``msgid`` is the id the
    core made (chatd.core.ids); without one the message gets the migration's
    form of an id.
    """
    (seq,) = connection.execute(
        "UPDATE rooms SET last_seq = last_seq + 1 WHERE id = ? RETURNING last_seq", (room_id,)
    ).fetchone()
    if msgid is not None:
        connection.execute(INSERT_ROOM_MESSAGE, (room_id, sender, text, now, kind, seq, msgid))
        return seq
    (row_id,) = connection.execute(
        INSERT_ROOM_MESSAGE + " RETURNING id", (room_id, sender, text, now, kind, seq, "")
    ).fetchone()
    connection.execute(
        "UPDATE room_messages SET msgid = ? WHERE id = ?", (legacy_msgid(now, row_id), row_id)
    )
    return seq


def legacy_msgid(sent_at: int, row_id: int) -> str:
    """The id storage gives a message written without one (the admin tools, scripts and
    tests): the form migration 6 gave old messages, chatd.core.ids's layout with node 0000."""
    return f"{sent_at:011x}0000{row_id & 1048575:05x}"


_HISTORY_COLUMNS = "id, sender, text, sent_at, kind, seq, msgid"


def recent_room_messages(
    connection: Connection, room_id: int, limit: int
) -> list[HistoryRow]:
    """The last ``limit`` messages of a room, oldest first: one index range read."""
    rows = connection.execute(
        f"SELECT {_HISTORY_COLUMNS} FROM room_messages"
        " WHERE room_id = ? ORDER BY seq DESC LIMIT ?",
        (room_id, limit),
    ).fetchall()
    return [HistoryRow(*row) for row in reversed(rows)]


def room_history_bounds(
    connection: Connection, room_id: int, count: int
) -> tuple[int, int] | None:
    """The first and last sequence numbers of a room's last ``count`` messages, or None."""
    low, high = connection.execute(
        "SELECT min(seq), max(seq) FROM"
        " (SELECT seq FROM room_messages WHERE room_id = ? ORDER BY seq DESC LIMIT ?) AS last",
        (room_id, count),
    ).fetchone()
    return None if low is None else (low, high)


def room_messages_between(
    connection: Connection, room_id: int, first_seq: int, last_seq: int, limit: int
) -> list[HistoryRow]:
    """Up to ``limit`` messages of a room numbered ``first_seq`` to ``last_seq``, in order."""
    rows = connection.execute(
        f"SELECT {_HISTORY_COLUMNS} FROM room_messages"
        " WHERE room_id = ? AND seq BETWEEN ? AND ? ORDER BY seq LIMIT ?",
        (room_id, first_seq, last_seq, limit),
    ).fetchall()
    return [HistoryRow(*row) for row in rows]


def _user(connection: Connection, name_key: str) -> tuple[int, str]:
    """The id and display name of an account; ``no-such-user`` if there is none."""
    row = connection.execute(
        "SELECT id, name FROM users WHERE name_key = ?", (name_key,)
    ).fetchone()
    if row is None:
        raise ChatError("no-such-user", f"there is no user {name_key}")
    return row[0], row[1]


def _room(connection: Connection, room_key: str) -> tuple[int, str, bool]:
    """The id, display name and private flag of a room; ``no-such-room`` if none."""
    row = connection.execute(
        "SELECT id, name, private FROM rooms WHERE name_key = ?", (room_key,)
    ).fetchone()
    if row is None:
        raise ChatError("no-such-room", f"there is no room {room_key}")
    return row[0], row[1], bool(row[2])


def _membership(connection: Connection, room_id: int, user_id: int) -> bool | None:
    """None when not a member, else whether the member is an operator."""
    row = connection.execute(
        "SELECT operator FROM room_members WHERE room_id = ? AND user_id = ?", (room_id, user_id)
    ).fetchone()
    return None if row is None else bool(row[0])


def room_operators(connection: Connection, room_id: int) -> tuple[str, ...]:
    """The display names of a room's operators, sorted case-insensitively."""
    rows = connection.execute(
        "SELECT u.name FROM room_members AS m JOIN users AS u ON u.id = m.user_id"
        " WHERE m.room_id = ? AND m.operator ORDER BY u.name_key",
        (room_id,),
    )
    return tuple(row[0] for row in rows)


def load_room(
    connection: Connection, name: str, now: int, history_limit: int
) -> RoomState:
    """Find (or create) a room; return all the server keeps of it."""
    room_id, display_name, recent = open_room(connection, name, now, history_limit)
    topic, setter, private, topic_open, moderated, secret, topic_at = connection.execute(
        "SELECT topic, topic_setter, private, topic_open, moderated, secret, topic_at"
        " FROM rooms WHERE id = ?",
        (room_id,),
    ).fetchone()
    operators = room_operators(connection, room_id)
    return RoomState(
        room_id, display_name, topic, setter, bool(private), operators, recent,
        bool(topic_open), room_voiced(connection, room_id), bool(moderated), bool(secret),
        topic_at,
    )


def room_voiced(connection: Connection, room_id: int) -> tuple[str, ...]:
    """The display names of a room's voiced members (IRC's +v), sorted case-insensitively."""
    rows = connection.execute(
        "SELECT u.name FROM room_members AS m JOIN users AS u ON u.id = m.user_id"
        " WHERE m.room_id = ? AND m.voice ORDER BY u.name_key",
        (room_id,),
    )
    return tuple(row[0] for row in rows)


def set_voice(connection: Connection, room_id: int, user_key: str, voice: bool) -> str:
    """Give a member voice (IRC's +v) or take it; return their display name.

    ``no-such-user`` when there is no such account or it is not a member.
    """
    user_id, name = _user(connection, user_key)
    changed = connection.execute(
        "UPDATE room_members SET voice = ? WHERE room_id = ? AND user_id = ?",
        (voice, room_id, user_id),
    ).rowcount
    if not changed:
        raise ChatError("no-such-user", f"{name} is not a member")
    return name


def set_moderated(connection: Connection, room_id: int, moderated: bool) -> None:
    """Let only operators and voiced members speak in a room (IRC's +m), or everyone."""
    connection.execute("UPDATE rooms SET moderated = ? WHERE id = ?", (moderated, room_id))


def join_room(connection: Connection, name: str, user_key: str, now: int) -> str:
    """Make a user a member of a room, creating it; return the room's display name.

    The user who creates a room (any but #lobby) is its first operator. A
    user banned from the room, or not invited to a private room, is refused
    with ``forbidden``; joining uses up the invite.
    """
    user_id, _ = _user(connection, user_key)
    created = connection.execute(
        "INSERT INTO rooms (name_key, name, created_at) VALUES (?, ?, ?) ON CONFLICT DO NOTHING",
        (name.lower(), name, now),
    ).rowcount
    room_id, display_name, private = _room(connection, name.lower())
    if _membership(connection, room_id, user_id) is not None:
        return display_name
    banned = connection.execute(
        "SELECT 1 FROM room_bans WHERE room_id = ? AND user_id = ?", (room_id, user_id)
    ).fetchone()
    if banned:
        raise ChatError("forbidden", f"you are banned from {display_name}")
    invited = connection.execute(
        "DELETE FROM room_invites WHERE room_id = ? AND user_id = ?", (room_id, user_id)
    ).rowcount
    if private and not invited:
        raise ChatError("forbidden", f"{display_name} is private: you need an invitation")
    operator = bool(created) and name.lower() != LOBBY_KEY
    connection.execute(
        "INSERT INTO room_members (room_id, user_id, operator, joined_at) VALUES (?, ?, ?, ?)",
        (room_id, user_id, operator, now),
    )
    return display_name


def enter_room(
    connection: Connection,
    name: str,
    user_key: str,
    now: int,
    history_limit: int | None,
) -> tuple[str, RoomState | None]:
    """``join_room``, and the room's state too unless ``history_limit`` is None.

    One transaction where the server has not got the room loaded: the join
    costs one commit either way.
    """
    display_name = join_room(connection, name, user_key, now)
    if history_limit is None:
        return display_name, None
    return display_name, load_room(connection, display_name, now, history_limit)


def enter_room_as_guest(
    connection: Connection, name: str, now: int, history_limit: int | None
) -> tuple[str, RoomState | None, bool]:
    """A guest's join (``CHATD_GUESTS``): ``enter_room`` without a membership row; also
    says whether this join created the room.

    A guest has no account, so its membership lives only in memory: it
    creates the room if there is none (its operator only in memory, for as
    long as it stays: the service's business, never a row here) and is
    refused (``forbidden``) by a private room, which needs an invitation
    only an account can keep.
    """
    created = connection.execute(
        "INSERT INTO rooms (name_key, name, created_at) VALUES (?, ?, ?) ON CONFLICT DO NOTHING",
        (name.lower(), name, now),
    ).rowcount == 1
    _room_id, display_name, private = _room(connection, name.lower())
    if private:
        raise ChatError("forbidden", f"{display_name} is private: guests cannot join it")
    if history_limit is None:
        return display_name, None, created
    return display_name, load_room(connection, display_name, now, history_limit), created


def arrive(
    connection: Connection,
    user_key: str,
    now: int,
    loaded: frozenset[str] = frozenset(),
    history_limit: int = 50,
) -> Arrival:
    """A user's first session: rejoin #lobby, take the invites, note the time.

    Returns the user's rooms (#lobby first unless banned from it, then the
    others in the order joined: rowids grow) with the state of those whose keys are not
    in ``loaded``, the invites not yet shown (now marked shown) and the away
    text.
    """
    user_id, _ = _user(connection, user_key)
    # Banned from #lobby by an administrator: the other rooms still count.
    with suppress(ChatError):
        join_room(connection, "#lobby", user_key, now)
    names = [
        row[0]
        for row in connection.execute(
            "SELECT r.name FROM room_members AS m JOIN rooms AS r ON r.id = m.room_id"
            " WHERE m.user_id = ? ORDER BY r.name_key != ?, m.rowid",
            (user_id, LOBBY_KEY),
        )
    ]
    rooms = [
        (name, None if name.lower() in loaded else load_room(connection, name, now, history_limit))
        for name in names
    ]
    invites = connection.execute(
        "SELECT r.name, i.invited_by FROM room_invites AS i JOIN rooms AS r ON r.id = i.room_id"
        " WHERE i.user_id = ? AND NOT i.delivered ORDER BY i.invited_at, r.name_key",
        (user_id,),
    ).fetchall()
    if invites:
        connection.execute(
            "UPDATE room_invites SET delivered = TRUE WHERE user_id = ?", (user_id,)
        )
    (away,) = connection.execute(
        "UPDATE users SET last_seen = ? WHERE id = ? RETURNING away", (now, user_id)
    ).fetchone()
    return Arrival(rooms, [(room, by) for room, by in invites], away)


def leave_room(connection: Connection, room_id: int, user_key: str) -> bool:
    """End a membership (``/part``); return whether there was one."""
    return (
        connection.execute(
            "DELETE FROM room_members WHERE room_id = ?"
            " AND user_id = (SELECT id FROM users WHERE name_key = ?)",
            (room_id, user_key),
        ).rowcount
        == 1
    )


def set_topic(
    connection: Connection, room_id: int, text: str, setter: str, now: int
) -> None:
    """Set (or, with empty text, clear) a room's topic: who set it, and when (ms)."""
    connection.execute(
        "UPDATE rooms SET topic = ?, topic_setter = ?, topic_at = ? WHERE id = ?",
        (text, setter, now, room_id),
    )


def set_operator(
    connection: Connection, room_id: int, user_key: str, operator: bool
) -> tuple[str, tuple[str, ...]]:
    """Make a member an operator or not; return their name and the room's operators.

    ``no-such-user`` when there is no such account or it is not a member.
    """
    user_id, name = _user(connection, user_key)
    changed = connection.execute(
        "UPDATE room_members SET operator = ? WHERE room_id = ? AND user_id = ?",
        (operator, room_id, user_id),
    ).rowcount
    if not changed:
        raise ChatError("no-such-user", f"{name} is not a member")
    return name, room_operators(connection, room_id)


def remove_member(
    connection: Connection, room_id: int, user_key: str
) -> tuple[str, bool]:
    """Take a member out of a room (a kick); return their name and whether they were an operator.

    ``no-such-user`` when there is no such account or it is not a member.
    """
    user_id, name = _user(connection, user_key)
    operator = _membership(connection, room_id, user_id)
    if operator is None:
        raise ChatError("no-such-user", f"{name} is not a member")
    connection.execute(
        "DELETE FROM room_members WHERE room_id = ? AND user_id = ?", (room_id, user_id)
    )
    return name, operator


def ban_user(
    connection: Connection, room_id: int, user_key: str, by: str, now: int
) -> Banned:
    """Ban an account from a room, ending its membership and invitation."""
    user_id, name = _user(connection, user_key)
    operator = _membership(connection, room_id, user_id)
    connection.execute(
        "INSERT INTO room_bans (room_id, user_id, banned_by, banned_at)"
        " VALUES (?, ?, ?, ?) ON CONFLICT DO NOTHING",
        (room_id, user_id, by, now),
    )
    for table in ("room_members", "room_invites"):
        connection.execute(
            f"DELETE FROM {table} WHERE room_id = ? AND user_id = ?", (room_id, user_id)
        )
    return Banned(name, operator is not None, bool(operator))


def room_bans(connection: Connection, room_id: int) -> list[tuple[str, str, int]]:
    """A room's bans, oldest first: (banned account's name, banned by, when in ms)."""
    rows = connection.execute(
        "SELECT users.name, room_bans.banned_by, room_bans.banned_at FROM room_bans"
        " JOIN users ON users.id = room_bans.user_id WHERE room_bans.room_id = ?"
        " ORDER BY room_bans.banned_at, users.name_key",
        (room_id,),
    )
    return [(name, by, at) for name, by, at in rows]


def unban_user(connection: Connection, room_id: int, user_key: str) -> str:
    """Lift an account's ban from a room; return its display name."""
    user_id, name = _user(connection, user_key)
    connection.execute(
        "DELETE FROM room_bans WHERE room_id = ? AND user_id = ?", (room_id, user_id)
    )
    return name


def set_topic_open(connection: Connection, room_id: int, topic_open: bool) -> None:
    """Let every member set a room's topic (IRC's ``MODE -t``), or only its operators."""
    connection.execute("UPDATE rooms SET topic_open = ? WHERE id = ?", (topic_open, room_id))


def set_private(connection: Connection, room_id: int, private: bool) -> None:
    """Make a room private (members and invited users only) or public."""
    connection.execute("UPDATE rooms SET private = ? WHERE id = ?", (private, room_id))


def set_secret(connection: Connection, room_id: int, secret: bool) -> None:
    """Make a room secret (IRC's +s: listed and shown to its members only) or not."""
    connection.execute("UPDATE rooms SET secret = ? WHERE id = ?", (secret, room_id))


def invite_user(
    connection: Connection,
    room_id: int,
    user_key: str,
    by: str,
    now: int,
    delivered: bool,
) -> str:
    """Invite an account into a room; return its display name.

    ``delivered`` says whether the invited user was told at once; if not,
    their next login shows it.
    """
    user_id, name = _user(connection, user_key)
    connection.execute(
        "INSERT INTO room_invites (room_id, user_id, invited_by, invited_at, delivered)"
        " VALUES (?, ?, ?, ?, ?) ON CONFLICT (room_id, user_id) DO UPDATE SET"
        " invited_by = excluded.invited_by, invited_at = excluded.invited_at,"
        " delivered = excluded.delivered",
        (room_id, user_id, by, now, delivered),
    )
    return name


def visible_rooms(connection: Connection, user_key: str) -> list[tuple[str, int]]:
    """Rooms with members, with how many, for ``/rooms``: private and secret ones only to
    their members."""
    # Counted off the primary key's index, room by room; the asker's own rooms once.
    rows = connection.execute(
        "SELECT r.name, c.members FROM"
        " (SELECT room_id, count(*) AS members FROM room_members GROUP BY room_id) AS c"
        " JOIN rooms AS r ON r.id = c.room_id"
        " WHERE NOT (r.private OR r.secret)"
        " OR r.id IN (SELECT room_id FROM room_members WHERE user_id ="
        "  (SELECT id FROM users WHERE name_key = ?))"
        " ORDER BY r.name_key",
        (user_key,),
    )
    return [(name, count) for name, count in rows]


def is_member(connection: Connection, room_key: str, user_key: str) -> bool:
    """Tell whether a user is a member of a room."""
    row = connection.execute(
        "SELECT 1 FROM room_members AS m JOIN rooms AS r ON r.id = m.room_id"
        " JOIN users AS u ON u.id = m.user_id WHERE r.name_key = ? AND u.name_key = ?",
        (room_key, user_key),
    ).fetchone()
    return row is not None


def member_room_names(connection: Connection, user_key: str) -> list[tuple[str, str]]:
    """The (folded name, display name) of every room a user is a member of (cluster mode:
    the rooms to tell its ``PART`` in when the node it was on died)."""
    return [
        (key, name)
        for key, name in connection.execute(
            "SELECT r.name_key, r.name FROM room_members AS m JOIN rooms AS r ON r.id = m.room_id"
            " JOIN users AS u ON u.id = m.user_id WHERE u.name_key = ? ORDER BY r.name_key",
            (user_key,),
        )
    ]


def _mark_seq(connection: Connection, room_id: int, msgid: str) -> int | None:
    """The sequence number of a room's message of id ``msgid``; None if it has none.

    An id begins with the time it was made (chatd.ids), nearly always the
    message's ``sent_at``: found through the time index first, and only
    otherwise (a clock that stepped back) among the room's messages.
    """
    row = None
    try:
        made_at = int(msgid[:11], 16)
    except ValueError:
        made_at = None
    if made_at is not None:
        row = connection.execute(
            "SELECT seq FROM room_messages WHERE sent_at = ? AND room_id = ? AND msgid = ?",
            (made_at, room_id, msgid),
        ).fetchone()
    if row is None:
        row = connection.execute(
            "SELECT seq FROM room_messages WHERE room_id = ? AND msgid = ?", (room_id, msgid)
        ).fetchone()
    return None if row is None else row[0]


def _mark_condition(
    connection: Connection, room_id: int, mark: HistoryMark, operator: str
) -> tuple[str, int | None]:
    """An SQL condition placing messages against ``mark`` (``operator``: <, >, >=);
    its value is None for a message id the room does not have."""
    if mark.msgid:
        return f"seq {operator} ?", _mark_seq(connection, room_id, mark.msgid)
    return f"sent_at {operator} ?", mark.time


def _window(connection, select, order_column, conditions, arguments, limit, newest, row):
    """The rows of ``select`` meeting every condition, oldest first: up to ``limit`` of the
    newest if ``newest``, else of the oldest. A mark that found nothing (a None among the
    ``arguments``) finds nothing. The one paging query of room and direct history."""
    if None in arguments:
        return []
    order = "DESC" if newest else "ASC"
    rows = connection.execute(
        f"{select} WHERE {' AND '.join(conditions)} ORDER BY {order_column} {order} LIMIT ?",
        (*arguments, limit),
    ).fetchall()
    found = [row(*values) for values in rows]
    return found[::-1] if newest else found


def room_history_window(
    connection: Connection,
    room_id: int,
    after: HistoryMark | None,
    before: HistoryMark | None,
    limit: int,
    newest: bool,
    from_mark: bool = False,
) -> list[HistoryRow]:
    """Up to ``limit`` messages of a room strictly after ``after`` and before
    ``before`` (either may be None), oldest first: the newest of them if
    ``newest``, else the oldest. ``from_mark`` includes the message at ``after``.
    A message id the room does not have (expired, or never there) finds nothing.
    """
    conditions, arguments = ["room_id = ?"], [room_id]
    if after is not None:
        condition, value = _mark_condition(
            connection, room_id, after, ">=" if from_mark else ">"
        )
        conditions.append(condition)
        arguments.append(value)
    if before is not None:
        condition, value = _mark_condition(connection, room_id, before, "<")
        conditions.append(condition)
        arguments.append(value)
    return _window(
        connection, f"SELECT {_HISTORY_COLUMNS} FROM room_messages", "seq",
        conditions, arguments, limit, newest, HistoryRow,
    )


def room_history_around(
    connection: Connection, room_id: int, center: HistoryMark, limit: int
) -> list[HistoryRow]:
    """``limit`` messages of a room around ``center``, oldest first: ``(limit - 1) // 2``
    before it, then the message at it (or the first after a time) and those after."""
    earlier_count = (limit - 1) // 2
    earlier = (
        room_history_window(connection, room_id, None, center, earlier_count, True)
        if earlier_count
        else []
    )
    later = room_history_window(
        connection, room_id, center, None, limit - earlier_count, False, from_mark=True
    )
    return earlier + later


def room_history_targets(
    connection: Connection, room_ids: tuple[int, ...], after: int, before: int, limit: int
) -> list[tuple[str, int]]:
    """Rooms among ``room_ids`` whose last message was sent strictly between ``after``
    and ``before`` (Unix ms): ``(name, time of that message)``, earliest first, at most
    ``limit``. Each room's last message is one read of its sequence index."""
    found = []
    for room_id in room_ids:
        row = connection.execute(
            "SELECT r.name, m.sent_at FROM room_messages AS m JOIN rooms AS r ON r.id = m.room_id"
            " WHERE m.room_id = ? ORDER BY m.seq DESC LIMIT 1",
            (room_id,),
        ).fetchone()
        if row is not None and after < row[1] < before:
            found.append((row[0], row[1]))
    found.sort(key=lambda target: (target[1], target[0].lower()))
    return found[:limit]


# --- the history of direct messages ----------------------------------------------
#
# Apart from the mailbox (stored_messages: kept until delivered), every direct
# message that an account takes part in is kept in direct_history, one copy
# per account taking part (owner_id), under the other side's folded name
# (peer_key): a DM between two accounts is two rows, one to oneself one row,
# one between an account and a guest one row (the account's), and one between
# two guests none. A conversation is read in row order (the order of commits).


def record_direct_message(
    connection: Connection,
    sender: str,
    recipient: str,
    text: str,
    now: int,
    msgid: str,
    owners: tuple[str, ...],
    kind: str = SAY,
    account: tuple[int, int] | None = None,
) -> int:
    """Keep a direct message in the history of each of ``owners`` (folded names of the
    accounts taking part: the sender's and the recipient's, those that are accounts);
    return how many copies were kept. An owner that is no account keeps none.

    When the sender is among ``owners`` it must still exist (as ``account``, the
    identity its session is bound to, if given): ``forbidden`` otherwise.
    """
    sender_key = sender.lower()
    if sender_key in owners:
        require_sender(connection, sender, account)
    kept = 0
    for owner_key in dict.fromkeys(owners):
        peer = recipient if owner_key == sender_key else sender
        kept += connection.execute(
            "INSERT INTO direct_history"
            " (owner_id, peer_key, peer, sender, recipient, text, sent_at, kind, msgid)"
            " SELECT id, ?, ?, ?, ?, ?, ?, ?, ? FROM users WHERE name_key = ?",
            (peer.lower(), peer, sender, recipient, text, now, kind, msgid, owner_key),
        ).rowcount
    return kept


_DIRECT_COLUMNS = "id, sender, recipient, text, sent_at, kind, msgid"


def _owner_id(connection: Connection, owner_key: str) -> int | None:
    row = connection.execute("SELECT id FROM users WHERE name_key = ?", (owner_key,)).fetchone()
    return None if row is None else row[0]


def _direct_mark_id(
    connection: Connection, owner_id: int, peer_key: str, msgid: str
) -> int | None:
    """The row id of the message ``msgid`` in a conversation; None if it has none."""
    row = connection.execute(
        "SELECT id FROM direct_history WHERE owner_id = ? AND peer_key = ? AND msgid = ?",
        (owner_id, peer_key, msgid),
    ).fetchone()
    return None if row is None else row[0]


def direct_history_window(
    connection: Connection,
    owner_key: str,
    peer_key: str,
    after: HistoryMark | None,
    before: HistoryMark | None,
    limit: int,
    newest: bool,
    from_mark: bool = False,
) -> list[DirectRow]:
    """``room_history_window`` for the conversation of account ``owner_key`` with
    ``peer_key``: up to ``limit`` of its messages strictly between the marks, oldest
    first (the newest of them if ``newest``). Nothing for a name that is no account,
    or a message id the conversation does not have."""
    owner_id = _owner_id(connection, owner_key)
    if owner_id is None:
        return []
    conditions, arguments = ["owner_id = ?", "peer_key = ?"], [owner_id, peer_key]
    for mark, operator in ((after, ">=" if from_mark else ">"), (before, "<")):
        if mark is None:
            continue
        if mark.msgid:
            conditions.append(f"id {operator} ?")
            arguments.append(_direct_mark_id(connection, owner_id, peer_key, mark.msgid))
        else:
            conditions.append(f"sent_at {operator} ?")
            arguments.append(mark.time)
    return _window(
        connection, f"SELECT {_DIRECT_COLUMNS} FROM direct_history", "id",
        conditions, arguments, limit, newest, DirectRow,
    )


def direct_history_around(
    connection: Connection, owner_key: str, peer_key: str, center: HistoryMark, limit: int
) -> list[DirectRow]:
    """``room_history_around`` for a conversation."""
    earlier_count = (limit - 1) // 2
    earlier = (
        direct_history_window(connection, owner_key, peer_key, None, center, earlier_count, True)
        if earlier_count
        else []
    )
    later = direct_history_window(
        connection, owner_key, peer_key, center, None, limit - earlier_count, False,
        from_mark=True,
    )
    return earlier + later


def direct_history_targets(
    connection: Connection, owner_key: str, after: int, before: int, limit: int
) -> list[tuple[str, int]]:
    """The conversations of ``owner_key`` whose last message was sent strictly between
    ``after`` and ``before`` (Unix ms): ``(the other side's name, that message's time)``,
    earliest first, at most ``limit``."""
    owner_id = _owner_id(connection, owner_key)
    if owner_id is None:
        return []
    rows = connection.execute(
        "SELECT d.peer, d.sent_at FROM direct_history AS d JOIN"
        " (SELECT max(id) AS id FROM direct_history WHERE owner_id = ? GROUP BY peer_key)"
        " AS last ON last.id = d.id WHERE d.sent_at > ? AND d.sent_at < ?"
        " ORDER BY d.sent_at, d.peer_key LIMIT ?",
        (owner_id, after, before, limit),
    ).fetchall()
    return [(peer, sent_at) for peer, sent_at in rows]


def direct_history_bounds(
    connection: Connection, owner_key: str, peer_key: str, count: int
) -> tuple[int, int] | None:
    """The first and last row ids of a conversation's last ``count`` messages, or None."""
    owner_id = _owner_id(connection, owner_key)
    if owner_id is None:
        return None
    low, high = connection.execute(
        "SELECT min(id), max(id) FROM (SELECT id FROM direct_history"
        " WHERE owner_id = ? AND peer_key = ? ORDER BY id DESC LIMIT ?) AS last",
        (owner_id, peer_key, count),
    ).fetchone()
    return None if low is None else (low, high)


def direct_history_between(
    connection: Connection, owner_key: str, peer_key: str, first_id: int, last_id: int,
    limit: int,
) -> list[DirectRow]:
    """Up to ``limit`` messages of a conversation with row ids ``first_id`` to ``last_id``,
    oldest first."""
    rows = connection.execute(
        f"SELECT {_DIRECT_COLUMNS} FROM direct_history WHERE owner_id ="
        " (SELECT id FROM users WHERE name_key = ?) AND peer_key = ? AND id BETWEEN ? AND ?"
        " ORDER BY id LIMIT ?",
        (owner_key, peer_key, first_id, last_id, limit),
    ).fetchall()
    return [DirectRow(*row) for row in rows]


# --- presence: away and last seen ----------------------------------------------


def set_away(connection: Connection, user_key: str, text: str) -> None:
    """Set a user's away text; empty means back."""
    connection.execute("UPDATE users SET away = ? WHERE name_key = ?", (text, user_key))


def set_last_seen(connection: Connection, user_key: str, now: int) -> None:
    """Note that a user's last session ended now."""
    connection.execute("UPDATE users SET last_seen = ? WHERE name_key = ?", (now, user_key))


def away_text(connection: Connection, user_key: str) -> str:
    """A user's away text, empty when not away or no such user."""
    row = connection.execute("SELECT away FROM users WHERE name_key = ?", (user_key,)).fetchone()
    return "" if row is None else row[0]


def whois(connection: Connection, user_key: str, asker_key: str) -> Whois:
    """What ``/whois`` shows; the rooms are those the asker shares with the user."""
    row = connection.execute(
        "SELECT id, name, away, last_seen FROM users WHERE name_key = ?", (user_key,)
    ).fetchone()
    if row is None:
        raise ChatError("no-such-user", f"there is no user {user_key}")
    user_id, name, away, last_seen = row
    shared = connection.execute(
        "SELECT r.name FROM room_members AS m JOIN rooms AS r ON r.id = m.room_id"
        " WHERE m.user_id = ? AND m.room_id IN ("
        "  SELECT room_id FROM room_members WHERE user_id ="
        "  (SELECT id FROM users WHERE name_key = ?))"
        " ORDER BY r.name_key",
        (user_id, asker_key),
    )
    return Whois(name, away, last_seen, [room for (room,) in shared])


# --- the admin command line's room commands ------------------------------------


def list_rooms(connection: Connection) -> list[RoomListing]:
    """Every room, with its member count, privacy, operators, topic and secrecy."""
    rows = connection.execute(
        "SELECT r.id, r.name, r.private, r.topic,"
        " (SELECT count(*) FROM room_members WHERE room_id = r.id), r.secret"
        " FROM rooms AS r ORDER BY r.name_key"
    ).fetchall()
    return [
        RoomListing(
            name, members, bool(private), room_operators(connection, room_id), topic,
            bool(secret),
        )
        for room_id, name, private, topic, members, secret in rows
    ]


def record_room_event(
    connection: Connection,
    action: str,
    room_key: str,
    user_key: str,
    user_name: str,
    detail: str,
    now: int,
    actor: str = "",
) -> int:
    """Note a room change the running server must show (``room-op``, ``room-kick``, ...);
    return its event id. ``actor``: the operator who made it in a session."""
    dialect_of(connection).serialize_account_events(connection)
    (event_id,) = connection.execute(
        "INSERT INTO account_events (name_key, action, at, room_key, user_name, detail, actor)"
        " VALUES (?, ?, ?, ?, ?, ?, ?) RETURNING id",
        (user_key, action, now, room_key, user_name, detail, actor),
    ).fetchone()
    return event_id


def admin_room_change(
    connection: Connection, action: str, room_key: str, user_key: str, detail: str, now: int
) -> str:
    """Do one ``chatd room`` command in the database and record it for the server.

    ``action`` is ``op``, ``deop``, ``kick``, ``ban``, ``unban`` or ``topic``
    (``detail`` is the topic, or a kick's reason). Returns what was done, for
    the operator; raises ``ChatError`` when it cannot be done.
    """
    room_id, room_name, _private = _room(connection, room_key)
    user_name = ""
    if action in ("op", "deop"):
        user_name, _ = set_operator(connection, room_id, user_key, action == "op")
        still = "now" if action == "op" else "no longer"
        done = f"{user_name} is {still} an operator of {room_name}"
    elif action == "kick":
        user_name, _ = remove_member(connection, room_id, user_key)
        done = f"kicked {user_name} from {room_name}"
    elif action == "ban":
        banned = ban_user(connection, room_id, user_key, ADMIN, now)
        user_name = banned.name
        # As a session's ban: "banned" when a member is kicked by it.
        detail = "banned" if banned.was_member else ""
        done = f"banned {user_name} from {room_name}"
    elif action == "unban":
        user_name = unban_user(connection, room_id, user_key)
        done = f"lifted the ban of {user_name} from {room_name}"
    elif action == "topic":
        set_topic(connection, room_id, detail, ADMIN, now)
        done = f"topic of {room_name} {'set' if detail else 'cleared'}"
    else:
        raise ValueError(f"unknown room action {action}")
    record_room_event(connection, "room-" + action, room_key, user_key, user_name, detail, now)
    return done


# --- room changes made in sessions, recorded for every node -------------------
#
# Each returns the id of the room event it records in the same transaction:
# the node that made the change shows it at once, and every other node of a
# cluster shows it when it reads that event (told by Redis, or by its poll).


def kick_from_room(
    connection: Connection, room_id: int, room_key: str, user_key: str, by: str,
    reason: str, now: int, guest: str = "",
) -> tuple[str, int]:
    """An operator's kick: ``remove_member``; return the member's name and the event id.

    ``guest``: the display name another node of a cluster lists ``user_key``
    under in the room. When no account has that name it is a guest
    (``CHATD_GUESTS``), whose membership lives only in its node's memory: the
    event alone kicks it there.
    """
    if guest and not _is_account(connection, user_key):
        name = guest
    else:
        name, _operator = remove_member(connection, room_id, user_key)
    event_id = record_room_event(
        connection, "room-kick", room_key, user_key, name, reason, now, by
    )
    return name, event_id


def _is_account(connection: Connection, user_key: str) -> bool:
    """Whether an account has the folded name ``user_key``."""
    return connection.execute(
        "SELECT 1 FROM users WHERE name_key = ?", (user_key,)
    ).fetchone() is not None


def _refuse_guest_ban(connection: Connection, user_key: str, guest: str) -> None:
    """Bans are kept by account: a guest (``guest``: the name it is online under, no
    account's) cannot be banned; ``no-such-user`` says so."""
    if guest and not _is_account(connection, user_key):
        raise ChatError(
            "no-such-user",
            f"{guest} is a guest: bans are kept by account, so kick it instead",
        )


def ban_from_room(
    connection: Connection, room_id: int, room_key: str, user_key: str, by: str, now: int,
    guest: str = "",
) -> tuple[Banned, int]:
    """An operator's ban: ``ban_user``; also the event id (detail ``banned`` when the
    account was a member, which every node then kicks; empty when it was not).

    ``guest``: the name ``user_key`` is a guest under, here or on another node of a
    cluster (``no-such-user`` when no account has it: a guest is kicked, not banned)."""
    _refuse_guest_ban(connection, user_key, guest)
    banned = ban_user(connection, room_id, user_key, by, now)
    detail = "banned" if banned.was_member else ""
    event_id = record_room_event(
        connection, "room-ban", room_key, user_key, banned.name, detail, now, by
    )
    return banned, event_id


def lift_ban(
    connection: Connection, room_id: int, room_key: str, user_key: str, by: str, now: int
) -> tuple[str, int]:
    """An operator's unban: ``unban_user``; the account's name and the event id (every
    node tells the room's members)."""
    name = unban_user(connection, room_id, user_key)
    event_id = record_room_event(connection, "room-unban", room_key, user_key, name, "", now, by)
    return name, event_id


def change_operator(
    connection: Connection, room_id: int, room_key: str, user_key: str, operator: bool,
    by: str, now: int, guest: str = "",
) -> tuple[str, tuple[str, ...] | None, int]:
    """An operator's op or deop: ``set_operator``; also the event id.

    ``guest``: the display name another node of a cluster lists ``user_key`` under in
    the room. When no account has that name it is a guest there: a guest is never made
    an operator (``forbidden``), and the deop of the guest operator of a room (in its
    node's memory only) is the room event alone (the operators returned are None:
    the stored ones did not change)."""
    if guest and not _is_account(connection, user_key):
        if operator:
            raise ChatError("forbidden", f"{guest} is a guest: guests are not made operators")
        event_id = record_room_event(
            connection, "room-deop", room_key, user_key, guest, "", now, by
        )
        return guest, None, event_id
    name, operators = set_operator(connection, room_id, user_key, operator)
    action = "room-op" if operator else "room-deop"
    event_id = record_room_event(connection, action, room_key, user_key, name, "", now, by)
    return name, operators, event_id


def invite_to_room(
    connection: Connection, room_id: int, room_key: str, room_name: str, user_key: str,
    by: str, now: int, delivered: bool,
) -> tuple[str, int]:
    """An invitation made in a session: ``invite_user``; the user's name and the event id
    (``detail``: the room's display name, for nodes that have not loaded it)."""
    name = invite_user(connection, room_id, user_key, by, now, delivered)
    event_id = record_room_event(
        connection, "room-invite", room_key, user_key, name, room_name, now, by
    )
    return name, event_id


def change_private(
    connection: Connection, room_id: int, room_key: str, private: bool, by: str, now: int
) -> int:
    """An operator's /private: ``set_private``; return the event id (detail ``on``/``off``)."""
    return _switch_room(
        connection, set_private, "room-private", room_id, room_key, private, by, now
    )


def change_secret(
    connection: Connection, room_id: int, room_key: str, secret: bool, by: str, now: int
) -> int:
    """An operator's /secret (IRC's +s): ``set_secret``; return the event id (detail
    ``on``/``off``), which the other nodes of a cluster act on."""
    return _switch_room(
        connection, set_secret, "room-secret", room_id, room_key, secret, by, now
    )


def change_topic(
    connection: Connection, room_id: int, room_key: str, text: str, by: str, now: int
) -> int:
    """A member's topic: ``set_topic``; return the event id."""
    set_topic(connection, room_id, text, by, now)
    return record_room_event(connection, "room-topic", room_key, "", "", text, now, by)


def change_voice(
    connection: Connection, room_id: int, room_key: str, user_key: str, voice: bool,
    by: str, now: int, guest: str = "",
) -> tuple[str, int]:
    """An operator's +v or -v: ``set_voice``; the member's name and the event id (detail
    ``on``/``off``).

    ``guest``: as for ``kick_from_room``, a member another node of a cluster lists under
    a name no account has is a guest there, whose voice lives in its node's memory: the
    event alone gives (or takes) it there."""
    if guest and not _is_account(connection, user_key):
        name = guest
    else:
        name = set_voice(connection, room_id, user_key, voice)
    detail = "on" if voice else "off"
    event_id = record_room_event(
        connection, "room-voice", room_key, user_key, name, detail, now, by
    )
    return name, event_id


def change_moderated(
    connection: Connection, room_id: int, room_key: str, moderated: bool, by: str, now: int
) -> int:
    """An operator's +m or -m: ``set_moderated``; return the event id (detail ``on``/``off``)."""
    return _switch_room(
        connection, set_moderated, "room-moderated", room_id, room_key, moderated, by, now
    )


def change_topic_open(
    connection: Connection, room_id: int, room_key: str, topic_open: bool, by: str, now: int
) -> int:
    """An operator's -t or +t: ``set_topic_open``; return the event id (detail ``on``: any
    member may set the topic)."""
    return _switch_room(
        connection, set_topic_open, "room-topic-open", room_id, room_key, topic_open, by, now
    )


def _switch_room(
    connection: Connection, store, kind: str, room_id: int, room_key: str, on: bool,
    by: str, now: int,
) -> int:
    """A room's on/off feature: stored with ``store``, recorded as the room event ``kind``
    (detail ``on``/``off``) that the other nodes of a cluster follow; the event id."""
    store(connection, room_id, on)
    return record_room_event(connection, kind, room_key, "", "", "on" if on else "off", now, by)


# --- direct messages kept for offline users --------------------------------


def store_direct_message(
    connection: Connection,
    recipient_key: str,
    sender: str,
    text: str,
    now: int,
    limit: int | None = None,
    msgid: str | None = None,
    kind: str = SAY,
) -> str:
    """Keep a direct message (of ``kind``: said, or a notice) for an offline user;
    return the recipient's display name.

    Its time is ``now``, or a millisecond after the user's latest kept
    message if that is not earlier. ``msgid`` is the id the core made
    (chatd.core.ids); without one the message gets the migration's form of an
    id. Raises ``no-such-user`` when there is no such account, and
    ``mailbox-full`` when ``limit`` messages already wait for the user:
    counted inside the committing transaction, so senders in parallel
    cannot together pass the limit.
    """
    row = connection.execute(
        "SELECT id, name FROM users WHERE name_key = ?", (recipient_key,)
    ).fetchone()
    if row is None:
        raise ChatError("no-such-user", f"there is no user {recipient_key}")
    recipient_id, name = row
    if limit is not None:
        (waiting,) = connection.execute(
            "SELECT count(*) FROM"
            " (SELECT 1 FROM stored_messages WHERE recipient_id = ? LIMIT ?) AS waiting",
            (recipient_id, limit),
        ).fetchone()
        if waiting >= limit:
            raise ChatError(
                "mailbox-full",
                f"{limit} messages already wait for {name}; try again once they have logged in",
            )
    # Each message kept for a user gets a timestamp of its own, later than the
    # one before it: a STORED line sent again is known by its timestamp alone.
    last = connection.execute(
        "SELECT sent_at FROM stored_messages WHERE recipient_id = ? ORDER BY id DESC LIMIT 1",
        (recipient_id,),
    ).fetchone()
    sent_at = now if last is None or now > last[0] else last[0] + 1
    (row_id,) = connection.execute(
        "INSERT INTO stored_messages (recipient_id, sender, text, sent_at, msgid, kind)"
        " VALUES (?, ?, ?, ?, ?, ?) RETURNING id",
        (recipient_id, sender, text, sent_at, msgid or "", kind),
    ).fetchone()
    if msgid is None:
        connection.execute(
            "UPDATE stored_messages SET msgid = ? WHERE id = ?",
            (legacy_msgid(sent_at, row_id), row_id),
        )
    return name


def post_direct_message(
    connection: Connection,
    recipient_key: str,
    sender: str,
    text: str,
    now: int,
    limit: int | None = None,
    account: tuple[int, int] | None = None,
    msgid: str | None = None,
    history: bool = False,
    kind: str = SAY,
) -> str:
    """What a session's stored DM commits: ``store_direct_message`` if its sender still
    exists (as ``account``, the identity its session is bound to, if given), and with
    ``history`` the message in both accounts' history (``record_direct_message``) too."""
    require_sender(connection, sender, account)
    name = store_direct_message(
        connection, recipient_key, sender, text, now, limit, msgid, kind
    )
    if history and msgid is not None:
        record_direct_message(
            connection, sender, name, text, now, msgid, (sender.lower(), recipient_key), kind
        )
    return name


def stored_messages_page(
    connection: Connection, recipient_key: str, after_id: int, limit: int
) -> list[StoredRow]:
    """Up to ``limit`` messages waiting for a user with ids above ``after_id``, oldest first.

    Nothing is removed: a page leaves the store through
    ``delete_stored_messages`` once it was handed over.
    """
    rows = connection.execute(
        "SELECT s.id, s.sender, s.text, s.sent_at, s.msgid, s.kind FROM stored_messages AS s"
        " JOIN users AS u ON u.id = s.recipient_id"
        " WHERE u.name_key = ? AND s.id > ? ORDER BY s.id LIMIT ?",
        (recipient_key, after_id, limit),
    ).fetchall()
    return [StoredRow(*row) for row in rows]


def delete_stored_messages(connection: Connection, ids: list[int]) -> int:
    """Remove stored messages that were handed over; return how many were still there."""
    return connection.executemany(
        "DELETE FROM stored_messages WHERE id = ?", [(message_id,) for message_id in ids]
    ).rowcount


def count_stored_messages(connection: Connection, recipient_key: str) -> int:
    """How many messages wait for a user."""
    return connection.execute(
        "SELECT count(*) FROM stored_messages AS s JOIN users AS u ON u.id = s.recipient_id"
        " WHERE u.name_key = ?",
        (recipient_key,),
    ).fetchone()[0]


# --- retention, erasure and statistics ----------------------------------------


def purge_room_messages(connection: Connection, before: int, limit: int) -> int:
    """Delete up to ``limit`` room messages sent before ``before``, oldest first.

    Returns how many were deleted; fewer than ``limit`` means none are left.
    """
    return connection.execute(
        "DELETE FROM room_messages WHERE id IN"
        " (SELECT id FROM room_messages WHERE sent_at < ? ORDER BY sent_at LIMIT ?)",
        (before, limit),
    ).rowcount


def purge_stored_messages(connection: Connection, before: int, limit: int) -> int:
    """Delete up to ``limit`` undelivered direct messages sent before ``before``."""
    return connection.execute(
        "DELETE FROM stored_messages WHERE id IN"
        " (SELECT id FROM stored_messages WHERE sent_at < ? ORDER BY sent_at LIMIT ?)",
        (before, limit),
    ).rowcount


def purge_direct_history(connection: Connection, before: int, limit: int) -> int:
    """Delete up to ``limit`` messages of direct-message history sent before ``before``."""
    return connection.execute(
        "DELETE FROM direct_history WHERE id IN"
        " (SELECT id FROM direct_history WHERE sent_at < ? ORDER BY sent_at LIMIT ?)",
        (before, limit),
    ).rowcount


def purge_account_events(connection: Connection, before: int, limit: int) -> int:
    """Delete up to ``limit`` account events recorded before ``before``, but never the newest.

    A running server only ever asks for events newer than the last it saw,
    so events older than any server's poll interval are no one's business.
    The newest stays because ids are rowids: were the table emptied, the
    next event would reuse an id the server has already seen, and be missed.
    """
    return connection.execute(
        "DELETE FROM account_events WHERE id IN"
        " (SELECT id FROM account_events WHERE at < ?"
        "  AND id < (SELECT max(id) FROM account_events) ORDER BY id LIMIT ?)",
        (before, limit),
    ).rowcount


def message_id_range(connection: Connection) -> tuple[int, int]:
    """The lowest and highest ids of room and stored messages and of direct-message
    history together (0, 0 if none)."""
    return connection.execute(
        "SELECT coalesce(min(low), 0), coalesce(max(high), 0) FROM ("
        " SELECT min(id) AS low, max(id) AS high FROM room_messages"
        " UNION ALL SELECT min(id), max(id) FROM stored_messages"
        " UNION ALL SELECT min(id), max(id) FROM direct_history) AS ranges"
    ).fetchone()


def erase_messages_from(
    connection: Connection, sender_key: str, first_id: int, last_id: int
) -> int:
    """Delete what ``sender_key`` wrote with ids in ``first_id..last_id``.

    Room history, undelivered direct messages and the copies of direct messages
    in other accounts' history (its own went with the account); senders are kept by
    display name, so this compares folded names. Working through a bounded
    id window keeps each transaction short on a table with no sender index.
    Once the account's deletion has committed, no message of it can commit
    any more (``require_sender``), so the highest id of either table read in
    the deleting transaction bounds every message the account ever sent.
    """
    deleted = 0
    for table in ("room_messages", "stored_messages", "direct_history"):
        deleted += connection.execute(
            f"DELETE FROM {table} WHERE id BETWEEN ? AND ? AND lower(sender) = ?",
            (first_id, last_id, sender_key),
        ).rowcount
    return deleted


TABLES = (
    "users",
    "rooms",
    "room_messages",
    "stored_messages",
    "account_events",
    "room_members",
    "room_bans",
    "room_invites",
    "direct_history",
)
_TIMED_TABLES = ("room_messages", "stored_messages", "direct_history")


def schema_version(connection: Connection) -> int:
    """The schema version the database is at (the health probe reads and writes this)."""
    return dialect_of(connection).schema_version(connection)


def database_stats(connection: Connection) -> DatabaseStats:
    """Counts and sizes of everything chatd keeps."""
    dialect = dialect_of(connection)
    sizes = dialect.table_bytes(connection)
    tables = {}
    for table in TABLES:
        span = "min(sent_at), max(sent_at)" if table in _TIMED_TABLES else "NULL, NULL"
        rows, oldest, newest = connection.execute(
            f"SELECT count(*), {span} FROM {table}"
        ).fetchone()
        tables[table] = TableStats(rows, sizes.get(table), oldest, newest)
    page_size, pages, free_pages = dialect.pages(connection)
    (banned,) = connection.execute("SELECT count(*) FROM users WHERE banned").fetchone()
    return DatabaseStats(
        schema_version=dialect.schema_version(connection),
        page_size=page_size,
        pages=pages,
        free_pages=free_pages,
        banned_users=banned,
        tables=tables,
    )
