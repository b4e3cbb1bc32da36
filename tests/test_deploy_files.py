"""The systemd units in scripts/ agree with chatd and with docs/deploy.md."""

import configparser
import os

from chatd.config import Config
from tests.serverproc import ROOT

SCRIPTS = ROOT / "scripts"
INSTALLED_APP = "/opt/chatd/app/"


def unit(name: str) -> configparser.ConfigParser:
    """Parse a unit file (repeated keys keep their last value, enough for these checks)."""
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str
    parser.read(SCRIPTS / name)
    return parser


def test_chatd_unit_keeps_tls_working_and_has_room_for_every_connection():
    """No MemoryDenyWriteExecute (pyOpenSSL's cffi callbacks need W+X memory: TLS fails
    under it); enough file descriptors for the connection limit; SIGHUP on reload."""
    service = unit("chatd.service")["Service"]
    assert "MemoryDenyWriteExecute" not in service
    assert int(service["LimitNOFILE"]) > Config().max_connections + 64
    assert service["ExecReload"] == "/bin/kill -HUP $MAINPID"
    assert service["ExecStart"].endswith(f"-y {INSTALLED_APP}chatd.tac")
    assert service["StateDirectoryMode"] == "0700"


def test_backup_units_run_the_script_from_the_checkout_on_a_timer():
    """chatd-backup.service runs scripts/chatd-backup, which exists and is executable."""
    service = unit("chatd-backup.service")["Service"]
    script = service["ExecStart"]
    assert script.startswith(INSTALLED_APP)
    local = ROOT / script.removeprefix(INSTALLED_APP)
    assert local.is_file() and os.access(local, os.X_OK)
    assert "/var/backups/chatd" in service["ReadWritePaths"].split()
    timer = unit("chatd-backup.timer")
    assert timer["Timer"]["Persistent"] == "true"
    assert timer["Install"]["WantedBy"] == "timers.target"


def test_the_plugin_cache_is_not_kept_in_git():
    """twisted/plugins/dropin.cache is written by whichever Twisted scans the plugins: ignored."""
    ignored = (ROOT / ".gitignore").read_text().splitlines()
    assert "twisted/plugins/dropin.cache" in ignored
