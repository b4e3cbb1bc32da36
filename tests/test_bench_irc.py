"""The load generator's IRC mode (``--dialect irc``, compare targets ``irc`` and ``ngircd``).

Like tests/test_bench.py: tiny numbers and bounded time; these check that chatd's
IRC door and ngIRCd can be measured side by side, never how fast anything was.
"""

import asyncio
import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.programs import require_program
from tests.test_bench import BENCH_PATH, ROOT, assert_good_rate_follows_the_steps, bench, run_bench


class Written:
    """A transport that keeps what is written."""

    def __init__(self) -> None:
        self.data = b""

    def write(self, data: bytes) -> None:
        self.data += data

    def close(self) -> None:
        pass


def test_irc_parts_drop_tags_and_source_and_keep_the_trailing_parameter():
    """Command and parameters, whatever the line starts with; numerics are commands too."""
    assert bench.irc_parts("@time=x;msgid=y :nick!u@h PRIVMSG #bench :a b :c") == (
        "PRIVMSG", ["#bench", "a b :c"])
    assert bench.irc_parts(":server 366 bench0 #bench :End of /NAMES list") == (
        "366", ["bench0", "#bench", "End of /NAMES list"])
    assert bench.irc_parts("PING :token") == ("PING", ["token"])
    assert bench.irc_parts("ping token") == ("PING", ["token"])
    assert bench.irc_parts("") == ("", [])


def test_irc_failures_are_errors_fail_and_error_numerics():
    """4xx/5xx, SASL's failures, FAIL and ERROR fail a request; 001, 366, 903 do not."""
    assert all(bench.is_irc_failure(c) for c in ("464", "404", "433", "502", "904", "FAIL",
                                                 "ERROR"))
    assert not any(bench.is_irc_failure(c) for c in ("001", "366", "381", "903", "900",
                                                     "PRIVMSG", "JOIN"))


def feed(client, data: bytes) -> None:
    """Hand ``data`` to the client a byte at a time, as the worst network would."""
    for index in range(len(data)):
        client.data_received(data[index : index + 1])


def test_irc_client_answers_ping_and_finishes_requests_on_their_reply():
    """PING gets PONG at once; a request ends on its reply, whatever comes before it."""

    async def scenario():
        client = bench.IRCBenchClient("irc")
        transport = Written()
        client.connection_made(transport)
        joined = asyncio.ensure_future(client.join("#bench"))
        await asyncio.sleep(0)
        feed(client, b"PING :abc\r\n:s 353 b0 = #bench :b0 b1\r\n:s 366 b0 #other :End\r\n")
        assert not joined.done()
        feed(client, b":s 366 b0 #Bench :End of /NAMES list\r\n")
        await joined
        return transport.data, client.wire(b"text s001 q0000000001\r\n")

    written, probe = asyncio.run(scenario())
    assert written == b"JOIN #bench\r\nPONG :abc\r\n"
    assert probe == b"PRIVMSG #bench :text s001 q0000000001\r\n"


def test_irc_client_neither_joins_a_room_it_is_in_nor_parts_one_it_is_not_in():
    """chatd's login joins an account's rooms itself; a JOIN of one would get no answer."""

    async def scenario():
        client = bench.IRCBenchClient("irc")
        transport = Written()
        client.connection_made(transport)
        client.nick = "bench0"
        feed(client, b":Bench0!bench0@chatd JOIN #Bench\r\n:other!o@chatd JOIN #lobby\r\n")
        await client.join("#bench")
        await client.part("#lobby")
        return transport.data, client.rooms, client.say_prefix

    written, rooms, prefix = asyncio.run(scenario())
    assert written == b""
    assert rooms == {"#bench"}
    assert prefix == b"PRIVMSG #bench :"


def test_irc_client_request_fails_on_an_error_reply():
    """A wrong password (464) fails the login with the server's line, not a timeout."""

    async def scenario():
        client = bench.IRCBenchClient("irc")
        client.connection_made(Written())
        logging_in = asyncio.ensure_future(client.log_in("bench0", "none", None))
        await asyncio.sleep(0)
        feed(client, b":s 464 * :Password incorrect\r\n")
        with pytest.raises(bench.BenchError, match="464"):
            await logging_in

    asyncio.run(scenario())


def test_irc_client_counts_probes_in_privmsg_lines():
    """Other clients' PRIVMSGs carrying probes count as deliveries, with latencies."""

    async def scenario():
        client = bench.IRCBenchClient("irc")
        client.connection_made(Written())
        step = bench.Step(number=7, expected=2)
        client.step, client.samples_latency = step, True
        now = bench.monotonic_us()
        lines = b"".join(
            b":b%d!b@h PRIVMSG #bench :" % seq
            + bench.probe_text(7, seq, now, 40).encode() + b"\r\n"
            for seq in range(2))
        feed(client, lines + b":s 404 b0 #bench :Cannot send\r\n")
        return step, client

    step, client = asyncio.run(scenario())
    assert step.delivered == 2 and step.complete.is_set()
    assert step.histogram.total == 2
    assert client.errors == 1 and "404" in client.last_error


def test_summary_shows_irc_against_ngircd():
    """With both IRC targets the table has their columns and an irc/ngircd ratio."""
    records = [
        {"label": "maxrate-100", "scenario": "maxrate", "target": target, "run": 1,
         "max_deliveries_per_s": value}
        for target, value in (("chatd", 300.0), ("irc", 200.0), ("ngircd", 400.0))
    ]
    table = bench.summarize(records)
    assert "| metric | chatd | irc | ngircd | irc/ngircd |" in table
    assert "| max deliveries/s | 300 | 200 | 400 | 0.50x |" in table


def test_ngircd_configuration_lifts_the_limits(tmp_path):
    """The written configuration listens on loopback, without connection or penalty limits."""
    server = bench.ManagedServer("ngircd", tmp_path, 0, ROOT)
    server.port = 16667
    text = server.ngircd_config().read_text()
    for setting in ("Listen = 127.0.0.1", "Ports = 16667", "MaxConnections = 0",
                    "MaxConnectionsIP = 0", "MaxPenaltyTime = 0", "DNS = no", "Ident = no",
                    "PAM = no", f"IncludeDir = {tmp_path.resolve()}/ngircd.conf.d"):
        assert setting in text
    assert server.dialect == "irc"


def irc_arguments(server):
    """The bench options that point a scenario at a ServerProcess's IRC door."""
    return ("--dialect", "irc", "--port", str(server.irc_port), "--server-pid", str(server.pid))


def test_smoke_fanout_through_the_irc_door(chatd_server):
    """PASS-logged-in IRC clients in one room get every other client's PRIVMSG."""
    record = run_bench("fanout", *irc_arguments(chatd_server), "--clients", "4",
                       "--senders", "2", "--rate", "50", "--duration", "0.4",
                       "--time-limit", "60")
    # 20 messages, each to the 3 clients that did not send it.
    assert record["delivered"] == record["expected"] == 60
    assert record["errors"] == 0
    assert record["latency_ms"]["p99"] is not None


def test_smoke_maxrate_through_the_irc_door_with_sasl(chatd_server):
    """The rate ladder runs over IRC with SASL PLAIN logins and keeps to its steps."""
    record = run_bench("maxrate", *irc_arguments(chatd_server), "--irc-login", "sasl",
                       "--clients", "3", "--senders", "1", "--start-rate", "40",
                       "--factor", "2", "--max-steps", "2", "--duration", "0.3",
                       "--time-limit", "60")
    assert len(record["steps"]) == 2
    assert_good_rate_follows_the_steps(record)


def test_compare_runs_the_irc_door_beside_ngircd(tmp_path):
    """compare starts chatd's IRC door and ngIRCd, runs both (a burst too: every message
    reaches every other client), tabulates, stops both."""
    require_program("ngircd", "ngircd")
    out = tmp_path / "report.json"
    completed = subprocess.run(
        [sys.executable, str(BENCH_PATH), "compare", "--targets", "irc,ngircd", "--preset",
         "smoke", "--runs", "1", "--scenarios", "fanout,maxrate,burst", "--work-dir",
         str(tmp_path), "--out", str(out), "--time-limit", "150"],
        capture_output=True, text=True, timeout=240, cwd=ROOT)
    assert completed.returncode == 0, completed.stderr
    assert "| metric | irc | ngircd | irc/ngircd |" in completed.stdout
    report = json.loads(out.read_text())
    assert [(r["label"], r["target"]) for r in report["records"]] == [
        ("fanout", "irc"), ("fanout", "ngircd"), ("maxrate", "irc"), ("maxrate", "ngircd"),
        ("burst", "irc"), ("burst", "ngircd")]
    for record in report["records"]:
        assert "error" not in record
        assert not Path(f"/proc/{record['server_pid']}").exists()
    fanouts = [r for r in report["records"] if r["label"] == "fanout"]
    assert all(r["delivered"] == r["expected"] for r in fanouts)
    assert "Got valid OPER" in (tmp_path / "ngircd.log").read_text()
