"""The rule for tests that need a system program: skip with a reason, or fail in CI."""

import pytest

from tests import programs


def test_a_present_program_is_found():
    """A program on PATH comes back as its path."""
    assert programs.require_program("sh", "dash").endswith("/sh")


def test_a_missing_program_skips_naming_the_package(monkeypatch):
    """Without CHATD_TEST_REQUIRE_ALL the test is skipped, naming the Debian package."""
    monkeypatch.setattr(programs, "REQUIRE_ALL", False)
    with pytest.raises(pytest.skip.Exception, match="install the Debian package no-such-pkg"):
        programs.require_program("chatd-no-such-program", "no-such-pkg")


def test_a_missing_program_fails_when_everything_is_required(monkeypatch):
    """Under CHATD_TEST_REQUIRE_ALL=1 (CI) a missing program fails the test."""
    monkeypatch.setattr(programs, "REQUIRE_ALL", True)
    with pytest.raises(pytest.fail.Exception, match="CHATD_TEST_REQUIRE_ALL=1"):
        programs.require_program("chatd-no-such-program", "no-such-pkg")


def test_a_missing_module_fails_when_everything_is_required(monkeypatch):
    """The same rule holds for a Python module that a test imports."""
    monkeypatch.setattr(programs, "REQUIRE_ALL", True)
    with pytest.raises(pytest.fail.Exception, match="install chatd-no-such-module"):
        programs.require_module("chatd_no_such_module", "chatd-no-such-module")
