"""Metrics and health: scraped over real HTTP from the real twistd, and in memory."""

import json
import re
import signal
import urllib.error
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families
from twisted.internet import defer, task
from twisted.web.server import NOT_DONE_YET
from twisted.web.test.requesthelper import DummyRequest

from chatd.ops.metrics import ChatdMetrics, HealthPage, ReactorLagProbe
from tests.serverproc import ROOT, LineClient, ServerProcess
from tests.support import InlineDatabase

METRICS_LISTENING = r"chatd metrics listening on tcp \S+ (\d+)"


class CountingClient(LineClient):
    """A ``LineClient`` that counts the bytes of every line it has read."""

    def __init__(self, port: int) -> None:
        self.bytes_read = 0
        super().__init__(port)

    def read_line(self) -> str:
        """Read a line, counting it with its CRLF."""
        line = super().read_line()
        if line:
            self.bytes_read += len(line.encode()) + 2
        return line

    def read_to_end(self) -> list[str]:
        """Every line until the server closes the connection."""
        lines = []
        while line := self.read_line():
            lines.append(line)
        return lines


def scrape(port: int, path: str = "/metrics") -> tuple[int, str]:
    """GET ``path`` from the metrics listener; the status and the body."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


def samples(text: str) -> dict[tuple[str, frozenset], float]:
    """Parse the Prometheus text format into ``{(name, labels): value}``."""
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


@pytest.fixture
def server_with_metrics(tmp_path):
    """The real twistd with CHATD_METRICS_LISTEN on a free port; the metrics port too."""
    server = ServerProcess(tmp_path, {"CHATD_METRICS_LISTEN": "tcp:0:interface=127.0.0.1"})
    server.start()
    metrics_port = int(server.wait_for(METRICS_LISTENING).group(1))
    yield server, metrics_port
    server.stop()


def test_metrics_count_real_traffic_over_http(server_with_metrics):
    """After known traffic, every counter and gauge over real HTTP has the expected value."""
    server, metrics_port = server_with_metrics
    alice = CountingClient(server.port)
    alice.login("alice")
    bob = CountingClient(server.port)
    bob.login("bob")
    mallory = CountingClient(server.port)
    assert mallory.command("/login alice not-alices-password")[-1].startswith("ERR bad-cred")
    assert mallory.command("/quit") == ["OK quit"]
    assert mallory.read_to_end() == ["BYE quit"]
    for text in ("one", "two", "three"):
        assert alice.command(text)[-1] == "OK say #lobby"
    assert alice.command("/msg bob hi bob")[-1] == "OK msg bob delivered"
    assert bob.command("/quit")[-1] == "OK quit"
    assert bob.read_to_end() == ["BYE quit"]
    assert alice.command("/msg bob are you there")[-2:] == [
        "DM alice bob are you there", "OK msg bob stored"
    ]
    assert alice.command("/ping done") == ["OK ping done"]

    status, body = scrape(metrics_port)
    assert status == 200
    values = samples(body)

    def value(name: str, **labels: str) -> float:
        return values[(name, frozenset(labels.items()))]

    assert value("chatd_connections") == 1
    assert value("chatd_sessions") == 1
    assert value("chatd_users_online") == 1
    assert value("chatd_rooms_active") == 1
    assert value("chatd_logins_total", outcome="ok") == 2
    assert value("chatd_logins_total", outcome="bad-credentials") == 1
    assert value("chatd_registrations_total", outcome="ok") == 2
    assert value("chatd_messages_total", kind="room") == 3
    assert value("chatd_messages_total", kind="direct") == 1
    assert value("chatd_messages_total", kind="stored") == 1
    # MSG: 3 messages to 2 sessions. DM: the live one to both, the stored one to alice.
    # JOIN: alice sees her own and bob's, bob sees his. WHO: one per login. PART: bob's.
    for kind, count in {"MSG": 6, "DM": 3, "JOIN": 3, "WHO": 2, "PART": 1}.items():
        assert value("chatd_deliveries_total", kind=kind) == count, kind
    assert value("chatd_disconnects_total", reason="quit") == 2
    assert value("chatd_disconnects_total", reason="slow-reader") == 0
    assert value("chatd_disconnects_total", reason="flood") == 0
    assert value("chatd_bytes_out_total") == sum(
        client.bytes_read for client in (alice, bob, mallory)
    )
    # bcrypt: the dummy hash and two registrations; two logins and the failed one.
    assert value("chatd_bcrypt_seconds_count", operation="hash") == 3
    assert value("chatd_bcrypt_seconds_count", operation="check") == 3
    assert value("chatd_bcrypt_queue_depth") == 0
    assert value("chatd_db_commit_seconds_count") >= 1
    # Every write was answered before the scrape, and nothing else writes meanwhile.
    assert value("chatd_db_write_queue_depth") == 0
    assert ("chatd_reactor_lag_seconds_count", frozenset()) in values

    assert scrape(metrics_port, "/healthz") == (200, "ok\n")
    for password in ("password1", "not-alices-password"):
        assert not [line for line in server.output if password in line]
    # The fail2ban filter in docs/deploy.md finds the failed login, with its address.
    failregex = fail2ban_regex()
    assert [m.group("host") for line in server.output if (m := failregex.match(line))] == [
        "127.0.0.1"
    ]


def fail2ban_regex() -> re.Pattern:
    """The ``failregex`` of docs/deploy.md, with fail2ban's ``<HOST>`` as a named group."""
    deploy = (ROOT / "docs" / "deploy.md").read_text()
    [pattern] = re.findall(r"^failregex = (.*)$", deploy, re.M)
    return re.compile(pattern.replace("<HOST>", r"(?P<host>\S+)"))


def test_json_log_from_the_real_twistd(tmp_path):
    """CHATD_LOG_FORMAT=json: every line of output is one JSON object; start and stop are there."""
    server = ServerProcess(tmp_path, {"CHATD_LOG_FORMAT": "json"}).start()
    try:
        client = server.connect()
        client.login("grace", "graces-long-password")
        assert client.command("/login grace x")[-1].startswith("ERR already-logged-in")
        assert server.terminate() in (0, -signal.SIGTERM)
        server.wait_for("Server Shut Down")
    finally:
        server.stop()
    # Everything, up to the last line any process of the server wrote (its bcrypt
    # workers and their resource tracker included), is JSON.
    records = [json.loads(line) for line in server.wait_for_end_of_output()]
    events = [record.get("chatd_event") for record in records]
    assert events.count("start") == 1 and events.count("stop") == 1
    assert {"register", "login", "logout"} <= set(events)
    [login] = [record for record in records if record.get("chatd_event") == "login"]
    assert login["user"] == "grace" and login["level"] == "info"
    assert not [line for line in server.output if "graces-long-password" in line]


def render(resource, request: DummyRequest) -> defer.Deferred:
    """Render ``resource`` into ``request``; fire when the response is finished."""
    finished = request.notifyFinish()
    result = resource.render(request)
    if result is not NOT_DONE_YET:
        request.write(result)
        request.finish()
    return finished


class SilentDatabase:
    """A database whose threads have stopped answering."""

    def read(self, body, *args) -> defer.Deferred:
        """Never fires."""
        return defer.Deferred()

    write = read


def test_healthz_answers_ok_when_the_database_answers():
    """A read and a write both answered: 200 ok."""
    request = DummyRequest([b""])
    render(HealthPage(InlineDatabase(), task.Clock()), request)
    assert request.finished and request.responseCode in (None, 200)
    assert b"".join(request.written) == b"ok\n"


def test_healthz_answers_503_when_the_database_does_not():
    """Nothing from the database within the timeout: 503, naming what did not answer."""
    clock = task.Clock()
    request = DummyRequest([b""])
    render(HealthPage(SilentDatabase(), clock, timeout=5), request)
    clock.advance(4.9)
    assert not request.finished
    clock.advance(0.1)
    assert request.responseCode == 503
    body = b"".join(request.written).decode()
    assert "database read did not answer in 5s" in body
    assert "database write did not answer in 5s" in body


def test_reactor_lag_is_how_late_the_probe_fires():
    """The probe is due every second; a reactor busy for 2.5s more shows 2.5s of lag."""
    clock = task.Clock()
    metrics = ChatdMetrics()
    probe = ReactorLagProbe(clock, metrics.reactor_lag_seconds, interval=1.0)
    probe.startService()
    clock.advance(1.0)
    assert probe.last_lag == 0
    clock.advance(3.5)
    assert probe.last_lag == 2.5
    assert metrics.value("chatd_reactor_lag_seconds_count") == 2
    assert metrics.value("chatd_reactor_lag_seconds_sum") == 2.5
    probe.stopService()
    assert not clock.getDelayedCalls()


def test_each_server_has_a_registry_of_its_own():
    """Two metrics objects in one process count separately (tests build many servers)."""
    first, second = ChatdMetrics(), ChatdMetrics()
    first.logins.labels("ok").inc()
    assert first.value("chatd_logins_total", outcome="ok") == 1
    assert second.value("chatd_logins_total", outcome="ok") == 0
