"""Configuration: parsed and validated once, from the environment."""

import pytest

from chatd.config import Config, ConfigError, RateLimit


def test_defaults_need_no_configuration():
    """An empty environment gives the documented defaults."""
    config = Config.from_environ({})
    assert config.listen == ("tcp:8004",)
    assert config.db_path == "chatd.sqlite3"
    assert config.registration_open is True
    assert config.guests is False
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
        ("CHATD_GUESTS", "on", "guests", True),
        ("CHATD_GUESTS", "OFF", "guests", False),
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
        ("CHATD_GUESTS", "1"),
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


@pytest.mark.parametrize(
    ("variable", "raw", "reason"),
    [
        ("CHATD_LISTEN", "nonsense:8004", "Unknown endpoint type: 'nonsense'"),
        ("CHATD_LISTEN", "tcp:eighty", "'eighty' is not a number"),
        ("CHATD_LISTEN", "tcp:65536", "the port must be from 0 to 65535"),
        ("CHATD_LISTEN", "tcp:8004:colour=blue", "unknown argument 'colour'"),
        ("CHATD_LISTEN", "tcp", "missing 'port'"),
        ("CHATD_LISTEN", "tcp:1,tcp:x", "tcp:x: 'x' is not a number"),
        ("CHATD_LISTEN", "ssl:0:privateKey=k.pem:colour=blue", "unknown argument 'colour'"),
        ("CHATD_LISTEN", "ssl:privateKey=k.pem", "no port"),
        ("CHATD_LISTEN", "ssl:65536:privateKey=k.pem", "the port must be from 0 to 65535"),
        ("CHATD_METRICS_LISTEN", "tcp:x", "'x' is not a number"),
    ],
)
def test_endpoint_syntax_is_checked_when_the_settings_are_read(variable, raw, reason):
    """Issue 9 item 17: a description that cannot work is refused before anything starts."""
    with pytest.raises(ConfigError) as refused:
        Config.from_environ({variable: raw})
    assert str(refused.value) == f"{variable}={raw!r}: {reason}"


@pytest.mark.parametrize(
    "raw",
    ["tcp:0", "tcp:65535:interface=127.0.0.1", "tcp6:0:interface=\\:\\:1", "unix:/run/c.sock",
     "ssl:8443:privateKey=/no/such/key.pem", "systemd:domain=INET:index=0"],
)
def test_good_endpoints_pass_without_touching_files_or_sockets(raw):
    """Files (TLS keys, sockets) and inherited sockets are only looked at when listening."""
    assert Config.from_environ({"CHATD_LISTEN": raw}).listen == (raw,)


def test_unknown_chatd_variables_are_reported_with_a_suggestion():
    """Issue 9 item 20: misspelled CHATD_* names are named; the client's own is not."""
    environ = {
        "CHATD_LISTN": "tcp:8004",
        "CHATD_BCRYPT_ROUND": "4",
        "CHATD_WHATEVER": "1",
        "CHATD_PASSWORD": "secret",
        "CHATD_DB": "chat.sqlite3",
        "PATH": "/bin",
    }
    assert Config.unknown_variables(environ) == [
        "unknown variable CHATD_BCRYPT_ROUND ignored (did you mean CHATD_BCRYPT_ROUNDS?)",
        "unknown variable CHATD_LISTN ignored (did you mean CHATD_LISTEN?)",
        "unknown variable CHATD_WHATEVER ignored",
    ]
    assert Config.unknown_variables({"CHATD_DB": "x", "CHATD_PASSWORD": "y"}) == []


def test_operators_are_account_names_folded_and_default_to_none():
    """CHATD_OPERATORS: empty by default; names folded, spaces trimmed, duplicates once;
    a name at the 32-character edge is valid."""
    assert Config.from_environ({}).operators == ()
    edge = "o" * 32
    config = Config.from_environ({"CHATD_OPERATORS": f" OperUser , alice,operuser,{edge}"})
    assert config.operators == ("operuser", "alice", edge)


@pytest.mark.parametrize(
    "value", ["o" * 33, "alice,,bob", "alice, 1bad", "#room", "alice bob"]
)
def test_operators_refuse_what_is_no_account_name(value):
    """Past the name's edge (33 characters), an empty item, or no user name: a
    ConfigError naming CHATD_OPERATORS."""
    with pytest.raises(ConfigError, match="CHATD_OPERATORS"):
        Config.from_environ({"CHATD_OPERATORS": value})
