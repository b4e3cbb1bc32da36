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
