"""The README's promises that a test can hold it to."""

import re

from chatd.config import Config
from chatd.frontends.line.wire import ERROR_CODES
from tests.serverproc import ROOT


def readme() -> str:
    return (ROOT / "README.md").read_text()


def test_ci_runs_exactly_the_readme_test_command():
    """.ci/run runs the very command the README gives for the tests."""
    blocks = re.findall(r"```sh\n(.*?)\n```", readme(), re.S)
    assert len(blocks) >= 2
    install_and_start, install_and_test = blocks[0], blocks[1]
    assert "twistd -ny chatd.tac" in install_and_start
    assert install_and_test in (ROOT / ".ci" / "run").read_text().splitlines()


def test_every_setting_is_in_the_configuration_table():
    """Each CHATD_* variable the server reads has a row in the README."""
    text = readme()
    for variable in Config.variables():
        assert f"| `{variable}` |" in text, variable


def test_every_page_in_docs_is_linked_from_the_readme():
    """The README's file table points at each page of docs/."""
    text = readme()
    for page in sorted((ROOT / "docs").glob("*.md")):
        assert f"](docs/{page.name})" in text, page.name


def test_the_history_count_rules_are_in_the_protocol_page():
    """docs/protocol.md states what /history accepts as a count, as the contract does."""
    text = (ROOT / "docs" / "protocol.md").read_text()
    row = next(line for line in text.splitlines() if line.startswith("| `/history"))
    assert "whole number from 1" in row
    assert "more than 500 counts as 500" in row
    assert "`ERR bad-arguments`" in row


def protocol_page() -> str:
    return (ROOT / "docs" / "protocol.md").read_text()


VERSION_1_LINE_TYPES = [
    "HELLO",
    "OK",
    "ERR",
    "MSG",
    "DM",
    "JOIN",
    "PART",
    "WHO",
    "ROOM",
    "HISTORY",
    "STORED",
    "PING",
    "INFO",
    "BYE",
]


def test_the_protocol_page_stands_on_its_own():
    """docs/protocol.md sends no reader to a contract file the repository does not hold."""
    text = protocol_page()
    assert "PROTOCOL.md" not in text
    assert "contract" not in text.lower()


def test_the_protocol_page_describes_every_command():
    """Each command of the server's table has a row in docs/protocol.md."""
    from chatd.frontends.line.protocol import COMMANDS

    rows = [line for line in protocol_page().splitlines() if line.startswith("| `/")]
    for name in COMMANDS:
        assert any(
            row.startswith(f"| `/{name} ") or row.startswith(f"| `/{name}`") for row in rows
        ), name


def test_the_protocol_page_lists_every_error_code_the_server_sends():
    """Every ERR code (version 1's, and any the server's sources raise) has a row."""
    text = protocol_page()
    sources = "\n".join(path.read_text() for path in (ROOT / "chatd").rglob("*.py"))
    raised = set(re.findall(r'ChatError\(\s*"([a-z-]+)"', sources))
    raised |= set(re.findall(r'_refuse\(\s*"([a-z-]+)"', sources))
    raised |= set(re.findall(r'"ERR",\s*"([a-z-]+)"', sources))
    assert raised, "the pattern no longer finds the server's error codes"
    assert raised <= ERROR_CODES, "a code the server raises is not in chatd.frontends.line.wire"
    for code in sorted(ERROR_CODES | raised):
        assert f"| `{code}` |" in text, code


def test_the_protocol_page_describes_every_server_line_type():
    """Each line type of version 1 has a row in the server lines table."""
    text = protocol_page()
    for kind in VERSION_1_LINE_TYPES:
        assert f"| `{kind} " in text or f"/ `{kind} " in text, kind


def test_the_protocol_page_does_not_promise_that_others_see_the_quit_text():
    """The server shows /quit's text to no one, and the page says so."""
    text = protocol_page()
    assert "and `/quit`) may not contain" not in text
    row = next(line for line in text.splitlines() if line.startswith("| `/quit"))
    assert "shown to no one" in row
