"""System programs that some tests need (a browser, an IRC client, a database server).

A test that needs one calls ``require_program``: where the program is
missing the test is skipped with a one-line reason naming the Debian
package, except under ``CHATD_TEST_REQUIRE_ALL=1`` (set by CI), where a
missing program is a failure, so a CI run can never pass by skipping.
"""

import importlib
import os
import shutil

import pytest

REQUIRE_ALL = os.environ.get("CHATD_TEST_REQUIRE_ALL") == "1"


def require_program(program: str, package: str) -> str:
    """The path of ``program``; skip (or fail under CHATD_TEST_REQUIRE_ALL=1) without it."""
    path = shutil.which(program)
    if path is None:
        reason = f"{program} not found: install the Debian package {package}"
        if REQUIRE_ALL:
            pytest.fail(f"{reason} (CHATD_TEST_REQUIRE_ALL=1)")
        pytest.skip(reason)
    return path


def require_module(module: str, package: str):
    """Import ``module``; skip (or fail under CHATD_TEST_REQUIRE_ALL=1) without it."""
    if REQUIRE_ALL:
        try:
            return importlib.import_module(module)
        except ImportError as error:
            pytest.fail(f"{module} cannot be imported ({error}): install {package}")
    return pytest.importorskip(module, reason=f"{module} not installed: pip install {package}")
