#!/usr/bin/env python3
"""Load generator for chatd and for the naive Twisted broadcast baseline.

Scenarios (each a subcommand; ``--help`` on each lists its knobs):

* ``fanout``   C clients in one room, S of them sending on an open-loop schedule of R
  messages/s for D seconds. Latency runs from each message's *scheduled* send time to
  its receipt, so a stalled server cannot hide its stall.
* ``maxrate``  steps R up until delivery falls under 99 % or p99 passes 200 ms; reports the
  last good rate in deliveries/s.
* ``sessions`` C idle logged-in sessions; server RSS per session.
* ``storm``    N concurrent logins while a logged-in client pings; the worst ping round trip
  shows whether the reactor stalled.
* ``history``  join time of a room holding many stored messages (the database is prefilled
  with sqlite3 before the server starts).
* ``compare``  starts the baseline and/or chatd itself, pinned with ``taskset`` to their own
  core, runs the scenarios N times each and prints medians, ranges and chatd/baseline
  ratios. It stops every process it started, and stops by itself.

Three dialects: ``chatd`` (HELLO, /register, /login, /join, ``MSG <room> <sender> <text>``),
``naive`` (no login, every line echoed to every client) and ``irc`` (REGISTER and PASS or
SASL, JOIN, PRIVMSG; fanout and maxrate only). ``--websocket`` speaks the chatd dialect
through chatd's web door (one line per WebSocket text message; the compare target ``web``).
The compare targets ``irc`` and ``ngircd`` are chatd's IRC door and Debian's ngIRCd (started
by the bench with a configuration of its own, without limits).

* ``cluster``  ``compare`` with the cluster targets: ``pg`` (one node on PostgreSQL),
  ``pg-redis`` (the same node with Redis fan-out on: the cost of the bus) and
  ``pg-redis-2`` (two nodes, sessions taking turns between them, so most deliveries
  cross Redis). It starts a private PostgreSQL and redis-server in its work directory
  (or uses ``--postgres-url``/``--redis-url``), a fresh database for every run.

It only ever talks to loopback.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import bisect
import collections
import contextlib
import gc
import json
import math
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
LOOPBACK = "127.0.0.1"

if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))
# Server lines are split by the server's own table of kinds and field counts.
from chatd.frontends.line.wire import split_line as split_server_line  # noqa: E402

PROBE_STEP_DIGITS = 3
PROBE_SEQ_DIGITS = 10
PROBE_TIME_DIGITS = 16
# " s<step> q<seq> t<scheduled send time in µs>" ends every probe message text.
PROBE_TAIL_LEN = len(" s q t") + PROBE_STEP_DIGITS + PROBE_SEQ_DIGITS + PROBE_TIME_DIGITS
PROBE_RE = re.compile(rb" s(\d{3}) q(\d{10}) t(\d{16})$")

MAXRATE_MIN_DELIVERED = 0.99
MAXRATE_MAX_P99_MS = 200.0
# Above this share of its core the load generator, not the server, may be the limit.
BENCH_SATURATED_CPU = 0.90
EXACT_LATENCY_US = 2048
LATENCY_SIGNIFICANT_BITS = 11
CONNECT_CONCURRENCY = 32
IRC_CONNECT_CONCURRENCY = 8
# chatd admits at most CHATD_BCRYPT_PER_ADDRESS (8) password checks per address
# at once, and counts logins in flight against the per-address limit (10):
# no more sessions than that share a source address.
SESSIONS_PER_SOURCE = 8
DEFAULT_ROOM = "#bench"
# Where login puts every session.
LOBBY = "#lobby"


# --------------------------------------------------------------------------- statistics


def monotonic_us() -> int:
    """The monotonic clock in whole microseconds, shared by senders and receivers."""
    return time.monotonic_ns() // 1000


def latency_bucket(latency_us: int) -> int:
    """Exact below 2 ms, otherwise rounded down to 11 significant bits (under 0.1 % off)."""
    if latency_us < EXACT_LATENCY_US:
        return max(latency_us, 0)
    shift = latency_us.bit_length() - LATENCY_SIGNIFICANT_BITS
    return latency_us >> shift << shift


class LatencyHistogram:
    """Counts of latencies in microseconds, bucketed by :func:`latency_bucket`."""

    def __init__(self, counts: dict[int, int] | None = None):
        self.counts: dict[int, int] = counts if counts is not None else {}

    def add(self, latency_us: int, times: int = 1) -> None:
        """Record ``times`` observations of ``latency_us``."""
        bucket = latency_bucket(latency_us)
        self.counts[bucket] = self.counts.get(bucket, 0) + times

    def merge(self, other: LatencyHistogram) -> None:
        """Add every observation of ``other`` to this histogram."""
        for bucket, times in other.counts.items():
            self.counts[bucket] = self.counts.get(bucket, 0) + times

    @property
    def total(self) -> int:
        """How many observations were recorded."""
        return sum(self.counts.values())

    def percentile(self, fraction: float) -> float | None:
        """Nearest-rank percentile in microseconds (``fraction`` in 0..1), None when empty."""
        total = self.total
        if not total:
            return None
        rank = max(1, math.ceil(fraction * total))
        seen = 0
        for bucket in sorted(self.counts):
            seen += self.counts[bucket]
            if seen >= rank:
                return float(bucket)
        raise AssertionError("unreachable: rank never exceeds the total")

    def maximum(self) -> float | None:
        """The largest bucket recorded, None when empty."""
        return float(max(self.counts)) if self.counts else None

    def summary_ms(self) -> dict[str, float | None]:
        """p50/p90/p99/p99.9/max in milliseconds."""
        points = {"p50": 0.50, "p90": 0.90, "p99": 0.99, "p99.9": 0.999}
        summary = {}
        for name, fraction in points.items():
            value = self.percentile(fraction)
            summary[name] = None if value is None else round(value / 1000, 3)
        maximum = self.maximum()
        summary["max"] = None if maximum is None else round(maximum / 1000, 3)
        return summary


def percentile(values: list[float], fraction: float) -> float | None:
    """Nearest-rank percentile of a list of numbers, None when it is empty."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(fraction * len(ordered)))
    return ordered[rank - 1]


def median_and_range(values: list[float | None]) -> tuple[float, float, float] | None:
    """(median, min, max) of the values that are not None; None when there are none."""
    present = [value for value in values if value is not None]
    if not present:
        return None
    return statistics.median(present), min(present), max(present)


def format_number(value: float) -> str:
    """A compact human form: 3 significant digits, thousands as k and M."""
    magnitude = abs(value)
    if magnitude >= 1e6:
        return f"{value / 1e6:.3g}M"
    if magnitude >= 1e4:
        return f"{value / 1e3:.3g}k"
    if magnitude >= 100:
        return f"{value:.0f}"
    return f"{value:.3g}"


def format_median_range(values: list[float | None]) -> str:
    """``median [min to max]`` of the runs, or ``n/a`` when no run produced the value."""
    stats = median_and_range(values)
    if stats is None:
        return "n/a"
    median, low, high = stats
    if len([value for value in values if value is not None]) == 1:
        return format_number(median)
    return f"{format_number(median)} [{format_number(low)} to {format_number(high)}]"


# --------------------------------------------------------------------------- protocol


def probe_text(step: int, seq: int, scheduled_us: int, size: int) -> str:
    """A message text of ``size`` bytes (at least the probe tail) carrying the probe fields."""
    tail = f" s{step % 1000:03d} q{seq:010d} t{scheduled_us:016d}"
    return "x" * max(1, size - len(tail)) + tail


def parse_probe(line: bytes | str) -> tuple[int, int, int] | None:
    """(step, seq, scheduled µs) from a line ending in a probe text, else None."""
    if isinstance(line, str):
        line = line.encode()
    match = PROBE_RE.search(line.rstrip(b"\r\n"))
    if match is None:
        return None
    return int(match[1]), int(match[2]), int(match[3])


def step_marker(step: int) -> bytes:
    """The bytes that occur exactly once in each probe line of ``step``."""
    return b" s%03d q" % (step % 1000)


# --------------------------------------------------------------------------- /proc


def read_cpu_seconds(pid: int) -> float:
    """User plus system CPU seconds that process ``pid`` has used so far."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    # The command name may contain spaces and parentheses: fields start after the last ')'.
    fields = stat[stat.rindex(")") + 2:].split()
    ticks = int(fields[11]) + int(fields[12])
    return ticks / os.sysconf("SC_CLK_TCK")


def read_memory_kb(pid: int) -> dict[str, int]:
    """VmRSS (resident now) and VmHWM (peak resident) of process ``pid`` in kB."""
    memory = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            memory[key] = int(value.split()[0])
    return memory


class ServerWatch:
    """CPU share and RSS peak of the server process over a measured interval.

    Without a pid it records nothing, so every scenario runs against a server the
    bench did not start too.
    """

    SAMPLE_SECONDS = 0.05

    def __init__(self, pid: int | None, *more_pids: int):
        self.pid = pid
        # Cluster targets run several nodes: their CPU and RSS are summed.
        self.pids = [p for p in (pid, *more_pids) if p is not None]
        self.peak_rss_kb = 0
        self._task: asyncio.Task | None = None
        self._cpu_start = 0.0
        self._wall_start = 0.0
        self._bench_cpu_start = 0.0

    def rss_kb(self) -> int | None:
        """The server's resident set now, in kB."""
        if not self.pids:
            return None
        return sum(read_memory_kb(pid)["VmRSS"] for pid in self.pids)

    def start(self) -> None:
        """Begin an interval: remember CPU counters and sample RSS until :meth:`stop`."""
        self._wall_start = time.monotonic()
        self._bench_cpu_start = time.process_time()
        if self.pids:
            self._cpu_start = sum(read_cpu_seconds(pid) for pid in self.pids)
            self.peak_rss_kb = self.rss_kb() or 0
            self._task = asyncio.get_running_loop().create_task(self._sample())

    async def _sample(self) -> None:
        while True:
            await asyncio.sleep(self.SAMPLE_SECONDS)
            with contextlib.suppress(OSError):
                self.peak_rss_kb = max(self.peak_rss_kb, self.rss_kb() or 0)

    def stop(self) -> dict[str, float | None]:
        """End the interval: server CPU share, RSS now and peak, the bench's own CPU share."""
        wall = max(time.monotonic() - self._wall_start, 1e-9)
        bench_cpu = (time.process_time() - self._bench_cpu_start) / wall
        result: dict[str, float | None] = {
            "server_cpu": None, "server_cpu_seconds": None, "server_rss_mb": None,
            "server_peak_rss_mb": None, "bench_cpu": round(bench_cpu, 3),
            "bench_saturated": bench_cpu >= BENCH_SATURATED_CPU,
        }
        if self.pids:
            if self._task is not None:
                self._task.cancel()
            with contextlib.suppress(OSError):
                cpu = sum(read_cpu_seconds(pid) for pid in self.pids) - self._cpu_start
                rss = self.rss_kb() or 0
                self.peak_rss_kb = max(self.peak_rss_kb, rss)
                result["server_cpu"] = round(cpu / wall, 3)
                result["server_cpu_seconds"] = cpu
                result["server_rss_mb"] = round(rss / 1024, 1)
                result["server_peak_rss_mb"] = round(self.peak_rss_kb / 1024, 1)
        return result


# The machine-speed probe's child: on one core, at real-time priority so that no process
# of the run delays it, it runs the same small busy loop every PERIOD and records when it
# began and how long it took. Only the machine itself (a hypervisor taking the virtual
# CPU away, interrupts) can make the loop slower. Between loops it waits for SIGTERM,
# its stop, until the next is due; it also stops when the bench that started it is
# gone, or after a bounded time, whichever comes first.
_SPEED_PROBE_CHILD = r"""
import array, os, signal, sys, time
core, period_ns, loops = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
give_up = time.monotonic_ns() + int(float(sys.argv[4]) * 1e9)
parent = os.getppid()
os.sched_setaffinity(0, {core})
try:
    os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(1))
except (AttributeError, OSError):
    pass
signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})
clock = time.monotonic_ns
begun_us, took_us = array.array("q"), array.array("q")
print("ready", flush=True)
due = clock()
while os.getppid() == parent and due < give_up:
    if signal.sigtimedwait({signal.SIGTERM}, max(due - clock(), 0) / 1e9) is not None:
        break
    begun = clock()
    for _ in range(loops):
        pass
    ended = clock()
    begun_us.append(begun // 1000)
    took_us.append((ended - begun) // 1000)
    due = max(due + period_ns, ended)
sys.stdout.write(" ".join(f"{b}:{t}" for b, t in zip(begun_us, took_us)))
"""


@dataclass
class MachineSpeed:
    """What :class:`MachineSpeedProbe` saw: ``summary`` for the run record, and the
    monotonic (start µs, end µs) intervals in which the machine ran slow."""

    summary: dict
    slow_intervals: list[tuple[int, int]]


def machine_slowdowns(samples_by_core: list[list[tuple[int, int]]],
                      window_us: int = 50_000, slow_factor: float = 2.0) -> MachineSpeed:
    """How long, when and how badly the machine itself ran slow during an interval.

    ``samples_by_core`` holds, per core, the probe's (began µs, took µs) pairs. A core's
    speed in a window is its median loop time over the whole interval divided by the
    window's mean; a window counts as slow when any core ran at ``1 / slow_factor`` of
    its speed or less there.
    """
    slow_windows: set[int] = set()
    slowest = 1.0
    for samples in samples_by_core:
        if not samples:
            continue
        usual = max(statistics.median(took for _, took in samples), 1)
        windows: dict[int, list[int]] = collections.defaultdict(list)
        for began, took in samples:
            windows[began // window_us].append(took)
        for window, took in windows.items():
            factor = statistics.fmean(took) / usual
            slowest = max(slowest, factor)
            if factor >= slow_factor:
                slow_windows.add(window)
    intervals: list[tuple[int, int]] = []
    for window in sorted(slow_windows):
        start = window * window_us
        if intervals and intervals[-1][1] == start:
            intervals[-1] = (intervals[-1][0], start + window_us)
        else:
            intervals.append((start, start + window_us))
    summary = {"machine_slow_ms": len(slow_windows) * window_us // 1000,
               "machine_slowest": round(slowest, 2)}
    return MachineSpeed(summary, intervals)


def latencies_outside(paths: list[int], intervals: list[tuple[int, int]]) -> LatencyHistogram:
    """The latencies of the deliveries whose whole path, from the probe's scheduled send
    to its receipt, lies outside every interval.

    ``paths`` is flat: scheduled µs, latency µs, for each delivery; ``intervals`` are
    sorted and disjoint. A delivery held back by a backlog that built up in an interval
    but sent after it still counts: draining that backlog is the server's work.
    """
    histogram = LatencyHistogram()
    starts = [start for start, _ in intervals]
    for index in range(0, len(paths), 2):
        scheduled, latency = paths[index], paths[index + 1]
        # The last interval starting at or before the receipt is the only one that can
        # overlap [scheduled, scheduled + latency].
        last = bisect.bisect_right(starts, scheduled + latency) - 1
        if last >= 0 and intervals[last][1] > scheduled:
            continue
        histogram.add(latency)
    return histogram


class MachineSpeedProbe:
    """Tells whether the machine kept its speed while a step was measured.

    On a shared virtual machine the host sometimes gives the cores a fraction of their
    time for 50 to 300 ms: every process runs several times slower, and a latency
    measured then is the machine's. One child per core (:data:`_SPEED_PROBE_CHILD`)
    costs about 4 % of it (80 µs every 2 ms).
    """

    PERIOD_NS = 2_000_000
    LOOPS = 2_000
    # A step is bounded by its duration and grace; a child outliving this much has
    # been forgotten (and then stops by itself).
    MAX_SECONDS = 600.0

    def __init__(self, cores: list[int]):
        self.cores = cores
        self._children: list[asyncio.subprocess.Process] = []

    async def start(self) -> None:
        """Start a child on every core and wait until each is looping."""
        for core in self.cores:
            child = await asyncio.create_subprocess_exec(
                sys.executable, "-c", _SPEED_PROBE_CHILD, str(core), str(self.PERIOD_NS),
                str(self.LOOPS), str(self.MAX_SECONDS), stdout=subprocess.PIPE)
            self._children.append(child)
            await child.stdout.readline()

    async def stop(self) -> MachineSpeed:
        """Stop the children and summarise with :func:`machine_slowdowns`."""
        samples_by_core = []
        for child in self._children:
            with contextlib.suppress(ProcessLookupError):
                child.terminate()
            output, _ = await child.communicate()
            pairs = (field.split(":") for field in output.decode().split())
            samples_by_core.append([(int(began), int(took)) for began, took in pairs])
        self._children.clear()
        return machine_slowdowns(samples_by_core)


def machine_cores() -> list[int]:
    """Every core of the machine: the servers' and the bench's (this process may be
    pinned to one of them)."""
    return list(range(os.cpu_count() or 1))


def watch_servers(args) -> ServerWatch:
    """A :class:`ServerWatch` of the scenario's server, or of every node of a cluster."""
    return ServerWatch(args.server_pid, *getattr(args, "more_server_pids", ()))


# --------------------------------------------------------------------------- client


class BenchError(Exception):
    """The server answered something the scenario cannot go on with."""


@dataclass
class Step:
    """One measured burst of probe messages, shared by every client while it runs."""

    number: int
    expected: int
    marker: bytes = b""
    latency_re: re.Pattern | None = None
    delivered: int = 0
    stale: int = 0
    histogram: LatencyHistogram = field(default_factory=LatencyHistogram)
    complete: asyncio.Event = field(default_factory=asyncio.Event)
    # Flat (scheduled µs, latency µs) of every sampled delivery, when kept: the machine
    # probe's slow intervals are taken out of them afterwards.
    paths: list[int] | None = None

    def __post_init__(self):
        self.marker = step_marker(self.number)
        digits = rb"\d{%d} t(\d{%d})\r\n" % (PROBE_SEQ_DIGITS, PROBE_TIME_DIGITS)
        self.latency_re = re.compile(re.escape(self.marker) + digits)


class BenchClient(asyncio.Protocol):
    """One connection: line framing, in-order final replies, and a fast probe counter.

    While a :class:`Step` runs, probe lines are counted with ``bytes.count`` and, on
    clients chosen to sample latency, matched with one regular expression per read;
    every other line goes through the slower control path (final replies, PING, events).
    """

    MAX_KEPT_EVENTS = 200
    # Whether a client receives its own room messages (chatd's doors show them back).
    sees_own_messages = True

    def __init__(self, dialect: str):
        loop = asyncio.get_running_loop()
        self.dialect = dialect
        self.transport: asyncio.Transport | None = None
        self.tail = b""
        self.first_line: asyncio.Future = loop.create_future()
        self.closed: asyncio.Future = loop.create_future()
        self.waiters: collections.deque[asyncio.Future] = collections.deque()
        self.unclaimed: collections.deque[str] = collections.deque()
        self.events: collections.deque[str] = collections.deque(maxlen=self.MAX_KEPT_EVENTS)
        self.final_hook = None
        self.line_hook = None
        self.step: Step | None = None
        self.samples_latency = False
        self.acks = 0
        self.errors = 0
        self.last_error: str | None = None
        self.bytes_received = 0
        self.last_receive = 0.0

    # asyncio callbacks ------------------------------------------------------

    def connection_made(self, transport):
        self.transport = transport

    def connection_lost(self, exc):
        if not self.closed.done():
            self.closed.set_result(exc)
        error = ConnectionError(f"connection lost: {exc}")
        if not self.first_line.done():
            self.first_line.set_exception(error)
            # Nobody may be waiting for a greeting any more; do not log it as unhandled.
            self.first_line.exception()
        while self.waiters:
            waiter = self.waiters.popleft()
            if not waiter.done():
                waiter.set_exception(error)

    def data_received(self, data: bytes) -> None:
        self.bytes_received += len(data)
        self.last_receive = time.monotonic()
        if self.tail:
            data = self.tail + data
        end = data.rfind(b"\n") + 1
        if not end:
            self.tail = data
            return
        self.tail = data[end:]
        body = data[:end] if end < len(data) else data
        step = self.step
        if step is None:
            self._control(body)
            return
        probes = body.count(step.marker)
        if probes:
            step.delivered += probes
            if self.samples_latency:
                now = monotonic_us()
                counts = step.histogram.counts
                paths = step.paths
                for scheduled in step.latency_re.findall(body):
                    scheduled = int(scheduled)
                    latency = now - scheduled
                    if paths is not None:
                        paths += (scheduled, latency)
                    if latency >= EXACT_LATENCY_US:
                        shift = latency.bit_length() - LATENCY_SIGNIFICANT_BITS
                        latency = latency >> shift << shift
                    counts[latency] = counts.get(latency, 0) + 1
            if step.delivered >= step.expected:
                step.complete.set()
        if probes != body.count(b"\n"):
            self._control(body, skip=step.marker)

    # control path -----------------------------------------------------------

    def _control(self, body: bytes, skip: bytes | None = None) -> None:
        for raw in body.split(b"\n")[:-1]:
            if skip is not None and skip in raw:
                continue
            line = raw.rstrip(b"\r").decode("utf-8", "replace")
            if not self.first_line.done():
                self.first_line.set_result(line)
                if self.dialect == "chatd":
                    continue
            if PROBE_RE.search(raw.rstrip(b"\r")):
                if self.step is not None:
                    self.step.stale += 1
                continue
            self._control_line(line)

    def _control_line(self, line: str) -> None:
        if self.line_hook is not None and self.line_hook(line):
            return
        if self.dialect != "chatd":
            self.events.append(line)
            return
        if line.startswith("PING "):
            self.send(f"/pong {line[5:]}")
            return
        if line.startswith(("OK ", "ERR ")) or line in ("OK", "ERR"):
            if self.final_hook is not None and self.final_hook(line):
                return
            if self.step is not None and line.startswith("OK say"):
                self.acks += 1
                return
            if self.step is not None and line.startswith("ERR "):
                self.errors += 1
                self.last_error = line
                return
            if self.waiters:
                self.waiters.popleft().set_result(line)
            else:
                self.unclaimed.append(line)
            return
        self.events.append(line)

    # requests ---------------------------------------------------------------

    def send(self, line: str) -> None:
        """Write one line with the CRLF terminator."""
        self.transport.write(line.encode() + b"\r\n")

    async def request(self, line: str, timeout: float = 30.0) -> str:
        """Send a command and return its final reply (OK or ERR), in order."""
        future = asyncio.get_running_loop().create_future()
        self.waiters.append(future)
        self.send(line)
        return await asyncio.wait_for(future, timeout)

    async def expect_ok(self, line: str, timeout: float = 30.0) -> str:
        """Send a command whose final reply must be OK; raise :class:`BenchError` if not."""
        reply = await self.request(line, timeout)
        if not reply.startswith("OK"):
            raise BenchError(f"{line.split(' ')[0]} answered {reply!r}")
        return reply

    def close(self) -> None:
        """Close the connection without a goodbye."""
        if self.transport is not None:
            self.transport.close()

    def wire(self, data: bytes) -> bytes:
        """A probe line (text and CRLF) as this client writes it: unchanged on the line door."""
        return data


class WebSocketBenchClient(BenchClient):
    """A :class:`BenchClient` through chatd's web door: the same lines, in WebSocket messages.

    It sends the opening handshake for ``/ws`` with the subprotocol ``chatd.v1`` (and no
    ``Origin``: it is not a browser), then turns the server's text frames back into lines
    for :class:`BenchClient`'s counting, and its own lines into masked text frames. The
    mask key is zero, which a server must accept like any other (browsers pick random
    keys); it keeps the load generator's cost per message close to the line door's.
    """

    MASK = b"\x00\x00\x00\x00"

    def __init__(self, dialect: str):
        super().__init__(dialect)
        self.handshaking = True
        self.frames_tail = b""

    def connection_made(self, transport):
        super().connection_made(transport)
        key = "Y2hhdGQtYmVuY2gtLWtleQ=="
        transport.write(("GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
                         "Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
                         f"Sec-WebSocket-Key: {key}\r\n"
                         "Sec-WebSocket-Protocol: chatd.v1\r\n\r\n").encode())

    def data_received(self, data: bytes) -> None:
        data = self.frames_tail + data
        if self.handshaking:
            end = data.find(b"\r\n\r\n")
            if end < 0:
                self.frames_tail = data
                return
            if not data.startswith(b"HTTP/1.1 101"):
                self.frames_tail = b""
                self.close()
                return
            self.handshaking = False
            data = data[end + 4:]
        # The common case, a run of small text frames (the server never masks): each
        # frame's two-byte head becomes the CRLF ending the line before it, so the run
        # is handed on as lines without a slice per frame. A load generator that spent
        # a microsecond per frame on its own reading measured itself, not the server.
        size = len(data)
        run, position = bytearray(data), 0
        while position + 2 <= size:
            length = run[position + 1]
            if run[position] != 0x81 or length > 125 or position + 2 + length > size:
                break
            run[position] = 13
            run[position + 1] = 10
            position += 2 + length
        lines = [bytes(run[2:position])] if position else []
        while position + 2 <= size:
            opcode, length = data[position] & 0x0F, data[position + 1] & 0x7F
            start = position + 2
            if length == 126:
                length, start = int.from_bytes(data[start:start + 2], "big"), start + 2
            elif length == 127:
                length, start = int.from_bytes(data[start:start + 8], "big"), start + 8
            if start + length > size:
                break
            if opcode == 0x1:
                lines.append(data[start:start + length])
            elif opcode == 0x8:
                self.close()
            elif opcode == 0x9:
                self.transport.write(self._frame(0xA, data[start:start + length]))
            position = start + length
        self.frames_tail = data[position:]
        if lines:
            lines.append(b"")
            super().data_received(b"\r\n".join(lines))

    def _frame(self, opcode: int, payload: bytes) -> bytes:
        length = len(payload)
        if length < 126:
            head = bytes((0x80 | opcode, 0x80 | length))
        elif length < 1 << 16:
            head = bytes((0x80 | opcode, 0x80 | 126)) + length.to_bytes(2, "big")
        else:
            head = bytes((0x80 | opcode, 0x80 | 127)) + length.to_bytes(8, "big")
        return head + self.MASK + payload

    def send(self, line: str) -> None:
        """Write one line as one masked text message."""
        self.transport.write(self._frame(0x1, line.encode()))

    def frame_line(self, data: bytes) -> bytes:
        """One CRLF-terminated line (as the schedule writes it) as one text message."""
        return self._frame(0x1, data.removesuffix(b"\r\n"))

    wire = frame_line


def irc_parts(line: str) -> tuple[str, list[str]]:
    """The command (a verb or a three-digit numeric) and the parameters of an IRC line.

    Tags and the source are dropped; the trailing parameter (after `` :``) is the last one.
    """
    if line.startswith("@"):
        line = line.partition(" ")[2]
    if line.startswith(":"):
        line = line.partition(" ")[2]
    head, colon, trailing = line.partition(" :")
    words = head.split()
    if not words:
        return "", []
    params = words[1:]
    if colon:
        params.append(trailing)
    return words[0].upper(), params


def is_irc_failure(command: str) -> bool:
    """Whether an IRC reply says that what was asked failed: ERROR, FAIL, 4xx/5xx, SASL's 9xx."""
    if command in ("ERROR", "FAIL"):
        return True
    if len(command) == 3 and command.isdigit():
        return 400 <= int(command) < 600 or command in ("902", "904", "905", "906", "907")
    return False


class IRCBenchClient(BenchClient):
    """A :class:`BenchClient` that speaks IRC: chatd's IRC door, or another IRC server.

    Probe messages go out as ``PRIVMSG <room> :<text>`` and come back as other clients'
    ``PRIVMSG`` lines, which end with the same probe text, so the step's counting is the
    line door's. An IRC server does not show a client its own messages (no
    ``echo-message`` is asked for), so a message is delivered to every client but its
    sender. Logging in is a sequence of requests, each done when a given reply arrives
    (:meth:`expect`); any error reply (4xx/5xx, ``FAIL``, ``ERROR``) fails it instead.
    """

    sees_own_messages = False

    def __init__(self, dialect: str):
        super().__init__(dialect)
        self.nick = "*"
        self.say_prefix = b""
        self.waiting: tuple[object, asyncio.Future] | None = None
        # The rooms the server says this client is in (folded): chatd's login
        # joins an account's rooms by itself, and a JOIN of one of them is not
        # answered (as on other IRC servers).
        self.rooms: set[str] = set()

    def connection_lost(self, exc):
        super().connection_lost(exc)
        waiting, self.waiting = self.waiting, None
        if waiting is not None and not waiting[1].done():
            waiting[1].set_exception(ConnectionError(f"{self.nick}: connection lost: {exc}"))

    def _control_line(self, line: str) -> None:
        if self.line_hook is not None and self.line_hook(line):
            return
        command, params = irc_parts(line)
        if command == "PING":
            self.send(f"PONG :{params[-1] if params else ''}")
            return
        if command in ("JOIN", "PART") and params and self._from_me(line):
            room = params[0].lower()
            if command == "JOIN":
                self.rooms.add(room)
            else:
                self.rooms.discard(room)
        waiting = self.waiting
        if waiting is not None:
            done, future = waiting
            if done(command, params):
                self.waiting = None
                if not future.done():
                    future.set_result(line)
                return
            if is_irc_failure(command):
                self.waiting = None
                if not future.done():
                    future.set_exception(BenchError(f"{self.nick}: {line!r}"))
                return
        if self.step is not None and is_irc_failure(command):
            self.errors += 1
            self.last_error = line
            return
        self.events.append(line)

    def _from_me(self, line: str) -> bool:
        if line.startswith("@"):
            line = line.partition(" ")[2]
        return line[1:].partition("!")[0].lower() == self.nick.lower()

    async def expect(self, lines: list[str], done, timeout: float = 60.0) -> str:
        """Send ``lines``; return the first reply for which ``done(command, params)`` holds."""
        future = asyncio.get_running_loop().create_future()
        self.waiting = (done, future)
        for line in lines:
            self.send(line)
        try:
            return await asyncio.wait_for(future, timeout)
        finally:
            if self.waiting is not None and self.waiting[1] is future:
                self.waiting = None

    async def log_in(self, user: str, login: str, oper: str | None) -> None:
        """Register the connection as ``user``; ``login`` is ``pass``, ``sasl`` or ``none``.

        With an account login (chatd's IRC door) the account is created first with the
        IRCv3 ``REGISTER`` command unless it exists. ``oper`` (``name:password``) makes
        the user an IRC operator and sets user mode ``+F``: ngIRCd's flood protection off.
        """
        password = password_for(user)
        if login != "none":
            await self.expect(
                [f"REGISTER {user} * {password}"],
                lambda c, p: (c == "REGISTER" and p[:1] == ["SUCCESS"])
                or (c == "FAIL" and p[:2] == ["REGISTER", "ACCOUNT_EXISTS"]))
        if login == "sasl":
            await self.expect(["CAP LS 302"],
                              lambda c, p: c == "CAP" and len(p) == 3 and p[1] == "LS")
            await self.expect(["CAP REQ :sasl"],
                              lambda c, p: c == "CAP" and len(p) >= 2 and p[1] == "ACK")
            await self.expect(["AUTHENTICATE PLAIN"],
                              lambda c, p: c == "AUTHENTICATE" and p == ["+"])
            token = base64.b64encode(f"{user}\0{user}\0{password}".encode()).decode()
            await self.expect([f"AUTHENTICATE {token}"], lambda c, p: c == "903")
            self.send("CAP END")
        elif login == "pass":
            self.send(f"PASS {password}")
        self.nick = user
        await self.expect([f"NICK {user}", f"USER {user} 0 * :chatd bench"],
                          lambda c, p: c == "001")
        if oper is not None:
            name, _, oper_password = oper.partition(":")
            await self.expect([f"OPER {name} {oper_password}"], lambda c, p: c == "381")
            await self.expect([f"MODE {user} +F"],
                              lambda c, p: c == "MODE" and "F" in "".join(p[1:]))
        # A PING round trip: whatever the login sent (the rooms it joined) is in by then.
        await self.expect([f"PING :{user}-sync"],
                          lambda c, p: c == "PONG" and p[-1:] == [f"{user}-sync"])

    async def join(self, room: str) -> None:
        """JOIN ``room`` unless in it, done at the end of its NAMES (366); PRIVMSGs go there."""
        folded = room.lower()
        if folded not in self.rooms:
            await self.expect(
                [f"JOIN {room}"],
                lambda c, p: c == "366" and len(p) >= 2 and p[1].lower() == folded)
        self.say_prefix = f"PRIVMSG {room} :".encode()

    async def part(self, room: str) -> None:
        """PART ``room`` if in it: done when the server echoes it."""
        folded = room.lower()
        if folded in self.rooms:
            await self.expect([f"PART {room}"],
                              lambda c, p: c == "PART" and p[:1] != [] and p[0].lower() == folded)

    def wire(self, data: bytes) -> bytes:
        """A probe line (text and CRLF) as a PRIVMSG to the room joined last."""
        return self.say_prefix + data


def source_address(index: int) -> str:
    """The loopback source address of the ``index``-th session of a scenario.

    chatd limits connections and registrations per address, as a server on
    the internet should; spreading sessions over 127.2.x.y keeps those limits
    on while thousands of sessions connect from one machine.
    """
    block = index // SESSIONS_PER_SOURCE
    return f"127.2.{block // 250}.{block % 250 + 1}"


def port_of_session(args, index: int) -> int:
    """The port the ``index``-th session connects to: with several nodes (``args.ports``,
    the cluster targets) sessions take turns, so senders and readers are split too."""
    ports = getattr(args, "ports", None) or (args.port,)
    return ports[index % len(ports)]


async def connect(host: str, port: int, dialect: str, timeout: float = 30.0,
                  source: str | None = None, websocket: bool = False) -> BenchClient:
    """Open a connection (from ``source``, a loopback address); for chatd wait for HELLO.

    With ``websocket`` the port is chatd's web door and the lines go in WebSocket messages;
    with the ``irc`` dialect the port is an IRC server's.
    """
    loop = asyncio.get_running_loop()
    local = (source, 0) if source is not None and host == LOOPBACK else None
    kind = WebSocketBenchClient if websocket else BenchClient
    if dialect == "irc":
        kind = IRCBenchClient
    _, client = await asyncio.wait_for(
        loop.create_connection(lambda: kind(dialect), host, port, local_addr=local),
        timeout)
    if dialect == "chatd":
        hello = await asyncio.wait_for(client.first_line, timeout)
        if not hello.startswith("HELLO "):
            raise BenchError(f"expected HELLO, got {hello!r}")
    return client


def password_for(user: str) -> str:
    """The bench's password for one of its users (long enough for any policy)."""
    return f"bench-password-{user}"


async def ensure_logged_in(client: BenchClient, user: str, timeout: float = 60.0) -> None:
    """Register ``user`` unless it exists, then log in with the bench's password."""
    reply = await client.request(f"/register {user} {password_for(user)}", timeout)
    if not (reply.startswith("OK") or reply.startswith("ERR user-exists")):
        raise BenchError(f"/register {user} answered {reply!r}")
    await client.expect_ok(f"/login {user} {password_for(user)}", timeout)


async def open_sessions(args, count: int, *, room: str | None, prefix: str,
                        deadline: float) -> list[BenchClient]:
    """Open ``count`` connections; on chatd log each in, leave #lobby and join ``room``.

    On IRC (``args.dialect == "irc"``) each registers as its own nick, logging in to an
    account unless ``args.irc_login`` is ``none``, and joins ``room`` the same way.

    Leaving #lobby right after login keeps setup linear in ``count``: otherwise every
    login would announce itself to every session already in the lobby. With ``room``
    ``#lobby`` the sessions stay where login put them (setup grows with the square of
    ``count``, which is what people sitting in one lobby cost).
    """
    # ngIRCd listens with a backlog of 10: more connects at once may be reset.
    gate = asyncio.Semaphore(IRC_CONNECT_CONCURRENCY if args.dialect == "irc"
                             else CONNECT_CONCURRENCY)
    clients: list[BenchClient | None] = [None] * count

    async def open_one(index: int) -> None:
        async with gate:
            client = await connect(args.host, port_of_session(args, index), args.dialect,
                                   source=source_address(index),
                                   websocket=getattr(args, "websocket", False))
            clients[index] = client
            if args.dialect == "irc":
                await client.log_in(f"{prefix}{index}", args.irc_login, args.irc_oper)
                if room != LOBBY:
                    # chatd's IRC door, like its line door, puts a login in #lobby.
                    await client.part(LOBBY)
                if room is not None and room != LOBBY:
                    await client.join(room)
                return
            if args.dialect == "chatd":
                await ensure_logged_in(client, f"{prefix}{index}")
                if room == LOBBY:
                    return
                await client.expect_ok("/part #lobby")
                if room is not None:
                    await client.expect_ok(f"/join {room}")

    tasks = [asyncio.ensure_future(open_one(index)) for index in range(count)]
    try:
        await asyncio.wait_for(asyncio.gather(*tasks), max(deadline - time.monotonic(), 0.1))
    except BaseException:
        for task in tasks:
            task.cancel()
        close_all([client for client in clients if client is not None])
        raise
    return clients


def close_all(clients: list[BenchClient]) -> None:
    """Close every connection."""
    for client in clients:
        client.close()


async def settle_naive(clients: list[BenchClient], timeout: float) -> None:
    """Make sure the naive server registered every connection: one line must reach all."""
    token = f"settle-{monotonic_us()}"
    arrived = asyncio.Event()
    pending = set(range(len(clients)))

    def hook_for(index):
        def hook(line: str) -> bool:
            if line != token:
                return False
            pending.discard(index)
            if not pending:
                arrived.set()
            return True
        return hook

    for index, client in enumerate(clients):
        client.line_hook = hook_for(index)
    clients[-1].send(token)
    await asyncio.wait_for(arrived.wait(), timeout)
    for client in clients:
        client.line_hook = None


# --------------------------------------------------------------------------- fan-out


def pick_latency_samplers(count: int, sample: int) -> set[int]:
    """Indexes of the clients that time every line: ``sample`` spread evenly, 0 for all."""
    if sample <= 0 or sample >= count:
        return set(range(count))
    return {round(i * (count - 1) / (sample - 1)) for i in range(sample)} if sample > 1 else {0}


@contextlib.contextmanager
def no_collector_pauses():
    """No cyclic garbage collection in the load generator while a burst is measured.

    A full collection of the bench's own objects stopped its event loop for 30 ms
    (a ``gc.callbacks`` probe, 1.6 s into a fanout burst), and every line read during
    it was counted as that much later: the server's latency, as measured, held the
    bench's pause. What is collected waits for the end of the burst (bounded by its
    duration and grace); reference counting still frees everything else at once.
    """
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


def make_this_thread_realtime() -> bool:
    """Give the calling thread SCHED_FIFO priority when allowed; tell whether it worked.

    On the load generator's single core the ticker thread otherwise waits for the GIL
    behind the busy event loop for tens of milliseconds (the GIL's convoy effect). A
    real-time thread preempts the loop at once and, having asked for the GIL, gets it at
    the next switch interval. It sleeps between ticks, so it cannot starve the loop.
    """
    try:
        os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(1))
    except (AttributeError, OSError):
        return False
    return True


class OpenLoopSchedule:
    """Writes ``rate * duration`` probes, message k due at t0 + k/rate, whatever the server does.

    The event loop is a poor clock: at hundreds of clients one message comes back as
    hundreds of reads, and a timer waits behind them for milliseconds, which would count
    against the server. So a helper thread sleeps until each due time (at most one wake-up
    per ``MIN_TICK_S``) and writes the due probes itself, straight into the senders'
    sockets (duplicated descriptors, so the connections stay the loop's). A sender whose
    socket does not take a whole line is handed to the loop for the rest of the step, so
    its bytes stay in order. Probes carry their scheduled time, so any lateness still
    counts against the whole path; ``send_lag`` records how late the bench itself was.
    """

    MIN_TICK_S = 0.001
    START_DELAY_US = 20_000

    def __init__(self, senders: list[BenchClient], step_number: int, rate: float,
                 duration: float, size: int):
        self.senders = senders
        self.step_number = step_number % 1000
        self.total = max(1, int(rate * duration))
        self.interval_us = 1e6 / rate
        self.prefix = "x" * max(1, size - PROBE_TAIL_LEN)
        self.start_us = 0
        self.seq = 0
        self.lateness_us: list[int] = []
        self.realtime = False
        self.handed_to_loop = [False] * len(senders)
        self.sockets: list[socket.socket | None] = []
        self.finished = asyncio.Event()
        self.stopping = threading.Event()

    def _send(self, index: int, data: bytes, loop: asyncio.AbstractEventLoop) -> None:
        sender = self.senders[index]
        transport = sender.transport
        data = sender.wire(data)
        if not self.handed_to_loop[index]:
            duplicate = self.sockets[index]
            if duplicate is None:  # closed before the step: its probes count as undelivered
                return
            try:
                sent = duplicate.send(data)
            except BlockingIOError:
                sent = 0
            except OSError:  # the connection is gone: its probes count as undelivered
                self.handed_to_loop[index] = True
                return
            if sent == len(data):
                return
            self.handed_to_loop[index] = True
            data = data[sent:]
        loop.call_soon_threadsafe(_write_if_open, transport, data)

    def _send_due(self, loop: asyncio.AbstractEventLoop) -> bool:
        """Write every probe due by now; True once the whole schedule is written."""
        now = monotonic_us()
        due = min(self.total, int((now - self.start_us) // self.interval_us) + 1)
        if due > self.seq:
            self.lateness_us.append(now - (self.start_us + int(self.seq * self.interval_us)))
            count, prefix, step = len(self.senders), self.prefix, self.step_number
            for seq in range(self.seq, due):
                scheduled = self.start_us + int(seq * self.interval_us)
                line = f"{prefix} s{step:03d} q{seq:010d} t{scheduled:016d}\r\n"
                self._send(seq % count, line.encode(), loop)
            self.seq = due
        return self.seq >= self.total

    def _tick(self, loop: asyncio.AbstractEventLoop) -> None:
        self.realtime = make_this_thread_realtime()
        try:
            wake_us = self.start_us
            while not self.stopping.is_set():
                delay = (wake_us - monotonic_us()) / 1e6
                if delay > 0:
                    time.sleep(delay)
                if self._send_due(loop):
                    return
                now = monotonic_us()
                next_index = int((now - self.start_us) // self.interval_us) + 1
                wake_us = max(self.start_us + int(next_index * self.interval_us),
                              now + int(self.MIN_TICK_S * 1e6))
        finally:
            with contextlib.suppress(RuntimeError):  # the loop may be closing already
                loop.call_soon_threadsafe(self.finished.set)

    async def run(self) -> dict[str, float]:
        """Send the whole schedule; return the message count and the bench's own lag."""
        loop = asyncio.get_running_loop()
        self.sockets = [_duplicate_socket(sender.transport) for sender in self.senders]
        self.start_us = monotonic_us() + self.START_DELAY_US
        ticker = threading.Thread(target=self._tick, args=(loop,), daemon=True)
        ticker.start()
        try:
            await self.finished.wait()
        finally:
            self.stopping.set()
            await asyncio.to_thread(ticker.join)
            for duplicate in self.sockets:
                # Closes only the duplicate descriptor: the connection stays open.
                if duplicate is not None:
                    duplicate.close()
        return {"messages": self.total,
                "send_lag_ms_p99": round((percentile(self.lateness_us, 0.99) or 0) / 1000, 3),
                "senders_handed_to_loop": sum(self.handed_to_loop),
                "realtime_sender": self.realtime}


def _duplicate_socket(transport: asyncio.Transport) -> socket.socket | None:
    """A second descriptor of ``transport``'s socket, for writing from the ticker thread;
    None when the connection has already closed (the server may close a client whose
    reading fell behind: that sender's probes then count as undelivered)."""
    if transport.is_closing():
        return None
    try:
        return socket.socket(fileno=os.dup(transport.get_extra_info("socket").fileno()))
    except OSError:
        return None


def _write_if_open(transport: asyncio.Transport, data: bytes) -> None:
    """Write ``data`` unless the connection closed meanwhile (in the event loop's thread)."""
    if not transport.is_closing():
        transport.write(data)


async def quiet(clients: list[BenchClient], quiet_seconds: float, timeout: float) -> bool:
    """Wait until no client has received anything for ``quiet_seconds``; False on timeout."""
    give_up = time.monotonic() + timeout
    while time.monotonic() < give_up:
        last = max((client.last_receive for client in clients), default=0.0)
        idle = time.monotonic() - last
        if idle >= quiet_seconds:
            return True
        await asyncio.sleep(quiet_seconds - idle)
    return False


async def fanout_step(args, clients: list[BenchClient], senders: list[BenchClient],
                      samplers: set[int], number: int, rate: float, watch: ServerWatch,
                      ) -> dict:
    """One open-loop burst at ``rate`` msg/s: latency, delivered fraction, server cost."""
    total = max(1, int(rate * args.duration))
    step = Step(number=number, expected=total * receivers_of(clients))
    probe = MachineSpeedProbe(machine_cores()) if getattr(args, "machine_probe", False) else None
    if probe is not None:
        step.paths = []
    for index, client in enumerate(clients):
        client.acks = client.errors = 0
        client.last_error = None
        client.samples_latency = index in samplers
        client.step = step
    machine = None
    if probe is not None:
        await probe.start()
    with no_collector_pauses():
        watch.start()
        try:
            sent = await OpenLoopSchedule(senders, number, rate, args.duration,
                                          args.size).run()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(step.complete.wait(), args.grace)
        finally:
            usage = watch.stop()
            if probe is not None:
                machine = await probe.stop()
        for client in clients:
            client.step = None
    errors = [client.last_error for client in clients if client.last_error]
    delivered_fraction = step.delivered / step.expected
    result = {
        "rate": rate,
        "clients": len(clients),
        "senders": len(senders),
        "duration": args.duration,
        **sent,
        "expected": step.expected,
        "delivered": step.delivered,
        "delivered_fraction": round(delivered_fraction, 5),
        "deliveries_per_s": round(step.delivered / args.duration),
        "offered_deliveries_per_s": round(rate * receivers_of(clients)),
        "latency_ms": step.histogram.summary_ms(),
        "latency_samples": step.histogram.total,
        "latency_clients": len(samplers),
        "stale_lines": step.stale,
        "errors": sum(client.errors for client in clients),
        "first_error": errors[0] if errors else None,
        "disconnected": sum(client.closed.done() for client in clients),
        **usage,
    }
    if machine is not None:
        # What the server did while the machine kept its speed (see MachineSpeedProbe).
        steady = latencies_outside(step.paths, machine.slow_intervals)
        result.update(machine.summary)
        result["latency_ms_machine_steady"] = steady.summary_ms()
        result["machine_steady_samples"] = steady.total
    return result


def receivers_of(clients: list[BenchClient]) -> int:
    """How many clients receive each message: all of them, or all but its sender where
    the door does not show a client its own messages (IRC)."""
    return len(clients) if clients[0].sees_own_messages else len(clients) - 1


async def open_room(args, deadline: float) -> tuple[list[BenchClient], list[BenchClient]]:
    """All clients in the bench room; the first ``senders`` of them send."""
    if args.dialect == "irc" and args.clients < 2:
        raise BenchError("IRC shows no one their own messages: at least 2 clients")
    clients = await open_sessions(args, args.clients, room=args.room,
                                  prefix=f"{args.user_prefix}f", deadline=deadline)
    if args.dialect == "naive":
        await settle_naive(clients, max(deadline - time.monotonic(), 0.1))
    senders = clients[: max(1, min(args.senders, len(clients)))]
    return clients, senders


async def scenario_fanout(args) -> dict:
    """C clients in one room, S senders, R msg/s for D seconds (one or more rates)."""
    deadline = time.monotonic() + args.time_limit
    watch = watch_servers(args)
    clients, senders = await open_room(args, deadline)
    try:
        samplers = pick_latency_samplers(len(clients), args.latency_sample)
        result = await fanout_step(args, clients, senders, samplers, 1, args.rate, watch)
        return {"scenario": "fanout", "dialect": args.dialect, **result}
    finally:
        close_all(clients)


async def scenario_burst(args) -> dict:
    """S senders each write M messages at once, R rounds: the server's CPU per message.

    A burst takes the server to its limit at once, where its commits and writes
    are largest, as at the top of ``maxrate``'s ladder. What each message costs
    it there, in CPU time, moves much less from run to run on a noisy machine
    than the latencies a rate ladder stops on. The first ``--warmup`` rounds
    are not counted.
    """
    if args.server_pid is None:
        raise BenchError("burst reads the server's CPU time: give --server-pid")
    deadline = time.monotonic() + args.time_limit
    watch = watch_servers(args)
    clients, senders = await open_room(args, deadline)
    receivers = receivers_of(clients)
    messages = args.per_sender * len(senders)
    cpu_us, wall_us, bench_cpu = [], [], []
    try:
        for number in range(1, args.warmup + args.rounds + 1):
            step = Step(number=number, expected=messages * receivers)
            for client in clients:
                client.samples_latency = False
                client.step = step
            writes = [
                b"".join(
                    sender.wire(probe_text(number, index * args.per_sender + n, 0,
                                           args.size).encode() + b"\r\n")
                    for n in range(args.per_sender))
                for index, sender in enumerate(senders)
            ]
            with no_collector_pauses():
                watch.start()
                started = time.monotonic()
                for sender, data in zip(senders, writes, strict=True):
                    sender.transport.write(data)
                try:
                    await asyncio.wait_for(step.complete.wait(),
                                           max(deadline - time.monotonic(), 0.1))
                finally:
                    wall = time.monotonic() - started
                    usage = watch.stop()
                    for client in clients:
                        client.step = None
            if number > args.warmup:
                cpu_us.append(usage["server_cpu_seconds"] / messages * 1e6)
                wall_us.append(wall / messages * 1e6)
                bench_cpu.append(usage["bench_cpu"])
        return {
            "scenario": "burst", "dialect": args.dialect, "clients": len(clients),
            "senders": len(senders), "per_sender": args.per_sender, "rounds": args.rounds,
            "server_cpu_us_per_message": round(statistics.median(cpu_us), 1),
            "server_cpu_us_per_message_range": [round(min(cpu_us), 1), round(max(cpu_us), 1)],
            "wall_us_per_message": round(statistics.median(wall_us), 1),
            "deliveries_per_s": round(receivers / (statistics.median(wall_us) / 1e6)),
            "bench_cpu": round(statistics.median(bench_cpu), 3),
            "server_peak_rss_mb": round(watch.peak_rss_kb / 1024, 1),
        }
    finally:
        close_all(clients)


def step_is_good(step: dict) -> bool:
    """The maxrate criterion: at least 99 % delivered and p99 no more than 200 ms."""
    p99 = step["latency_ms"]["p99"]
    return (step["delivered_fraction"] >= MAXRATE_MIN_DELIVERED
            and p99 is not None and p99 <= MAXRATE_MAX_P99_MS)


def next_rates(start: float, factor: float, steps: int) -> list[float]:
    """The geometric ladder of rates maxrate climbs."""
    return [round(start * factor ** i, 1) for i in range(steps)]


async def scenario_maxrate(args) -> dict:
    """Climb the rate ladder until a step fails, then bisect once or twice; bounded."""
    deadline = time.monotonic() + args.time_limit
    watch = watch_servers(args)
    clients, senders = await open_room(args, deadline)
    steps: list[dict] = []
    try:
        samplers = pick_latency_samplers(len(clients), args.latency_sample)
        good: dict | None = None
        bad: dict | None = None
        ladder = next_rates(args.start_rate, args.factor, args.max_steps)
        number = 0

        async def attempt(rate: float) -> dict | None:
            nonlocal number
            remaining = deadline - time.monotonic()
            if remaining < args.duration + args.grace + 1:
                return None
            number += 1
            try:
                step = await asyncio.wait_for(
                    fanout_step(args, clients, senders, samplers, number, rate, watch),
                    remaining)
            except TimeoutError:
                # Out of time mid-step: a failed step, with nothing measured.
                step = {"rate": rate, "timed_out": True, "good": False, "drained": False,
                        "bench_saturated": None, "bench_cpu": None, "server_cpu": None}
                steps.append(step)
                return step
            step["good"] = step_is_good(step)
            steps.append(step)
            # A failed step can leave a backlog; wait for silence so it does not spill over.
            step["drained"] = await quiet(
                clients, 0.2, min(args.quiet, max(deadline - time.monotonic(), 0.0)))
            return step

        for rate in ladder:
            step = await attempt(rate)
            if step is None:
                break
            if step["good"]:
                good = step
            else:
                bad = step
                break
        for _ in range(args.refine if good and bad else 0):
            if not steps[-1]["drained"]:
                break
            step = await attempt(round((good["rate"] + bad["rate"]) / 2, 1))
            if step is None:
                break
            if step["good"]:
                good = step
            else:
                bad = step
        return {
            "scenario": "maxrate", "dialect": args.dialect, "clients": len(clients),
            "senders": len(senders),
            "max_good_rate": good["rate"] if good else None,
            "max_deliveries_per_s": good["deliveries_per_s"] if good else None,
            "good_p99_ms": good["latency_ms"]["p99"] if good else None,
            "good_peak_rss_mb": good["server_peak_rss_mb"] if good else None,
            "peak_rss_mb": max((s.get("server_peak_rss_mb") or 0 for s in steps), default=None),
            "timed_out": any(s.get("timed_out") for s in steps),
            "first_bad_rate": bad["rate"] if bad else None,
            "bench_saturated_at_limit": bool(bad and bad["bench_saturated"]),
            "bench_cpu_at_limit": bad["bench_cpu"] if bad else None,
            "server_cpu_at_limit": bad["server_cpu"] if bad else None,
            "steps": steps,
        }
    finally:
        close_all(clients)


# --------------------------------------------------------------------------- sessions


async def scenario_sessions(args) -> dict:
    """C idle sessions (logged in on chatd); server RSS per session.

    Each sits alone, or, with ``--room #lobby``, all of them in the lobby together.
    """
    if args.dialect == "irc":
        raise BenchError("sessions speaks the line protocol (chatd) or the baseline's, not IRC")
    deadline = time.monotonic() + args.time_limit
    watch = watch_servers(args)
    room = getattr(args, "room", None)
    prefix = f"{args.user_prefix}{'l' if room == LOBBY else 's'}"
    first = await open_sessions(args, 1, room=room, prefix=prefix, deadline=deadline)
    clients = first
    try:
        rss_one = watch.rss_kb()
        started = time.monotonic()
        rest = await open_sessions(args, args.clients - 1, room=room, prefix=f"{prefix}r",
                                   deadline=deadline)
        clients = first + rest
        setup_seconds = time.monotonic() - started
        if args.dialect == "naive":
            await settle_naive(clients, max(deadline - time.monotonic(), 0.1))
        else:
            # Every session answers a ping: none is half set up.
            await asyncio.gather(*(client.expect_ok("/ping settle") for client in clients))
        await quiet(clients, 0.3, 5.0)
        rss_all = watch.rss_kb()
        alive = sum(not client.closed.done() for client in clients)
        per_session = None
        if rss_one is not None and rss_all is not None and len(clients) > 1:
            per_session = (rss_all - rss_one) * 1024 / (len(clients) - 1)
        memory = read_memory_kb(args.server_pid) if args.server_pid else {}
        return {
            "scenario": "sessions", "dialect": args.dialect, "sessions": len(clients),
            "room": room,
            "alive": alive, "setup_seconds": round(setup_seconds, 2),
            "rss_one_session_mb": None if rss_one is None else round(rss_one / 1024, 1),
            "rss_all_sessions_mb": None if rss_all is None else round(rss_all / 1024, 1),
            "peak_rss_mb": round(memory["VmHWM"] / 1024, 1) if memory else None,
            "rss_per_session_bytes": None if per_session is None else round(per_session),
        }
    finally:
        close_all(clients)


# --------------------------------------------------------------------------- login storm


class Pinger:
    """Sends a ping every ``interval`` seconds (open loop) and times each answer."""

    def __init__(self, client: BenchClient, interval: float):
        self.client = client
        self.interval = interval
        self.sent: dict[str, int] = {}
        self.round_trips_us: list[int] = []
        self.stop = asyncio.Event()
        self.answered = asyncio.Event()
        if client.dialect == "chatd":
            client.final_hook = self._on_final
        else:
            client.line_hook = self._on_echo

    def _record(self, token: str) -> bool:
        sent = self.sent.pop(token, None)
        if sent is None:
            return False
        self.round_trips_us.append(monotonic_us() - sent)
        if not self.sent:
            self.answered.set()
        return True

    def _on_final(self, line: str) -> bool:
        kind, fields = split_server_line(line)
        return kind == "OK" and fields[0] == "ping" and self._record(fields[1])

    def _on_echo(self, line: str) -> bool:
        return line.startswith("ping-") and self._record(line)

    async def run(self, limit: int) -> None:
        """Ping until told to stop or ``limit`` pings went out, then await the answers."""
        number = 0
        while not self.stop.is_set() and number < limit:
            number += 1
            token = f"ping-{number}"
            self.sent[token] = monotonic_us()
            self.answered.clear()
            self.client.send(f"/ping {token}" if self.client.dialect == "chatd" else token)
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self.stop.wait(), self.interval)
        if self.sent:
            await self.answered.wait()

    def worst_unanswered_us(self) -> int:
        """How long the oldest still unanswered ping has waited."""
        now = monotonic_us()
        return max((now - sent for sent in self.sent.values()), default=0)


async def scenario_storm(args) -> dict:
    """N concurrent logins (on naive: N connects and a line each) while one client pings."""
    if args.dialect == "irc":
        raise BenchError("storm speaks the line protocol (chatd) or the baseline's, not IRC")
    deadline = time.monotonic() + args.time_limit
    prefix = f"{args.user_prefix}l"
    watch = watch_servers(args)
    pinger_client, = await open_sessions(args, 1, room=None, prefix=f"{prefix}p",
                                         deadline=deadline)
    clients: list[BenchClient] = []
    try:
        clients = await asyncio.gather(*(
            connect(args.host, args.port, args.dialect, source=source_address(index),
                    websocket=getattr(args, "websocket", False))
            for index in range(args.logins)))
        if args.dialect == "chatd":
            # Accounts first, one at a time: registration hashes too, and is not the storm.
            for index, client in enumerate(clients):
                reply = await client.request(
                    f"/register {prefix}{index} {password_for(f'{prefix}{index}')}", 120)
                if not (reply.startswith("OK") or reply.startswith("ERR user-exists")):
                    raise BenchError(f"/register answered {reply!r}")
        pinger = Pinger(pinger_client, args.ping_interval)
        watch.start()
        ping_task = asyncio.ensure_future(pinger.run(args.max_pings))
        await asyncio.sleep(args.ping_interval * 5)
        started = time.monotonic()
        if args.dialect == "chatd":
            replies = await asyncio.wait_for(asyncio.gather(*(
                client.request(f"/login {prefix}{index} {password_for(f'{prefix}{index}')}",
                               300)
                for index, client in enumerate(clients))),
                max(deadline - time.monotonic(), 0.1))
        else:
            extra = await asyncio.gather(*(
                connect(args.host, args.port, args.dialect,
                        websocket=getattr(args, "websocket", False))
                for _ in range(args.logins)))
            clients += extra
            for client in extra:
                client.send("hello")
            replies = ["OK"] * len(extra)
        storm_seconds = time.monotonic() - started
        await asyncio.sleep(args.ping_interval * 5)
        pinger.stop.set()
        await asyncio.wait_for(ping_task, max(deadline - time.monotonic(), 0.1))
        usage = watch.stop()
        trips = pinger.round_trips_us
        return {
            "scenario": "storm", "dialect": args.dialect, "logins": args.logins,
            "logins_ok": sum(reply.startswith("OK") for reply in replies),
            "storm_seconds": round(storm_seconds, 3),
            "pings": len(trips),
            "ping_worst_ms": round(max(trips) / 1000, 3) if trips else None,
            "ping_p99_ms": round(percentile(trips, 0.99) / 1000, 3) if trips else None,
            "ping_p50_ms": round(percentile(trips, 0.50) / 1000, 3) if trips else None,
            **usage,
        }
    finally:
        close_all([pinger_client, *clients])


# --------------------------------------------------------------------------- history


def prefill_history(db_path: str, room: str, count: int, batch: int = 100_000) -> int:
    """Store ``count`` messages in ``room`` straight into chatd's SQLite database.

    The schema and the room row come from chatd's own ``chatd.storage`` (run from a
    checkout, as ``compare`` does), so the server reads exactly what it would have
    written. Rows go in through large transactions; returns how many the room holds.
    """
    from chatd.storage import transactions
    from chatd.storage.sqlite import schema

    connection = schema.open_database_file(db_path)
    try:
        now_ms = int(time.time() * 1000)
        with schema.transaction(connection):
            room_id, _, _ = transactions.open_room(connection, room, now_ms, 0)
        stored = connection.execute(
            "SELECT count(*) FROM room_messages WHERE room_id = ?", (room_id,)).fetchone()[0]
        first_ms = now_ms - count
        while stored < count:
            chunk = range(stored, min(count, stored + batch))
            with schema.transaction(connection):
                # Numbered 1, 2, 3... as transactions.add_room_message numbers them.
                connection.executemany(
                    "INSERT INTO room_messages (room_id, sender, text, sent_at, seq, msgid)"
                    " VALUES (?, ?, ?, ?, ?, ?)",
                    ((room_id, f"writer{n % 97}", f"stored message {n}", first_ms + n,
                      n + 1, f"{first_ms + n:011x}0000{n % 0x100000:05x}")
                     for n in chunk))
                connection.execute(
                    "UPDATE rooms SET last_seq = ? WHERE id = ?", (chunk[-1] + 1, room_id))
            stored += len(chunk)
        return stored
    finally:
        connection.close()


async def scenario_history(args) -> dict:
    """Time ``/join`` of a room with many stored messages (repeated: part, join again)."""
    if args.dialect != "chatd":
        raise BenchError("history needs the chatd dialect: the baseline stores nothing")
    deadline = time.monotonic() + args.time_limit
    client, = await open_sessions(args, 1, room=None, prefix=f"{args.user_prefix}h",
                                  deadline=deadline)
    try:
        joins_us = []
        history_lines = 0
        for attempt in range(args.joins):
            client.events.clear()
            started = monotonic_us()
            await client.expect_ok(f"/join {args.history_room}")
            joins_us.append(monotonic_us() - started)
            if attempt == 0:
                history_lines = sum(line.startswith("HISTORY ") for line in client.events)
            await client.expect_ok(f"/part {args.history_room}")
        return {
            "scenario": "history", "dialect": args.dialect, "room": args.history_room,
            "joins": len(joins_us),
            "join_ms_first": round(joins_us[0] / 1000, 3),
            "join_ms_median": round(statistics.median(joins_us) / 1000, 3),
            "join_ms_max": round(max(joins_us) / 1000, 3),
            "history_lines": history_lines,
        }
    finally:
        client.close()


# --------------------------------------------------------------------------- CLI


SCENARIOS = {
    "fanout": scenario_fanout,
    "maxrate": scenario_maxrate,
    "burst": scenario_burst,
    "sessions": scenario_sessions,
    "storm": scenario_storm,
    "history": scenario_history,
}


def add_target_arguments(parser: argparse.ArgumentParser) -> None:
    """Options every scenario shares: where the server is and how to talk to it."""
    parser.add_argument("--host", default=LOOPBACK, choices=[LOOPBACK, "localhost", "::1"],
                        help="loopback only: the bench never targets another host")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--dialect", choices=["chatd", "naive", "irc"], default="chatd")
    parser.add_argument("--websocket", action="store_true",
                        help="chatd through its web door: --port is CHATD_WEB_LISTEN's port")
    parser.add_argument("--irc-login", choices=["pass", "sasl", "none"], default="pass",
                        help="irc dialect: log in to the bench's accounts (created with "
                             "REGISTER) by PASS or SASL PLAIN, or not at all (ngIRCd)")
    parser.add_argument("--irc-oper", metavar="NAME:PASSWORD",
                        help="irc dialect: OPER, then user mode +F (ngIRCd: no flood limits)")
    parser.add_argument("--server-pid", type=int, help="read server CPU and RSS from /proc")
    parser.add_argument("--user-prefix", default="bench", help="names of the bench's users")
    parser.add_argument("--time-limit", type=float, default=300.0,
                        help="hard bound in seconds for the whole scenario")
    parser.add_argument("--bench-cpu", type=int, help="pin the load generator to this core")


def add_fanout_arguments(parser: argparse.ArgumentParser, rate: bool = True) -> None:
    """Options of fanout and maxrate."""
    parser.add_argument("--clients", type=int, default=100)
    parser.add_argument("--senders", type=int, default=10)
    if rate:
        parser.add_argument("--rate", type=float, default=200.0, help="messages/s")
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per step")
    parser.add_argument("--size", type=int, default=64, help="message text bytes")
    parser.add_argument("--grace", type=float, default=2.0,
                        help="seconds to wait for stragglers after the schedule ends")
    parser.add_argument("--room", default=DEFAULT_ROOM)
    parser.add_argument("--latency-sample", type=int, default=0 if rate else 16,
                        help="clients that time every line (0: all); all count deliveries")
    parser.add_argument("--machine-probe", action=argparse.BooleanOptionalAction,
                        default=rate, help="time a small loop on every core at real-time "
                        "priority, to tell the runs in which the machine itself ran slow")


def build_parser() -> argparse.ArgumentParser:
    """The command line: one subcommand per scenario, plus ``compare``."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="scenario", required=True)

    fanout = sub.add_parser("fanout", help="latency and delivery at one rate")
    add_target_arguments(fanout)
    add_fanout_arguments(fanout)

    maxrate = sub.add_parser("maxrate", help="highest rate that still delivers")
    add_target_arguments(maxrate)
    add_fanout_arguments(maxrate, rate=False)
    maxrate.add_argument("--start-rate", type=float, default=200.0, help="messages/s")
    maxrate.add_argument("--factor", type=float, default=1.5)
    maxrate.add_argument("--max-steps", type=int, default=14)
    maxrate.add_argument("--refine", type=int, default=2, help="bisection steps at the end")
    maxrate.add_argument("--quiet", type=float, default=10.0,
                         help="seconds to wait for a backlog to drain between steps")

    burst = sub.add_parser("burst", help="server CPU per message in bursts at its limit")
    add_target_arguments(burst)
    add_fanout_arguments(burst, rate=False)
    burst.add_argument("--per-sender", type=int, default=1000,
                       help="messages each sender writes at once, each round")
    burst.add_argument("--rounds", type=int, default=10, help="rounds counted")
    burst.add_argument("--warmup", type=int, default=2, help="rounds run first, not counted")

    sessions = sub.add_parser("sessions", help="RSS per idle session")
    add_target_arguments(sessions)
    sessions.add_argument("--clients", type=int, default=1000)
    sessions.add_argument("--room", default=None,
                          help=f"{LOBBY}: every session stays in the lobby (default: each alone)")

    storm = sub.add_parser("storm", help="ping round trips during a login storm")
    add_target_arguments(storm)
    storm.add_argument("--logins", type=int, default=50)
    storm.add_argument("--ping-interval", type=float, default=0.002)
    storm.add_argument("--max-pings", type=int, default=100_000)

    history = sub.add_parser("history", help="join time of a room with stored messages")
    add_target_arguments(history)
    history.add_argument("--history-room", default="#history")
    history.add_argument("--joins", type=int, default=20)

    from_compare = sub.add_parser("compare", help="start servers, run scenarios, summarize")
    add_compare_arguments(from_compare)
    cluster = sub.add_parser("cluster", help="compare chatd on PostgreSQL alone, with Redis "
                             "fan-out, and as two nodes")
    add_compare_arguments(cluster, targets=",".join(CLUSTER_TARGETS),
                          scenarios="fanout,maxrate-100")
    return parser


def install_event_loop() -> str:
    """Use uvloop when it is importable; return the loop's name for the record.

    Also shortens the GIL switch interval so the schedule's ticker thread gets to run
    within half a millisecond while the loop is busy reading.
    """
    sys.setswitchinterval(0.0005)
    try:
        import uvloop
    except ImportError:
        return "asyncio"
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    return "uvloop"


def raise_fd_limit() -> None:
    """Thousands of sessions need thousands of descriptors: lift the soft limit to the hard."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def run_scenario(args) -> dict:
    """Run one scenario under its hard time bound and return its result record."""
    loop_name = install_event_loop()
    raise_fd_limit()
    if args.bench_cpu is not None:
        os.sched_setaffinity(0, {args.bench_cpu})

    async def bounded():
        return await asyncio.wait_for(SCENARIOS[args.scenario](args), args.time_limit + 5)

    result = asyncio.run(bounded())
    result["loop"] = loop_name
    return result


# --------------------------------------------------------------------------- compare driver

def add_compare_arguments(parser: argparse.ArgumentParser, *, targets: str = "baseline,chatd",
                          scenarios: str = "fanout,maxrate,sessions,storm,history") -> None:
    """Options of the compare driver (``cluster`` is the same with other defaults)."""
    parser.add_argument("--targets", default=targets,
                        help="comma-separated: baseline, chatd, web (chatd through its "
                             "web door, over WebSocket), irc (chatd's IRC door), ngircd "
                             "(ngIRCd, for irc to be compared with), pg, pg-redis, "
                             "pg-redis-2 (chatd on PostgreSQL: alone, with Redis fan-out, "
                             "two nodes)")
    parser.add_argument("--postgres-url", help="cluster targets: a PostgreSQL server to create "
                        "the runs' databases on (default: a private one the bench starts)")
    parser.add_argument("--redis-url", help="cluster targets: a Redis server (default: a "
                        "private redis-server the bench starts)")
    parser.add_argument("--irc-login", choices=["pass", "sasl"], default="pass",
                        help="how the irc target's clients log in")
    parser.add_argument("--ngircd", default=shutil.which("ngircd") or "/usr/sbin/ngircd",
                        help="the ngIRCd program of the ngircd target")
    parser.add_argument("--scenarios", default=scenarios,
                        help="comma-separated scenario presets, see PRESETS")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--preset", choices=["full", "smoke"], default="full")
    parser.add_argument("--server-cpu", type=int, default=1)
    parser.add_argument("--bench-cpu", type=int, default=0)
    parser.add_argument("--time-limit", type=float, default=3600.0,
                        help="hard bound in seconds for the whole comparison")
    parser.add_argument("--chatd-root", default=str(REPO_ROOT),
                        help="checkout holding chatd.tac")
    parser.add_argument("--out", help="write every run's record here as JSON")
    parser.add_argument("--work-dir", help="databases and server logs (default: a temp dir)")


@dataclass(frozen=True)
class Preset:
    """One scenario with fixed parameters, as the compare driver runs it."""

    label: str
    scenario: str
    params: dict
    targets: tuple[str, ...] = ("baseline", "chatd", "web")
    bcrypt_rounds: int = 4
    history_messages: int = 0
    time_limit: float = 300.0


# chatd on PostgreSQL alone, with Redis fan-out, and as two nodes (``scripts/bench.py cluster``).
CLUSTER_TARGETS = ("pg", "pg-redis", "pg-redis-2")
# fanout and maxrate are the scenarios that also run over IRC and in cluster mode.
FANOUT_TARGETS = ("baseline", "chatd", "web", "irc", "ngircd", *CLUSTER_TARGETS)

MAXRATE_COMMON = {"senders": 10, "factor": 1.5, "max_steps": 14, "refine": 2, "duration": 3.0,
                  "grace": 2.0, "quiet": 10.0, "latency_sample": 16, "size": 64}

PRESETS = {
    "full": (
        Preset("fanout", "fanout", {"clients": 100, "senders": 10, "rate": 200.0,
                                    "duration": 5.0, "grace": 2.0, "size": 64,
                                    "latency_sample": 0}, targets=FANOUT_TARGETS),
        Preset("maxrate-100", "maxrate", {"clients": 100, "start_rate": 200.0,
                                          **MAXRATE_COMMON}, targets=FANOUT_TARGETS,
               time_limit=240),
        Preset("maxrate-500", "maxrate", {"clients": 500, "start_rate": 40.0,
                                          **MAXRATE_COMMON}, targets=FANOUT_TARGETS,
               time_limit=240),
        Preset("burst", "burst", {"clients": 100, "senders": 10, "per_sender": 1000,
                                  "rounds": 10, "warmup": 2, "size": 64},
               targets=FANOUT_TARGETS, time_limit=240),
        Preset("sessions", "sessions", {"clients": 10_000}, time_limit=600),
        Preset("sessions-lobby", "sessions", {"clients": 2_000, "room": LOBBY}, time_limit=600),
        # The baseline has no logins to storm: a burst of connects would be no comparison.
        Preset("storm", "storm", {"logins": 50, "ping_interval": 0.002, "max_pings": 100_000},
               targets=("chatd",), bcrypt_rounds=12),
        Preset("history", "history", {"joins": 20}, targets=("chatd",),
               history_messages=1_000_000),
    ),
    "smoke": (
        Preset("fanout", "fanout", {"clients": 4, "senders": 2, "rate": 50.0,
                                    "duration": 0.4, "grace": 2.0, "latency_sample": 0},
               targets=FANOUT_TARGETS, time_limit=30),
        Preset("maxrate", "maxrate", {"clients": 4, "senders": 2, "start_rate": 50.0,
                                      "factor": 2.0, "max_steps": 2, "refine": 1,
                                      "duration": 0.3, "grace": 1.0, "quiet": 2.0,
                                      "latency_sample": 2},
               targets=FANOUT_TARGETS, time_limit=30),
        Preset("burst", "burst", {"clients": 4, "senders": 2, "per_sender": 20,
                                  "rounds": 2, "warmup": 1}, targets=FANOUT_TARGETS,
               time_limit=30),
        Preset("sessions", "sessions", {"clients": 20}, time_limit=30),
        Preset("sessions-lobby", "sessions", {"clients": 20, "room": LOBBY}, time_limit=30),
        Preset("storm", "storm", {"logins": 3, "ping_interval": 0.005, "max_pings": 2000},
               time_limit=60),
        Preset("history", "history", {"joins": 3}, targets=("chatd",),
               history_messages=2_000, time_limit=30),
    ),
}

# What the summary table shows for each scenario: (heading, path into the run record).
SUMMARY_METRICS = {
    "fanout": (("deliveries/s", ("deliveries_per_s",)),
               ("delivered", ("delivered_fraction",)),
               ("latency p50 ms", ("latency_ms", "p50")),
               ("latency p90 ms", ("latency_ms", "p90")),
               ("latency p99 ms", ("latency_ms", "p99")),
               ("latency p99 ms, machine steady", ("latency_ms_machine_steady", "p99")),
               ("latency p99.9 ms", ("latency_ms", "p99.9")),
               ("latency max ms", ("latency_ms", "max")),
               ("server CPU", ("server_cpu",)),
               ("server peak RSS MB", ("server_peak_rss_mb",)),
               ("bench CPU", ("bench_cpu",)),
               ("machine slow ms", ("machine_slow_ms",)),
               ("machine slowest window", ("machine_slowest",)),
               ("samples, machine steady", ("machine_steady_samples",))),
    "maxrate": (("max deliveries/s", ("max_deliveries_per_s",)),
                ("p99 ms at max", ("good_p99_ms",)),
                ("peak RSS MB", ("peak_rss_mb",)),
                ("server CPU at limit", ("server_cpu_at_limit",)),
                ("bench CPU at limit", ("bench_cpu_at_limit",))),
    "burst": (("server CPU µs per message", ("server_cpu_us_per_message",)),
              ("deliveries/s", ("deliveries_per_s",)),
              ("server peak RSS MB", ("server_peak_rss_mb",)),
              ("bench CPU", ("bench_cpu",))),
    "sessions": (("RSS per session B", ("rss_per_session_bytes",)),
                 ("sessions alive", ("alive",)),
                 ("peak RSS MB", ("peak_rss_mb",)),
                 ("setup s", ("setup_seconds",))),
    "storm": (("worst ping ms", ("ping_worst_ms",)),
              ("ping p99 ms", ("ping_p99_ms",)),
              ("storm s", ("storm_seconds",)),
              ("logins ok", ("logins_ok",))),
    "history": (("join ms median", ("join_ms_median",)),
                ("join ms max", ("join_ms_max",)),
                ("first join ms", ("join_ms_first",)),
                ("HISTORY lines", ("history_lines",))),
}


def metric(record: dict, path: tuple[str, ...]) -> float | None:
    """The value at ``path`` in a run record, None when missing."""
    value = record
    for key in path:
        if not isinstance(value, dict) or key not in value:
            return None
        value = value[key]
    return value if isinstance(value, int | float) and not isinstance(value, bool) else None


# The ratios the summary shows, (numerator, denominator), when both targets ran.
RATIOS = (("chatd", "baseline"), ("web", "chatd"), ("irc", "ngircd"), ("pg-redis", "pg"),
          ("pg-redis-2", "pg-redis"))
# The order of the targets' columns.
TARGET_ORDER = ("baseline", "chatd", "web", "irc", "ngircd", *CLUSTER_TARGETS)


def summarize(records: list[dict]) -> str:
    """A markdown table per preset: median [range] per target and the RATIOS between them."""
    lines = []
    labels = list(dict.fromkeys(record["label"] for record in records))
    for label in labels:
        runs = [record for record in records if record["label"] == label]
        scenario = runs[0]["scenario"]
        targets = [t for t in TARGET_ORDER if any(r["target"] == t for r in runs)]
        by_target = {t: [r for r in runs if r["target"] == t] for t in targets}
        ratios = [(top, bottom) for top, bottom in RATIOS if top in targets and bottom in targets]
        lines.append(f"### {label}")
        lines.append("")
        heading = "| metric | " + " | ".join(targets)
        heading += "".join(f" | {top}/{bottom}" for top, bottom in ratios) + " |"
        lines.append(heading)
        lines.append("|" + "---|" * (len(targets) + 1 + len(ratios)))
        for name, path in SUMMARY_METRICS[scenario]:
            cells = [format_median_range([metric(r, path) for r in by_target[t]])
                     for t in targets]
            row = f"| {name} | " + " | ".join(cells)
            for top, bottom in ratios:
                high = median_and_range([metric(r, path) for r in by_target[top]])
                low = median_and_range([metric(r, path) for r in by_target[bottom]])
                ratio = "n/a"
                if high and low and low[0]:
                    ratio = f"{high[0] / low[0]:.2f}x"
                row += f" | {ratio}"
            lines.append(row + " |")
        for target in targets:
            failed = [r for r in by_target[target] if r.get("error")]
            saturated = [r for r in by_target[target]
                         if r.get("bench_saturated") or r.get("bench_saturated_at_limit")]
            runs_done = len(by_target[target])
            slowed = [r for r in by_target[target] if r.get("machine_slow_ms")]
            if slowed:
                lines.append(f"\n{target}: the machine itself ran slow (a core at half its "
                             f"speed or less, for {sum(r['machine_slow_ms'] for r in slowed)}"
                             f" ms in all) during {len(slowed)} of {runs_done} runs; "
                             "'machine steady' leaves out the deliveries under way then.")
            if saturated:
                lines.append(f"\n{target}: the load generator's core was saturated (≥ "
                             f"{BENCH_SATURATED_CPU:.0%}) in {len(saturated)} of {runs_done}"
                             " runs: the server may have more headroom than shown.")
            for record in failed:
                lines.append(f"\n{target} run {record['run']} failed: {record['error']}")
        lines.append("")
    return "\n".join(lines)


def free_port() -> int:
    """A TCP port on loopback that nothing listens on right now."""
    with socket.socket() as probe:
        probe.bind((LOOPBACK, 0))
        return probe.getsockname()[1]


STARTED_SERVERS: list[subprocess.Popen] = []


def stop_process(process: subprocess.Popen, grace: float = 10.0) -> None:
    """SIGTERM, then SIGKILL after ``grace`` seconds; always reaps the process."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(grace)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    with contextlib.suppress(ValueError):
        STARTED_SERVERS.remove(process)


def stop_every_server() -> None:
    """Stop whatever server this bench started and has not stopped yet."""
    for process in list(STARTED_SERVERS):
        stop_process(process, grace=3.0)


NGIRCD_OPER = "bench:bench-oper-password"

# ngIRCd's configuration for the ngircd target: loopback only, every limit it lets one
# lift lifted (MaxConnections/MaxConnectionsIP/MaxJoins 0: none; MaxPenaltyTime 0: no
# penalty seconds), no DNS, ident or PAM. Its per-client flood throttle has no setting:
# the bench's clients OPER and set user mode +F, which turns it off.
NGIRCD_CONFIG = """\
[Global]
\tName = bench.ngircd.invalid
\tInfo = chatd bench: ngIRCd without limits
\tAdminInfo1 = chatd bench
\tAdminInfo2 = loopback
\tAdminEMail = bench@localhost
\tListen = {address}
\tPorts = {port}
\tMotdPhrase = bench
\tPidFile = {run_dir}/ngircd.pid
\tServerUID = {uid}
\tServerGID = {gid}
[Limits]
\tMaxConnections = 0
\tMaxConnectionsIP = 0
\tMaxJoins = 0
\tMaxNickLength = 30
\tMaxPenaltyTime = 0
\tPingTimeout = 3600
\tPongTimeout = 3600
\tIdleTimeout = 0
[Options]
\tDNS = no
\tIdent = no
\tPAM = no
\tConnectIPv6 = no
\tIncludeDir = {run_dir}/ngircd.conf.d
[Operator]
\tName = {oper_name}
\tPassword = {oper_password}
"""


class ManagedServer:
    """A baseline, chatd or ngIRCd process the bench starts, pins to a core, always stops.

    Targets: ``baseline`` (the naive server), ``chatd`` (its line door), ``web`` and
    ``irc`` (chatd through its web and IRC doors: the bench's port is that door's),
    ``ngircd`` (Debian's ngIRCd with :data:`NGIRCD_CONFIG`).
    """

    def __init__(self, target: str, run_dir: Path, cpu: int, chatd_root: Path,
                 db_path: Path | None = None, bcrypt_rounds: int = 4,
                 ngircd: str = "/usr/sbin/ngircd", *, db_url: str | None = None,
                 redis_url: str | None = None, name: str | None = None):
        self.target = target
        # The cluster targets: chatd on PostgreSQL (db_url), with Redis fan-out (redis_url).
        self.db_url = db_url
        self.redis_url = redis_url
        self.ngircd = ngircd
        self.run_dir = run_dir
        self.cpu = cpu
        self.chatd_root = chatd_root
        self.db_path = db_path
        self.bcrypt_rounds = bcrypt_rounds
        self.port = 0
        self.line_port = 0
        self.process: subprocess.Popen | None = None
        self.log_path = run_dir / f"{name or target}.log"

    @property
    def dialect(self) -> str:
        """How the bench talks to this server."""
        if self.target == "baseline":
            return "naive"
        return "irc" if self.target in ("irc", "ngircd") else "chatd"

    @property
    def pid(self) -> int:
        """The server's process id (taskset execs it, so it is the same process)."""
        return self.process.pid

    def command(self) -> tuple[list[str], dict[str, str]]:
        """The command line and environment that start this server."""
        env = dict(os.environ)
        pin = ["taskset", "-c", str(self.cpu)] if shutil.which("taskset") else []
        if self.target == "baseline":
            script = Path(__file__).resolve().parent / "naive_server.py"
            return [*pin, sys.executable, str(script), str(self.port)], env
        if self.target == "ngircd":
            return [*pin, self.ngircd, "--nodaemon", "--config", str(self.ngircd_config())], env
        # Targets "web" and "irc" are chatd reached through that door: the bench's port is
        # the door's, the line door listens elsewhere.
        line_port = self.line_port if self.target in ("web", "irc") else self.port
        env.update({
            "CHATD_LISTEN": f"tcp:{line_port}:interface={LOOPBACK}",
            "CHATD_IRC_LISTEN": (f"tcp:{self.port}:interface={LOOPBACK}"
                                 if self.target == "irc" else "off"),
            "CHATD_DB": self.db_url or str(self.db_path),
            "CHATD_BCRYPT_ROUNDS": str(self.bcrypt_rounds),
            "CHATD_RATE_LIMIT": "off",
            # The default total of 4096 is for a small VPS; the sessions scenario opens 10,000.
            "CHATD_MAX_CONNECTIONS": "20000",
            "CHATD_WEB_LISTEN": (f"tcp:{self.port}:interface={LOOPBACK}"
                                 if self.target == "web" else "off"),
            "PYTHONPATH": str(self.chatd_root),
        })
        if self.redis_url:
            env["CHATD_REDIS"] = self.redis_url
        twistd = Path(sys.executable).with_name("twistd")
        runner = ([str(twistd)] if twistd.exists()
                  else [sys.executable, "-m", "twisted.scripts.twistd"])
        tac = self.chatd_root / "chatd.tac"
        return [*pin, *runner, "--pidfile=", "-ny", str(tac)], env

    def ngircd_config(self) -> Path:
        """Write ngIRCd's configuration into the run directory; return its path."""
        include_dir = self.run_dir / "ngircd.conf.d"
        include_dir.mkdir(exist_ok=True)
        oper_name, _, oper_password = NGIRCD_OPER.partition(":")
        path = self.run_dir / "ngircd.conf"
        # Started as root, ngIRCd switches to ServerUID: this user, or nobody for root.
        uid = os.getuid() or 65534
        gid = os.getgid() or 65534
        path.write_text(NGIRCD_CONFIG.format(
            address=LOOPBACK, port=self.port, run_dir=self.run_dir.resolve(), uid=uid,
            gid=gid, oper_name=oper_name, oper_password=oper_password))
        return path

    def start(self, timeout: float = 30.0) -> None:
        """Start the server and return once it accepts connections (or raise)."""
        self.port = free_port()
        self.line_port = free_port()
        command, env = self.command()
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                command, env=env, cwd=self.run_dir, stdout=log, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL)
        STARTED_SERVERS.append(self.process)
        give_up = time.monotonic() + timeout
        while time.monotonic() < give_up:
            if self.process.poll() is not None:
                break
            with contextlib.suppress(OSError), socket.create_connection(
                    (LOOPBACK, self.port), timeout=1.0):
                if self.ready():
                    return
            time.sleep(0.05)
        self.stop()
        tail = self.log_path.read_text(errors="replace")[-2000:]
        raise BenchError(f"{self.target} did not start listening:\n{tail}")

    def ready(self) -> bool:
        """Whether the listening server is ready: with Redis, once it is subscribed."""
        if not self.redis_url:
            return True
        log = self.log_path.read_text(errors="replace")
        return re.search(r"redis \S+ connected", log) is not None

    def stop(self) -> None:
        """SIGTERM, then SIGKILL if it lingers."""
        if self.process is not None:
            stop_process(self.process)


class NodeGroup:
    """Several chatd nodes on one database and one Redis, started and stopped together.

    It stands where a :class:`ManagedServer` would: ``port`` and ``pid`` are the first
    node's, ``ports`` and ``pids`` every node's (the scenarios spread sessions over the
    ports and sum the nodes' CPU and RSS). Every node is pinned to the same core: on a
    2-core machine the other core is the load generator's.
    """

    def __init__(self, target: str, count: int, run_dir: Path, cpu: int, chatd_root: Path,
                 bcrypt_rounds: int, db_url: str, redis_url: str):
        self.target = target
        self.nodes = [ManagedServer(target, run_dir, cpu, chatd_root, None, bcrypt_rounds,
                                    db_url=db_url, redis_url=redis_url,
                                    name=f"{target}-node{index + 1}")
                      for index in range(count)]
        self.dialect = "chatd"

    @property
    def port(self) -> int:
        """The first node's line port."""
        return self.nodes[0].port

    @property
    def ports(self) -> list[int]:
        """Every node's line port."""
        return [node.port for node in self.nodes]

    @property
    def pid(self) -> int:
        """The first node's process id."""
        return self.nodes[0].pid

    @property
    def pids(self) -> list[int]:
        """Every node's process id."""
        return [node.pid for node in self.nodes]

    def start(self) -> None:
        """Start the nodes one after the other; stop them all if one fails."""
        try:
            for node in self.nodes:
                node.start(timeout=60.0)
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        """Stop every node."""
        for node in self.nodes:
            node.stop()


class PrivateServices:
    """The PostgreSQL and redis-server the cluster targets stand on, private to one compare.

    Either given (``--postgres-url``, ``--redis-url``) or started here in the work
    directory on free loopback ports (PostgreSQL as the ``postgres`` user when the bench
    runs as root: it refuses root), and stopped at the end. Every run gets a database of
    its own, so no run reads another's rooms.
    """

    def __init__(self, work_dir: Path, postgres_url: str | None, redis_url: str | None):
        self.work_dir = work_dir
        self.postgres_url = postgres_url
        self.redis_url = redis_url
        self._pg_data: Path | None = None
        self._pg_dir: Path | None = None
        self._redis: subprocess.Popen | None = None
        self._made = 0

    def start(self) -> None:
        """Start whatever was not given."""
        if self.postgres_url is None:
            self.postgres_url = self._start_postgres()
        if self.redis_url is None:
            self.redis_url = self._start_redis()

    @staticmethod
    def _as_postgres(command: list[str]) -> list[str]:
        return ["runuser", "-u", "postgres", "--", *command] if os.geteuid() == 0 else command

    @staticmethod
    def _postgres_program(name: str) -> str:
        found = sorted(Path("/usr/lib/postgresql").glob(f"*/bin/{name}"))
        if found:
            return str(found[-1])
        if shutil.which(name):
            return name
        raise BenchError(f"{name} not found: install the Debian package postgresql")

    def _start_postgres(self) -> str:
        # A directory of its own outside the work directory: as root, PostgreSQL runs
        # as the postgres user, who may not enter a root-owned temporary directory.
        directory = Path(tempfile.mkdtemp(prefix="chatd-bench-pg-"))
        self._pg_dir = directory
        if os.geteuid() == 0:
            shutil.chown(directory, "postgres", "postgres")
        self._pg_data = directory / "data"
        port = free_port()
        subprocess.run(self._as_postgres([self._postgres_program("initdb"), "-D",
                                          str(self._pg_data), "-A", "trust", "-U", "chatd",
                                          "-E", "UTF8"]), check=True, capture_output=True)
        # Durability as a production server would keep it: fsync and synchronous commit on.
        options = f"-p {port} -k {directory} -c listen_addresses={LOOPBACK}"
        subprocess.run(self._as_postgres([self._postgres_program("pg_ctl"), "-D",
                                          str(self._pg_data), "-o", options, "-l",
                                          str(directory / "log"), "-w", "-t", "60", "start"]),
                       check=True, capture_output=True)
        return f"postgresql://chatd@{LOOPBACK}:{port}/postgres"

    def _start_redis(self) -> str:
        program = shutil.which("redis-server")
        if program is None:
            raise BenchError("redis-server not found: install the Debian package redis-server")
        port = free_port()
        self._redis = subprocess.Popen(
            [program, "--port", str(port), "--bind", LOOPBACK, "--save", "", "--appendonly",
             "no", "--dir", str(self.work_dir)],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            text=True)
        # redis-server says when it listens; its output ends if it exits first.
        for line in self._redis.stdout:
            if "Ready to accept connections" in line:
                break
        else:
            raise BenchError(f"redis-server exited ({self._redis.wait()}) before it listened")
        # Keep reading what it says so that the pipe never fills.
        threading.Thread(target=self._redis.stdout.read, daemon=True).start()
        return f"redis://{LOOPBACK}:{port}/0"

    def fresh_database(self, label: str) -> str:
        """Create an empty database for one run; return its URL."""
        import psycopg

        self._made += 1
        name = re.sub(r"[^a-z0-9_]", "_", f"bench_{label}_{os.getpid()}_{self._made}".lower())
        with psycopg.connect(self.postgres_url, autocommit=True) as connection:
            connection.execute(f'CREATE DATABASE "{name}"')
        base, _, _ = self.postgres_url.rpartition("/")
        return f"{base}/{name}"

    def stop(self) -> None:
        """Stop what was started here."""
        if self._redis is not None:
            stop_process(self._redis, grace=3.0)
        if self._pg_data is not None:
            subprocess.run(self._as_postgres([self._postgres_program("pg_ctl"), "-D",
                                              str(self._pg_data), "-m", "immediate", "-w",
                                              "stop"]), capture_output=True)
        if self._pg_dir is not None:
            shutil.rmtree(self._pg_dir, ignore_errors=True)


def make_server(target: str, work_dir: Path, args, chatd_root: Path, preset: Preset,
                db_path: Path, services: PrivateServices | None):
    """The server (or group of nodes) for one run of ``target``."""
    if target not in CLUSTER_TARGETS:
        return ManagedServer(target, work_dir, args.server_cpu, chatd_root, db_path,
                             preset.bcrypt_rounds, args.ngircd)
    db_url = services.fresh_database(f"{preset.label}_{target}")
    redis_url = services.redis_url if target != "pg" else None
    if target == "pg-redis-2":
        return NodeGroup(target, 2, work_dir, args.server_cpu, chatd_root,
                         preset.bcrypt_rounds, db_url, redis_url)
    return ManagedServer(target, work_dir, args.server_cpu, chatd_root, None,
                         preset.bcrypt_rounds, args.ngircd, db_url=db_url, redis_url=redis_url)


def scenario_args(preset: Preset, server: ManagedServer, time_limit: float,
                  run: int, irc_login: str = "pass") -> argparse.Namespace:
    """The scenario's command-line defaults, overridden by the preset's parameters."""
    args = build_parser().parse_args([preset.scenario, "--port", str(server.port)])
    for key, value in preset.params.items():
        setattr(args, key, value)
    args.dialect = server.dialect
    args.websocket = server.target == "web"
    args.irc_login = "none" if server.target == "ngircd" else irc_login
    args.irc_oper = NGIRCD_OPER if server.target == "ngircd" else None
    args.server_pid = server.pid
    if isinstance(server, NodeGroup):
        args.ports = server.ports
        args.more_server_pids = server.pids[1:]
    args.time_limit = time_limit
    args.user_prefix = f"bench{run}" if preset.scenario == "storm" else "bench"
    return args


def run_preset_once(preset: Preset, server: ManagedServer, time_limit: float,
                    run: int, irc_login: str = "pass") -> dict:
    """Run one preset against a started server; failures become part of the record."""
    args = scenario_args(preset, server, time_limit, run, irc_login)

    async def bounded():
        return await asyncio.wait_for(SCENARIOS[preset.scenario](args), time_limit + 5)

    try:
        return asyncio.run(bounded())
    except Exception as error:
        frames = traceback.extract_tb(error.__traceback__)
        where = "; ".join(f"{frame.name}:{frame.lineno}" for frame in frames[-3:])
        return {"scenario": preset.scenario,
                "error": f"{type(error).__name__}: {error} (at {where})"}


def selected_presets(preset_set: str, names: str) -> list[Preset]:
    """Presets whose label or scenario name is among the comma-separated ``names``."""
    wanted = {name.strip() for name in names.split(",") if name.strip()}
    chosen = [p for p in PRESETS[preset_set] if p.label in wanted or p.scenario in wanted]
    unknown = wanted - {p.label for p in chosen} - {p.scenario for p in chosen}
    if unknown:
        raise SystemExit(f"unknown scenarios: {', '.join(sorted(unknown))}")
    return chosen


def machine_description() -> dict:
    """Cores and CPU model, for the record."""
    model = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return {"nproc": os.cpu_count(), "cpu_model": model, "python": sys.version.split()[0]}


def compare(args) -> dict:
    """Start each server per run, run each preset ``runs`` times, summarize; bounded."""
    loop_name = install_event_loop()
    raise_fd_limit()
    deadline = time.monotonic() + args.time_limit
    if args.bench_cpu is not None:
        os.sched_setaffinity(0, {args.bench_cpu})
    targets = [t.strip() for t in args.targets.split(",") if t.strip()]
    presets = selected_presets(args.preset, args.scenarios)
    chatd_root = Path(args.chatd_root).resolve()
    owned_dir = None
    if args.work_dir:
        work_dir = Path(args.work_dir)
        work_dir.mkdir(parents=True, exist_ok=True)
    else:
        owned_dir = tempfile.TemporaryDirectory(prefix="chatd-bench-")
        work_dir = Path(owned_dir.name)
    records = []
    services = None
    if any(target in CLUSTER_TARGETS for target in targets):
        services = PrivateServices(work_dir, args.postgres_url, args.redis_url)
    try:
        if services is not None:
            services.start()
        for preset in presets:
            db_path = work_dir / f"{preset.label}.sqlite3"
            if "chatd" in targets and preset.history_messages:
                prefill_history(str(db_path), "#history", preset.history_messages)
            for run in range(1, args.runs + 1):
                for target in targets:
                    if target not in preset.targets:
                        continue
                    remaining = deadline - time.monotonic()
                    if remaining < 10:
                        raise BenchError("compare ran out of its time limit")
                    server = make_server(target, work_dir, args, chatd_root, preset, db_path,
                                         services)
                    server.start()
                    try:
                        record = run_preset_once(preset, server,
                                                 min(preset.time_limit, remaining - 5), run,
                                                 args.irc_login)
                    finally:
                        server.stop()
                    record.update(label=preset.label, target=target, run=run, loop=loop_name,
                                  server_pid=server.pid)
                    records.append(record)
                    print(f"{preset.label} {target} run {run}: "
                          + json.dumps({k: v for k, v in record.items() if k != "steps"}),
                          file=sys.stderr, flush=True)
    finally:
        stop_every_server()
        if services is not None:
            services.stop()
        if owned_dir is not None:
            owned_dir.cleanup()
    summary = summarize(records)
    report = {"machine": machine_description(), "targets": targets, "runs": args.runs,
              "preset": args.preset, "records": records, "summary": summary}
    if args.out:
        Path(args.out).write_text(json.dumps(report, indent=1))
    return report


def stop_on_signal(signum, frame) -> None:
    """SIGTERM/SIGINT/SIGALRM: stop every server this bench started, then exit."""
    del frame
    stop_every_server()
    os._exit(128 + signum)


def main(argv: list[str] | None = None) -> int:
    """Parse the command line, run the scenario or the comparison, print JSON or tables."""
    args = build_parser().parse_args(argv)
    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGALRM):
        signal.signal(signum, stop_on_signal)
    # The last resort against a hang anywhere: the alarm stops our servers and exits.
    signal.alarm(int(args.time_limit) + 60)
    try:
        if args.scenario in ("compare", "cluster"):
            report = compare(args)
            print(report["summary"])
            return 1 if any(r.get("error") for r in report["records"]) else 0
        result = run_scenario(args)
        print(json.dumps(result, indent=1))
        return 0
    finally:
        signal.alarm(0)
        stop_every_server()


if __name__ == "__main__":
    sys.exit(main())
