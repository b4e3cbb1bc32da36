"""CHATD_REDIS: parsed at start, and refused beside an SQLite CHATD_DB (exit 1, both named)."""

import pytest

from chatd.app import cluster_problem
from chatd.cluster.redis import RedisAddress, parse_redis_url
from chatd.config import Config, ConfigError, redacted_url
from tests.test_startup import start_and_wait_for_exit, the_one_failure_line


def test_a_redis_url_gives_host_port_database_and_password():
    """The parts of a redis:// URL, with the defaults for those left out."""
    assert parse_redis_url("redis://cache") == RedisAddress("cache", 6379, 0, None)
    assert parse_redis_url("redis://:s%40cret@10.0.0.5:6380/3") == RedisAddress(
        "10.0.0.5", 6380, 3, "s@cret"
    )


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ("http://cache:6379", "must be a redis:// URL"),
        ("redis://", "names no host"),
        ("redis://cache:70000", "the port must be a number"),
        ("redis://cache/zero", "the database must be a number"),
        ("redis://cache/0?timeout=1", "takes no query"),
    ],
)
def test_a_bad_redis_url_stops_the_server_naming_the_setting(value, reason):
    """Each malformed CHATD_REDIS is a ConfigError naming the variable and the fault."""
    with pytest.raises(ConfigError, match=reason) as raised:
        Config.from_environ({"CHATD_REDIS": value})
    assert str(raised.value).startswith("CHATD_REDIS=")


def test_a_password_in_the_url_is_never_repeated():
    """Errors and logs show the URL with its password as ***."""
    with pytest.raises(ConfigError) as raised:
        Config.from_environ({"CHATD_REDIS": "redis://:hunter2@cache/x"})
    assert "hunter2" not in str(raised.value)
    assert redacted_url("redis://user:hunter2@cache:6379/0") == "redis://user:***@cache:6379/0"


def test_off_and_unset_are_one_node():
    """No CHATD_REDIS (or off): no cluster mode, and nothing to refuse."""
    assert Config.from_environ({}).redis_url is None
    assert Config.from_environ({"CHATD_REDIS": "off"}).redis_url is None
    assert cluster_problem(Config()) is None


def test_redis_with_postgresql_is_allowed():
    """Cluster mode on PostgreSQL is what it is for."""
    config = Config(redis_url="redis://cache", db_path="postgresql://chatd@db/chatd")
    assert cluster_problem(config) is None


def test_redis_with_an_sqlite_database_is_refused_on_the_real_server(tmp_path):
    """twistd with CHATD_REDIS and an SQLite CHATD_DB: exit 1, one line naming both settings,
    the password hidden; nothing listened."""
    sock = tmp_path / "chatd.sock"
    status, output = start_and_wait_for_exit(tmp_path, {
        "CHATD_REDIS": "redis://:hunter2@127.0.0.1:1/0",
        "CHATD_DB": str(tmp_path / "chatd.sqlite3"),
        "CHATD_LISTEN": f"unix:{sock}",
    })
    assert status == 1, "\n".join(output)
    line = the_one_failure_line(output)
    assert line.startswith("CHATD_REDIS=redis://:***@127.0.0.1:1/0: "), line
    assert f"CHATD_DB={tmp_path / 'chatd.sqlite3'}" in line
    assert "hunter2" not in "\n".join(output)
    assert not sock.exists()
