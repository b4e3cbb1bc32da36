"""The avatar: one login of a user, bound to the mind of the door it came through.

A door calls a ``Session`` for every command (``IChatSession``). Commands
that change something go to the ``ChatService``; questions (``who``,
``rooms``, ``topic``, ``whois``, ``history``) return values for the door to
render. The current room belongs to the session; membership to the user.
"""

from typing import TYPE_CHECKING

from twisted.internet import defer
from twisted.python.failure import Failure
from zope.interface import implementer

from chatd.core.errors import ChatError
from chatd.core.events import (
    NOTICE,
    SAY,
    Away,
    ClientTags,
    DirectHistoryLine,
    Event,
    HistoryLine,
    RoomSummary,
    Roster,
    Topic,
    client_tags,
    history_line,
    part_reason,
)
from chatd.core.interfaces import DisconnectReason, IChatClient, IChatSession
from chatd.core.names import fold, require_room_name, require_user_name
from chatd.core.pages import DirectHistory, RoomHistory
from chatd.core.rooms import HISTORY_MAX, Room, User
from chatd.storage import rows, transactions

if TYPE_CHECKING:
    from chatd.core.service import ChatService


@implementer(IChatSession)
class Session:
    """One login of a user, bound to the connection's mind.

    The current room belongs to the session; membership belongs to the user.
    """

    # Thousands of sessions: no per-instance __dict__.
    __slots__ = (
        "_service", "active", "current", "dropping", "invisible", "mind", "origin",
        "trusted_from", "user",
    )

    def __init__(
        self, service: "ChatService", user: User, mind: IChatClient, trusted_from: int = 0
    ) -> None:
        self._service = service
        # Opaque to doors: the events this session causes carry it, so a door
        # tells its own echo from another session of the same user.
        self.origin = service.next_origin()
        self.user = user
        self.mind = mind
        self.current: Room | None = None
        self.active = True
        self.dropping = False
        # The newest account event this session's login already took into
        # account: only later bans, kicks and password changes end it.
        self.trusted_from = trusted_from
        # Left out of WHO by mask for those not sharing a room (IRC's user mode +i).
        self.invisible = False

    @property
    def name(self) -> str:
        return self.user.name

    @property
    def guest(self) -> bool:
        """Whether this is a guest's session (``CHATD_GUESTS``), bound to no account."""
        return self.user.guest

    def deliver(self, event: Event) -> None:
        """Hand ``event`` to the mind; a mind that fails is dropped, nobody else notices."""
        try:
            self.mind.deliver(event)
        except Exception:
            self._service.drop(self, Failure())

    def _room(self, room_name: str | None) -> Room:
        """The named room, which the user must be in, or the current room."""
        if room_name is None:
            if self.current is None:
                raise ChatError("not-in-room", "join a room first: /join #room")
            return self.current
        require_room_name(room_name)
        room = self.user.rooms.get(fold(room_name))
        if room is None:
            raise ChatError("not-in-room", f"you are not in {room_name}")
        return room

    def say(
        self, text: str, room_name: str | None = None, tags: ClientTags = ()
    ) -> defer.Deferred:
        checked = client_tags(tags)
        return self._service.post(
            self.user, self._room(room_name), text, origin=self.origin, tags=checked
        )

    def notice(self, text: str, room_name: str, tags: ClientTags = ()) -> defer.Deferred:
        checked = client_tags(tags)
        return self._service.post(
            self.user, self._room(room_name), text, NOTICE, self.origin, checked
        )

    def join(self, room_name: str) -> defer.Deferred:
        require_room_name(room_name)
        room = self.user.rooms.get(fold(room_name))
        if room is not None:
            self.current = room
            return defer.succeed(room.name)
        return self._service.join(self, room_name)

    def part(self, room_name: str | None = None, reason: str = "") -> defer.Deferred:
        room = self._room(room_name)
        said = part_reason(reason)
        leaving = self._service.database.write(transactions.leave_room, room.id, self.user.key)
        leaving.addCallback(lambda _: self._service.part(self.user, room, said))
        return leaving.addCallback(lambda _: room.name)

    def message(
        self, recipient: str, text: str, kind: str = SAY, tags: ClientTags = ()
    ) -> defer.Deferred:
        require_user_name(recipient)
        if kind not in (SAY, NOTICE):
            raise ChatError("bad-arguments", f"a direct message is said or a notice, not {kind}")
        checked = client_tags(tags)
        sending = self._service.direct_message(
            self.user, fold(recipient), text, self.origin, kind, checked
        )

        def tell_away(outcome: tuple[str, str, str]) -> tuple[str, str]:
            name, delivery, away = outcome
            if away and self.active:
                self.deliver(Away(name, away))
            return name, delivery

        return sending.addCallback(tell_away)

    def who(self, room_name: str | None = None) -> Roster:
        if room_name is None:
            room = self._room(None)
            return Roster(
                room.name, self._service.member_names(room), room.operator_names(), room.secret
            )
        require_room_name(room_name)
        try:
            return self._service.roster(fold(room_name), self.user)
        except ChatError:
            raise ChatError("no-such-room", f"nobody is in {room_name}") from None

    def rooms(self) -> defer.Deferred:
        reading = self._service.database.read(transactions.visible_rooms, self.user.key)
        return reading.addCallback(
            lambda found: [RoomSummary(name, count) for name, count in found]
        )

    def act(
        self, text: str, room_name: str | None = None, tags: ClientTags = ()
    ) -> defer.Deferred:
        checked = client_tags(tags)
        return self._service.post(
            self.user, self._room(room_name), text, rows.ACTION, self.origin, checked
        )

    def tag(self, target: str, tags: ClientTags) -> str:
        checked = client_tags(tags)
        if target.startswith("#"):
            return self._service.tag_room(self.user, self._room(target), checked, self.origin)
        require_user_name(target)
        return self._service.tag_direct(self.user, fold(target), checked, self.origin)

    def topic(self, room_name: str) -> Topic:
        room = self._room(room_name)
        return Topic(room.name, room.topic_setter, room.topic, room.topic_time)

    def set_topic(self, room_name: str, text: str) -> defer.Deferred:
        return self._service.set_topic(self.user, self._room(room_name), text)

    def set_operator(self, room_name: str, user_name: str, operator: bool) -> defer.Deferred:
        room = self._room(room_name)
        require_user_name(user_name)
        return self._service.set_operator(self.user, room, fold(user_name), operator)

    def kick(self, room_name: str, user_name: str, reason: str) -> defer.Deferred:
        room = self._room(room_name)
        require_user_name(user_name)
        return self._service.kick(self.user, room, fold(user_name), reason)

    def ban(self, room_name: str, user_name: str, banned: bool) -> defer.Deferred:
        room = self._room(room_name)
        require_user_name(user_name)
        return self._service.ban(self.user, room, fold(user_name), banned)

    def set_private(self, room_name: str, private: bool) -> defer.Deferred:
        return self._service.set_private(self.user, self._room(room_name), private)

    def set_invisible(self, invisible: bool) -> None:
        """Make this session invisible (IRC's user mode ``+i``: a ``WHO`` by mask lists the
        user only to those sharing a room with it) or visible; every node is told."""
        if invisible != self.invisible:
            self.invisible = invisible
            self._service.visibility_changed(self.user)

    def set_secret(self, room_name: str, secret: bool) -> defer.Deferred:
        """Make the room secret (IRC's ``+s``) or not; fire with the room's name."""
        return self._service.set_secret(self.user, self._room(room_name), secret)

    def set_voice(self, room_name: str, user_name: str, voice: bool) -> defer.Deferred:
        """Give a member voice (IRC's ``+v``) or take it; fire with the room's name."""
        room = self._room(room_name)
        require_user_name(user_name)
        return self._service.set_voice(self.user, room, fold(user_name), voice)

    def set_moderated(self, room_name: str, moderated: bool) -> defer.Deferred:
        """Make the room moderated (IRC's ``+m``) or not; fire with the room's name."""
        return self._service.set_moderated(self.user, self._room(room_name), moderated)

    def set_topic_open(self, room_name: str, topic_open: bool) -> defer.Deferred:
        """Let every member set the room's topic, or only its operators (IRC's ``-t``/``+t``);
        fire with the room's name."""
        return self._service.set_topic_open(self.user, self._room(room_name), topic_open)

    def invite(self, room_name: str, user_name: str) -> defer.Deferred:
        room = self._room(room_name)
        require_user_name(user_name)
        return self._service.invite(self.user, room, fold(user_name))

    def bans(self, room_name: str) -> defer.Deferred:
        room = self._room(room_name)
        return self._service.database.read(transactions.room_bans, room.id)

    def away(self, text: str | None) -> defer.Deferred:
        return self._service.set_away(self.user, text or "")

    @property
    def oper(self) -> bool:
        """Whether the user is a server operator (an operator of every room)."""
        return self.user.oper

    def set_oper(self, oper: bool) -> None:
        """Make the user a server operator, or not; the gate checked the credentials."""
        self._service.set_server_operator(self.user, oper)

    def whois(self, user_name: str) -> defer.Deferred:
        require_user_name(user_name)
        return self._service.whois(self, fold(user_name))

    def history(self, room_name: str, count: int) -> "RoomHistory":
        room = self._room(room_name)
        return RoomHistory(self._service.database, room, min(count, HISTORY_MAX))

    def history_window(
        self,
        room_name: str,
        after: rows.HistoryMark | None,
        before: rows.HistoryMark | None,
        limit: int,
        newest: bool,
    ) -> defer.Deferred:
        """A room's messages between two marks (IRC's ``draft/chathistory``), read
        from the database; fire with their ``HistoryLine`` values, oldest first."""
        room = self._room(room_name)
        reading = self._service.database.read(
            transactions.room_history_window, room.id, after, before,
            min(limit, HISTORY_MAX), newest,
        )
        return reading.addCallback(_history_lines, room)

    def history_around(
        self, room_name: str, center: rows.HistoryMark, limit: int
    ) -> defer.Deferred:
        """A room's messages around a mark; fire with their ``HistoryLine`` values, oldest first."""
        room = self._room(room_name)
        reading = self._service.database.read(
            transactions.room_history_around, room.id, center, min(limit, HISTORY_MAX)
        )
        return reading.addCallback(_history_lines, room)

    def history_targets(self, after: int, before: int, limit: int) -> defer.Deferred:
        """The user's rooms and conversations whose last message is between two times
        (Unix ms); fire with ``(room or user name, time of that message)`` pairs,
        earliest first."""
        room_ids = tuple(room.id for room in self.user.rooms.values())
        limit = min(limit, HISTORY_MAX)
        database = self._service.database
        reading = database.read(transactions.room_history_targets, room_ids, after, before, limit)
        if self.user.guest:
            return reading

        def with_conversations(rooms: list[tuple[str, int]]) -> defer.Deferred:
            conversations = database.read(
                transactions.direct_history_targets, self.user.key, after, before, limit
            )
            return conversations.addCallback(
                lambda found: sorted(rooms + found, key=lambda t: (t[1], t[0].lower()))[:limit]
            )

        return reading.addCallback(with_conversations)

    def direct_history_window(
        self,
        user_name: str,
        after: rows.HistoryMark | None,
        before: rows.HistoryMark | None,
        limit: int,
        newest: bool,
    ) -> defer.Deferred:
        """``history_window`` for the user's conversation with ``user_name``: fire with
        its ``DirectHistoryLine`` values, oldest first (none for a guest, who keeps none)."""
        require_user_name(user_name)
        if self.user.guest:
            return defer.succeed([])
        reading = self._service.database.read(
            transactions.direct_history_window, self.user.key, fold(user_name), after, before,
            min(limit, HISTORY_MAX), newest,
        )
        return reading.addCallback(_direct_lines, user_name)

    def direct_history_around(
        self, user_name: str, center: rows.HistoryMark, limit: int
    ) -> defer.Deferred:
        """``history_around`` for the user's conversation with ``user_name``."""
        require_user_name(user_name)
        if self.user.guest:
            return defer.succeed([])
        reading = self._service.database.read(
            transactions.direct_history_around, self.user.key, fold(user_name), center,
            min(limit, HISTORY_MAX),
        )
        return reading.addCallback(_direct_lines, user_name)

    def direct_history(self, user_name: str, count: int) -> "DirectHistory":
        """The last ``count`` messages of the conversation with ``user_name`` as a page
        source (the line door's ``/history <user>``); empty for a guest."""
        require_user_name(user_name)
        return DirectHistory(
            self._service.database,
            None if self.user.guest else self.user.key,
            user_name,
            min(count, HISTORY_MAX),
        )

    def room_count(self) -> int:
        return len(self.user.rooms)

    def joining(self, room_name: str) -> str:
        require_room_name(room_name)
        key = fold(room_name)
        if key in self.user.rooms:
            return "member"
        return "open" if self._service.is_open(key) else "closed"

    def is_online(self, user_name: str) -> bool:
        # Cluster mode: online on any node (a guest may message a user of another node).
        return self._service.is_online(fold(user_name))

    def logout(self) -> None:
        if self.active:
            self.active = False
            self._service.end_session(self)

    def password_changed(self, event_id: int) -> None:
        self.trusted_from = max(self.trusted_from, event_id)
        self._service.end_sessions(
            self.user, DisconnectReason.PASSWORD_CHANGED, event_id, keep=self
        )
        # The user's sessions on the other nodes of a cluster end too, now.
        self._service.announce_account_event(event_id)


def _history_lines(found: list[rows.HistoryRow], room: Room) -> list[HistoryLine]:
    return [
        history_line(room.name, r.sent_at, r.sender, r.text, r.kind, r.msgid, r.seq)
        for r in found
    ]


def _direct_lines(found: list[rows.DirectRow], peer: str) -> list[DirectHistoryLine]:
    return [
        DirectHistoryLine(peer, r.sent_at, r.sender, r.recipient, r.text, r.msgid, r.kind)
        for r in found
    ]
