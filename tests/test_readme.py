"""The README's promises that a test can hold it to."""

import re

from chatd.config import Config
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
