"""The hardening settings: every CHATD_* limit parses, validates and has its documented default."""

import pytest

from chatd.config import Allowance, Config, ConfigError, RateLimit

DEFAULTS = {
    "rate_limit": RateLimit(10.0, 40),
    "flood_limit": 50,
    "max_connections": 4096,
    "max_connections_per_address": 256,
    "login_timeout_seconds": 60.0,
    "login_failures_per_address": 10,
    "login_failures_per_account": 20,
    "login_lockout_seconds": 1.0,
    "login_lockout_max_seconds": 900.0,
    "login_table_size": 100_000,
    "registration_limit": Allowance(256, 3600.0),
    "bcrypt_queue": 256,
    "pipeline_depth": 32,
    "send_queue_soft": 64 * 1024,
    "send_queue_limit": 1024 * 1024,
    "ping_interval_seconds": 120.0,
    "pong_timeout_seconds": 60.0,
    "close_timeout_seconds": 10.0,
}


def test_the_defaults_are_the_documented_ones():
    """docs/security.md's table of limits states these defaults."""
    config = Config.from_environ({})
    assert {name: getattr(config, name) for name in DEFAULTS} == DEFAULTS


def test_every_limit_is_documented_in_security_md():
    """Each limit's variable appears in docs/security.md's table."""
    from pathlib import Path

    text = (Path(__file__).resolve().parent.parent / "docs" / "security.md").read_text()
    variables = {field: variable for variable, field in Config.variables().items()}
    for name in DEFAULTS:
        assert f"`{variables[name]}`" in text, variables[name]


@pytest.mark.parametrize(
    ("variable", "raw", "field", "value"),
    [
        ("CHATD_FLOOD_LIMIT", "5", "flood_limit", 5),
        ("CHATD_MAX_CONNECTIONS", "10", "max_connections", 10),
        ("CHATD_MAX_CONNECTIONS_PER_ADDRESS", "2", "max_connections_per_address", 2),
        ("CHATD_LOGIN_TIMEOUT", "2.5", "login_timeout_seconds", 2.5),
        ("CHATD_LOGIN_FAILURES_PER_ADDRESS", "20", "login_failures_per_address", 20),
        ("CHATD_LOGIN_FAILURES_PER_ACCOUNT", "3", "login_failures_per_account", 3),
        ("CHATD_LOGIN_LOCKOUT", "0.5", "login_lockout_seconds", 0.5),
        ("CHATD_LOGIN_LOCKOUT_MAX", "60", "login_lockout_max_seconds", 60.0),
        ("CHATD_LOGIN_TABLE_SIZE", "1000", "login_table_size", 1000),
        ("CHATD_LOGIN_TABLE_SIZE", "10000000", "login_table_size", 10_000_000),
        ("CHATD_REGISTRATION_LIMIT", "5/60", "registration_limit", Allowance(5, 60.0)),
        ("CHATD_REGISTRATION_LIMIT", "OFF", "registration_limit", None),
        ("CHATD_BCRYPT_QUEUE", "0", "bcrypt_queue", 0),
        ("CHATD_PIPELINE_DEPTH", "1", "pipeline_depth", 1),
        ("CHATD_PIPELINE_DEPTH", "1024", "pipeline_depth", 1024),
        ("CHATD_SEND_QUEUE_SOFT", "2048", "send_queue_soft", 2048),
        ("CHATD_SEND_QUEUE_LIMIT", "4M", "send_queue_limit", 4 << 20),
        ("CHATD_SEND_QUEUE_LIMIT", "512 KiB", "send_queue_limit", 512 << 10),
        ("CHATD_PING_INTERVAL", "off", "ping_interval_seconds", None),
        ("CHATD_PING_INTERVAL", "30", "ping_interval_seconds", 30.0),
        ("CHATD_PONG_TIMEOUT", "5", "pong_timeout_seconds", 5.0),
        ("CHATD_CLOSE_TIMEOUT", "1", "close_timeout_seconds", 1.0),
    ],
)
def test_each_setting_parses(variable, raw, field, value):
    """Good values are taken as given."""
    assert getattr(Config.from_environ({variable: raw}), field) == value


@pytest.mark.parametrize(
    ("variable", "raw"),
    [
        ("CHATD_FLOOD_LIMIT", "0"),
        ("CHATD_FLOOD_LIMIT", "lots"),
        ("CHATD_LOGIN_FAILURES_PER_ADDRESS", "21"),
        ("CHATD_LOGIN_FAILURES_PER_ADDRESS", "0"),
        ("CHATD_LOGIN_LOCKOUT", "0"),
        ("CHATD_LOGIN_LOCKOUT", "nan"),
        ("CHATD_LOGIN_TABLE_SIZE", "999"),
        ("CHATD_PIPELINE_DEPTH", "0"),
        ("CHATD_PIPELINE_DEPTH", "1025"),
        ("CHATD_LOGIN_TABLE_SIZE", "10000001"),
        ("CHATD_LOGIN_TABLE_SIZE", "1e5"),
        ("CHATD_REGISTRATION_LIMIT", "5"),
        ("CHATD_REGISTRATION_LIMIT", "0/60"),
        ("CHATD_REGISTRATION_LIMIT", "5/0"),
        ("CHATD_BCRYPT_QUEUE", "-1"),
        ("CHATD_SEND_QUEUE_LIMIT", "1"),
        ("CHATD_SEND_QUEUE_LIMIT", "2G"),
        ("CHATD_SEND_QUEUE_SOFT", "lots"),
        ("CHATD_PING_INTERVAL", "never"),
        ("CHATD_PONG_TIMEOUT", "off"),
        ("CHATD_CLOSE_TIMEOUT", "-5"),
    ],
)
def test_bad_values_stop_the_server_naming_the_variable(variable, raw):
    """A value that cannot be used is a ConfigError that names the variable."""
    with pytest.raises(ConfigError, match=variable):
        Config.from_environ({variable: raw})


def test_the_login_limit_keeps_the_protocols_promise():
    """PROTOCOL.md promises too-many-attempts after at most 20 failures: 21 is refused."""
    with pytest.raises(ConfigError, match="from 1 to 20"):
        Config.from_environ({"CHATD_LOGIN_FAILURES_PER_ADDRESS": "21"})


def test_the_first_lockout_may_not_exceed_the_longest():
    """CHATD_LOGIN_LOCKOUT above CHATD_LOGIN_LOCKOUT_MAX is refused."""
    with pytest.raises(ConfigError, match="CHATD_LOGIN_LOCKOUT must not exceed"):
        Config.from_environ({"CHATD_LOGIN_LOCKOUT": "100", "CHATD_LOGIN_LOCKOUT_MAX": "10"})


def test_the_login_table_holds_exactly_its_size():
    """CHATD_LOGIN_TABLE_SIZE locked addresses stay locked; one more forgets the oldest."""
    from twisted.internet.task import Clock

    from chatd.frontends.limits import Limits

    config = Config.from_environ(
        {"CHATD_LOGIN_TABLE_SIZE": "1000", "CHATD_LOGIN_FAILURES_PER_ADDRESS": "1"}
    )
    clock = Clock()
    throttle = Limits(config, clock).logins
    addresses = [f"198.51.{n // 256}.{n % 256}" for n in range(1001)]
    for address in addresses[:1000]:
        throttle.failed(address, "alice")
    assert all(throttle.locked(address) for address in addresses[:1000])
    throttle.failed(addresses[1000], "alice")
    assert not throttle.locked(addresses[0])
    assert all(throttle.locked(address) for address in addresses[1:])


def test_the_registration_table_holds_exactly_the_same_size():
    """The registration limit's table is as large: one address more forgets the oldest."""
    from twisted.internet.task import Clock

    from chatd.core.errors import ChatError
    from chatd.frontends.limits import Limits

    config = Config.from_environ(
        {"CHATD_LOGIN_TABLE_SIZE": "1000", "CHATD_REGISTRATION_LIMIT": "1/3600"}
    )
    registrations = Limits(config, Clock()).registrations
    addresses = [f"198.51.{n // 256}.{n % 256}" for n in range(1001)]

    def refused(address: str) -> bool:
        try:
            registrations.check(address)
        except ChatError:
            return True
        return False

    for address in addresses[:1000]:
        registrations.created(address)
    assert all(refused(address) for address in addresses[:1000])
    registrations.created(addresses[1000])
    assert not refused(addresses[0])
    assert all(refused(address) for address in addresses[1:])
