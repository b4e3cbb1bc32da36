"""Building a chatd server from its configuration, for twistd and for tests."""

import faulthandler
import sys
from collections.abc import Mapping

from twisted.application.service import Application, MultiService, Service
from twisted.internet import defer
from twisted.logger import ILogObserver, Logger
from twisted.python.components import Componentized
from twisted.python.failure import Failure

from chatd.accounts import Accounts
from chatd.auth import make_portal
from chatd.config import Config, ConfigError
from chatd.dblock import DatabaseInUse, DatabaseLock, lock_database
from chatd.frontends.irc.protocol import IRCFactory
from chatd.logs import log_observer
from chatd.metrics import ChatdMetrics, ReactorLagProbe, metrics_site
from chatd.passwords import PasswordHasher
from chatd.protocol import ChatServerFactory
from chatd.retention import RetentionService
from chatd.service import ChatService
from chatd.storage import SCHEMA_VERSION, Database
from chatd.telemetry import Telemetry
from chatd.tls import HangupReloader, server_endpoint

log = Logger()


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
            try:
                yield child.stopService()
            except Exception:
                log.failure("stopping {service}", service=child.name)


class StorageService(Service):
    """Owns the database threads and the bcrypt worker pool."""

    name = "storage"

    def __init__(self, database: Database, hasher: PasswordHasher, reactor) -> None:
        self.database = database
        self.hasher = hasher
        self._reactor = reactor

    def startService(self) -> None:
        """Open (and migrate) the database and start the bcrypt pool."""
        super().startService()
        opening = self.database.open()
        opening.addCallbacks(self._opened, self._failed)
        self.hasher.start().addErrback(self._failed)

    def _opened(self, found_version: int) -> None:
        log.info(
            "database {path} open at schema version {version} (found {found})",
            path=self.database.path,
            version=SCHEMA_VERSION,
            found=found_version,
        )

    def _failed(self, failure) -> None:
        log.failure("chatd cannot start", failure)
        self._reactor.stop()

    @defer.inlineCallbacks
    def stopService(self):
        """Finish queued writes, close the database, and stop the bcrypt pool."""
        super().stopService()
        yield defer.gatherResults([self.hasher.stop(), self.database.close()])
        log.info("database closed")


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
            other.disconnect_all("shutdown")
        closing = self.factory.disconnect_all("shutdown")
        closing.addTimeout(self._grace_seconds, self._clock)
        return closing.addErrback(lambda _: self._abort_the_rest())

    def _abort_the_rest(self) -> None:
        for protocol in list(self.factory.connections):
            protocol.transport.abortConnection()


class ListenerService(Service):
    """Listens on one endpoint description and logs the address it got."""

    def __init__(
        self, description: str, factory, reactor, number: int = 0, label: str = "chatd"
    ) -> None:
        self.description = description
        self.label = label
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
        """Start listening; a listener that cannot listen stops the server."""
        super().startService()
        try:
            endpoint, self.tls = server_endpoint(self._reactor, self.description)
        except Exception:
            self._failed(Failure())
            return
        endpoint.listen(self._factory).addCallbacks(self._listening, self._failed)

    def _listening(self, port) -> None:
        self._port = port
        address = _address_text(port.getHost()) + (" with TLS" if self.tls else "")
        log.info("{label} listening on {address}", label=self.label, address=address)
        self.listening.callback(port)

    def _failed(self, failure) -> None:
        log.failure("cannot listen on {description}", failure, description=self.description)
        self.listening.errback(failure)
        # Listening fails at once for a port in use or a missing certificate,
        # which under twistd is before the reactor runs: stop it once it does.
        self._reactor.callWhenRunning(self._reactor.stop)

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
    """A whole chatd server: storage, chat service, connections and listeners."""

    def __init__(self, config: Config, reactor=None) -> None:
        super().__init__()
        if reactor is None:
            from twisted.internet import reactor
        self.config = config
        # Set by build_server: the lock that keeps other servers off the database.
        self.database_lock: DatabaseLock | None = None
        self.metrics = ChatdMetrics()
        self.telemetry = Telemetry(self.metrics, log_messages=config.log_messages)
        self.database = Database(
            config.db_path, reactor,
            on_commit=self.metrics.observe_commit, on_checkpoint=self.metrics.observe_checkpoint,
        )
        self.hasher = PasswordHasher(
            reactor, config.bcrypt_rounds, config.bcrypt_workers,
            on_timing=self.metrics.observe_bcrypt, queue_limit=config.bcrypt_queue,
        )
        self.chat = ChatService(
            self.database, reactor, config.account_poll_seconds, telemetry=self.telemetry,
            mailbox_limit=config.mailbox_limit,
        )
        self.accounts = Accounts(self.database, self.hasher, reactor, config.registration_open)
        self.portal = make_portal(self.chat, self.accounts)
        self.factory = ChatServerFactory(
            config, self.accounts, self.portal, reactor, telemetry=self.telemetry
        )
        self.metrics.watch_server(self)
        StorageService(self.database, self.hasher, reactor).setServiceParent(self)
        self.chat.setServiceParent(self)
        RetentionService(
            self.database, reactor, self.chat, self.telemetry,
            config.room_history_days, config.stored_message_days,
        ).setServiceParent(self)
        ReactorLagProbe(reactor, self.metrics.reactor_lag_seconds).setServiceParent(self)
        self.metrics_listener = None
        if config.metrics_listen is not None:
            self.metrics_listener = ListenerService(
                config.metrics_listen,
                metrics_site(self.metrics, self.database, reactor),
                reactor,
                label="chatd metrics",
            )
            self.metrics_listener.setServiceParent(self)
        self.irc = IRCFactory(
            config, self.accounts, self.portal, reactor, self.chat,
            limits=self.factory.limits, telemetry=self.telemetry,
        )
        ConnectionsService(
            self.factory, reactor, config.shutdown_grace_seconds, others=[self.irc]
        ).setServiceParent(self)
        self.listeners = [
            ListenerService(description, self.factory, reactor, number)
            for number, description in enumerate(config.listen)
        ]
        self.irc_listeners = [
            ListenerService(description, self.irc, reactor, number, label="chatd irc")
            for number, description in enumerate(config.irc_listen)
        ]
        for listener in [*self.listeners, *self.irc_listeners]:
            listener.setServiceParent(self)
        listening = [
            *self.listeners,
            *self.irc_listeners,
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
        """Start everything, logging the settings that matter."""
        self.telemetry.server_starting(
            database=self.config.db_path,
            registration="open" if self.config.registration_open else "closed",
            bcrypt_cost=self.config.bcrypt_rounds,
            metrics=self.config.metrics_listen or "off",
        )
        super().startService()

    def stopService(self) -> defer.Deferred:
        """Stop everything in reverse order, logging the start and the end of it."""
        self.telemetry.server_stopping()
        stopping = super().stopService()
        return stopping.addCallback(lambda _: self.telemetry.server_stopped())


def load_config(environ: Mapping[str, str] | None = None) -> Config:
    """The settings in ``environ`` (default: the process's); a bad one exits with status 2."""
    try:
        return Config.from_environ(environ)
    except ConfigError as error:
        print(f"chatd: {error}", file=sys.stderr)
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
    return lock_database(config.db_path)


def build_server(config: Config) -> "ChatdServer":
    """A server for ``config`` holding its database's lock; exit 1 naming the holder if held."""
    try:
        lock = claim_database(config)
    except DatabaseInUse as error:
        print(f"chatd: {error}", file=sys.stderr)
        raise SystemExit(1) from None
    server = ChatdServer(config)
    server.database_lock = lock
    return server


def make_application(environ: Mapping[str, str] | None = None) -> Application:
    """The twistd application for the settings in ``environ`` (default: the process's)."""
    application = Application("chatd")
    build_server(load_config(environ)).setServiceParent(application)
    return application
