"""What the core and a door promise each other: the mind, the avatar, and why a session ends.

A door implements ``IChatClient`` (the mind) for each connection and hands
it to the realm at login; the realm hands back an ``IChatSession`` (the
avatar) that the door calls for each command. The core reaches a session
only through its mind: ``deliver`` with a semantic event
(``chatd.core.events``), ``deliver_bulk`` with a page source paced by the
reader, and ``disconnect`` with a ``DisconnectReason``. Each door renders
these in its own form (the line door's ``BYE <reason>``, IRC's ``ERROR``,
the web page's notice); none of them is known here.
"""

from enum import StrEnum

from twisted.internet import defer
from zope.interface import Attribute, Interface

from chatd.core.bulk import PageSource
from chatd.core.events import Event, Roster, Topic


class DisconnectReason(StrEnum):
    """Why the server ends a session; each value is also the line protocol's ``BYE`` token."""

    QUIT = "quit"  # the client asked to leave
    SHUTDOWN = "shutdown"  # the server is stopping
    BANNED = "banned"  # the account was banned
    KICKED = "kicked"  # an administrator ended the account's sessions
    ACCOUNT_DELETED = "account-deleted"  # the account no longer exists
    PASSWORD_CHANGED = "password-changed"  # another session changed the password
    SERVER_ERROR = "server-error"  # delivering to this session failed
    FLOOD = "flood"  # far past the rate limit
    IDLE_TIMEOUT = "idle-timeout"  # a PING went unanswered
    LOGIN_TIMEOUT = "login-timeout"  # no login in time
    TOO_MANY_CONNECTIONS = "too-many-connections"  # over a connection limit
    BAD_CREDENTIALS = "bad-credentials"  # a door whose login cannot be retried (IRC's SASL)
    BINARY_MESSAGE = "binary-message"  # a binary WebSocket message
    # A guest's nick is an account's now and its owner logged in (CHATD_GUESTS;
    # guests come only through the IRC door, so the line door never says it).
    NICK_TAKEN = "nick-taken"


class IChatClient(Interface):
    """The mind: how the service reaches one connected, logged-in client."""

    def deliver(event: Event) -> None:
        """Render ``event`` in the door's form and send it (rendered once per door)."""

    def deliver_bulk(source) -> defer.Deferred:
        """Send the pages of a ``chatd.core.bulk.PageSource`` as the client reads them.

        Lines delivered later come after them. Fires once every page was
        written (or the connection went).
        """

    def disconnect(reason: DisconnectReason) -> None:
        """Tell the client why, in the door's form, and close the connection."""

    connected = Attribute("False once the connection is gone and nothing can reach it.")


class IChatSession(Interface):
    """The avatar: what one logged-in connection can do."""

    name = Attribute("The user's display name.")
    origin = Attribute(
        "An opaque id of this session; the events it causes carry it as ``origin``."
    )

    def say(text: str, room_name: str | None = None, tags=()) -> defer.Deferred:
        """Post to the named or current room; fire with the room's name.

        ``tags``: client-only tags (``events.client_tags``) for the live message.
        """

    def notice(text: str, room_name: str, tags=()) -> defer.Deferred:
        """Post a notice (IRC's NOTICE: never answered automatically) to a room; stored
        with its kind; fire with the room's name."""

    def join(room_name: str) -> defer.Deferred:
        """Join a room (creating it) and make it current; fire with its name."""

    def part(room_name: str | None = None, reason: str = "") -> defer.Deferred:
        """Leave the named or current room for good, saying ``reason`` (cut to
        ``events.PART_REASON_MAX``) in the ``Parted`` event; fire with its name."""

    def message(recipient: str, text: str, kind: str = "say", tags=()) -> defer.Deferred:
        """Send a direct message (``kind`` ``say`` or ``notice``, with client-only
        ``tags``); fire with ``(recipient, 'delivered' or 'stored')``."""

    def tag(target: str, tags) -> str:
        """Send client-only ``tags`` alone (IRC's TAGMSG) to a room you are in or to a user
        online, live only (``no-such-user`` for one offline); return the target's name."""

    def who(room_name: str | None = None) -> Roster:
        """The members and operators of the named or current room."""

    def rooms() -> defer.Deferred:
        """Fire with a ``RoomSummary`` per room that has members (private ones: for members)."""

    def history(room_name: str, count: int) -> PageSource:
        """A room's last ``count`` messages (at most ``HISTORY_MAX``) as ``HistoryLine`` pages.

        The door hands it to its mind's ``deliver_bulk``, so it is read a page
        at a time as the client reads; ``room_name`` on it is the room's name.
        """

    def direct_history(user_name: str, count: int) -> PageSource:
        """The last ``count`` messages (at most ``HISTORY_MAX``) of the user's conversation
        with ``user_name``, both ways, as ``DirectHistoryLine`` pages (none for a guest).

        Kept apart from the stored messages of a mailbox: every direct message an
        account takes part in is kept (until retention removes it), delivered or not.
        """

    def act(text: str, room_name: str | None = None, tags=()) -> defer.Deferred:
        """Post an action (``/me``) to the named or current room; fire with the room's name."""

    def topic(room_name: str) -> Topic:
        """A room's topic now (empty text: none), who set it and when."""

    def set_topic(room_name: str, text: str) -> defer.Deferred:
        """Set a room's topic (every member is told); fire with the room's name."""

    def set_operator(room_name: str, user_name: str, operator: bool) -> defer.Deferred:
        """Make a member an operator of a room or not; fire with the room's name."""

    def kick(room_name: str, user_name: str, reason: str) -> defer.Deferred:
        """Remove a member from a room; fire with the room's name."""

    def ban(room_name: str, user_name: str, banned: bool) -> defer.Deferred:
        """Ban an account from a room (kicking it) or lift the ban; fire with the room's name."""

    def set_private(room_name: str, private: bool) -> defer.Deferred:
        """Make a room private or public; fire with the room's name."""

    def set_secret(room_name: str, secret: bool) -> defer.Deferred:
        """Make a room secret (listed and shown to its members only) or not; fire with the
        room's name."""

    def invite(room_name: str, user_name: str) -> defer.Deferred:
        """Invite a user into a room; fire with the room's name."""

    def bans(room_name: str) -> defer.Deferred:
        """Fire with a room's bans: (name, banned by, when in ms), oldest first."""

    def away(text: str | None) -> defer.Deferred:
        """Set the user's away text, or with ``None`` clear it; fire with the text."""

    def set_invisible(invisible: bool) -> None:
        """Make this session invisible to ``WHO`` by mask from outside its rooms, or not."""

    oper = Attribute("Whether the user is a server operator (an operator of every room).")

    def set_oper(oper: bool) -> None:
        """Make the user a server operator, or not (the gate checked the credentials)."""

    def whois(user_name: str) -> defer.Deferred:
        """Fire with a ``WhoisInfo``: online or not, last seen, shared rooms, away text."""

    def room_count() -> int:
        """How many rooms the user is in."""

    def joining(room_name: str) -> str:
        """What a join would do: ``member`` (one already), ``open`` (others are in), ``closed``."""

    def is_online(user_name: str) -> bool:
        """Whether ``user_name`` has a session (a direct message would be delivered)."""

    def logout() -> None:
        """End this session; the user leaves every room when it was the last."""

    def password_changed(event_id: int) -> None:
        """This session changed the account's password (account event ``event_id``):
        the account's other sessions end with ``BYE password-changed``."""
