"""Configuration: parsed and validated once, from the environment."""

import pytest

from chatd.config import Config, ConfigError, RateLimit


def test_defaults_need_no_configuration():
    """An empty environment gives the documented defaults."""
    config = Config.from_environ({})
    assert config.listen == ("tcp:8004",)
    assert config.db_path == "chatd.sqlite3"
    assert config.registration_open is True
    assert config.bcrypt_rounds == 12
    assert config.rate_limit == RateLimit(10.0, 40)
    assert config.line_limit == 4096


def test_every_variable_is_read():
    """Each CHATD_* variable sets its field."""
    config = Config.from_environ(
        {
            "CHATD_LISTEN": "tcp:1, unix:/tmp/x.sock",
            "CHATD_DB": "/var/lib/chatd/db",
            "CHATD_REGISTRATION": "Closed",
            "CHATD_BCRYPT_ROUNDS": "4",
            "CHATD_RATE_LIMIT": "2.5/7",
            "CHATD_LINE_LIMIT": "100",
        }
    )
    assert config.listen == ("tcp:1", "unix:/tmp/x.sock")
    assert config.db_path == "/var/lib/chatd/db"
    assert config.registration_open is False
    assert config.bcrypt_rounds == 4
    assert config.rate_limit == RateLimit(2.5, 7)
    assert config.line_limit == 100


def test_rate_limit_off():
    """CHATD_RATE_LIMIT=off disables the limit."""
    assert Config.from_environ({"CHATD_RATE_LIMIT": "off"}).rate_limit is None


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("CHATD_BCRYPT_ROUNDS", "3"),
        ("CHATD_BCRYPT_ROUNDS", "32"),
        ("CHATD_BCRYPT_ROUNDS", "twelve"),
        ("CHATD_REGISTRATION", "maybe"),
        ("CHATD_RATE_LIMIT", "5"),
        ("CHATD_RATE_LIMIT", "0/5"),
        ("CHATD_RATE_LIMIT", "5/0"),
        ("CHATD_LISTEN", "tcp:1,,tcp:2"),
        ("CHATD_LINE_LIMIT", "10"),
    ],
)
def test_bad_values_name_their_variable(variable, value):
    """A value that does not parse stops the start with the variable's name."""
    with pytest.raises(ConfigError, match=variable):
        Config.from_environ({variable: value})


@pytest.mark.parametrize("rounds", ["4", "31"])
def test_bcrypt_rounds_edges(rounds):
    """4 and 31 are the accepted extremes."""
    assert Config.from_environ({"CHATD_BCRYPT_ROUNDS": rounds}).bcrypt_rounds == int(rounds)


def test_config_is_frozen():
    """Settings cannot change after start."""
    config = Config()
    with pytest.raises(AttributeError):
        config.db_path = "other"


@pytest.mark.parametrize(
    ("variable", "raw", "field", "value"),
    [
        ("CHATD_ROOM_HISTORY_DAYS", "30", "room_history_days", 30.0),
        ("CHATD_ROOM_HISTORY_DAYS", "0.5", "room_history_days", 0.5),
        ("CHATD_ROOM_HISTORY_DAYS", "off", "room_history_days", None),
        ("CHATD_STORED_MESSAGE_DAYS", "90", "stored_message_days", 90.0),
        ("CHATD_STORED_MESSAGE_DAYS", "OFF", "stored_message_days", None),
        ("CHATD_LOG_MESSAGES", "on", "log_messages", True),
        ("CHATD_LOG_MESSAGES", "Off", "log_messages", False),
        ("CHATD_SERVER_NAME", "chat.example.org", "server_name", "chat.example.org"),
        ("CHATD_BCRYPT_WORKERS", "1", "bcrypt_workers", 1),
        ("CHATD_BCRYPT_WORKERS", "64", "bcrypt_workers", 64),
        ("CHATD_ACCOUNT_POLL_SECONDS", "0.25", "account_poll_seconds", 0.25),
        ("CHATD_SHUTDOWN_GRACE_SECONDS", "30", "shutdown_grace_seconds", 30.0),
    ],
)
def test_operational_settings_parse(variable, raw, field, value):
    """Retention, logging, naming, bcrypt and timing settings take good values as given."""
    assert getattr(Config.from_environ({variable: raw}), field) == value


@pytest.mark.parametrize(
    ("variable", "raw"),
    [
        ("CHATD_ROOM_HISTORY_DAYS", "0"),
        ("CHATD_ROOM_HISTORY_DAYS", "forever"),
        ("CHATD_STORED_MESSAGE_DAYS", "-1"),
        ("CHATD_STORED_MESSAGE_DAYS", "inf"),
        ("CHATD_LOG_MESSAGES", "yes"),
        ("CHATD_SERVER_NAME", "my chat"),
        ("CHATD_BCRYPT_WORKERS", "0"),
        ("CHATD_BCRYPT_WORKERS", "65"),
        ("CHATD_BCRYPT_WORKERS", "two"),
        ("CHATD_ACCOUNT_POLL_SECONDS", "0"),
        ("CHATD_ACCOUNT_POLL_SECONDS", "soon"),
        ("CHATD_SHUTDOWN_GRACE_SECONDS", "-5"),
        ("CHATD_SHUTDOWN_GRACE_SECONDS", "nan"),
    ],
)
def test_bad_operational_settings_name_their_variable(variable, raw):
    """A value these settings cannot use stops the start with the variable's name."""
    with pytest.raises(ConfigError, match=variable):
        Config.from_environ({variable: raw})


def test_the_server_name_is_in_hello():
    """CHATD_SERVER_NAME is the name the HELLO line gives."""
    from tests.support import ChatHarness

    config = Config.from_environ(
        {"CHATD_SERVER_NAME": "chat.example.org", "CHATD_BCRYPT_ROUNDS": "4"}
    )
    client = ChatHarness(config).client()
    assert client.transport.value().startswith(b"HELLO chat.example.org 1 ")
