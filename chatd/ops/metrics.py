"""chatd's numbers for Prometheus, and the HTTP listener that serves them.

``ChatdMetrics`` holds every instrument in a ``CollectorRegistry`` of its
own rather than prometheus_client's global one, so one process (a test run)
can build many servers. Counters are incremented where things happen, by
``chatd.ops.telemetry.Telemetry``; gauges of the live state (connections,
sessions, queues) are read at scrape time from the objects that own that
state, so no count is kept twice.

The listener (``CHATD_METRICS_LISTEN``, off when unset) serves two pages:

- ``/metrics``: the Prometheus text format (or OpenMetrics when the scraper
  asks for it), rendered by prometheus_client. It is rendered on the reactor
  thread, not on a thread pool as ``prometheus_client.twisted.MetricsResource``
  would: the gauges read the chat service's state, which belongs to the
  reactor thread, and a scrape takes well under a millisecond.
- ``/healthz``: ``200 ok`` only when the reactor answers (it serves the
  request), the database's files are still the ones the server opened, and
  the database answers both a read on the reader thread and a write on the
  writer thread within ``HEALTH_TIMEOUT_SECONDS``; else ``503`` with the
  reasons (``database unavailable: chatd.sqlite3 was removed``).
"""

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
)
from prometheus_client.core import CounterMetricFamily
from prometheus_client.exposition import choose_encoder
from twisted.application.service import Service
from twisted.internet import defer
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Site

from chatd.storage import transactions

# The *_created series (one per labelled counter) double the scrape for no
# use on a single long-running process; chatd is the only exporter in it.
disable_created_metrics()

HEALTH_TIMEOUT_SECONDS = 5.0
LAG_PROBE_SECONDS = 1.0

# Outcomes and reasons listed here are exported as 0 from the start, so
# dashboards and alerts see the series before the first event.
LOGIN_OUTCOMES = ("ok", "bad-credentials", "banned", "too-many-attempts", "error")
MESSAGE_KINDS = ("room", "direct", "stored")
DISCONNECT_REASONS = (
    "slow-reader", "flood", "idle-timeout", "login-timeout", "too-many-connections",
    "kicked", "banned", "account-deleted",
)

_SECONDS_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
_BCRYPT_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)


class Traffic:
    """Counts kept on the hot path (every line to every session) as plain numbers.

    A prometheus_client counter takes a lock on every increment, which costs
    as much as the write it counts; these are only ever touched on the
    reactor thread, which is also where ``/metrics`` is rendered, so plain
    integers are safe, and a collector exports them at scrape time.
    """

    def __init__(self) -> None:
        self.deliveries: dict[str, int] = {}
        self.bytes_out = 0
        # Messages accepted, by kind (``MESSAGE_KINDS``): one per room message.
        self.messages: dict[str, int] = dict.fromkeys(MESSAGE_KINDS, 0)


class _TrafficCollector:
    """Exports ``Traffic`` as ``chatd_messages_total{kind}``, ``chatd_deliveries_total{kind}``
    and ``chatd_bytes_out_total``."""

    def __init__(self, traffic: Traffic) -> None:
        self._traffic = traffic

    def collect(self):
        messages = CounterMetricFamily(
            "chatd_messages",
            "Messages accepted: room, direct (delivered live) or stored (kept for later)",
            labels=["kind"],
        )
        for kind, count in self._traffic.messages.items():
            messages.add_metric([kind], count)
        yield messages
        deliveries = CounterMetricFamily(
            "chatd_deliveries",
            "Event lines delivered to sessions, by line type (MSG, DM, JOIN, ...)",
            labels=["kind"],
        )
        for kind, count in sorted(self._traffic.deliveries.items()):
            deliveries.add_metric([kind], count)
        yield deliveries
        yield CounterMetricFamily(
            "chatd_bytes_out",
            "Bytes of protocol lines written to clients",
            value=self._traffic.bytes_out,
        )


class ChatdMetrics:
    """Every instrument chatd exports, in a registry of its own."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        registry = self.registry
        self.connections = Gauge(
            "chatd_connections", "Client connections open now", registry=registry
        )
        self.sessions = Gauge("chatd_sessions", "Logged-in sessions now", registry=registry)
        self.users_online = Gauge(
            "chatd_users_online", "Users with at least one session now", registry=registry
        )
        self.rooms_active = Gauge(
            "chatd_rooms_active", "Rooms with at least one member now", registry=registry
        )
        self.logins = Counter(
            "chatd_logins", "Login attempts, by outcome", ["outcome"], registry=registry
        )
        self.registrations = Counter(
            "chatd_registrations",
            "Registration attempts, by outcome (ok or the error code)",
            ["outcome"],
            registry=registry,
        )
        self.traffic = Traffic()
        registry.register(_TrafficCollector(self.traffic))
        self.disconnects = Counter(
            "chatd_disconnects",
            "Connections the server closed, by reason (the BYE reason)",
            ["reason"],
            registry=registry,
        )
        self.limit_hits = Counter(
            "chatd_limit_hits", "Requests refused by a limit, by limit", ["limit"],
            registry=registry,
        )
        self.bcrypt_queue = Gauge(
            "chatd_bcrypt_queue_depth", "bcrypt jobs waiting for a worker", registry=registry
        )
        self.bcrypt_seconds = Histogram(
            "chatd_bcrypt_seconds",
            "Time bcrypt ran, by operation (check or hash)",
            ["operation"],
            buckets=_BCRYPT_BUCKETS,
            registry=registry,
        )
        self.bcrypt_wait_seconds = Histogram(
            "chatd_bcrypt_wait_seconds",
            "Time a bcrypt job queued before a worker took it",
            buckets=_BCRYPT_BUCKETS,
            registry=registry,
        )
        self.db_write_queue = Gauge(
            "chatd_db_write_queue_depth", "Writes waiting for the writer thread",
            registry=registry,
        )
        self.db_commit_seconds = Histogram(
            "chatd_db_commit_seconds",
            "Time to run and commit one batch of writes",
            buckets=_SECONDS_BUCKETS,
            registry=registry,
        )
        self.db_batch_writes = Histogram(
            "chatd_db_batch_writes",
            "Writes committed together in one batch",
            buckets=_BATCH_BUCKETS,
            registry=registry,
        )
        self.db_available = Gauge(
            "chatd_db_available",
            "1 while the database files are the ones opened; 0 once writes are refused",
            registry=registry,
        )
        self.db_wal_bytes = Gauge(
            "chatd_db_wal_bytes", "Size of the write-ahead log file at the last checkpoint",
            registry=registry,
        )
        self.db_checkpoint_seconds = Histogram(
            "chatd_db_checkpoint_seconds",
            "Time one WAL checkpoint took, by mode (PASSIVE, or TRUNCATE past the WAL limit)",
            ["mode"],
            buckets=_SECONDS_BUCKETS,
            registry=registry,
        )
        self.reactor_lag_seconds = Histogram(
            "chatd_reactor_lag_seconds",
            f"How late a timer due every {LAG_PROBE_SECONDS:g}s fired: time the reactor was busy",
            buckets=_SECONDS_BUCKETS,
            registry=registry,
        )
        self.purged_rows = Counter(
            "chatd_retention_purged_rows",
            "Rows deleted by retention, by table",
            ["table"],
            registry=registry,
        )
        for outcome in LOGIN_OUTCOMES:
            self.logins.labels(outcome)
        for reason in DISCONNECT_REASONS:
            self.disconnects.labels(reason)
        self.registrations.labels("ok")

    def observe_commit(self, seconds: float, writes: int) -> None:
        """Record one committed batch (``Database``'s ``on_commit``; any thread)."""
        self.db_commit_seconds.observe(seconds)
        self.db_batch_writes.observe(writes)

    def observe_checkpoint(self, mode: str, seconds: float, wal_bytes: int) -> None:
        """Record one WAL checkpoint (``Database``'s ``on_checkpoint``; any thread)."""
        self.db_checkpoint_seconds.labels(mode).observe(seconds)

    def observe_bcrypt(self, operation: str, waited: float, took: float) -> None:
        """Record one bcrypt job (``PasswordHasher``'s ``on_timing``; any thread)."""
        self.bcrypt_wait_seconds.observe(waited)
        self.bcrypt_seconds.labels(operation).observe(took)

    def watch_server(self, server) -> None:
        """Read the gauges of live state from ``server`` (a ``ChatdServer``) at scrape time."""
        chat, factory = server.chat, server.factory
        self.connections.set_function(lambda: len(factory.connections))
        self.sessions.set_function(
            lambda: sum(len(user.sessions) for user in chat.users.values())
        )
        self.users_online.set_function(lambda: len(chat.users))
        self.rooms_active.set_function(lambda: len(chat.active_rooms()))
        self.bcrypt_queue.set_function(lambda: server.hasher.queued)
        self.db_write_queue.set_function(lambda: server.database.queued_writes)
        self.db_available.set_function(lambda: int(server.database.unavailable is None))
        self.db_wal_bytes.set_function(lambda: server.database.wal_bytes)

    def value(self, name: str, **labels: str) -> float | None:
        """The current value of one sample, e.g. ``value("chatd_logins_total", outcome="ok")``."""
        return self.registry.get_sample_value(name, labels)


class ReactorLagProbe(Service):
    """Measures how late a timer fires: the time the reactor spent busy elsewhere."""

    name = "reactor-lag"

    def __init__(self, clock, histogram: Histogram, interval: float = LAG_PROBE_SECONDS):
        self._clock = clock
        self._histogram = histogram
        self._interval = interval
        self._call = None
        self.last_lag: float | None = None

    def startService(self) -> None:
        """Start probing."""
        super().startService()
        self._schedule()

    def _schedule(self) -> None:
        due = self._clock.seconds() + self._interval
        self._call = self._clock.callLater(self._interval, self._fired, due)

    def _fired(self, due: float) -> None:
        self.last_lag = max(0.0, self._clock.seconds() - due)
        self._histogram.observe(self.last_lag)
        self._schedule()

    def stopService(self) -> None:
        """Stop probing."""
        super().stopService()
        if self._call is not None and self._call.active():
            self._call.cancel()


class MetricsPage(Resource):
    """``/metrics``: the registry in the format the scraper asks for."""

    isLeaf = True

    def __init__(self, registry: CollectorRegistry) -> None:
        super().__init__()
        self._registry = registry

    def render_GET(self, request) -> bytes:
        accept = request.getHeader("accept")
        encoder, content_type = choose_encoder(accept or "")
        request.setHeader("content-type", content_type)
        return encoder(self._registry)


class HealthPage(Resource):
    """``/healthz``: 200 when the database answers a read and a write in time, else 503."""

    isLeaf = True

    def __init__(self, database, clock, timeout: float = HEALTH_TIMEOUT_SECONDS) -> None:
        super().__init__()
        self._database = database
        self._clock = clock
        self._timeout = timeout

    def check(self) -> defer.Deferred:
        """Fire with a list of problems: empty when healthy."""

        def probe(what: str, running: defer.Deferred) -> defer.Deferred:
            running.addTimeout(self._timeout, self._clock)
            return running.addCallbacks(
                lambda _: None,
                lambda failure: (
                    f"database {what} did not answer in {self._timeout:g}s"
                    if failure.check(defer.TimeoutError)
                    else f"database {what} failed: {failure.getErrorMessage()}"
                ),
            )

        unavailable = getattr(self._database, "unavailable", None)
        if unavailable is not None:
            # Writes are refused for good: say why, and try only a read.
            probes = [
                defer.succeed(f"database unavailable: {unavailable}"),
                probe("read", self._database.read(transactions.schema_version)),
            ]
        else:
            probes = [
                probe("read", self._database.read(transactions.schema_version)),
                probe("write", self._database.write(transactions.schema_version)),
            ]
        gathered = defer.gatherResults(probes)
        return gathered.addCallback(lambda problems: [p for p in problems if p])

    def render_GET(self, request):
        gone = False

        def client_gone(_) -> None:
            nonlocal gone
            gone = True

        request.notifyFinish().addErrback(client_gone)

        def answer(problems: list[str]) -> None:
            if gone:  # the client hung up while the database was slow
                return
            request.setHeader("content-type", "text/plain; charset=utf-8")
            if problems:
                request.setResponseCode(503)
                request.write(("unhealthy: " + "; ".join(problems) + "\n").encode())
            else:
                request.write(b"ok\n")
            request.finish()

        self.check().addCallback(answer)
        return NOT_DONE_YET


class QuietSite(Site):
    """A ``Site`` that keeps no access log: a scrape every few seconds is not news."""

    def log(self, request) -> None:
        """Log nothing."""


def metrics_site(metrics: ChatdMetrics, database, clock) -> QuietSite:
    """The metrics listener's site: ``/metrics`` and ``/healthz``."""
    root = Resource()
    root.putChild(b"metrics", MetricsPage(metrics.registry))
    root.putChild(b"healthz", HealthPage(database, clock))
    site = QuietSite(root, reactor=clock)
    site.noisy = False
    return site
