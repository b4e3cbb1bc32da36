"""Tests of the load generator: its parsing and statistics, and short smoke runs.

The smoke runs use tiny numbers and bounded time; they check that every scenario still
runs end to end and reports what it should, never how fast anything was.
"""

import asyncio
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

ROOT = Path(__file__).resolve().parent.parent
BENCH_PATH = ROOT / "scripts" / "bench.py"
NAIVE_SERVER_PATH = ROOT / "scripts" / "naive_server.py"


def load_bench():
    """Import scripts/bench.py as a module (scripts/ is not a package)."""
    spec = importlib.util.spec_from_file_location("chatd_bench", BENCH_PATH)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


bench = load_bench()


# --------------------------------------------------------------------------- statistics


def test_no_collector_pauses_while_a_burst_is_measured():
    """The cyclic collector is off inside the measured burst and on again after it, even
    when the burst fails."""
    import gc

    assert gc.isenabled()
    with bench.no_collector_pauses():
        assert not gc.isenabled()
    assert gc.isenabled()
    with pytest.raises(RuntimeError), bench.no_collector_pauses():
        raise RuntimeError("the burst failed")
    assert gc.isenabled()


def test_latency_bucket_is_exact_below_two_milliseconds():
    """Small latencies keep their microsecond; negative ones (clock noise) count as zero."""
    assert bench.latency_bucket(0) == 0
    assert bench.latency_bucket(2047) == 2047
    assert bench.latency_bucket(-3) == 0


@given(st.integers(min_value=2048, max_value=10**9))
def test_latency_bucket_rounds_down_by_under_a_tenth_of_a_percent(latency):
    """Large latencies are rounded down, never up, and lose less than 0.1 %."""
    bucket = bench.latency_bucket(latency)
    assert bucket <= latency
    assert (latency - bucket) / latency < 0.001


def test_histogram_percentiles_use_nearest_rank():
    """p50 of 1..100 µs is 50 µs, p99 is 99 µs, the maximum is 100 µs."""
    histogram = bench.LatencyHistogram()
    for latency in range(1, 101):
        histogram.add(latency)
    assert histogram.total == 100
    assert histogram.percentile(0.50) == 50
    assert histogram.percentile(0.99) == 99
    assert histogram.percentile(1.0) == 100
    assert histogram.summary_ms() == {"p50": 0.05, "p90": 0.09, "p99": 0.099,
                                      "p99.9": 0.1, "max": 0.1}


def test_empty_histogram_reports_nothing():
    """No observation, no percentile: None rather than a made-up zero."""
    histogram = bench.LatencyHistogram()
    assert histogram.percentile(0.99) is None
    assert set(histogram.summary_ms().values()) == {None}


def test_histograms_merge_their_counts():
    """Merging adds every observation of the other histogram."""
    first, second = bench.LatencyHistogram(), bench.LatencyHistogram()
    first.add(10, times=3)
    second.add(10)
    second.add(20)
    first.merge(second)
    assert first.counts == {10: 4, 20: 1}


def test_percentile_of_a_list():
    """The list percentile uses nearest rank too, and None for an empty list."""
    assert bench.percentile([5, 1, 3, 2, 4], 0.5) == 3
    assert bench.percentile([5, 1, 3, 2, 4], 0.99) == 5
    assert bench.percentile([], 0.5) is None


def test_median_and_range_ignore_missing_runs():
    """A run that produced no value does not drag the median."""
    assert bench.median_and_range([3.0, None, 1.0, 2.0]) == (2.0, 1.0, 3.0)
    assert bench.median_and_range([None]) is None


def test_format_median_range():
    """Medians come with their range; one value stands alone; none is n/a."""
    assert bench.format_median_range([1_400_000, 1_300_000, 1_500_000]) == (
        "1.4M [1.3M to 1.5M]")
    assert bench.format_median_range([36.32]) == "36.3"
    assert bench.format_median_range([None, None]) == "n/a"


def test_pick_latency_samplers_spreads_over_the_join_order():
    """A sample includes the first and the last client; 0 means every client."""
    assert bench.pick_latency_samplers(100, 0) == set(range(100))
    assert bench.pick_latency_samplers(3, 16) == {0, 1, 2}
    sample = bench.pick_latency_samplers(100, 5)
    assert len(sample) == 5
    assert {0, 99} <= sample


def test_sessions_come_from_many_loopback_addresses():
    """Eight sessions per source address (chatd's per-address bcrypt share), every one a
    distinct 127.2.x.y, for 10,000+."""
    import ipaddress

    sources = [bench.source_address(index) for index in range(20_000)]
    assert sources[0] == sources[7] != sources[8]
    distinct = set(sources)
    assert len(distinct) == 2500
    assert all(ipaddress.ip_address(source) in ipaddress.ip_network("127.0.0.0/8")
               for source in distinct)


def test_step_is_good_needs_both_delivery_and_latency():
    """99 % delivered and p99 at most 200 ms; a step with no latency sample is not good."""
    def step(fraction, p99):
        return {"delivered_fraction": fraction, "latency_ms": {"p99": p99}}

    assert bench.step_is_good(step(0.99, 200.0))
    assert not bench.step_is_good(step(0.989, 1.0))
    assert not bench.step_is_good(step(1.0, 200.1))
    assert not bench.step_is_good(step(1.0, None))


def test_rate_ladder_is_geometric():
    """maxrate climbs by a constant factor from its start."""
    assert bench.next_rates(200, 1.5, 4) == [200, 300, 450, 675]


# --------------------------------------------------------------------------- protocol


def test_split_server_line_keeps_spaces_in_the_last_field():
    """MSG has three fields: the text keeps its spaces."""
    assert bench.split_server_line("MSG #bench alice hello there  world") == (
        "MSG", ["#bench", "alice", "hello there  world"])


def test_split_server_line_pads_an_empty_last_field():
    """``OK quit`` may end without the space before an empty text."""
    assert bench.split_server_line("OK quit") == ("OK", ["quit", ""])
    assert bench.split_server_line("PING abc") == ("PING", ["abc"])


def test_split_server_line_handles_history_and_unknown_types():
    """HISTORY has four fields; a type the bench does not know keeps the rest as one field."""
    line = "HISTORY #a 2026-11-25T10:00:00.123Z bob hi you"
    assert bench.split_server_line(line) == (
        "HISTORY", ["#a", "2026-11-25T10:00:00.123Z", "bob", "hi you"])
    assert bench.split_server_line("NEWTYPE a b c") == ("NEWTYPE", ["a b c"])


def test_the_bench_splits_lines_by_the_servers_table():
    """The bench has no table of its own: it splits by chatd.frontends.line.wire, the server's."""
    from chatd.frontends.line import wire as line_wire

    assert bench.split_server_line is line_wire.split_line
    for kind, count in line_wire.FIELD_COUNTS.items():
        assert len(bench.split_server_line(kind)[1]) == count


@given(step=st.integers(0, 999), seq=st.integers(0, 10**10 - 1),
       scheduled=st.integers(0, 10**16 - 1), size=st.integers(1, 300))
def test_probe_text_round_trips(step, seq, scheduled, size):
    """A probe keeps step, sequence number and send time, at the size asked for."""
    text = bench.probe_text(step, seq, scheduled, size)
    assert len(text) == max(size, bench.PROBE_TAIL_LEN + 1)
    assert bench.parse_probe(f"MSG #bench bob {text}\r\n") == (step, seq, scheduled)
    assert text.count(bench.step_marker(step).decode()) == 1


def test_parse_probe_rejects_other_lines():
    """A line without a probe tail is not a probe."""
    assert bench.parse_probe("OK say #bench") is None
    assert bench.parse_probe(b"MSG #bench bob s001 q12 t34") is None


class FakeTransport:
    """Collects what the client writes."""

    def __init__(self):
        self.written = []

    def write(self, data):
        self.written.append(data)

    def close(self):
        pass


def probe_lines(step, count, sender="bob"):
    """``count`` chatd MSG lines of ``step``, scheduled at time zero."""
    return b"".join(
        f"MSG #bench {sender} {bench.probe_text(step, seq, 0, 40)}\r\n".encode()
        for seq in range(count))


@given(cuts=st.lists(st.integers(min_value=1, max_value=40), max_size=60))
def test_client_counts_every_probe_however_reads_split_them(cuts):
    """Deliveries are counted exactly when lines straddle reads; other lines still arrive."""
    async def scenario():
        client = bench.BenchClient("chatd")
        client.connection_made(FakeTransport())
        client.data_received(b"HELLO chatd 1 welcome\r\n")
        step = bench.Step(number=7, expected=12)
        client.step = step
        client.samples_latency = True
        stream = (probe_lines(7, 5) + b"PING tok\r\n" + probe_lines(6, 2)
                  + probe_lines(7, 7) + b"JOIN #bench carol\r\n")
        position = 0
        for cut in cuts:
            client.data_received(stream[position:position + cut])
            position += cut
        client.data_received(stream[position:])
        return client, step

    client, step = asyncio.run(scenario())
    assert step.delivered == 12
    assert step.complete.is_set()
    assert step.histogram.total == 12
    assert step.stale == 2
    assert client.transport.written == [b"/pong tok\r\n"]
    assert list(client.events) == ["JOIN #bench carol"]


def test_final_replies_resolve_requests_in_order():
    """Each request gets the next final reply; events in between do not count as replies."""
    async def scenario():
        client = bench.BenchClient("chatd")
        client.connection_made(FakeTransport())
        client.data_received(b"HELLO chatd 1 hi\r\n")
        first = asyncio.ensure_future(client.request("/ping a"))
        second = asyncio.ensure_future(client.request("/ping b"))
        await asyncio.sleep(0)
        client.data_received(b"OK ping a\r\nINFO note\r\nERR bad-arguments no\r\n")
        return await first, await second, list(client.events)

    assert asyncio.run(scenario()) == ("OK ping a", "ERR bad-arguments no", ["INFO note"])


def test_lost_connection_fails_waiting_requests():
    """A request waiting when the connection drops raises rather than hanging."""
    async def scenario():
        client = bench.BenchClient("chatd")
        client.connection_made(FakeTransport())
        pending = asyncio.ensure_future(client.request("/ping a"))
        await asyncio.sleep(0)
        client.connection_lost(None)
        with pytest.raises(ConnectionError):
            await pending

    asyncio.run(scenario())


def test_a_schedule_goes_on_past_a_sender_the_server_already_closed():
    """A sender closed before the step (a server may drop a client that fell behind):
    the schedule still runs, the other sender's probes arrive, and nothing is written
    to the closed one."""
    async def scenario():
        received = []
        both_ended = asyncio.Event()

        async def serve(reader, writer):
            received.append(await reader.read())
            writer.close()
            if len(received) == 2:
                both_ended.set()

        server = await asyncio.start_server(serve, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        loop = asyncio.get_running_loop()
        senders = []
        for _ in range(2):
            client = bench.BenchClient("chatd")
            await loop.create_connection(lambda client=client: client, "127.0.0.1", port)
            senders.append(client)
        senders[0].transport.close()
        sent = await bench.OpenLoopSchedule(senders, 1, 400, 0.05, 64).run()
        senders[1].transport.close()
        await asyncio.wait_for(both_ended.wait(), 10)
        server.close()
        return sent, received

    sent, received = asyncio.run(scenario())
    assert sent["messages"] == 20
    assert sorted(chunk.count(b"\n") for chunk in received) == [0, 10]


def test_proc_readers_see_this_process():
    """CPU seconds and RSS come from /proc for any pid, here our own."""
    assert bench.read_cpu_seconds(os.getpid()) > 0
    memory = bench.read_memory_kb(os.getpid())
    assert 0 < memory["VmRSS"] <= memory["VmHWM"]


def test_summary_shows_medians_ranges_and_ratios():
    """The compare table has one row per metric, a range per target, and the ratio."""
    records = [
        {"label": "sessions", "scenario": "sessions", "target": target, "run": run,
         "rss_per_session_bytes": value, "alive": 10, "peak_rss_mb": 50.0,
         "setup_seconds": 1.0}
        for target, values in (("baseline", [1000, 1100, 900]), ("chatd", [2000, 2100, 1900]))
        for run, value in enumerate(values, 1)
    ]
    records.append({"label": "sessions", "scenario": "sessions", "target": "chatd", "run": 4,
                    "error": "BenchError: boom"})
    table = bench.summarize(records)
    assert "| RSS per session B | 1000 [900 to 1100] | 2000 [1900 to 2100] | 2.00x |" in table
    assert "chatd run 4 failed: BenchError: boom" in table


def test_machine_slowdowns_finds_the_windows_a_core_ran_slow():
    """A window counts as slow when a core's loop took twice its usual time there or more;
    a window at 1.9 times does not, and each slow window counts once however many cores
    ran slow in it."""
    window = 50_000
    steady = [(began, 40) for began in range(0, 10 * window, 2_000)]
    core0 = [(began, 90 if window <= began < 2 * window else took) for began, took in steady]
    core1 = [(began, 80 if window <= began < 3 * window else took) for began, took in steady]
    slow = bench.machine_slowdowns([core0, core1], window_us=window)
    assert slow.summary == {"machine_slow_ms": 100, "machine_slowest": 2.25}
    assert slow.slow_intervals == [(window, 3 * window)]
    almost = [(began, 76 if began < window else took) for began, took in steady]
    nearly = bench.machine_slowdowns([almost, steady], window_us=window)
    assert nearly.summary == {"machine_slow_ms": 0, "machine_slowest": 1.9}
    assert nearly.slow_intervals == []
    apart = [(began, 80 if began < window or 3 * window <= began < 4 * window else 40)
             for began in range(0, 10 * window, 2_000)]
    assert bench.machine_slowdowns([apart], window_us=window).slow_intervals == [
        (0, window), (3 * window, 4 * window)]
    assert bench.machine_slowdowns([[], steady]).summary == {"machine_slow_ms": 0,
                                                              "machine_slowest": 1.0}


def test_latencies_outside_leave_out_every_delivery_under_way_in_a_slow_interval():
    """A delivery counts only when neither its send, its receipt nor anything between
    fell in a slow interval; one sent after the interval, however late, still counts."""
    intervals = [(1_000, 2_000), (5_000, 6_000)]
    paths = [
        0, 500,        # before the first interval: counts
        0, 1_000,      # received as the interval begins: left out
        1_500, 100,    # inside it: left out
        900, 5_000,    # spans both: left out
        2_000, 2_500,  # sent as the first ends, received before the second: counts
        3_000, 2_500,  # received inside the second: left out
        6_000, 9_000,  # sent as the second ends, late: counts
    ]
    histogram = bench.latencies_outside(paths, intervals)
    assert histogram.counts == {bench.latency_bucket(latency): 1 for latency in (500, 2_500, 9_000)}
    assert bench.latencies_outside(paths, []).total == 7


def test_the_machine_speed_probe_runs_a_child_on_each_core_and_stops_it():
    """The probe's children loop until stopped and hand back their samples' summary."""
    probe = bench.MachineSpeedProbe(bench.machine_cores())

    async def scenario():
        await probe.start()
        children = list(probe._children)
        summary = await probe.stop()
        return children, summary

    children, summary = asyncio.run(scenario())
    assert len(children) == len(bench.machine_cores())
    assert all(child.returncode is not None for child in children)
    assert set(summary.summary) == {"machine_slow_ms", "machine_slowest"}


def test_a_forgotten_machine_speed_probe_stops_by_itself():
    """A child nobody stops ends at its time bound, with its samples written."""
    probe = bench.MachineSpeedProbe([0])
    probe.MAX_SECONDS = 0.05

    async def scenario():
        await probe.start()
        child = probe._children[0]
        # Bounded only so that a probe that never stops fails the test instead of
        # hanging it.
        output = await asyncio.wait_for(child.stdout.read(), 60)
        return await child.wait(), output

    returncode, output = asyncio.run(scenario())
    assert returncode == 0
    assert all(b":" in field for field in output.split())


def test_the_summary_takes_machine_steady_runs_apart():
    """Runs in which the machine ran slow are counted in a note, beside the p99 of the
    deliveries made while it kept its speed."""
    records = [
        {"label": "fanout", "scenario": "fanout", "target": "chatd", "run": run,
         "latency_ms": {"p99": p99}, "latency_ms_machine_steady": {"p99": steady},
         "machine_slow_ms": slow, "machine_slowest": 1.5}
        for run, (p99, steady, slow) in enumerate(((4.0, 4.0, 0), (30.0, 5.0, 150),
                                                    (6.0, 6.0, 0)), 1)
    ]
    table = bench.summarize(records)
    assert "| latency p99 ms | 6 [4 to 30] |" in table
    assert "| latency p99 ms, machine steady | 5 [4 to 6] |" in table
    assert "for 150 ms in all) during 1 of 3 runs" in table


def test_selected_presets_by_label_or_scenario():
    """``maxrate`` picks both maxrate presets; an unknown name is refused."""
    labels = [p.label for p in bench.selected_presets("full", "maxrate,history")]
    assert labels == ["maxrate-100", "maxrate-500", "history"]
    with pytest.raises(SystemExit):
        bench.selected_presets("full", "nonsense")
    lobby = bench.selected_presets("full", "sessions-lobby")
    assert [(p.label, p.params["room"]) for p in lobby] == [("sessions-lobby", "#lobby")]


# --------------------------------------------------------------------------- smoke runs


@pytest.fixture
def naive_server():
    """The baseline server on a free loopback port: (port, pid); stopped afterwards."""
    process = subprocess.Popen(
        [sys.executable, str(NAIVE_SERVER_PATH), "0"], stdout=subprocess.PIPE, text=True)
    try:
        banner = process.stdout.readline()
        assert banner.startswith("listening on "), banner
        yield int(banner.split()[-1]), process.pid
    finally:
        process.terminate()
        process.wait(10)


def run_bench(*arguments, timeout=60):
    """Run the bench's command line and return its JSON record."""
    completed = subprocess.run(
        [sys.executable, str(BENCH_PATH), *arguments], capture_output=True, text=True,
        timeout=timeout, cwd=ROOT)
    assert completed.returncode == 0, completed.stderr
    return json.loads(completed.stdout)


def assert_good_rate_follows_the_steps(record: dict) -> None:
    """The reported good rate is the last step judged good, whatever the machine's speed.

    Whether a step is good depends on latency, so on how busy the machine
    is: the test checks the verdicts are applied, not what they were
    (measurements belong in docs/benchmarks.md).
    """
    steps = record["steps"]
    good = None
    for step in steps:
        assert step["good"] == bench.step_is_good(step)
        if not step["good"]:
            break
        good = step
    assert record["max_good_rate"] == (good["rate"] if good else None)
    assert record["max_deliveries_per_s"] == (good["deliveries_per_s"] if good else None)


def test_smoke_fanout_against_the_baseline(naive_server):
    """A tiny open-loop run delivers every message to every client and reports latency."""
    port, pid = naive_server
    record = run_bench("fanout", "--dialect", "naive", "--port", str(port), "--server-pid",
                       str(pid), "--clients", "4", "--senders", "2", "--rate", "50",
                       "--duration", "0.4", "--time-limit", "20")
    assert record["messages"] == 20
    assert record["delivered"] == record["expected"] == 80
    assert record["latency_samples"] == 80
    assert record["latency_ms"]["p99"] is not None
    assert record["server_peak_rss_mb"] is not None


def test_smoke_maxrate_against_the_baseline(naive_server):
    """The ladder runs its bounded steps and names a last good rate."""
    port, pid = naive_server
    record = run_bench("maxrate", "--dialect", "naive", "--port", str(port), "--server-pid",
                       str(pid), "--clients", "3", "--senders", "1", "--start-rate", "40",
                       "--factor", "2", "--max-steps", "2", "--duration", "0.3",
                       "--time-limit", "30")
    assert [step["rate"] for step in record["steps"]] == [40, 80]
    assert_good_rate_follows_the_steps(record)


def test_smoke_burst_against_the_baseline(naive_server):
    """Every round's burst reaches every client (the round waits for it) and is costed."""
    port, pid = naive_server
    record = run_bench("burst", "--dialect", "naive", "--port", str(port), "--server-pid",
                       str(pid), "--clients", "4", "--senders", "2", "--per-sender", "30",
                       "--rounds", "3", "--warmup", "1", "--time-limit", "20")
    assert (record["senders"], record["per_sender"], record["rounds"]) == (2, 30, 3)
    low, high = record["server_cpu_us_per_message_range"]
    assert 0 <= low <= record["server_cpu_us_per_message"] <= high
    assert record["deliveries_per_s"] > 0


def refusal_of(scenario: str, port: int) -> str:
    """Run ``scenario`` against the baseline on ``port``; it must fail: its stderr."""
    completed = subprocess.run(
        [sys.executable, str(BENCH_PATH), scenario, "--dialect", "naive", "--port", str(port),
         "--time-limit", "10"], capture_output=True, text=True, timeout=30, cwd=ROOT)
    assert completed.returncode != 0
    return completed.stderr


def test_burst_needs_the_server_pid(naive_server):
    """Without the server's pid there is no CPU time to divide: refused, not a zero."""
    port, _ = naive_server
    assert "give --server-pid" in refusal_of("burst", port)


def test_smoke_sessions_against_the_baseline(naive_server):
    """Idle connections are all alive and the per-session RSS is computed."""
    port, pid = naive_server
    record = run_bench("sessions", "--dialect", "naive", "--port", str(port), "--server-pid",
                       str(pid), "--clients", "20", "--time-limit", "20")
    assert record["alive"] == 20
    assert record["rss_per_session_bytes"] is not None


def test_smoke_storm_against_the_baseline(naive_server):
    """On the baseline the storm is a burst of connections; pings are timed throughout."""
    port, pid = naive_server
    record = run_bench("storm", "--dialect", "naive", "--port", str(port), "--server-pid",
                       str(pid), "--logins", "3", "--ping-interval", "0.005",
                       "--time-limit", "20")
    assert record["logins_ok"] == 3
    assert record["pings"] >= 1
    assert record["ping_worst_ms"] is not None


def test_history_refuses_the_baseline(naive_server):
    """The baseline stores nothing, so history says so instead of measuring nonsense."""
    port, _ = naive_server
    assert "history needs the chatd dialect" in refusal_of("history", port)


def test_compare_starts_and_stops_both_servers(tmp_path):
    """The driver runs presets on both servers, summarizes them, and leaves none running."""
    out = tmp_path / "report.json"
    completed = subprocess.run(
        [sys.executable, str(BENCH_PATH), "compare", "--targets", "baseline,chatd", "--preset",
         "smoke", "--runs", "1", "--scenarios", "fanout,history", "--work-dir",
         str(tmp_path), "--out", str(out), "--time-limit", "120"],
        capture_output=True, text=True, timeout=200, cwd=ROOT)
    assert completed.returncode == 0, completed.stderr
    assert "### fanout" in completed.stdout
    assert "| deliveries/s |" in completed.stdout
    report = json.loads(out.read_text())
    assert [(r["label"], r["target"]) for r in report["records"]] == [
        ("fanout", "baseline"), ("fanout", "chatd"), ("history", "chatd")]
    for record in report["records"]:
        assert "error" not in record
        assert not Path(f"/proc/{record['server_pid']}").exists()


def chatd_arguments(server):
    """The bench options that point a scenario at a ServerProcess."""
    return ("--dialect", "chatd", "--port", str(server.port), "--server-pid", str(server.pid))


def test_smoke_fanout_against_chatd(chatd_server):
    """Logged-in clients in one room receive every MSG; latency and server cost reported."""
    record = run_bench("fanout", *chatd_arguments(chatd_server), "--clients", "4",
                       "--senders", "2", "--rate", "50", "--duration", "0.4",
                       "--time-limit", "30")
    assert record["delivered"] == record["expected"] == 80
    assert record["errors"] == 0
    assert record["latency_ms"]["max"] is not None
    assert record["server_cpu"] is not None


def test_smoke_maxrate_against_chatd(chatd_server):
    """The ladder runs against chatd too and keeps to its step bound."""
    record = run_bench("maxrate", *chatd_arguments(chatd_server), "--clients", "3",
                       "--senders", "1", "--start-rate", "40", "--factor", "2",
                       "--max-steps", "2", "--refine", "0", "--duration", "0.3",
                       "--time-limit", "30")
    # Two steps, or one if a busy machine made the first miss: never more.
    assert 1 <= len(record["steps"]) <= 2
    assert_good_rate_follows_the_steps(record)


def test_smoke_burst_against_chatd(chatd_server):
    """Bursts of room messages through chatd's commits reach every session, and are costed."""
    record = run_bench("burst", *chatd_arguments(chatd_server), "--clients", "4",
                       "--senders", "2", "--per-sender", "25", "--rounds", "2",
                       "--time-limit", "30")
    assert record["dialect"] == "chatd"
    assert record["server_cpu_us_per_message"] is not None
    assert record["deliveries_per_s"] > 0


def test_smoke_sessions_against_chatd(chatd_server):
    """Idle logged-in sessions all answer and the per-session RSS is computed."""
    record = run_bench("sessions", *chatd_arguments(chatd_server), "--clients", "15",
                       "--time-limit", "30")
    assert record["alive"] == 15
    assert record["rss_per_session_bytes"] is not None


def test_smoke_sessions_in_the_lobby_against_chatd(chatd_server):
    """With ``--room #lobby`` every session stays logged in in the lobby and answers."""
    record = run_bench("sessions", *chatd_arguments(chatd_server), "--clients", "15",
                       "--room", "#lobby", "--time-limit", "30")
    assert record["room"] == "#lobby"
    assert record["alive"] == 15
    assert record["rss_per_session_bytes"] is not None


def test_smoke_storm_against_chatd(chatd_server):
    """Concurrent logins all succeed while pings are timed."""
    record = run_bench("storm", *chatd_arguments(chatd_server), "--logins", "3",
                       "--ping-interval", "0.005", "--time-limit", "30")
    assert record["logins_ok"] == 3
    assert record["pings"] >= 1


def test_smoke_history_against_chatd(tmp_path):
    """A prefilled room's join sends the last 50 stored messages as HISTORY."""
    from tests.serverproc import ServerProcess

    server = ServerProcess(tmp_path)
    assert bench.prefill_history(str(server.db_path), "#history", 500) == 500
    server.start()
    try:
        record = run_bench("history", *chatd_arguments(server), "--joins", "2",
                           "--time-limit", "30")
    finally:
        server.stop()
    assert record["joins"] == 2
    assert record["history_lines"] == 50
    assert record["join_ms_max"] >= record["join_ms_median"]


def test_prefill_history_tops_up_to_the_count(tmp_path):
    """Prefilling again only adds what is missing, so reruns reuse the database."""
    db_path = str(tmp_path / "chatd.sqlite3")
    assert bench.prefill_history(db_path, "#history", 30, batch=7) == 30
    assert bench.prefill_history(db_path, "#history", 45, batch=7) == 45


class ShortSocket:
    """A socket whose send buffer takes only ``room`` more bytes."""

    def __init__(self, room):
        self.room = room
        self.taken = b""

    def send(self, data):
        accepted = data[: self.room]
        self.room -= len(accepted)
        self.taken += accepted
        if not accepted:
            raise BlockingIOError
        return len(accepted)


class RecordingLoop:
    """Stands in for the event loop: records what the schedule hands it."""

    def __init__(self):
        self.calls = []

    def call_soon_threadsafe(self, function, *arguments):
        self.calls.append((function, arguments))


def test_schedule_hands_a_full_socket_to_the_loop_and_keeps_order():
    """Once a sender's socket takes part of a line, the rest and later lines go in order."""
    class Sender:
        transport = FakeTransport()

        @staticmethod
        def wire(data: bytes) -> bytes:
            return data

    async def make_schedule():
        return bench.OpenLoopSchedule([Sender()], 1, 100.0, 1.0, 40)

    schedule = asyncio.run(make_schedule())
    short = ShortSocket(room=10)
    schedule.sockets = [short]
    loop = RecordingLoop()
    schedule._send(0, b"first line\r\n", loop)
    schedule._send(0, b"second line\r\n", loop)
    assert short.taken == b"first line"
    assert schedule.handed_to_loop == [True]
    handed = b"".join(arguments[-1] for _, arguments in loop.calls)
    assert short.taken + handed == b"first line\r\nsecond line\r\n"
