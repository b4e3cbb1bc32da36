"""The line protocol's command table, written once.

Each row names a command, its argument shape (its usage, which is also its
help) and what it does. The server parses every client line by this table;
the console client derives its own help and completion from it
(``chatd.client.commands``), so a command the server gains is known to both.

Pure data and parsing: no Twisted, so the console client imports it freely.
"""

import re
from dataclasses import dataclass, field

from chatd.core.errors import ChatError

_PARAM = re.compile(r"(\[)?<([a-z-]+)(\.\.\.)?>\]?")
# Relayed text with a CR or an escape would let a sender forge server lines or
# drive the terminals of nc and telnet users: C0 controls but TAB, DEL and
# C1 controls are refused in <text> arguments.
_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f-\x9f]")
# The arguments other users see: the texts, and a kick's reason.
_RELAYED = frozenset({"text", "reason"})
# Bidirectional embedding, override and isolate controls reorder what
# follows them on the reader's screen (a message can be made to read as
# something else); the line and paragraph separators start a new line in
# some renderers. All are refused in <text>. Zero-width characters are
# relayed: joiners and marks are part of emoji and of several scripts, and
# names, being ASCII, cannot hide them.
_REORDERING = re.compile("[\u202a-\u202e\u2066-\u2069\u2028\u2029]")


@dataclass(frozen=True)
class Param:
    """One argument of a command: a word, or the rest of the line."""

    name: str
    optional: bool
    rest: bool


@dataclass(frozen=True)
class Command:
    """A row of the command table.

    ``usage`` is both the help text and the argument shape: ``<word>`` is a
    required word, ``[<word>]`` an optional one, ``<text...>`` the rest of
    the line (spaces included), ``[<text...>]`` an optional rest.
    """

    name: str
    usage: str
    summary: str
    login_required: bool = True
    # A pipelined command may start while others of its kind wait on a commit:
    # nothing it does depends on them, and its reply is still written after theirs.
    pipelined: bool = False
    params: tuple[Param, ...] = field(init=False)

    def __post_init__(self) -> None:
        params = tuple(
            Param(m.group(2), bool(m.group(1)), bool(m.group(3)))
            for m in _PARAM.finditer(self.usage)
        )
        object.__setattr__(self, "params", params)

    def parse(self, text: str) -> list[str | None]:
        """Split ``text`` (what follows the command name) into arguments.

        Words are separated by spaces; a rest argument keeps everything after
        the space that ends the previous word. Missing, extra or empty
        arguments raise ``bad-arguments``, and so does a ``<text>`` argument
        holding a control character other than TAB.
        """
        values: list[str | None] = []
        remaining = text
        for param in self.params:
            if param.rest:
                value, remaining = remaining, ""
            else:
                value, _, remaining = remaining.lstrip(" ").partition(" ")
            if not value:
                if not param.optional:
                    raise self.bad_arguments(f"<{param.name}> is missing")
                value = None
            elif param.name in _RELAYED and _CONTROL.search(value):
                raise self.bad_arguments(
                    f"<{param.name}> may not contain control characters (other than TAB)"
                )
            elif param.name in _RELAYED and _REORDERING.search(value):
                raise self.bad_arguments(
                    "<text> may not contain bidirectional override or isolate controls"
                    " (U+202A to U+202E, U+2066 to U+2069) or line separators"
                )
            values.append(value)
        if remaining.strip(" "):
            raise self.bad_arguments("too many arguments")
        return values

    def bad_arguments(self, problem: str) -> ChatError:
        """The error for a malformed use of this command, with its usage."""
        return ChatError("bad-arguments", f"{problem}; usage: /{self.name} {self.usage}".rstrip())


@dataclass(frozen=True)
class TabSeparatedCommand(Command):
    """A command whose two arguments may hold spaces: ``<first>TAB<second>``.

    The rest of the line holds both; it is split at its first TAB, so the
    first argument holds no TAB and the second may hold anything (spaces and
    further TABs included). Nothing is stripped: spaces belong to the values.
    """

    def parse(self, text: str) -> list[str | None]:
        """Split ``text`` at its first TAB into two non-empty arguments."""
        first_name, second_name = (param.name for param in self.params)
        first, tab, second = text.partition("\t")
        if not tab:
            raise self.bad_arguments(f"separate <{first_name}> and <{second_name}> with a TAB")
        if not first:
            raise self.bad_arguments(f"<{first_name}> is missing")
        if not second:
            raise self.bad_arguments(f"<{second_name}> is missing")
        return [first, second]


COMMANDS: dict[str, Command] = {
    command.name: command
    for command in (
        Command("register", "<user> <password...>", "create an account", login_required=False),
        Command("login", "<user> <password...>", "log in", login_required=False),
        Command(
            "say",
            "<room> <text...>",
            "send text to a room you are in without switching to it",
            pipelined=True,
        ),
        Command("join", "<room>", "join a room, creating it if new, and make it the current room"),
        Command("part", "[<room>]", "leave the named room, or the current one"),
        Command(
            "msg", "<user> <text...>", "send a direct message; kept for them if they are offline"
        ),
        Command("who", "[<room>]", "list who is in the named room, or the current one"),
        Command("rooms", "", "list the rooms that have members"),
        Command(
            "history",
            "<room> [<count>]",
            "show the last messages of a room you are in (50; 1 to 500);"
            " with a user instead of a room, your direct messages with them",
        ),
        Command(
            "me",
            "<text...>",
            "act in the current room: /me waves shows * you waves",
            pipelined=True,
        ),
        Command("topic", "<room> [<text...>]", "show a room's topic, or set it"),
        Command("op", "<room> <user>", "make a member an operator (operators only)"),
        Command("deop", "<room> <user>", "take a member's operator status (operators only)"),
        Command(
            "kick", "<room> <user> [<reason...>]", "remove a member from a room (operators only)"
        ),
        Command("ban", "<room> <user>", "ban someone from a room, kicking them (operators only)"),
        Command("unban", "<room> <user>", "lift a user's ban from a room (operators only)"),
        Command("private", "<room> <on-or-off>", "make a room invitation-only, or open again"),
        # An extension of the contract: IRC's +s.
        Command(
            "secret", "<room> <on-or-off>",
            "hide a room from /rooms and /who of non-members (operators only), or show it",
        ),
        Command("invite", "<room> <user>", "invite someone into a room"),
        Command("away", "[<text...>]", "say you are away (with a text), or back (without)"),
        Command("whois", "<user>", "who someone is: online or not, away, last seen, rooms"),
        Command("passwd", "<old> <new>", "change your password"),
        # An extension: server operators (CHATD_OPERATORS), IRC's OPER.
        Command(
            "oper", "<account> <password>",
            "become a server operator (an operator of every room) with a listed account's password",
        ),
        # An extension of the contract, whose /passwd cannot carry a space.
        TabSeparatedCommand(
            "password", "<old>TAB<new>", "change a password with spaces (one TAB between them)"
        ),
        Command("ping", "[<token>]", "check that the server answers", login_required=False),
        Command("pong", "<token>", "answer the server's PING", login_required=False),
        Command("help", "", "list the commands", login_required=False),
        Command("quit", "[<text...>]", "leave (the text is shown to no one)", login_required=False),
    )
}
PLAIN_TEXT = Command(
    "say", "<text...>", "text not starting with / goes to the current room", pipelined=True
)
