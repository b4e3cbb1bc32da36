"""Building a chatd server from its configuration, for twistd and for tests."""

import atexit
import contextlib
import faulthandler
import gc
import importlib.util
import os
import sqlite3
import sys
from collections.abc import Mapping, Sequence

from twisted.application.service import Application, MultiService, Service
from twisted.internet import defer
from twisted.internet.error import CannotListenError, ReactorNotRunning
from twisted.logger import ILogObserver, Logger
from twisted.python.components import Componentized
from twisted.python.failure import Failure

from chatd.auth.accounts import Accounts
from chatd.auth.cred import make_portal
from chatd.auth.passwords import PasswordHasher
from chatd.config import Config, ConfigError, is_postgresql, redacted_url
from chatd.core.interfaces import DisconnectReason
from chatd.core.service import ChatService
from chatd.frontends.irc.protocol import IRCFactory
from chatd.frontends.line.protocol import ChatServerFactory
from chatd.frontends.tls import HangupReloader, server_endpoint
from chatd.ops.logs import log_observer
from chatd.ops.metrics import ChatdMetrics, ReactorLagProbe, metrics_site
from chatd.ops.retention import RetentionService
from chatd.ops.telemetry import Telemetry
from chatd.storage.backends import display_name, is_postgres_url, make_database
from chatd.storage.singleton import RETENTION_LOCK, singleton_lock
from chatd.storage.sqlite.lock import DatabaseInUse, DatabaseLock, lock_database

log = Logger()


class StartError(Exception):
    """The server cannot start: the setting to blame, its value, and why.

    Its text is the one line an operator sees, such as
    ``CHATD_DB=/x/y.sqlite3: directory /x does not exist``.
    """

    def __init__(self, variable: str, value: str, reason: str) -> None:
        self.variable = variable
        self.value = value
        self.reason = " ".join(reason.split())  # one line, whatever the error said
        super().__init__(f"{variable}={value}: {self.reason}")


def database_problem(path: str, error: BaseException) -> str:
    """Why the database at ``path`` could not be opened, in the operator's words."""
    if is_postgres_url(path):
        return postgres_problem(error)
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        return f"directory {directory} does not exist"
    if os.path.isdir(path):
        return "that is a directory, not a database file"
    if isinstance(error, sqlite3.Error):
        text = str(error)
        if "file is not a database" in text:
            return "the file is not an SQLite database (file is not a database)"
        if "unable to open" in text and not os.access(directory, os.W_OK):
            return f"cannot open it: directory {directory} is not writable"
        return f"cannot open it: {text}"
    if isinstance(error, OSError) and error.strerror:
        where = f" {error.filename}" if error.filename else ""
        return f"{error.strerror}{where}"
    return str(error) or type(error).__name__


def postgres_problem(error: BaseException) -> str:
    """Why a PostgreSQL database could not be used at start, in the operator's words."""
    text = " ".join(str(error).split()) or type(error).__name__
    if type(error).__module__.startswith("psycopg") and "connect" in text.lower():
        return f"cannot connect to PostgreSQL: {text}"
    if isinstance(error, RuntimeError):  # a newer schema
        return text
    return f"PostgreSQL refused to open the database: {text}"


def listen_problem(error: BaseException) -> str:
    """Why an endpoint could not listen, in the operator's words."""
    if isinstance(error, CannotListenError):
        where = error.port if error.interface is None else f"{error.interface or '*'}:{error.port}"
        cause = error.socketError
        reason = getattr(cause, "strerror", None) or str(cause)
        return f"cannot listen on {where}: {reason}"
    if isinstance(error, OSError) and error.strerror:
        # For a unix socket's lock file (a symlink) the path is the second name.
        path = error.filename2 or error.filename
        return f"{error.strerror}: {path}" if path else error.strerror
    if type(error).__module__.startswith("OpenSSL"):
        return f"the TLS certificate or key cannot be used: {error}"
    return str(error) or type(error).__name__


class InOrderService(MultiService):
    """Starts its children in order and stops them one at a time, in reverse.

    MultiService stops all children at once; chatd needs the listeners
    closed before the sessions are told ``BYE shutdown``, and every session
    gone before the database takes its last write and closes.
    """

    @defer.inlineCallbacks
    def stopService(self):
        """Stop each child after the one added after it has stopped."""
        Service.stopService(self)
        for child in reversed(list(self)):
            if not child.running:
                continue  # stopped while starting: the rest never started
            try:
                yield child.stopService()
            except Exception:
                log.failure("stopping {service}", service=child.name)


class StorageService(Service):
    """Owns the database threads and the bcrypt worker pool.

    ``ready`` fires once the database is open and migrated and the bcrypt
    workers run, or fails with a ``StartError`` naming the setting to blame.
    """

    name = "storage"

    def __init__(
        self, database, hasher: PasswordHasher, reactor, workers_setting: str = ""
    ) -> None:
        self.database = database
        self.hasher = hasher
        self._reactor = reactor
        self._workers_setting = workers_setting
        self._database_open = False
        self.ready: defer.Deferred = defer.Deferred()

    def startService(self) -> None:
        """Open (and migrate) the database and start the bcrypt pool."""
        super().startService()
        # Logged once the reactor runs (and twistd has its signal handlers):
        # from here on SIGTERM stops a start that is still waiting.
        self._reactor.callWhenRunning(
            log.info, "opening database {path}", path=self.database.path
        )
        try:
            opening = self.database.open()
        except Exception as error:
            opening = defer.fail(error)
        opening.addCallbacks(self._opened, self._cannot_open)
        try:
            pool = self.hasher.start()
        except Exception as error:
            pool = defer.fail(error)
        pool.addErrback(self._cannot_start_pool)
        both = defer.gatherResults([opening, pool], consumeErrors=True)
        both.addErrback(lambda failure: failure.value.subFailure)
        both.chainDeferred(self.ready)

    def _opened(self, found_version: int) -> None:
        if not self.running:
            # Stopped while it opened: stopService did not wait, so close it here.
            self.database.close()
            return
        self._database_open = True
        log.info(
            "database {path} open at schema version {version} (found {found})",
            path=self.database.path,
            version=self.database.SCHEMA_VERSION,
            found=found_version,
        )

    def _cannot_open(self, failure: Failure) -> None:
        path = self.database.path
        setting = getattr(self.database, "url", path)
        raise StartError("CHATD_DB", path, database_problem(setting, failure.value))

    def _cannot_start_pool(self, failure: Failure) -> None:
        if not self.running:
            # Stopped (SIGTERM) while the workers started: the stop ended them.
            # That is an ordinary stop, not a setting that cannot work.
            raise defer.CancelledError("stopped while starting")
        reason = failure.getErrorMessage() or failure.type.__name__
        raise StartError(
            "CHATD_BCRYPT_WORKERS", self._workers_setting,
            f"the bcrypt workers did not start: {reason}",
        )

    @defer.inlineCallbacks
    def stopService(self):
        """Finish queued writes, close the database, and stop the bcrypt pool.

        Stopped while the database was still opening (SIGTERM at start),
        there is nothing to finish: the opening thread is left to end with
        the process, whose exit is not held up by it.
        """
        super().stopService()
        closing = self.database.close() if self._database_open else None
        yield defer.gatherResults([self.hasher.stop(), *([closing] if closing else [])])
        if closing is not None:
            log.info("database closed")


# A test hook, never for production: "odd" makes a node drop the announcements
# of odd-numbered room messages, so the tests see gaps filled from the database.
DROP_ANNOUNCEMENTS_HOOK = "CHATD_TEST_DROP_ANNOUNCEMENTS"


def _drop_odd_announcements(fields: dict) -> bool:
    return fields.get("e") == "msg" and int(fields["s"]) % 2 == 1


class ClusterService(Service):
    """Cluster mode: this node's link to Redis (``chatd.cluster.redis.RedisFanout``).

    Starting does not wait for Redis: a node whose Redis is away serves its
    own users and catches up when it comes (docs/cluster.md). Stopping
    takes the node and its users off the cluster's presence at once.
    """

    name = "cluster"

    def __init__(self, fanout) -> None:
        self.fanout = fanout

    def startService(self) -> None:
        """Connect to Redis, and keep reconnecting."""
        super().startService()
        log.info("cluster mode: node {node} on redis {url}",
                 node=self.fanout.node, url=self._url())
        self.fanout.start()

    def _url(self) -> str:
        address = self.fanout.address
        return f"redis://{address.host}:{address.port}/{address.db}"

    def stopService(self) -> defer.Deferred:
        """Leave the cluster and disconnect."""
        super().stopService()
        return self.fanout.stop()


def cluster_problem(config: Config) -> StartError | None:
    """Why ``config`` cannot run in cluster mode, or None (also when it is not asked for).

    Nodes share their truth through the database: an SQLite file is one
    node's, so Redis with SQLite would announce messages no other node can
    read back.
    """
    if config.redis_url is None:
        return None
    if importlib.util.find_spec("txredisapi") is None:
        return StartError(
            "CHATD_REDIS", redacted_url(config.redis_url),
            "cluster mode needs the Python package txredisapi: pip install 'chatd[cluster]'",
        )
    if is_postgresql(config.db_path):
        return None
    return StartError(
        "CHATD_REDIS", redacted_url(config.redis_url),
        f"cluster mode needs PostgreSQL, but CHATD_DB={config.db_path} is an SQLite file:"
        " set CHATD_DB=postgresql://... or leave CHATD_REDIS unset",
    )


class ConnectionsService(Service):
    """On stop, tells every connection ``BYE shutdown`` and waits for them to close.

    The line door's connections are waited for; the other doors' are told
    (IRC's ``ERROR``) at the same moment.
    """

    name = "connections"

    def __init__(
        self, factory: ChatServerFactory, clock, grace_seconds: float, others=()
    ) -> None:
        self.factory = factory
        self.others = list(others)
        self._clock = clock
        self._grace_seconds = grace_seconds

    def stopService(self) -> defer.Deferred:
        """Say goodbye to everyone; give up waiting after the grace period."""
        super().stopService()
        log.info("shutting down: closing {count} connections", count=len(self.factory.connections))
        for other in self.others:
            other.disconnect_all(DisconnectReason.SHUTDOWN)
        closing = self.factory.disconnect_all(DisconnectReason.SHUTDOWN)
        closing.addTimeout(self._grace_seconds, self._clock)
        return closing.addErrback(lambda _: self._abort_the_rest())

    def _abort_the_rest(self) -> None:
        for protocol in list(self.factory.connections):
            protocol.transport.abortConnection()


class ListenerService(Service):
    """Listens on one endpoint description and logs the address it got."""

    def __init__(
        self,
        description: str,
        factory,
        reactor,
        number: int = 0,
        label: str = "chatd",
        variable: str = "CHATD_LISTEN",
    ) -> None:
        self.description = description
        self.label = label
        self.variable = variable
        # Numbered: the same description may be given twice (port 0, tests).
        prefix = "" if label == "chatd" else f"{label} "
        self.name = f"{prefix}listener {number}: {description}"
        self._factory = factory
        self._reactor = reactor
        self._port = None
        # For ssl: descriptions, the certificate and key SIGHUP reloads.
        self.tls = None
        self.listening: defer.Deferred = defer.Deferred()

    def startService(self) -> None:
        """Start listening; ``listening`` fails with a ``StartError`` if it cannot."""
        super().startService()
        try:
            endpoint, self.tls = server_endpoint(self._reactor, self.description)
            listening = endpoint.listen(self._factory)
        except Exception:
            listening = defer.fail()
        listening.addCallbacks(self._listening, self._failed)

    def _listening(self, port) -> None:
        self._port = port
        address = _address_text(port.getHost()) + (" with TLS" if self.tls else "")
        log.info("{label} listening on {address}", label=self.label, address=address)
        self.listening.callback(port)

    def _failed(self, failure) -> None:
        self.listening.errback(
            StartError(self.variable, self.description, listen_problem(failure.value))
        )

    def stopService(self):
        """Stop accepting connections."""
        super().stopService()
        if self._port is not None:
            return self._port.stopListening()
        return None


def _address_text(address) -> str:
    if hasattr(address, "port"):
        return f"{address.type.lower()} {address.host} {address.port}"
    return f"unix {address.name.decode() if isinstance(address.name, bytes) else address.name}"


class ChatdServer(InOrderService):
    """A whole chatd server: storage, chat service, connections and listeners.

    It starts in two steps: first the database (opened and migrated) and the
    bcrypt workers, then, only once both are ready, everything else, the
    listeners last, so nobody can connect to a server that cannot serve.
    ``started`` fires when every listener listens, or fails with a
    ``StartError`` naming the setting to blame; with ``exit_if_start_fails``
    (twistd) that failure is logged as one line and the process exits with
    status 1.
    """

    def __init__(
        self,
        config: Config,
        reactor=None,
        *,
        warnings: Sequence[str] = (),
        exit_if_start_fails: bool = False,
        freeze_after_start: bool = False,
    ) -> None:
        """``warnings`` are logged when the server starts (unknown variables).

        ``freeze_after_start`` (twistd: the server is the whole process) moves
        every object alive once the server listens out of the garbage
        collector's view (``gc.freeze``) and collects young objects less often:
        see ``_tune_the_collector``.
        """
        super().__init__()
        self.freeze_after_start = freeze_after_start
        if reactor is None:
            from twisted.internet import reactor
        self._reactor = reactor
        self.warnings = tuple(warnings)
        self.exit_if_start_fails = exit_if_start_fails
        self.started: defer.Deferred = defer.Deferred()
        self.config = config
        # Set by build_server: the lock that keeps other servers off the database.
        self.database_lock: DatabaseLock | None = None
        self.metrics = ChatdMetrics()
        self.telemetry = Telemetry(self.metrics, log_messages=config.log_messages)
        self.database = make_database(
            config.db_path, reactor,
            on_commit=self.metrics.observe_commit, on_checkpoint=self.metrics.observe_checkpoint,
        )
        self.hasher = PasswordHasher(
            reactor, config.bcrypt_rounds, config.bcrypt_workers,
            on_timing=self.metrics.observe_bcrypt, queue_limit=config.bcrypt_queue,
            per_address=config.bcrypt_per_address,
        )
        # Cluster mode: announcements to the other nodes through Redis.
        self.fanout = None
        if config.redis_url is not None:
            from chatd.cluster.redis import RedisFanout

            self.fanout = RedisFanout(config.redis_url, reactor)
            if os.environ.get(DROP_ANNOUNCEMENTS_HOOK) == "odd":
                # The test suite's hook (tests/cluster/test_cluster_e2e.py): this
                # node loses every odd-numbered room message's announcement.
                self.fanout.drop = _drop_odd_announcements
        self.chat = ChatService(
            self.database, reactor, config.account_poll_seconds, telemetry=self.telemetry,
            mailbox_limit=config.mailbox_limit, fanout=self.fanout,
        )
        self.accounts = Accounts(self.database, self.hasher, reactor, config.registration_open)
        self.portal = make_portal(self.chat, self.accounts)
        self.factory = ChatServerFactory(
            config, self.accounts, self.portal, reactor, telemetry=self.telemetry,
            chat=self.chat,
        )
        if self.fanout is not None:
            # Cluster mode: every node's logins count in every node's throttle,
            # and registrations, bcrypt jobs and logins in flight are counted for
            # the cluster in Redis (docs/cluster.md, "Shared limits").
            self.fanout.share_logins(self.factory.limits.logins)
            from chatd.cluster.policy import SharedLimits

            self.shared_limits = SharedLimits(
                self.fanout, reactor, config.registration_limit, config.bcrypt_per_address
            )
            self.factory.gate.shared = self.shared_limits
            self.hasher.shared = self.shared_limits
        self.metrics.watch_server(self)
        self.storage = StorageService(
            self.database, self.hasher, reactor, str(config.bcrypt_workers)
        )
        self.storage.setServiceParent(self)
        if self.fanout is not None:
            # Before the chat service: it stops after it, so the departures
            # of the last sessions are still announced.
            ClusterService(self.fanout).setServiceParent(self)
        self.chat.setServiceParent(self)
        # One node of a cluster purges for all (a PostgreSQL advisory lock).
        self.retention = RetentionService(
            self.database, reactor, self.chat, self.telemetry,
            config.room_history_days, config.stored_message_days,
            lock=singleton_lock(config.db_path, reactor, RETENTION_LOCK, "retention"),
        )
        self.retention.setServiceParent(self)
        ReactorLagProbe(reactor, self.metrics.reactor_lag_seconds).setServiceParent(self)
        self.metrics_listener = None
        if config.metrics_listen is not None:
            self.metrics_listener = ListenerService(
                config.metrics_listen,
                metrics_site(self.metrics, self.database, reactor),
                reactor,
                label="chatd metrics",
                variable="CHATD_METRICS_LISTEN",
            )
            self.metrics_listener.setServiceParent(self)
        self.irc = IRCFactory(
            config, self.accounts, self.portal, reactor, self.chat,
            limits=self.factory.limits, telemetry=self.telemetry, gate=self.factory.gate,
        )
        ConnectionsService(
            self.factory, reactor, config.shutdown_grace_seconds, others=[self.irc]
        ).setServiceParent(self)
        self.listeners = [
            ListenerService(description, self.factory, reactor, number)
            for number, description in enumerate(config.listen)
        ]
        self.irc_listeners = [
            ListenerService(
                description, self.irc, reactor, number, label="chatd irc",
                variable="CHATD_IRC_LISTEN",
            )
            for number, description in enumerate(config.irc_listen)
        ]
        for listener in [*self.listeners, *self.irc_listeners]:
            listener.setServiceParent(self)
        self.web_listeners = web_listeners(config, self.factory, reactor)
        for listener in self.web_listeners:
            listener.setServiceParent(self)
        listening = [
            *self.listeners,
            *self.irc_listeners,
            *self.web_listeners,
            *([self.metrics_listener] if self.metrics_listener else []),
        ]
        HangupReloader(reactor, listening).setServiceParent(self)

    def setServiceParent(self, parent) -> None:
        """Join ``parent``; an application also gets the log observer of ``CHATD_LOG_FORMAT``.

        Both ways of starting chatd end here: ``make_application`` (the tac
        file) parents the server to its application, and twistd does the same
        with the plugin's service, in an application it makes itself after
        ``makeService`` and before it starts logging.
        """
        observer = log_observer(self.config.log_format)
        if observer is not None and isinstance(parent, Componentized):
            # twistd logs to an application's own observer instead of its text log.
            parent.setComponent(ILogObserver, observer)
        super().setServiceParent(parent)

    def startService(self) -> None:
        """Start the storage, then the rest once it is ready; log the settings that matter."""
        self.telemetry.server_starting(
            database=display_name(self.config.db_path),
            registration="open" if self.config.registration_open else "closed",
            bcrypt_cost=self.config.bcrypt_rounds,
            metrics=self.config.metrics_listen or "off",
        )
        for warning in self.warnings:
            log.warn("{warning}", warning=warning)
        Service.startService(self)
        if self.exit_if_start_fails:
            self.started.addErrback(self._exit_for, self._reactor)
        problem = cluster_problem(self.config)
        if problem is not None:
            self.started.errback(problem)
            return
        if self.freeze_after_start:
            self.started.addCallback(_tune_the_collector)
        self.storage.startService()
        self.storage.ready.addCallback(self._start_the_rest).chainDeferred(self.started)

    def _start_the_rest(self, _) -> defer.Deferred:
        if not self.running:
            raise defer.CancelledError("stopped while starting")
        for child in self:
            if not child.running:
                child.startService()
        listeners = [
            *self.listeners,
            *self.irc_listeners,
            *self.web_listeners,
            *([self.metrics_listener] if self.metrics_listener else []),
        ]
        listening = defer.gatherResults(
            [listener.listening for listener in listeners], consumeErrors=True
        )
        return listening.addErrback(lambda failure: failure.value.subFailure)

    @staticmethod
    def _exit_for(failure: Failure, reactor) -> None:
        """Log why the server cannot start as one line, stop, and exit with status 1."""
        if failure.check(defer.CancelledError):
            return  # stopped (SIGTERM) before it was up: an ordinary stop
        if failure.check(StartError):
            line = f"chatd: cannot start: {failure.value}"
        else:
            log.failure("chatd cannot start", failure)
            line = f"chatd: cannot start: {failure.getErrorMessage()}"
        log.critical("{line}", line=line)
        _exit_with_status(1)
        reactor.callWhenRunning(_stop, reactor)

    def stopService(self) -> defer.Deferred:
        """Stop everything in reverse order, logging the start and the end of it."""
        self.telemetry.server_stopping()
        stopping = super().stopService()
        return stopping.addCallback(lambda _: self.telemetry.server_stopped())


# Net new container objects between two collections of the youngest generation
# (Python's default is 700). See _tune_the_collector.
YOUNG_COLLECTION_THRESHOLD = 10_000


def _tune_the_collector(result=None):
    """Keep what starting made (modules, classes, settings, the schema) out of every
    later garbage collection, collect the youngest objects less often, and pass
    ``result`` on.

    Those tens of thousands of startup objects live as long as the process, yet
    a full collection scans them all each time: 30 to 70 ms with the reactor
    stopped on this project's benchmark machine, felt by every session as a
    pause. Frozen, a full collection scans only what came later (sessions,
    rooms, messages in flight). Nothing is lost: frozen objects are still
    freed when nothing refers to them; only cycles among them would stay.

    Every message in flight holds a few container objects (its Deferreds,
    event, the writer's row) until it is committed and shown. Under a burst
    thousands are in flight at once, so at Python's default threshold the
    youngest generation was collected every few messages, over objects that
    were all still alive: a tenth of the server's CPU time
    (docs/benchmarks.md). Almost everything chatd makes is freed by reference
    counting; the collector is only for cycles, and at 10,000 it runs about
    a hundred times less often under that load, each pass still well under a
    millisecond.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(YOUNG_COLLECTION_THRESHOLD)
    return result


def _stop(reactor) -> None:
    with contextlib.suppress(ReactorNotRunning):  # already stopping: SIGTERM came first
        reactor.stop()


def _exit_with_status(status: int) -> None:
    """End the process with ``status`` once twistd is done with it.

    twistd exits 0 whenever its reactor stopped, and offers no way to say
    otherwise; a server that could not start must not look like one that
    was stopped (systemd's ``Restart=on-failure`` tells them apart by the
    status). The handler runs at interpreter exit, after twistd has
    stopped the services, removed its pid file and closed its log.
    """

    def exit_now() -> None:
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(OSError, ValueError):
                stream.flush()
        os._exit(status)

    atexit.register(exit_now)


def web_listeners(config: Config, factory: ChatServerFactory, reactor) -> list[ListenerService]:
    """The web door's listeners (none when ``CHATD_WEB_LISTEN=off``), onto the line door's
    factory, so both doors share connections, limits and the shutdown."""
    if not config.web_listen:
        return []
    from chatd.frontends.web import make_site

    site = make_site(factory)
    return [
        ListenerService(
            description, site, reactor, number, label="chatd web", variable="CHATD_WEB_LISTEN"
        )
        for number, description in enumerate(config.web_listen)
    ]


def load_config(environ: Mapping[str, str] | None = None) -> Config:
    """The settings in ``environ`` (default: the process's); a bad one exits with status 2."""
    try:
        return Config.from_environ(environ)
    except ConfigError as error:
        print(f"chatd: cannot start: {error}", file=sys.stderr)
        raise SystemExit(2) from None


def claim_database(config: Config) -> DatabaseLock:
    """Take the database's lock for this process's lifetime; raise ``DatabaseInUse`` if held.

    Called before anything starts, by both ways of starting a server (the tac
    file and the twistd plugin), so a second server on the same file never
    listens. It also makes a fatal signal (SIGBUS from a database file made
    unwritable underneath SQLite's memory map, SIGSEGV) leave a traceback on
    standard error, the journal under systemd, rather than nothing at all.
    """
    faulthandler.enable(file=sys.__stderr__, all_threads=True)
    if is_postgres_url(config.db_path):
        # PostgreSQL is shared by design (cluster nodes): there is no file to lock.
        return DatabaseLock(display_name(config.db_path), None)
    return lock_database(config.db_path)


def build_server(config: Config, warnings: Sequence[str] = ()) -> "ChatdServer":
    """A server for ``config`` holding its database's lock, exiting 1 when it cannot start.

    A lock that cannot be taken (another server holds it, naming itself; or
    its directory is missing) is reported in the one-line form of every
    failure to start, before twistd starts anything.
    """
    try:
        lock = claim_database(config)
    except (DatabaseInUse, OSError) as error:
        reason = database_problem(config.db_path, error)
        # DatabaseInUse names the setting itself ("CHATD_DB <path> is in use by ...").
        named = f"CHATD_DB {config.db_path}"
        if reason.startswith(named):
            reason = reason[len(named):].lstrip(": ").removeprefix("is ")
        problem = StartError("CHATD_DB", config.db_path, reason)
        print(f"chatd: cannot start: {problem}", file=sys.stderr)
        raise SystemExit(1) from None
    server = ChatdServer(
        config, warnings=warnings, exit_if_start_fails=True, freeze_after_start=True
    )
    server.database_lock = lock
    return server


def make_server(environ: Mapping[str, str] | None = None) -> ChatdServer:
    """The server twistd runs: settings from ``environ``, unknown names warned about.

    It exits with status 1 when it cannot start, and status 2 (before twistd
    starts anything) when a setting does not parse.
    """
    return build_server(load_config(environ), Config.unknown_variables(environ))


def make_application(environ: Mapping[str, str] | None = None) -> Application:
    """The twistd application for the settings in ``environ`` (default: the process's)."""
    application = Application("chatd")
    make_server(environ).setServiceParent(application)
    return application
