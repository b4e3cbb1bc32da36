"""The values storage hands out: accounts, stored messages, history rows, room state."""

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Account:
    """What a login needs to know about an account."""

    name: str
    password_hash: str
    banned: bool
    # users.id and users.incarnation: what a session is bound to, so a name
    # deleted and registered again is a different account.
    id: int = field(default=0, compare=False)
    incarnation: int = field(default=0, compare=False)

    @property
    def identity(self) -> tuple[int, int]:
        """What tells this account from any other ever stored under its name."""
        return (self.id, self.incarnation)


@dataclass(frozen=True)
class StoredRow:
    """A direct message waiting in the store for its recipient."""

    id: int
    sender: str
    text: str
    sent_at: int
    msgid: str = ""
    # say, or notice (IRC's NOTICE).
    kind: str = "say"


# Message kinds: what was said, an action (``/me waves``), and a notice (IRC's
# NOTICE). The kind column is free text: a new kind needs no migration.
SAY = "say"
ACTION = "action"
NOTICE = "notice"
# Who a change made by the admin command line is shown as coming from: not
# a valid user name, so it can never be mistaken for one.
ADMIN = "*admin"


@dataclass(frozen=True)
class HistoryRow:
    """A past message of a room."""

    id: int
    sender: str
    text: str
    sent_at: int
    kind: str = SAY
    seq: int = 0
    msgid: str = ""


@dataclass(frozen=True)
class DirectRow:
    """A past direct message of a conversation (``direct_history``)."""

    id: int
    sender: str
    recipient: str
    text: str
    sent_at: int
    kind: str = SAY
    msgid: str = ""


@dataclass(frozen=True)
class AccountEvent:
    """An administrative change to an account or a room that live sessions must see.

    Room events (``action`` starting ``room-``) name the room by its key, the
    user by ``name_key`` and ``user_name``, and carry the topic or the kick's
    reason in ``detail``, and who made them in ``actor`` (an operator's name
    for those made in a session; empty for the admin command line's).
    """

    id: int
    name_key: str
    action: str
    room_key: str | None = None
    user_name: str = ""
    detail: str = ""
    actor: str = ""
    # When it was recorded (ms).
    at: int = 0


# --- membership, topics, operators, bans, invites -----------------------------

LOBBY_KEY = "#lobby"


@dataclass(frozen=True)
class HistoryMark:
    """A point in a room's history named by a request (IRC's ``draft/chathistory``):
    a message id, or else a time (Unix ms)."""

    msgid: str = ""
    time: int = 0


@dataclass(frozen=True)
class RoomState:
    """What the server keeps of a room while it has members online."""

    id: int
    name: str
    topic: str
    topic_setter: str
    private: bool
    operators: tuple[str, ...]
    recent: list[HistoryRow]
    # IRC's MODE -t: every member may set the topic, operators or not.
    topic_open: bool = False
    # IRC's +v (members who may speak in a moderated room) and +m.
    voiced: tuple[str, ...] = ()
    moderated: bool = False
    # IRC's +s: listed, and shown to NAMES and WHO, for its members only.
    secret: bool = False
    # When the topic was set (ms; 0: before chatd kept it).
    topic_at: int = 0


@dataclass(frozen=True)
class Arrival:
    """What a user's first session needs: its rooms, its invites, its away text.

    Each room comes with its state when the server asked for it to be loaded.
    """

    rooms: list[tuple[str, "RoomState | None"]]
    invites: list[tuple[str, str]]
    away: str


@dataclass(frozen=True)
class Banned:
    """The outcome of a ban: the user's display name, and what they lost."""

    name: str
    was_member: bool
    was_operator: bool


@dataclass(frozen=True)
class Whois:
    """What ``/whois`` tells about an account."""

    name: str
    away: str
    last_seen: int | None
    shared_rooms: list[str]


@dataclass(frozen=True)
class RoomListing:
    """One room as ``chatd room list`` shows it."""

    name: str
    members: int
    private: bool
    operators: tuple[str, ...]
    topic: str
    secret: bool = False


@dataclass(frozen=True)
class TableStats:
    """A table's row count, its size on disk if known, and for messages their time span."""

    rows: int
    bytes: int | None = None
    oldest: int | None = None
    newest: int | None = None


@dataclass(frozen=True)
class DatabaseStats:
    """What ``chatd db stats`` reports about a database."""

    schema_version: int
    page_size: int
    pages: int
    free_pages: int
    banned_users: int
    tables: dict[str, TableStats]
