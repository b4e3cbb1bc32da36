"""Who is online on the other nodes of a cluster, and in which rooms: each node's mirror.

Every node tells the others the state of each of its users whenever it
changes (``UserState``: display name, away text, and the rooms with the
user's operator status in each), and its whole list when asked or after
(re)connecting; a node that stops cleanly says so, and one that dies is
dropped once its heartbeat key has expired (chatd/cluster/redis.py). This
mirror is what ``WHO``, IRC ``NAMES``, ``WHOIS`` and the ``JOIN``'s
member list add to the members with a session on the node asked.

It imports nothing of Twisted or Redis: the fan-out feeds it.
"""

from collections.abc import Iterable
from dataclasses import dataclass

# A user's state as told on the wire:
# [name, away, [[room_key, room_name, op, private, secret], ...], invisible, oper, guest];
# a seat of four (a node from before secret rooms) is not secret, a state of three (a
# node from before ``invisible``) is visible, one of four (from before ``oper``) no server
# operator, and one of five (from before ``guest``) an account's.
WireState = list


@dataclass(frozen=True, slots=True)
class RoomSeat:
    """A user's place in one room: the room's names, whether the user is an operator there,
    and whether the room is private, and secret (IRC's +s)."""

    room_key: str
    room_name: str
    operator: bool
    private: bool
    secret: bool = False

    @property
    def hidden(self) -> bool:
        """Whether those not in the room may not see who is in it (private or secret)."""
        return self.private or self.secret


@dataclass(frozen=True, slots=True)
class UserState:
    """One user as one node has it: online there, with this name, away text and rooms,
    whether a session of it there is invisible (IRC's user mode ``+i``), and whether it
    is a server operator there (``CHATD_OPERATORS``, IRC's ``OPER``), and whether it is a
    guest (``CHATD_GUESTS``: no account)."""

    name: str
    away: str
    rooms: tuple[RoomSeat, ...]
    invisible: bool = False
    oper: bool = False
    guest: bool = False

    def to_wire(self) -> WireState:
        """The JSON-able form sent to the other nodes."""
        return [
            self.name, self.away,
            [[seat.room_key, seat.room_name, int(seat.operator), int(seat.private),
              int(seat.secret)]
             for seat in self.rooms],
            int(self.invisible),
            int(self.oper),
            int(self.guest),
        ]

    @classmethod
    def from_wire(cls, state: WireState) -> "UserState":
        """The state another node sent (``ValueError``/``TypeError`` if malformed)."""
        name, away, rooms, *more = state
        return cls(str(name), str(away), tuple(
            RoomSeat(str(key), str(room), bool(operator), bool(private),
                     bool(seat_more and seat_more[0]))
            for key, room, operator, private, *seat_more in rooms
        ), *(bool(flag) for flag in more[:3]))


class ClusterPresence:
    """The users online on the other nodes: by node, and indexed by room.

    A user on two other nodes counts once; what one node says of it does
    not undo what another says (each node's entry is kept apart).
    """

    def __init__(self) -> None:
        self._nodes: dict[str, dict[str, UserState]] = {}
        # room key -> user key -> the nodes that list the user in the room.
        self._rooms: dict[str, dict[str, set[str]]] = {}

    def nodes(self) -> list[str]:
        """The nodes some state is kept of."""
        return list(self._nodes)

    def set(self, node: str, user_key: str, state: UserState | None) -> None:
        """``node`` says ``user_key`` is there in ``state`` (None: no longer there)."""
        users = self._nodes.setdefault(node, {})
        old = users.pop(user_key, None)
        if old is not None:
            self._unindex(node, user_key, old)
        if state is not None:
            users[user_key] = state
            for seat in state.rooms:
                self._rooms.setdefault(seat.room_key, {}).setdefault(user_key, set()).add(node)

    def replace_node(self, node: str, states: dict[str, UserState]) -> None:
        """Everything ``node`` has: its whole list, replacing what was known of it."""
        self.forget_node(node)
        for user_key, state in states.items():
            self.set(node, user_key, state)
        self._nodes.setdefault(node, {})

    def forget_node(self, node: str) -> dict[str, UserState]:
        """``node`` stopped (or died): none of its users counts any more. Answers what
        was known of them (user key -> state), the last word on where they were."""
        users = self._nodes.pop(node, {})
        for user_key, state in users.items():
            self._unindex(node, user_key, state)
        return users

    def keep_only(self, nodes: Iterable[str]) -> list[str]:
        """Forget every node not in ``nodes``; the ones forgotten."""
        alive = set(nodes)
        gone = [node for node in self._nodes if node not in alive]
        for node in gone:
            self.forget_node(node)
        return gone

    def _unindex(self, node: str, user_key: str, state: UserState) -> None:
        for seat in state.rooms:
            members = self._rooms.get(seat.room_key)
            if members is None:
                continue
            listed = members.get(user_key)
            if listed is not None:
                listed.discard(node)
                if not listed:
                    del members[user_key]
            if not members:
                del self._rooms[seat.room_key]

    def _state(self, user_key: str, nodes: Iterable[str]) -> UserState | None:
        for node in nodes:
            state = self._nodes.get(node, {}).get(user_key)
            if state is not None:
                return state
        return None

    def members(self, room_key: str) -> dict[str, tuple[str, bool]]:
        """The users in ``room_key`` online elsewhere: folded name -> (name, operator)."""
        found = {}
        for user_key, nodes in self._rooms.get(room_key, {}).items():
            state = self._state(user_key, nodes)
            if state is None:
                continue
            seat = next((s for s in state.rooms if s.room_key == room_key), None)
            found[user_key] = (state.name, seat is not None and seat.operator)
        return found

    def room(self, room_key: str) -> RoomSeat | None:
        """How another node names ``room_key`` and whether it is private (None: no member
        of it is online elsewhere). ``operator`` means nothing here."""
        for user_key, nodes in self._rooms.get(room_key, {}).items():
            state = self._state(user_key, nodes)
            if state is not None:
                for seat in state.rooms:
                    if seat.room_key == room_key:
                        return seat
        return None

    def room_keys(self) -> list[str]:
        """Every room with a member online elsewhere."""
        return list(self._rooms)

    def user(self, user_key: str) -> UserState | None:
        """``user_key``'s state on another node, None if it is on none."""
        return self._state(user_key, self._nodes)

    def invisible(self, user_key: str) -> bool:
        """Whether a session of ``user_key`` on another node is invisible (``+i``)."""
        return any(
            users[user_key].invisible for users in self._nodes.values() if user_key in users
        )

    def oper(self, user_key: str) -> bool:
        """Whether another node says ``user_key`` is a server operator there."""
        return any(users[user_key].oper for users in self._nodes.values() if user_key in users)

    def guest(self, user_key: str) -> bool:
        """Whether another node says ``user_key`` is a guest there (no account)."""
        return any(users[user_key].guest for users in self._nodes.values() if user_key in users)

    def users(self) -> dict[str, str]:
        """Everyone online elsewhere: folded name -> display name."""
        return {key: state.name for users in self._nodes.values() for key, state in users.items()}
