"""The page's JavaScript units (tests/js/*.test.mjs), run by Node's built-in test runner.

The page has no build step and no framework: its modules are plain ES
modules, and the logic (parsing, state, links, reconnection) is tested in
Node without a browser. A failing JavaScript test fails this test, with
Node's report in the message.
"""

import subprocess

from tests.programs import require_program
from tests.serverproc import ROOT

JS_TESTS = ROOT / "tests" / "js"


def test_the_pages_javascript_units_pass():
    """``node --test`` on every tests/js/*.test.mjs file exits 0."""
    node = require_program("node", "nodejs")
    files = sorted(str(path) for path in JS_TESTS.glob("*.test.mjs"))
    assert files, "no JavaScript tests found"
    result = subprocess.run(
        [node, "--test", *files], cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    report = result.stdout + result.stderr
    assert result.returncode == 0, report
    assert "# fail 0" in report, report
