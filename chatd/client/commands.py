"""What the user types: commands, client-side help, completion and history.

Everything here is pure apart from the prompt_toolkit adapters at the end, and
runs in the input thread; it never touches the connection.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from prompt_toolkit.completion import CompleteEvent, Completer, Completion
from prompt_toolkit.document import Document
from prompt_toolkit.history import InMemoryHistory

from chatd.frontends.line.commands import COMMANDS as SERVER_COMMANDS
from chatd.frontends.line.commands import Command as ServerCommand


@dataclass(frozen=True)
class Command:
    """One command of the protocol as the client explains it."""

    name: str
    arguments: str
    summary: str

    @property
    def usage(self) -> str:
        """How the command is typed, e.g. ``/join <room>``."""
        return f"/{self.name} {self.arguments}".rstrip()


# The server's table is the one list of commands: the client shows each row
# as the server has it (a rest argument ``<text...>`` shown as ``<text>``),
# but for what the client itself does differently. These are its overrides:
# (arguments, summary) for the commands it answers or completes by itself.
CLIENT_OVERRIDES: dict[str, tuple[str, str]] = {
    "register": ("<user> [<password>]", "create an account (asks for the password if left out)"),
    "login": ("<user> [<password>]", "log in (asks for the password if left out)"),
    "passwd": (
        "[<old> <new>]",
        "change your password (asks for both, unseen, if left out; then spaces are fine)",
    ),
    "pong": ("<token>", "answer a server PING (the client does this by itself)"),
    "help": ("[<command>]", "this help, or the help for one command"),
    "quit": ("[<text>]", "leave chatd (Ctrl-D does the same)"),
}
# Server commands the client does not offer: it sends /password itself, for a bare /passwd.
CLIENT_HIDDEN = frozenset({"password"})


def _from_server(row: ServerCommand) -> Command:
    arguments, summary = CLIENT_OVERRIDES.get(
        row.name, (row.usage.replace("...>", ">"), row.summary)
    )
    return Command(row.name, arguments, summary)


COMMANDS: tuple[Command, ...] = tuple(
    _from_server(row) for row in SERVER_COMMANDS.values() if row.name not in CLIENT_HIDDEN
)
COMMANDS_BY_NAME = {command.name: command for command in COMMANDS}

_HELP_FOOTER = (
    "Text that does not start with / goes to the current room (shown in the prompt).",
    "Start a line with // to send text that begins with /.",
    "Tab completes commands, room names and the names of people online;",
    "Up and Down walk through what you typed. Ctrl-D or /quit leaves.",
)


def help_lines(topic: str | None = None) -> list[str]:
    """The client-side ``/help``: every command, or one in detail."""
    if topic:
        command = COMMANDS_BY_NAME.get(topic.lower().lstrip("/"))
        if command is None:
            return [f"no command /{topic.lstrip('/')}; /help lists them all"]
        return [f"{command.usage}  -  {command.summary}"]
    width = max(len(command.usage) for command in COMMANDS)
    lines = ["commands:"]
    lines += [f"  {command.usage:<{width}}  {command.summary}" for command in COMMANDS]
    lines += _HELP_FOOTER
    return lines


@dataclass(frozen=True)
class SendLine:
    """Send this line to the server as it is."""

    line: str


@dataclass(frozen=True)
class ShowHelp:
    """Answer ``/help`` locally."""

    topic: str | None


@dataclass(frozen=True)
class Quit:
    """Leave: send this ``/quit`` line, then stop."""

    line: str


@dataclass(frozen=True)
class AskPassword:
    """``/login`` or ``/register`` without a password: ask for it without echo.

    The finished line is ``f"{prefix} {password}"``; ``confirm`` asks twice, for
    a new password.
    """

    prefix: str
    confirm: bool


@dataclass(frozen=True)
class AskPasswordChange:
    """A bare ``/passwd``: ask for the old password and the new one (twice), unseen."""


Action = SendLine | ShowHelp | Quit | AskPassword | AskPasswordChange


def password_change_line(old: str, new: str) -> str | None:
    """The line that changes ``old`` to ``new``, or None if no form can carry them.

    ``/password <old>TAB<new>`` carries spaces in both; its old password
    ends at the first TAB, so an old password with a TAB goes in the
    contract's ``/passwd <old> <new>``, which needs both free of spaces.
    """
    if not old or not new:
        return None
    if "\t" not in old:
        return f"/password {old}\t{new}"
    if " " not in old and " " not in new:
        return f"/passwd {old} {new}"
    return None


def command_name(line: str) -> str:
    """The command a client line carries, lower case: ``/JOIN #a`` -> ``join``; text -> ``""``."""
    if not line.startswith("/") or line.startswith("//"):
        return ""
    return line.split(" ", 1)[0][1:].lower()


def parse_input(text: str) -> Action | None:
    """Decide what a typed line means; ``None`` for a blank line."""
    text = text.rstrip("\r\n")
    if not text.strip():
        return None
    if not text.startswith("/") or text.startswith("//"):
        return SendLine(text)
    words = text.split()
    name = words[0][1:].lower()
    if name == "help":
        return ShowHelp(words[1] if len(words) > 1 else None)
    if name == "quit":
        return Quit(text)
    if name in ("login", "register") and len(words) == 2:
        return AskPassword(f"{words[0]} {words[1]}", confirm=name == "register")
    if name == "passwd" and len(words) == 1:
        return AskPasswordChange()
    return SendLine(text)


# Commands that carry a password: history keeps them without it, so the
# password is neither shown again with Up nor kept in memory longer than needed.
_SECRET_ARGUMENT_INDEX = {"login": 2, "register": 2, "passwd": 1, "password": 1}


def redact(line: str) -> str:
    """The line as history should remember it, without any password."""
    words = line.split()
    if not words or not words[0].startswith("/"):
        return line
    keep = _SECRET_ARGUMENT_INDEX.get(words[0][1:].lower())
    if keep is None or len(words) <= keep:
        return line
    return " ".join(words[:keep])


class RedactingHistory(InMemoryHistory):
    """In-memory history of typed lines that never stores a password."""

    def append_string(self, string: str) -> None:
        """Remember a typed line (or a pasted text of several), with any password taken out."""
        super().append_string("\n".join(redact(line) for line in string.split("\n")))


_ROOM_ARGUMENT_COMMANDS = frozenset(
    {"join", "part", "who", "history", "say", "topic", "op", "deop", "kick", "ban", "unban",
     "private", "secret", "invite"}
)
# Commands whose second argument (after the room) is a user.
_ROOM_THEN_USER_COMMANDS = frozenset({"op", "deop", "kick", "ban", "unban", "invite"})


def _matching(prefix: str, candidates: Iterable[str]) -> list[str]:
    folded = prefix.lower()
    unique = {candidate.lower(): candidate for candidate in candidates}
    return sorted(
        (name for key, name in unique.items() if key.startswith(folded)),
        key=str.lower,
    )


def complete(text: str, rooms: Iterable[str], users: Iterable[str]) -> tuple[str, list[str]]:
    """Completions for the word before the cursor.

    Returns the word being completed and its candidates, best order first. The
    first word of a command line completes to command names, a command's room
    or user argument to rooms or users, and any other word to a room when it
    starts with ``#`` and to a person's name otherwise. A completed command,
    room or name ends with a space, so typing goes straight on with the next
    word (``/msg b`` Tab ``hi`` is ``/msg bob hi``).
    """
    word, candidates = _candidates(text, rooms, users)
    return word, [candidate + " " for candidate in candidates]


def _candidates(text: str, rooms: Iterable[str], users: Iterable[str]) -> tuple[str, list[str]]:
    word = text.rsplit(" ", 1)[-1]
    earlier = text[: len(text) - len(word)].split()
    if text.startswith("/") and not text.startswith("//"):
        if not earlier:
            names = _matching(word.lstrip("/"), (command.name for command in COMMANDS))
            return word, [f"/{name}" for name in names]
        command = earlier[0][1:].lower()
        if len(earlier) == 1 and command in _ROOM_ARGUMENT_COMMANDS:
            return word, _matching(word, rooms)
        if len(earlier) == 1 and command in ("msg", "whois"):
            return word, _matching(word, users)
        if len(earlier) == 2 and command in _ROOM_THEN_USER_COMMANDS:
            return word, _matching(word, users)
        if len(earlier) == 2 and command in ("private", "secret"):
            return word, _matching(word, ("on", "off"))
        if len(earlier) == 1 and command == "help":
            return word, _matching(word, (command.name for command in COMMANDS))
        if command not in ("say", "msg", "me", "topic", "away", "kick"):
            return word, []
    if not word:
        return word, []
    if word.startswith("#"):
        return word, _matching(word, rooms)
    if word.startswith("@"):
        return word, ["@" + name for name in _matching(word[1:], users)]
    return word, _matching(word, users)


class ChatCompleter(Completer):
    """Tab completion over what the client has learnt of rooms and people.

    ``snapshot`` returns ``(rooms, users)``; it is called in the input thread
    and must hand back copies, not the reactor's live sets.
    """

    def __init__(self, snapshot) -> None:
        self._snapshot = snapshot

    def get_completions(
        self, document: Document, complete_event: CompleteEvent
    ) -> Iterator[Completion]:
        """prompt_toolkit's hook: yield a Completion for each candidate."""
        rooms, users = self._snapshot()
        word, candidates = complete(document.text_before_cursor, rooms, users)
        # Completing inside a line whose next word already follows a space:
        # no second space.
        followed = document.text_after_cursor.startswith(" ")
        for candidate in candidates:
            text = candidate[:-1] if followed else candidate
            yield Completion(text, start_position=-len(word), display=candidate.rstrip())
