"""``chatd ... --help``: summaries and descriptions written for people, not docstrings."""

import pytest

from chatd.ops.admin import DB_COMMANDS, ROOM_COMMANDS, USER_COMMANDS, build_parser


def help_text(capsys, *argv: str) -> str:
    """What ``chatd *argv`` prints (argparse exits 0 after --help)."""
    with pytest.raises(SystemExit) as exited:
        build_parser().parse_args([*argv])
    assert exited.value.code == 0
    return capsys.readouterr().out


@pytest.mark.parametrize(
    "area, action",
    [("user", name) for name in USER_COMMANDS]
    + [("room", name) for name in ROOM_COMMANDS]
    + [("db", name) for name in DB_COMMANDS],
)
def test_each_command_help_is_formatted_text(capsys, area, action):
    """No reStructuredText quoting, no source indentation, paragraphs kept apart."""
    text = help_text(capsys, area, action, "--help")
    assert "``" not in text
    assert not any(
        line.startswith("    ") and line.strip()[:1].isupper() for line in text.splitlines()
    )


def test_user_del_help_describes_erasing_in_paragraphs(capsys):
    """``chatd user del --help`` shows the summary, then the explanation as its own paragraph."""
    text = help_text(capsys, "user", "del", "--help")
    assert (
        "\n\nDelete an account, with the direct messages waiting for it.\n\nWhat the user" in text
    )
    assert "`--erase-messages`" in text


def test_the_list_of_user_commands_shows_one_summary_each(capsys):
    """``chatd user --help`` lists each command by its first sentence only."""
    text = help_text(capsys, "user", "--help")
    assert "Delete an account, with the direct messages waiting" in text
    assert "What the user left behind" not in text
