"""What typed lines mean, the client-side help, completion and the history."""

from __future__ import annotations

import pytest
from prompt_toolkit.completion import CompleteEvent
from prompt_toolkit.document import Document

from chatd.client.commands import (
    COMMANDS,
    AskPassword,
    AskPasswordChange,
    ChatCompleter,
    Quit,
    RedactingHistory,
    SendLine,
    ShowHelp,
    complete,
    help_lines,
    parse_input,
    password_change_line,
    redact,
)

ROOMS = ["#lobby", "#dev", "#Design"]
USERS = ["bob", "Bella", "carol"]


@pytest.mark.parametrize(
    ("typed", "action"),
    [
        ("hello there", SendLine("hello there")),
        ("  indented text", SendLine("  indented text")),
        ("//shrug", SendLine("//shrug")),
        ("/join #dev", SendLine("/join #dev")),
        ("/MSG bob hi", SendLine("/MSG bob hi")),
        ("/login alice my secret words", SendLine("/login alice my secret words")),
        ("/help", ShowHelp(None)),
        ("/HELP join", ShowHelp("join")),
        ("/quit", Quit("/quit")),
        ("/quit see you\n", Quit("/quit see you")),
        ("/login alice", AskPassword("/login alice", confirm=False)),
        ("/register carol", AskPassword("/register carol", confirm=True)),
        ("/nosuchthing x", SendLine("/nosuchthing x")),
    ],
)
def test_typed_lines_become_actions(typed: str, action: object) -> None:
    """Protocol commands pass through unchanged; /help and /quit are the client's."""
    assert parse_input(typed) == action


@pytest.mark.parametrize("typed", ["", "   ", "\n", "\r\n"])
def test_blank_lines_do_nothing(typed: str) -> None:
    """The server ignores empty lines; the client does not even send them."""
    assert parse_input(typed) is None


def test_help_lists_every_command_with_its_usage() -> None:
    """/help is a complete reference."""
    text = "\n".join(help_lines())
    for command in COMMANDS:
        assert command.usage in text
    assert "//" in text


def test_help_for_one_command_and_for_a_wrong_one() -> None:
    """/help join explains /join; /help nope says there is no such command."""
    assert help_lines("join") == [
        "/join <room>  -  join a room, creating it if new, and make it the current room"
    ]
    assert help_lines("/msg")[0].startswith("/msg <user> <text>")
    assert "no command /nope" in help_lines("nope")[0]


@pytest.mark.parametrize(
    ("typed", "remembered"),
    [
        ("/login alice secret words", "/login alice"),
        ("/LOGIN alice s3cret", "/LOGIN alice"),
        ("/register carol hunter22", "/register carol"),
        ("/passwd old new", "/passwd"),
        ("/login alice", "/login alice"),
        ("/msg bob my password is hunter2", "/msg bob my password is hunter2"),
        ("hello", "hello"),
    ],
)
def test_history_never_keeps_a_password(typed: str, remembered: str) -> None:
    """Up-arrow must not bring a password back to the screen."""
    assert redact(typed) == remembered


def test_redacting_history_stores_the_redacted_line() -> None:
    """The prompt_toolkit history object applies the redaction itself."""
    history = RedactingHistory()
    history.append_string("/login alice secret")
    history.append_string("hi")
    assert history.get_strings() == ["/login alice", "hi"]


@pytest.mark.parametrize(
    ("typed", "word", "candidates"),
    [
        ("/jo", "/jo", ["/join "]),
        ("/", "/", [f"/{command.name} " for command in sorted(COMMANDS, key=lambda c: c.name)]),
        ("/P", "/P", ["/part ", "/passwd ", "/ping ", "/pong ", "/private "]),
        ("/join #d", "#d", ["#Design ", "#dev "]),
        ("/join ", "", ["#Design ", "#dev ", "#lobby "]),
        ("/who #l", "#l", ["#lobby "]),
        ("/msg b", "b", ["Bella ", "bob "]),
        ("/msg B", "B", ["Bella ", "bob "]),
        ("/msg bob hi c", "c", ["carol "]),
        ("/say #lobby hi #d", "#d", ["#Design ", "#dev "]),
        ("/help jo", "jo", ["join "]),
        ("/passwd ol", "ol", []),
        ("hi ca", "ca", ["carol "]),
        ("hi @b", "@b", ["@Bella ", "@bob "]),
        ("see #de", "#de", ["#Design ", "#dev "]),
        ("hi ", "", []),
        ("//me w", "w", []),
    ],
)
def test_completion_of_commands_rooms_and_people(
    typed: str, word: str, candidates: list[str]
) -> None:
    """Tab completes what makes sense where the cursor is, case-insensitively."""
    assert complete(typed, ROOMS, USERS) == (word, candidates)


def test_the_completer_replaces_the_word_before_the_cursor() -> None:
    """prompt_toolkit gets completions positioned over the partial word."""
    completer = ChatCompleter(lambda: (ROOMS, USERS))
    document = Document("/msg ca")
    completions = list(
        completer.get_completions(document, CompleteEvent(completion_requested=True))
    )
    assert [(c.text, c.start_position) for c in completions] == [("carol ", -2)]


def test_completing_a_name_mid_line_adds_no_second_space() -> None:
    """Tab on ``b`` in ``/msg b hi`` (cursor after the b): ``bob``, the space is there."""
    completer = ChatCompleter(lambda: (ROOMS, USERS))
    document = Document("/msg bo hi", cursor_position=len("/msg bo"))
    completions = list(
        completer.get_completions(document, CompleteEvent(completion_requested=True))
    )
    assert [(c.text, c.start_position) for c in completions] == [("bob", -2)]


def test_completion_menus_show_names_without_the_space() -> None:
    """The menu lists ``#dev``, though ``#dev `` is inserted."""
    completer = ChatCompleter(lambda: (ROOMS, USERS))
    document = Document("/join #de")
    completions = list(
        completer.get_completions(document, CompleteEvent(completion_requested=True))
    )
    assert [c.display_text for c in completions] == ["#Design", "#dev"]
    assert [c.text for c in completions] == ["#Design ", "#dev "]


def test_a_bare_passwd_asks_and_one_with_arguments_is_sent() -> None:
    """``/passwd`` alone asks for the passwords; ``/passwd old new`` goes as typed."""
    assert parse_input("/passwd") == AskPasswordChange()
    assert parse_input("/PASSWD  ") == AskPasswordChange()
    assert parse_input("/passwd old-pass new-pass") == SendLine("/passwd old-pass new-pass")


@pytest.mark.parametrize(
    ("old", "new", "line"),
    [
        ("old pass word", "new pass word", "/password old pass word\tnew pass word"),
        ("old-pass", "new\tpass word", "/password old-pass\tnew\tpass word"),
        ("old\tpass", "new-pass", "/passwd old\tpass new-pass"),
        ("old\tpass", "new pass", None),
        ("old\tpass word", "new-pass", None),
        ("", "new-pass", None),
        ("old-pass", "", None),
    ],
)
def test_the_password_change_line_picks_a_form_that_carries_both(old, new, line) -> None:
    """The TAB form when the old password has no TAB, the space form when neither has a space."""
    assert password_change_line(old, new) == line


def test_history_keeps_no_password_of_either_passwd_form() -> None:
    """Both password-changing lines are remembered without their passwords."""
    assert redact("/password my old pass\tmy new pass") == "/password"
    assert redact("/passwd old-pass new-pass") == "/passwd"


def test_the_client_derives_its_commands_from_the_servers_table() -> None:
    """Every server command but those the client hides is offered, in the server's order,
    with the server's usage and summary unless the client overrides them."""
    from chatd.client.commands import CLIENT_HIDDEN, CLIENT_OVERRIDES
    from chatd.frontends.line.commands import COMMANDS as SERVER_COMMANDS

    offered = [name for name in SERVER_COMMANDS if name not in CLIENT_HIDDEN]
    assert [command.name for command in COMMANDS] == offered
    assert set(CLIENT_OVERRIDES) <= set(offered)
    for command in COMMANDS:
        row = SERVER_COMMANDS[command.name]
        if command.name in CLIENT_OVERRIDES:
            assert (command.arguments, command.summary) == CLIENT_OVERRIDES[command.name]
        else:
            assert command.arguments == row.usage.replace("...>", ">")
            assert command.summary == row.summary
