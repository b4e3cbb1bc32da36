"""Turning server lines into text for people.

Every function here is pure: it takes a parsed line and returns the text to
show (or ``None`` to show nothing), so the whole look of the client is tested
without a terminal.
"""

from __future__ import annotations

import datetime
import os
import re
from collections.abc import Callable, Mapping
from typing import TextIO

from chatd.client.lines import ServerLine

RESET = "\x1b[0m"
BOLD = "1"
DIM = "2"
RED = "31"
GREEN = "32"
YELLOW = "33"
MAGENTA = "35"
CYAN = "36"

# Control characters from other users' text would otherwise reach the terminal
# as escape sequences: they could move the cursor, retitle the window or fake
# lines. They are shown in caret notation instead.
_CONTROL_CHARACTERS = re.compile("[\x00-\x08\x0a-\x1f\x7f-\x9f]")


def _caret(match: re.Match[str]) -> str:
    code = ord(match.group())
    if code < 0x20:
        return "^" + chr(code + 0x40)
    if code == 0x7F:
        return "^?"
    return f"\\x{code:02x}"


def defang(text: str) -> str:
    """Make text safe to print on a terminal: tabs become spaces, controls visible."""
    return _CONTROL_CHARACTERS.sub(_caret, text.replace("\t", " "))


def colour_wanted(stream: TextIO, environ: Mapping[str, str] | None = None) -> bool:
    """Colours on a terminal only, and never when ``NO_COLOR`` is set (no-color.org)."""
    environ = os.environ if environ is None else environ
    if environ.get("NO_COLOR"):
        return False
    isatty = getattr(stream, "isatty", None)
    return bool(isatty and isatty())


def parse_timestamp(text: str) -> datetime.datetime | None:
    """Read a protocol timestamp (UTC, ISO 8601 with milliseconds), or ``None``."""
    try:
        moment = datetime.datetime.fromisoformat(text)
    except ValueError:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=datetime.UTC)
    return moment


# A successful command whose visible effect is its own event line (MSG, JOIN,
# WHO, ...) needs no acknowledgement; these OKs say something the events do not.
def _ok_login(user: str, _rest: str) -> str:
    return f"logged in as {user}"


def _ok_register(user: str, _rest: str) -> str:
    return f"registered {user}; now log in with /login {user}"


def _ok_msg(recipient: str, outcome: str) -> str | None:
    if outcome == "stored":
        return f"{recipient} is offline; the message is stored until they log in"
    return None


def _ok_passwd(_first: str, _rest: str) -> str:
    return "password changed"


def _ok_ping(token: str, rest: str) -> str:
    return " ".join(part for part in ("pong", token, rest) if part)


def _ok_away(first: str, rest: str) -> str:
    text = " ".join(part for part in (first, rest) if part)
    return f"you are marked away: {text}" if text else "you are back"


def _ok_ban(room: str, _rest: str) -> str:
    return f"banned from {room}"


def _ok_unban(room: str, _rest: str) -> str:
    return f"ban lifted in {room}"


def _ok_private(room: str, _rest: str) -> str:
    return f"privacy of {room} set"


def _ok_secret(room: str, _rest: str) -> str:
    return f"secrecy of {room} set"


def _ok_invite(room: str, _rest: str) -> str:
    return f"invitation to {room} sent"


# How MODE lines read, by feature and whether it was switched on.
_MODE_PHRASES = {
    ("private", True): "{by} made {room} private (members and the invited only)",
    ("private", False): "{by} made {room} public",
    ("secret", True): "{by} made {room} secret (listed to its members only)",
    ("secret", False): "{by} made {room} no longer secret",
    ("moderated", True): "{by} made {room} moderated (operators and voiced members speak)",
    ("moderated", False): "{by} made {room} no longer moderated",
    ("topic-open", True): "{by} let every member of {room} set the topic",
    ("topic-open", False): "{by} let only the operators of {room} set the topic",
    ("voice", True): "{by} gave {user} voice in {room}",
    ("voice", False): "{by} took {user}'s voice in {room}",
    ("ban", True): "{by} banned {user} from {room}",
    ("ban", False): "{by} lifted {user}'s ban from {room}",
}

# The commands whose events (ACTION, TOPIC, OPS, KICK, WHOIS) say it all.
_QUIET_OKS = frozenset(
    {"say", "join", "part", "who", "rooms", "history", "help", "pong", "quit", "me", "topic",
     "op", "deop", "kick", "whois"}
)
_TALKING_OKS: dict[str, Callable[[str, str], str | None]] = {
    "login": _ok_login,
    "register": _ok_register,
    "msg": _ok_msg,
    "passwd": _ok_passwd,
    "password": _ok_passwd,
    "ping": _ok_ping,
    "away": _ok_away,
    "ban": _ok_ban,
    "unban": _ok_unban,
    "private": _ok_private,
    "secret": _ok_secret,
    "invite": _ok_invite,
}


class Renderer:
    """Renders server lines and the client's own notices, with or without colour.

    ``whoami`` tells the renderer who is logged in, so one's own name can stand
    out and stored direct messages can name their recipient; ``is_operator(room,
    name)`` lets operators' names carry an ``@``. ``timezone`` and ``now`` exist
    for tests; by default times are shown in the local zone.
    """

    def __init__(
        self,
        *,
        colour: bool,
        whoami: Callable[[], str | None] = lambda: None,
        is_operator: Callable[[str, str], bool] = lambda room, name: False,
        timezone: datetime.tzinfo | None = None,
        now: Callable[[], datetime.datetime] | None = None,
    ) -> None:
        self.colour = colour
        self._whoami = whoami
        self._is_operator = is_operator
        self._timezone = timezone
        self._now = now or (lambda: datetime.datetime.now(datetime.UTC))

    def paint(self, text: str, *codes: str) -> str:
        """Wrap text in the given SGR codes when colours are on."""
        if not self.colour or not codes:
            return text
        return f"\x1b[{';'.join(codes)}m{text}{RESET}"

    def notice(self, text: str) -> str:
        """A line from the client itself about what is going on."""
        return self.paint(f"* {text}", DIM)

    def problem(self, text: str) -> str:
        """Something went wrong; set apart from the conversation."""
        return self.paint(f"! {text}", BOLD, RED)

    def render(self, line: ServerLine) -> str | None:
        """The text to show for a server line, or ``None`` when it deserves none."""
        fields = tuple(defang(field) for field in line.fields)
        handler = getattr(self, f"_render_{line.kind.lower()}", None)
        if handler is None or not line.is_known:
            return defang(line.raw)
        return handler(*fields)

    def local_time(self, timestamp: str) -> str:
        """A protocol timestamp as local time: the hour alone today, with the date otherwise."""
        moment = parse_timestamp(timestamp)
        if moment is None:
            return timestamp
        local = moment.astimezone(self._timezone)
        today = self._now().astimezone(self._timezone).date()
        if local.date() == today:
            return local.strftime("%H:%M")
        return local.strftime("%Y-%m-%d %H:%M")

    def _is_me(self, name: str) -> bool:
        me = self._whoami()
        return me is not None and name.lower() == me.lower()

    def _marked(self, room: str, name: str) -> str:
        """The name with ``@`` in front when it is an operator of the room."""
        return f"@{name}" if room and self._is_operator(room, name) else name

    def _nick(self, name: str, room: str = "") -> str:
        shown = self._marked(room, name)
        if self._is_me(name):
            return self.paint(f"<{shown}>", BOLD, GREEN)
        return self.paint(f"<{shown}>", BOLD)

    def _room_tag(self, room: str) -> str:
        return self.paint(f"[{room}]", CYAN)

    def _dm_tag(self, sender: str, recipient: str) -> str:
        return self.paint(f"[DM {sender} -> {recipient}]", BOLD, MAGENTA)

    def _past(self, label: str, timestamp: str) -> str:
        return self.paint(f"({label} {self.local_time(timestamp)})", YELLOW)

    def _render_hello(self, server: str, version: str, text: str) -> str:
        greeting = f"connected to {server} (protocol {version})"
        return self.notice(f"{greeting}: {text}" if text else greeting)

    def _render_ok(self, command: str, text: str) -> str | None:
        command = command.lower()
        if command in _QUIET_OKS:
            return None
        talker = _TALKING_OKS.get(command)
        if talker is None:
            return self.notice(" ".join(part for part in (command, text) if part))
        first, _, rest = text.partition(" ")
        said = talker(first, rest)
        return None if said is None else self.notice(said)

    def _render_err(self, code: str, text: str) -> str:
        return self.problem(f"{code}: {text}" if text else code)

    def _render_msg(self, room: str, sender: str, text: str) -> str:
        return f"{self._room_tag(room)} {self._nick(sender, room)} {text}"

    def _render_action(self, room: str, sender: str, text: str) -> str:
        actor = self.paint(f"* {self._marked(room, sender)}", BOLD)
        return f"{self._room_tag(room)} {actor} {text}"

    def _render_historyaction(self, room: str, timestamp: str, sender: str, text: str) -> str:
        return f"{self._past('past', timestamp)} {self._room_tag(room)} * {sender} {text}"

    def _render_topic(self, room: str, setter: str, text: str) -> str:
        if not text:
            return self.notice(f"{setter} cleared the topic of {room}")
        return self.notice(f"topic of {room}: {text} (set by {setter})")

    def _render_ops(self, room: str, names: str) -> str:
        listed = ", ".join(f"@{name}" for name in names.split())
        if not listed:
            return self.notice(f"{room} has no operators")
        return self.notice(f"operators of {room}: {listed}")

    def _render_kick(self, room: str, user: str, by: str, reason: str) -> str:
        verb = "banned from" if reason == "banned" else "kicked from"
        because = "" if reason in ("", "banned") else f": {reason}"
        if self._is_me(user):
            return self.problem(f"you were {verb} {room} by {by}{because}")
        return self.notice(f"{user} was {verb} {room} by {by}{because}")

    def _render_mode(self, room: str, by: str, feature: str, state: str, user: str) -> str:
        phrases = _MODE_PHRASES.get((feature, state == "on"))
        if phrases is None:
            return self.notice(f"{by} set {feature} {state} {user} in {room}".replace("  ", " "))
        return self.notice(phrases.format(by=by, room=room, user=user))

    def _render_invite(self, room: str, by: str) -> str:
        return self.paint(f"* {by} invites you to {room}; /join {room} to accept", BOLD, YELLOW)

    def _render_away(self, user: str, text: str) -> str:
        return self.notice(f"{user} is away: {text}")

    def _render_whois(self, user: str, status: str, seen: str, rooms: str) -> str:
        if seen in ("", "-"):
            when = "never logged in"
        elif status == "online":
            when = f"online since {self.local_time(seen)}"
        else:
            when = f"offline, last seen {self.local_time(seen)}"
        shared = ", ".join(rooms.split()) or "none"
        return self.notice(f"{user}: {when}; rooms you share: {shared}")

    def _render_dm(self, sender: str, recipient: str, text: str) -> str:
        return f"{self._dm_tag(sender, recipient)} {text}"

    def _render_join(self, room: str, user: str) -> str:
        return self.notice(f"{user} joined {room}")

    def _render_part(self, room: str, user: str) -> str:
        return self.notice(f"{user} left {room}")

    def _render_who(self, room: str, members: str) -> str:
        names = members.split()
        listed = ", ".join(self._marked(room, name) for name in names) if names else "nobody"
        return self.notice(f"in {room} ({len(names)}): {listed}")

    def _render_room(self, room: str, count: str) -> str:
        noun = "member" if count == "1" else "members"
        return self.notice(f"{room} ({count} {noun})")

    def _render_history(self, room: str, timestamp: str, sender: str, text: str) -> str:
        return f"{self._past('past', timestamp)} {self._room_tag(room)} <{sender}> {text}"

    def _render_historydm(self, timestamp: str, sender: str, recipient: str, text: str) -> str:
        return f"{self._past('past', timestamp)} {self._dm_tag(sender, recipient)} {text}"

    def _render_stored(self, timestamp: str, sender: str, text: str) -> str:
        recipient = self._whoami() or "you"
        return f"{self._past('stored', timestamp)} {self._dm_tag(sender, recipient)} {text}"

    def _render_ping(self, _token: str) -> None:
        return None

    def _render_info(self, text: str) -> str:
        return self.notice(text)

    def _render_bye(self, reason: str) -> str | None:
        # BYE quit only confirms what the user asked for.
        if reason == "quit":
            return None
        return self.notice(f"the server closed the connection ({reason or 'no reason given'})")


def raw_text(line: ServerLine, *, terminal: bool) -> str:
    """A protocol line for ``--raw``: verbatim into a pipe, defanged on a terminal."""
    return defang(line.raw) if terminal else line.raw
