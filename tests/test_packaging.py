"""The README's install works: ``twistd -n chatd`` from a fresh venv, without PYTHONPATH.

Each test makes a venv in ``tmp_path`` and installs a copy of this checkout
into it with pip, as the README says, once editable (``pip install -e``) and
once as a regular install. Offline: the dependencies are this test run's
own (a ``.pth`` file points the new venv at them, and ``--no-deps`` keeps
pip from fetching any), and ``--no-build-isolation`` builds with the
setuptools installed here (the ``test`` extra requires it). Then the venv's
Python runs twistd from another directory with no PYTHONPATH at all: the
plugin must be found through the install alone, and serve.
"""

import os
import shutil
import signal
import site
import subprocess
import sys
from pathlib import Path

import pytest

from tests.serverproc import ROOT, LineClient, ServerProcess

TWISTD = ["-c", "from twisted.scripts.twistd import run; run()"]
INSTALL_TIMEOUT = 300


def copy_of_the_checkout(target: Path) -> Path:
    """What a build needs from this checkout, copied, so the build writes nothing here."""
    target.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, target / name)
    for name in ("chatd", "twisted"):
        shutil.copytree(
            ROOT / name, target / name, ignore=shutil.ignore_patterns("__pycache__", "*.cache")
        )
    return target


def fresh_venv(directory: Path) -> Path:
    """A venv whose only packages are this run's dependencies; its python."""
    subprocess.run(
        [sys.executable, "-m", "venv", "--without-pip", str(directory)],
        check=True, timeout=INSTALL_TIMEOUT,
    )
    python = directory / "bin" / "python"
    purelib = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True, capture_output=True, text=True, timeout=INSTALL_TIMEOUT,
    ).stdout.strip()
    # Plain path lines: this run's site-packages, without running its .pth files
    # (so an editable chatd installed there is not seen in the new venv).
    Path(purelib, "dependencies.pth").write_text("\n".join(site.getsitepackages()) + "\n")
    return python


def clean_environment() -> dict[str, str]:
    """The process's environment without PYTHONPATH and without CHATD_* settings."""
    return {
        name: value
        for name, value in os.environ.items()
        if name != "PYTHONPATH" and not name.startswith("CHATD_")
    }


@pytest.mark.parametrize("editable", [True, False], ids=["pip-install-e", "pip-install"])
def test_twistd_finds_the_chatd_plugin_after_pip_install(tmp_path, editable):
    """Issue 9 item 18: ``twistd --help`` lists chatd and ``twistd -n chatd`` serves."""
    checkout = copy_of_the_checkout(tmp_path / "checkout")
    python = fresh_venv(tmp_path / "venv")
    installed = subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(python), "install", "--quiet",
         "--no-deps", "--no-build-isolation", "--no-index",
         *(["--editable"] if editable else []), str(checkout)],
        capture_output=True, text=True, timeout=INSTALL_TIMEOUT, env=clean_environment(),
    )
    assert installed.returncode == 0, installed.stdout + installed.stderr
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    # The installed commands name modules that exist (``chatd``, ``chatd-client``).
    for program in ("chatd", "chatd-client"):
        shown = subprocess.run(
            [str(python.parent / program), "--version"], cwd=elsewhere,
            env=clean_environment(), capture_output=True, text=True, timeout=INSTALL_TIMEOUT,
        )
        assert shown.returncode == 0 and shown.stdout.startswith(program), shown.stderr

    usage = subprocess.run(
        [str(python), *TWISTD, "--help"], cwd=elsewhere, env=clean_environment(),
        capture_output=True, text=True, timeout=INSTALL_TIMEOUT,
    )
    commands = [line.split()[0] for line in usage.stdout.splitlines() if line.startswith("    ")]
    assert "chatd" in commands, usage.stdout + usage.stderr

    command = [
        str(python), *TWISTD, "--nodaemon", "--pidfile=", "chatd",
        "--listen", "tcp:0:interface=127.0.0.1", "--db", str(elsewhere / "chatd.sqlite3"),
        "--bcrypt-rounds", "4",
    ]
    # No fixed ports in tests (6667, 8080): another server on the machine may hold them.
    env = {**clean_environment(), "CHATD_IRC_LISTEN": "off", "CHATD_WEB_LISTEN": "off"}
    server = ServerProcess(elsewhere, env=env, command=command, exact_env=True)
    try:
        server.start(timeout=60)
        client = LineClient(server.port)
        assert client.command("/register packaged password1") == ["OK register packaged"]
        client.close()
        # The module serving is the installed one, not something on a path by chance.
        served_from = subprocess.run(
            [str(python), "-c", "import chatd; print(chatd.__file__)"], cwd=elsewhere,
            env=clean_environment(), capture_output=True, text=True, timeout=60,
        ).stdout.strip()
        if editable:
            assert Path(served_from).is_relative_to(checkout), served_from
        else:
            assert Path(served_from).is_relative_to(tmp_path / "venv"), served_from
        assert server.terminate() in (0, -signal.SIGTERM)
    finally:
        server.stop()


def test_version_comes_from_the_package_metadata():
    """``chatd --version`` and ``chatd-client --version`` print the installed version."""
    from importlib.metadata import version

    expected = version("chatd")
    for module, program in (("chatd", "chatd"), ("chatd.client", "chatd-client")):
        shown = subprocess.run(
            [sys.executable, "-m", module, "--version"], capture_output=True, text=True,
            timeout=60, env={**clean_environment(), "PYTHONPATH": str(ROOT)}, cwd=ROOT,
        )
        assert (shown.returncode, shown.stdout) == (0, f"{program} {expected}\n"), shown.stderr
