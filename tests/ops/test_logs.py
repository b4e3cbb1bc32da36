"""Operator logs: one event per notable thing, never a password, text only when enabled."""

import io
import json

import pytest
from twisted.logger import Logger, capturedLogs, formatEvent
from twisted.python.failure import Failure

from chatd.config import Config
from chatd.ops.logs import JsonLinesObserver, event_as_record, log_observer
from chatd.storage import transactions
from chatd.storage.sqlite import schema
from tests.support import ChatHarness

PASSWORDS = (
    "correct-horse-battery-1",
    "another-try-22",
    "wrong guess with spaces 33",
    "old-wrong-44",
    "brand-new-secret-55",
)


def rendered(events) -> str:
    """Everything a log could show of ``events``: text, JSON record, raw values."""
    parts = []
    for event in events:
        parts.append(formatEvent(event))
        parts.append(json.dumps(event_as_record(event), default=str))
        parts.append(repr(event))
    return "\n".join(parts)


def chatd_events(events, kind: str) -> list[dict]:
    """The captured events whose ``chatd_event`` is ``kind``."""
    return [event for event in events if event.get("chatd_event") == kind]


def test_logs_never_contain_a_password(harness):
    """Registrations, logins (right, wrong, with spaces) and password changes log no password."""
    with capturedLogs() as events:
        alice = harness.client(host="203.0.113.7")
        assert alice.send(f"/register alice {PASSWORDS[0]}") == ["OK register alice"]
        assert alice.send(f"/register alice {PASSWORDS[1]}")[0].startswith("ERR user-exists")
        assert alice.send("/register bob Xq7z")[0].startswith("ERR weak-password")
        assert alice.send(f"/login alice {PASSWORDS[2]}")[0].startswith("ERR bad-credentials")
        assert alice.send(f"/login nobody {PASSWORDS[1]}")[0].startswith("ERR bad-credentials")
        assert alice.send(f"/login alice {PASSWORDS[0]}")[-1] == "OK login alice"
        assert alice.send(f"/passwd {PASSWORDS[3]} {PASSWORDS[4]}")[0].startswith("ERR")
        assert alice.send(f"/passwd {PASSWORDS[0]} {PASSWORDS[4]}") == ["OK passwd"]
        alice.send("/quit")
        again = harness.client()
        assert again.send(f"/login alice {PASSWORDS[4]}")[-1] == "OK login alice"
    text = rendered(events)
    assert "login alice" in text
    for password in (*PASSWORDS, "Xq7z"):
        assert password not in text


def test_one_event_per_login_logout_failure_and_registration(harness):
    """Each carries who and from where; a failed login names the source address."""
    with capturedLogs() as events:
        client = harness.client(host="198.51.100.9", port=5555)
        client.send("/register carol carols-password")
        client.send("/login carol not-her-password")
        client.send("/login carol carols-password")
        client.send("/quit")
    [registered] = chatd_events(events, "register")
    assert (registered["user"], registered["peer"]) == ("carol", "198.51.100.9:5555")
    [failed] = chatd_events(events, "login-failed")
    assert (failed["user"], failed["host"], failed["reason"]) == (
        "carol", "198.51.100.9", "bad-credentials"
    )
    assert formatEvent(failed) == "failed login for carol from 198.51.100.9: bad-credentials"
    [login] = chatd_events(events, "login")
    assert (login["user"], login["peer"]) == ("carol", "198.51.100.9:5555")
    [logout] = chatd_events(events, "logout")
    assert logout["user"] == "carol"
    metrics = harness.telemetry.metrics
    assert metrics.value("chatd_logins_total", outcome="ok") == 1
    assert metrics.value("chatd_logins_total", outcome="bad-credentials") == 1
    assert metrics.value("chatd_registrations_total", outcome="ok") == 1


def test_a_ban_logs_one_kick_event(harness):
    """A ban from the admin command line is logged once, with the sessions it closed."""
    harness.chat.startService()
    first, second = harness.logged_in("dave"), harness.client()
    second.login("dave")
    with schema.transaction(harness.database.connection):
        transactions.set_banned(harness.database.connection, "dave", True, harness.chat.now())
    with capturedLogs() as events:
        harness.clock.advance(1)
    [kick] = chatd_events(events, "kick")
    assert (kick["user"], kick["reason"], kick["sessions"]) == ("dave", "banned", 2)
    assert first.lines()[-1] == "BYE banned"
    assert harness.telemetry.metrics.value("chatd_disconnects_total", reason="banned") == 2
    harness.chat.stopService()


def test_message_text_is_not_logged_by_default(harness):
    """Room and direct messages are counted, but their text stays out of the log."""
    alice, bob = harness.logged_in("alice"), harness.logged_in("bob")
    with capturedLogs() as events:
        alice.send("the secret plan is at noon")
        alice.send("/msg bob meet me by the old oak")
        bob.close()
        alice.send("/msg bob the oak is gone")
    text = rendered(events)
    for secret in ("secret plan", "old oak", "oak is gone"):
        assert secret not in text
    metrics = harness.telemetry.metrics
    assert [metrics.value("chatd_messages_total", kind=k) for k in ("room", "direct", "stored")] \
        == [1, 1, 1]


def test_message_text_is_logged_when_enabled():
    """CHATD_LOG_MESSAGES=on logs each message with its text."""
    harness = ChatHarness(Config(bcrypt_rounds=4, rate_limit=None, log_messages=True))
    alice, _bob = harness.logged_in("alice"), harness.logged_in("bob")
    with capturedLogs() as events:
        alice.send("the secret plan is at noon")
        alice.send("/msg bob meet me by the old oak")
    [room] = chatd_events(events, "message")
    assert formatEvent(room) == "message #lobby alice: the secret plan is at noon"
    [direct] = chatd_events(events, "direct-message")
    assert direct["text"] == "meet me by the old oak" and direct["kind"] == "direct"


def test_limit_hits_and_slow_readers_are_logged_and_counted(harness):
    """The API the hardening work calls: one warning event and one count each."""
    telemetry = harness.telemetry
    with capturedLogs() as events:
        telemetry.limit_hit("rate", "192.0.2.1:4000", "erin", lines_per_second=10)
        telemetry.disconnected("slow-reader", "192.0.2.1:4001", None, queued_bytes=70000)
    [limit] = chatd_events(events, "limit-hit")
    assert (limit["limit"], limit["host"], limit["lines_per_second"]) == ("rate", "192.0.2.1", 10)
    [closed] = chatd_events(events, "disconnect")
    assert formatEvent(closed) == (
        "closed connection of (not logged in) from 192.0.2.1:4001: slow-reader"
    )
    assert closed["queued_bytes"] == 70000
    metrics = telemetry.metrics
    assert metrics.value("chatd_limit_hits_total", limit="rate") == 1
    assert metrics.value("chatd_disconnects_total", reason="slow-reader") == 1
    assert metrics.value("chatd_disconnects_total", reason="flood") == 0


def test_json_lines_are_flat_records_with_message_and_failure():
    """One JSON object per line: timestamp, level, namespace, message, the event's own keys."""
    stream = io.StringIO()
    observer = log_observer("json", stream)
    assert isinstance(observer, JsonLinesObserver)
    log = Logger(namespace="chatd.test", observer=observer)
    log.warn("failed login for {user} from {host}", user="frank", host="192.0.2.5",
             chatd_event="login-failed")
    try:
        raise ValueError("disk on fire")
    except ValueError:
        log.failure("writing failed", Failure())
    first, second = (json.loads(line) for line in stream.getvalue().splitlines())
    assert first["message"] == "failed login for frank from 192.0.2.5"
    assert (first["level"], first["namespace"], first["user"]) == ("warn", "chatd.test", "frank")
    assert first["timestamp"].endswith("Z") and first["chatd_event"] == "login-failed"
    assert second["level"] == "critical" and "disk on fire" in second["failure"]
    assert log_observer("text") is None


def test_a_throttled_login_is_a_failed_login_event_and_a_limit_hit():
    """Past the per-address limit: one login-failed event (too-many-attempts), both counts."""
    harness = ChatHarness(Config(bcrypt_rounds=4, rate_limit=None, login_failures_per_address=2))
    harness.logged_in("alice").close()
    guesser = harness.client(host="192.0.2.77")
    with capturedLogs() as events:
        for _ in range(2):
            assert guesser.send("/login alice guess-guess")[-1].startswith("ERR bad-credentials")
        assert guesser.send("/login alice guess-guess")[-1].startswith("ERR too-many-attempts")
    failed = chatd_events(events, "login-failed")
    assert [(event["host"], event["reason"]) for event in failed] == [
        ("192.0.2.77", "bad-credentials"), ("192.0.2.77", "bad-credentials"),
        ("192.0.2.77", "too-many-attempts"),
    ]
    assert not chatd_events(events, "limit-hit")
    metrics = harness.telemetry.metrics
    assert metrics.value("chatd_logins_total", outcome="too-many-attempts") == 1
    assert metrics.value("chatd_limit_hits_total", limit="login") == 1


def twistd_application(arguments: list[str]):
    """The application twistd would run for ``arguments``, made as twistd makes it."""
    from twisted.scripts._twistd_unix import ServerOptions, UnixApplicationRunner

    options = ServerOptions()
    options.parseOptions(["--nodaemon", "--pidfile=", *arguments])
    return UnixApplicationRunner(options).createOrGetApplication()


@pytest.mark.parametrize(("log_format", "json_lines"), [("json", True), ("text", False)])
def test_the_tac_file_and_the_plugin_log_alike(tmp_path, monkeypatch, log_format, json_lines):
    """``twistd -ny chatd.tac`` and ``twistd -n chatd`` both honour CHATD_LOG_FORMAT."""
    from twisted.logger import ILogObserver

    from tests.serverproc import TAC

    monkeypatch.setenv("CHATD_LOG_FORMAT", log_format)
    monkeypatch.setenv("CHATD_DB", str(tmp_path / "chatd.sqlite3"))
    tac = twistd_application(["-y", str(TAC)])
    # A database of its own: the tac's server holds the first one's lock in this process.
    plugin = twistd_application(["chatd", "--db", str(tmp_path / "plugin.sqlite3")])
    for application in (tac, plugin):
        observer = application.getComponent(ILogObserver, None)
        assert isinstance(observer, JsonLinesObserver) is json_lines
        assert (observer is None) is not json_lines
