"""What chatd tells its operators: one log event, and one count, per notable thing.

Every method of ``Telemetry`` logs one ``twisted.logger`` event in the
``chatd.events`` namespace and updates the server's ``ChatdMetrics``. Each
event carries ``chatd_event`` (``login``, ``login-failed``, ``limit-hit``, ...)
and its facts as separate keys (``user``, ``peer``, ``host``, ``reason``,
...), so a JSON-lines log (``CHATD_LOG_FORMAT=json``) can be filtered on them.

Two rules hold for every event, and for anything added here:

- **No password, ever.** No event takes a password, a credentials object,
  or a raw client line (a line may be ``/login name password``).
- **No message text** unless the operator turned it on with
  ``CHATD_LOG_MESSAGES=on``; then ``room_message`` and ``direct_message``
  log it. Otherwise messages are only counted.

How to reach it: the server builds one ``Telemetry`` and hands it to the
``ChatServerFactory`` and the ``ChatService``. In ``ChatProtocol`` it is
``self.server.telemetry``; in ``ChatService`` it is ``self.telemetry``.

For limits and slow readers (the hardening work)::

    # A limit refused something but the connection stays open (a rate limit,
    # a full send queue...). A throttled login is reported as a failed login,
    # ``login_failed(name, peer, "too-many-attempts")``, which counts both.
    # ``limit`` names the limit; extra keyword facts (numbers, never client
    # text) go into the event:
    self.server.telemetry.limit_hit("rate", self.peer, user, lines_per_second=10)

    # The server closes a connection: ``ChatProtocol.disconnect(reason)`` already
    # reports it (counted in chatd_disconnects_total{reason}). A connection
    # aborted without going through it, a slow reader whose send queue is
    # full, is reported by the code that aborts it:
    self.server.telemetry.disconnected("slow-reader", self.peer, user, queued_bytes=n)

``slow-reader``, ``flood`` and ``idle-timeout`` disconnects are exported as 0
from the start, so alerts on them work before the first one happens.
"""

from twisted.cred.error import UnauthorizedLogin
from twisted.internet import defer
from twisted.logger import Logger
from twisted.python.failure import Failure

from chatd.core.errors import ChatError
from chatd.ops.metrics import ChatdMetrics

log = Logger(namespace="chatd.events")

# Closing reasons another event already logs (a logout, a kick, the shutdown):
# counted, but not logged a second time.
_LOGGED_ELSEWHERE = frozenset({"quit", "shutdown", "banned", "kicked", "account-deleted"})


def host_of(peer: str) -> str:
    """The address part of a ``host:port`` peer, for matching in fail2ban and the like."""
    host, colon, port = peer.rpartition(":")
    return host if colon and port.isdigit() else peer


def _outcome(failure: Failure) -> str:
    if failure.check(ChatError):
        return failure.value.code
    if failure.check(UnauthorizedLogin):
        return "bad-credentials"
    return "error"


class Telemetry:
    """The log events and counts of one server; see the module docstring."""

    def __init__(self, metrics: ChatdMetrics | None = None, log_messages: bool = False) -> None:
        self.metrics = metrics or ChatdMetrics()
        self.log_messages = log_messages
        self._traffic = self.metrics.traffic

    # --- the server --------------------------------------------------------

    def server_starting(
        self, database: str, registration: str, bcrypt_cost: int, metrics: str
    ) -> None:
        """The server is starting with these settings."""
        log.info(
            "chatd starting: database {database}, registration {registration},"
            " bcrypt cost {bcrypt_cost}, metrics {metrics}",
            chatd_event="start",
            database=database,
            registration=registration,
            bcrypt_cost=bcrypt_cost,
            metrics=metrics,
        )

    def server_stopping(self) -> None:
        """The server was asked to stop."""
        log.info("chatd stopping", chatd_event="stopping")

    def server_stopped(self) -> None:
        """Every connection is closed and the database is closed."""
        log.info("chatd stopped", chatd_event="stop")

    # --- accounts and sessions ----------------------------------------------

    def logged_in(self, user: str, peer: str) -> None:
        """A login succeeded."""
        self.metrics.logins.labels("ok").inc()
        log.info("login {user} from {peer}", chatd_event="login", user=user, peer=peer)

    def guest_started(self, user: str, peer: str) -> None:
        """A guest (``CHATD_GUESTS``) started chatting without an account."""
        log.info("guest {user} from {peer}", chatd_event="guest", user=user, peer=peer)

    def login_failed(self, user: str, peer: str, reason: str) -> None:
        """A login failed: ``reason`` is the error code the client got.

        A login refused by the throttle (``too-many-attempts``) is a failed
        login and a limit hit at once: one event, both counts.
        """
        outcome = reason if reason in ("bad-credentials", "banned", "too-many-attempts") else (
            "error"
        )
        self.metrics.logins.labels(outcome).inc()
        if reason == "too-many-attempts":
            self.metrics.limit_hits.labels("login").inc()
        log.warn(
            "failed login for {user} from {host}: {reason}",
            chatd_event="login-failed",
            user=user,
            host=host_of(peer),
            peer=peer,
            reason=reason,
        )

    def logged_out(self, user: str, peer: str) -> None:
        """A session ended (quit, dropped connection, kick or shutdown)."""
        log.info("logout {user} from {peer}", chatd_event="logout", user=user, peer=peer)

    def registered(self, user: str, peer: str) -> None:
        """An account was created from a connection."""
        self.metrics.registrations.labels("ok").inc()
        log.info("registered {user} from {peer}", chatd_event="register", user=user, peer=peer)

    def registration_failed(self, user: str, peer: str, reason: str) -> None:
        """A registration was refused with the error code ``reason``."""
        self.metrics.registrations.labels(reason).inc()
        log.info(
            "registration of {user} from {peer} refused: {reason}",
            chatd_event="register-failed",
            user=user,
            host=host_of(peer),
            peer=peer,
            reason=reason,
        )

    def password_changed(self, user: str, peer: str) -> None:
        """A user changed their password."""
        log.info("password changed for {user} from {peer}", chatd_event="passwd",
                 user=user, peer=peer)

    def password_change_failed(self, user: str, peer: str, reason: str) -> None:
        """A password change was refused with the error code ``reason``."""
        log.warn(
            "password change for {user} from {host} refused: {reason}",
            chatd_event="passwd-failed",
            user=user,
            host=host_of(peer),
            peer=peer,
            reason=reason,
        )

    def watch_registration(self, registering: defer.Deferred, user: str, peer: str):
        """Report how ``registering`` ends; its result passes through unchanged."""

        def failed(failure: Failure) -> Failure:
            self.registration_failed(user, peer, _outcome(failure))
            return failure

        registering.addCallbacks(self._passing(self.registered, user, peer), failed)
        return registering

    def watch_password_change(self, changing: defer.Deferred, user: str, peer: str):
        """Report how ``changing`` ends; its result passes through unchanged."""

        def failed(failure: Failure) -> Failure:
            self.password_change_failed(user, peer, _outcome(failure))
            return failure

        changing.addCallbacks(self._passing(self.password_changed, user, peer), failed)
        return changing

    @staticmethod
    def _passing(report, *args):
        def passing(result):
            report(*args)
            return result

        return passing

    def kicked(self, user: str, reason: str, sessions: int) -> None:
        """An operator's ban or deletion closed every session of ``user``."""
        log.warn(
            "disconnecting {user} ({sessions} sessions): {reason}",
            chatd_event="kick",
            user=user,
            reason=reason,
            sessions=sessions,
        )

    # --- limits and closed connections ----------------------------------------

    def limit_hit(self, limit: str, peer: str, user: str | None = None, **facts: object) -> None:
        """A limit refused something; the connection stays open.

        ``facts`` are numbers or names describing the limit, never client text.
        """
        self.metrics.limit_hits.labels(limit).inc()
        log.warn(
            "limit {limit} hit by {who} from {peer}",
            chatd_event="limit-hit",
            limit=limit,
            who=user or "(not logged in)",
            user=user,
            host=host_of(peer),
            peer=peer,
            **facts,
        )

    def disconnected(self, reason: str, peer: str, user: str | None = None, **facts) -> None:
        """The server closed a connection for ``reason`` (the ``BYE`` reason)."""
        self.metrics.disconnects.labels(reason).inc()
        if reason not in _LOGGED_ELSEWHERE:
            log.warn(
                "closed connection of {who} from {peer}: {reason}",
                chatd_event="disconnect",
                reason=reason,
                who=user or "(not logged in)",
                user=user,
                host=host_of(peer),
                peer=peer,
                **facts,
            )

    # --- traffic ----------------------------------------------------------------

    def room_message(self, room: str, sender: str, text: str) -> None:
        """A room message was committed; its text is logged only when enabled."""
        self._traffic.messages["room"] += 1
        if self.log_messages:
            log.info(
                "message {room} {sender}: {text}",
                chatd_event="message", room=room, sender=sender, text=text,
            )

    def direct_message(self, sender: str, recipient: str, text: str, stored: bool) -> None:
        """A direct message was delivered live or stored; text only when enabled."""
        kind = "stored" if stored else "direct"
        self._traffic.messages[kind] += 1
        if self.log_messages:
            log.info(
                "direct message {sender} to {recipient} ({kind}): {text}",
                chatd_event="direct-message",
                sender=sender, recipient=recipient, kind=kind, text=text,
            )

    def delivered(self, kind: str, size: int, lines: int = 1) -> None:
        """``lines`` event lines of type ``kind`` (``MSG``, ``DM``, ...) went to a session.

        The hot path: reactor thread only (see ``chatd.ops.metrics.Traffic``).
        """
        traffic = self._traffic
        traffic.deliveries[kind] = traffic.deliveries.get(kind, 0) + lines
        traffic.bytes_out += size

    def sent(self, size: int) -> None:
        """A reply line (``OK``, ``ERR``, ``HELLO``, ``BYE``) was written (reactor thread)."""
        self._traffic.bytes_out += size

    # --- retention -------------------------------------------------------------

    def purged(self, table: str, rows: int, before: str) -> None:
        """Retention deleted ``rows`` rows of ``table`` older than ``before``."""
        self.metrics.purged_rows.labels(table).inc(rows)
        log.info(
            "retention deleted {rows} rows of {table} older than {before}",
            chatd_event="purge", table=table, rows=rows, before=before,
        )


class ObservedLogout:
    """A session's logout that reports it first (one per session: slotted, not a closure)."""

    __slots__ = ("_logout", "_name", "_peer", "_telemetry")

    def __init__(self, telemetry: Telemetry, name: str, peer: str, logout) -> None:
        self._telemetry = telemetry
        self._name = name
        self._peer = peer
        self._logout = logout

    def __call__(self) -> None:
        """Report the logout, then log out."""
        self._telemetry.logged_out(self._name, self._peer)
        self._logout()


class ObservedPortal:
    """A twisted.cred ``Portal`` that reports every login and logout to ``Telemetry``.

    It wraps the portal rather than the protocol so that every way into a
    session (and every way a login fails, a throttle included) is seen in
    one place. The mind is the connection; its ``peer`` names the source.
    """

    def __init__(self, portal, telemetry: Telemetry) -> None:
        self._portal = portal
        self._telemetry = telemetry

    def listCredentialsInterfaces(self):
        """The wrapped portal's credential interfaces."""
        return self._portal.listCredentialsInterfaces()

    def check(self, credentials) -> defer.Deferred:
        """Check ``credentials`` with the wrapped portal's checker, as a login does,
        but start no session: fire with the avatar id or fail (``UnauthorizedLogin``)."""
        from twisted.cred.credentials import IUsernamePassword

        checker = self._portal.checkers[IUsernamePassword]
        return defer.maybeDeferred(checker.requestAvatarId, credentials)

    def login(self, credentials, mind, *interfaces) -> defer.Deferred:
        """Log in through the wrapped portal, reporting the outcome and, later, the logout."""
        user = credentials.username
        if isinstance(user, bytes):
            user = user.decode("utf-8", "replace")
        peer = getattr(mind, "peer", "") or "unknown"
        telemetry = self._telemetry

        def succeeded(result):
            interface, avatar, logout = result
            name = getattr(avatar, "name", user)
            telemetry.logged_in(name, peer)
            return interface, avatar, ObservedLogout(telemetry, name, peer, logout)

        def failed(failure: Failure) -> Failure:
            telemetry.login_failed(user, peer, _outcome(failure))
            return failure

        return self._portal.login(credentials, mind, *interfaces).addCallbacks(succeeded, failed)
