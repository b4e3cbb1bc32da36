"""What the client knows of the chat: who it is, its rooms, and who is around.

The reactor thread keeps this up to date from server lines; the input thread
reads it to draw the prompt and to complete names. A lock keeps those two
views consistent, and readers only ever get copies.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

from chatd.client.commands import command_name
from chatd.client.lines import ServerLine, final_reply_command


@dataclass
class Room:
    """A room this session is in, with its members keyed by lower-case name."""

    name: str
    members: dict[str, str] = field(default_factory=dict)
    # Lower-case names of the room's operators, from its OPS lines.
    operators: set[str] = field(default_factory=set)
    topic: str = ""


@dataclass(frozen=True)
class PromptView:
    """What the prompt shows: connection, user and current room."""

    connected: bool
    user: str | None
    room: str | None

    def text(self) -> str:
        """The prompt itself, e.g. ``alice #lobby> ``."""
        parts = [] if self.connected else ["(offline)"]
        parts.append(self.user or "guest")
        if self.room:
            parts.append(self.room)
        return " ".join(parts) + "> "


# Line types whose first field is a room: how the client learns rooms for completion.
_ROOM_FIRST = frozenset(
    {"MSG", "JOIN", "PART", "WHO", "ROOM", "HISTORY", "TOPIC", "OPS", "KICK", "INVITE", "ACTION",
     "HISTORYACTION", "MODE"}
)


class ChatState:
    """The client's picture of its session, learnt from the lines the server sends."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.connected = False
        self.user: str | None = None
        self.current_room: str | None = None
        # Insertion order is join order: after a part the server makes the most
        # recently joined remaining room current, and so does this client.
        self._rooms: dict[str, Room] = {}
        self._known_rooms: dict[str, str] = {}
        self._correspondents: dict[str, str] = {}
        self._logging_in_as: str | None = None
        self._held_view: PromptView | None = None

    def me(self) -> str | None:
        """The logged-in user, or the one a login being answered is for."""
        return self.user or self._logging_in_as

    def is_me(self, name: str) -> bool:
        """True when the name is the logged-in user's (names are case-insensitive)."""
        me = self.me()
        return me is not None and name.lower() == me.lower()

    def rooms(self) -> list[str]:
        """The rooms this session is in, in the order they were joined."""
        with self._lock:
            return [room.name for room in self._rooms.values()]

    def members(self, room: str) -> list[str]:
        """The members of one of this session's rooms, as last seen."""
        with self._lock:
            joined = self._rooms.get(room.lower())
            return sorted(joined.members.values(), key=str.lower) if joined else []

    def is_operator(self, room: str, name: str) -> bool:
        """True when ``name`` was an operator of ``room`` in its last OPS line."""
        with self._lock:
            joined = self._rooms.get(room.lower())
            return joined is not None and name.lower() in joined.operators

    def topic(self, room: str) -> str:
        """The topic of one of this session's rooms, as last seen ('' for none)."""
        with self._lock:
            joined = self._rooms.get(room.lower())
            return joined.topic if joined is not None else ""

    def prompt_view(self) -> PromptView:
        """A consistent copy of what the prompt shows."""
        with self._lock:
            if self._held_view is not None:
                return self._held_view
            return PromptView(self.connected, self.user, self.current_room)

    def hold_prompt(self) -> None:
        """Keep showing the offline prompt while a reconnect logs in and rejoins.

        Otherwise the prompt would flicker through every step (guest, #lobby,
        then the room the user was really in).
        """
        with self._lock:
            if self._held_view is None:
                self._held_view = PromptView(False, self.user, self.current_room)

    def release_prompt(self) -> None:
        """Show the live state again."""
        with self._lock:
            self._held_view = None

    def completion_snapshot(self) -> tuple[list[str], list[str]]:
        """Copies of the room names and the names of other people the client knows."""
        with self._lock:
            rooms = dict(self._known_rooms)
            rooms.update((key, room.name) for key, room in self._rooms.items())
            users = dict(self._correspondents)
            for room in self._rooms.values():
                users.update(room.members)
            if self.user is not None:
                users.pop(self.user.lower(), None)
            return list(rooms.values()), list(users.values())

    def set_connected(self, connected: bool) -> None:
        """Record that the connection came up or went away."""
        with self._lock:
            self.connected = connected

    def start_over(self) -> None:
        """Forget the session's rooms: a new connection starts logged out."""
        with self._lock:
            self.user = None
            self.current_room = None
            self._rooms.clear()

    def observe(self, line: ServerLine, command: str | None = None) -> None:
        """Learn from a server line; ``command`` is the client line it answers, if any."""
        with self._lock:
            self._observe(line, command or "")

    def _observe(self, line: ServerLine, command: str) -> None:
        kind, fields = line.kind, line.fields
        # The lines a login causes arrive before its OK names the user, so
        # while a /login is answered the name it gives counts as ours.
        words = command.split(" ", 2)
        logging_in = command_name(command) == "login" and len(words) > 1
        self._logging_in_as = words[1] if logging_in else None
        if kind in _ROOM_FIRST and fields[0]:
            self._known_rooms[fields[0].lower()] = fields[0]
        if kind == "JOIN":
            self._joined(*fields)
        elif kind == "PART":
            self._parted(*fields)
        elif kind == "WHO":
            self._who(fields[0], fields[1], logging_in=self._logging_in_as is not None)
        elif kind in ("MSG", "ACTION"):
            joined = self._rooms.get(fields[0].lower())
            if joined is not None:
                joined.members[fields[1].lower()] = fields[1]
        elif kind == "KICK":
            self._parted(fields[0], fields[1])
        elif kind == "OPS":
            joined = self._rooms.get(fields[0].lower())
            if joined is not None:
                joined.operators = {name.lower() for name in fields[1].split()}
        elif kind == "TOPIC":
            joined = self._rooms.get(fields[0].lower())
            if joined is not None:
                joined.topic = fields[2]
        elif kind in ("AWAY", "WHOIS"):
            self._correspondents[fields[0].lower()] = fields[0]
        elif kind == "DM":
            other = fields[1] if self.is_me(fields[0]) else fields[0]
            self._correspondents[other.lower()] = other
        elif kind == "STORED":
            self._correspondents[fields[1].lower()] = fields[1]
        elif kind == "OK":
            self._succeeded(final_reply_command(line), fields[1])

    def _joined(self, room: str, user: str) -> None:
        if self.is_me(user):
            self._rooms.setdefault(room.lower(), Room(room))
        joined = self._rooms.get(room.lower())
        if joined is not None:
            joined.members[user.lower()] = user

    def _parted(self, room: str, user: str) -> None:
        if self.is_me(user):
            self._leave(room)
            return
        joined = self._rooms.get(room.lower())
        if joined is not None:
            joined.members.pop(user.lower(), None)

    def _leave(self, room: str) -> None:
        self._rooms.pop(room.lower(), None)
        if self.current_room is not None and self.current_room.lower() == room.lower():
            remaining = list(self._rooms.values())
            self.current_room = remaining[-1].name if remaining else None

    def _who(self, room: str, members: str, *, logging_in: bool) -> None:
        # A login puts the session in the user's rooms without a JOIN for
        # each: the WHO lines it sends are how the client learns them.
        if logging_in:
            self._rooms.setdefault(room.lower(), Room(room))
        joined = self._rooms.get(room.lower())
        if joined is not None:
            joined.members = {name.lower(): name for name in members.split()}

    def _succeeded(self, command: str, text: str) -> None:
        argument = text.split(" ", 1)[0]
        if command == "login":
            self.user = argument
            if self.current_room is None and self._rooms:
                self.current_room = list(self._rooms.values())[-1].name
        elif command == "join" and argument:
            self._rooms.setdefault(argument.lower(), Room(argument))
            self.current_room = self._rooms[argument.lower()].name
        elif command == "part" and argument:
            self._leave(argument)
