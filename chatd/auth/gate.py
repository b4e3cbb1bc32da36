"""The policy every door shares: who may log in, register, change a password,
join rooms and store messages, and how often.

A door (the line protocol, IRC, the web page through the line door) parses
what its client sent, calls the ``Gate`` and renders the outcome in its own
form; it holds no throttle and no limit of its own. The gate owns the
admissions of ``chatd.limits`` (login throttle, registration limit, the
password-change allowance, the caps on rooms and on stored messages), the
operator telemetry of each outcome, and the way to the portal, so a limit
enforced for one door is enforced for all of them in the same way.

Each method raises ``ChatError`` at once for what it refuses without
waiting (a throttle, a cap, a malformed name), and otherwise returns a
Deferred; a failure of that Deferred is a ``ChatError`` the door renders.
"""

from twisted.cred.error import UnauthorizedLogin
from twisted.internet import defer
from twisted.python.failure import Failure

from chatd.auth.accounts import BAD_CREDENTIALS
from chatd.auth.cred import AddressedCredentials
from chatd.auth.throttles import IN_FLIGHT_REFUSAL, RegistrationLimit
from chatd.cluster.policy import UNSHARED
from chatd.core.errors import ChatError
from chatd.core.interfaces import IChatSession
from chatd.core.names import PASSWORD_MAX_BYTES, fold, password_candidates, require_user_name
from chatd.frontends.limits import Limits
from chatd.ops.telemetry import Telemetry


class _LoginRefused(Exception):
    """The cluster's count of logins in flight from the address is full."""


class _Place:
    """An attempt's place in the cluster's count in flight: its ticket, once admitted
    (``UNSHARED`` on one node, or until then)."""

    __slots__ = ("ticket",)

    def __init__(self) -> None:
        self.ticket = UNSHARED

    def end(self, used: bool = False) -> None:
        """Give the place up; ``used`` when the attempt did what the limit counts."""
        self.ticket.end(used=used)


def _refused_or_guessed(failure: Failure, attempt, place: _Place) -> None:
    """End a password check that the cluster refused or that a wrong password failed,
    raising what the client is told; return for any other failure.

    A wrong password is counted (and announced to the other nodes) before its
    place in flight is given up: a node seeing the place free has been told.
    """
    if failure.check(_LoginRefused):
        attempt.abandoned()
        raise ChatError("too-many-attempts", IN_FLIGHT_REFUSAL)
    if failure.check(UnauthorizedLogin):
        attempt.failed()
        place.end()
        raise ChatError("bad-credentials", BAD_CREDENTIALS)


class Gate:
    """Accounts, logins and the per-user limits, the same for every door."""

    def __init__(
        self, config, limits: Limits, accounts, portal, telemetry: Telemetry, chat=None
    ) -> None:
        self.config = config
        self.limits = limits
        self.accounts = accounts
        self.portal = portal
        self.telemetry = telemetry
        # The chat service, for guests (who start a session without the portal).
        self.chat = chat
        # Cluster mode: the counts every node shares (a SharedLimits,
        # chatd/cluster/policy.py), checked after this node's own limits.
        self.shared = None

    # accounts -------------------------------------------------------------------------

    def register(
        self, name: str, password: str, address: str, peer: str, by=None
    ) -> defer.Deferred:
        """Create an account; fire with its name.

        Limited per source address (``CHATD_REGISTRATION_LIMIT``): a
        registration in flight holds its place until it ends. A name a guest
        is using may be registered only by that guest (its session ``by``).
        """
        self._require_no_other_guest(name, by)
        try:
            reservation = self.limits.registrations.admit(address)
        except ChatError:
            self.telemetry.limit_hit("registration", peer, None)
            raise
        def refused() -> None:
            self.telemetry.limit_hit("registration", peer, None)
            raise ChatError("too-many-attempts", RegistrationLimit.refusal)

        registering, place = self._when_admitted(
            lambda shared: shared.admit_registration(address),
            lambda: self.accounts.register(name, password, address),
            refused,
        )

        def created(created_name: str) -> str:
            reservation.used()
            place.end(used=True)
            return created_name

        def not_created(failure: Failure) -> Failure:
            reservation.abandoned()
            place.end()
            return failure

        registering.addCallbacks(created, not_created)
        return self.telemetry.watch_registration(registering, name, peer)

    def login(self, name: str, password: str, address: str, peer: str, mind) -> defer.Deferred:
        """Check the password through the portal and start a session for ``mind``.

        Fires with ``(session, logout)``; a wrong name or password fails with
        ``bad-credentials``. Throttled by address and by account
        (``CHATD_LOGIN_*``), each attempt counted in flight until its
        password check ends; a banned account's right password is no guess.
        """
        require_user_name(name)
        try:
            attempt = self.limits.logins.admit(address, fold(name))
        except ChatError as error:
            self.telemetry.login_failed(name, peer, error.code)
            raise
        candidates = password_candidates(password)
        if max(len(encoded) for encoded in candidates) > PASSWORD_MAX_BYTES:
            attempt.failed()
            self.telemetry.login_failed(name, peer, "bad-credentials")
            raise ChatError("bad-credentials", BAD_CREDENTIALS)
        def refused() -> None:
            self.telemetry.login_failed(name, peer, "too-many-attempts")
            raise _LoginRefused()

        checking, place = self._login_in_turn(
            address,
            lambda: self._first_form_that_passes(
                name, candidates, address,
                lambda credentials: self.portal.login(credentials, mind, IChatSession),
            ),
            refused,
        )

        def succeeded(login) -> tuple:
            place.end()
            attempt.succeeded()
            _interface, session, logout = login
            return session, logout

        def failed(failure: Failure):
            _refused_or_guessed(failure, attempt, place)
            if failure.check(ChatError) and failure.value.code in ("banned", "kicked"):
                # The password was right: this address is not guessing.
                attempt.succeeded()
                place.end()
            else:
                place.end()
                # A busy server, or an account changed while its password was
                # checked: not a guess either way.
                attempt.abandoned()
            return failure

        return checking.addCallbacks(succeeded, failed)

    def oper(self, session, name: str, password: str, address: str) -> defer.Deferred:
        """Make ``session``'s user a server operator with the account ``name``'s password
        (IRC's ``OPER``, the line door's ``/oper``); fire with the account's name.

        Checked by the portal's checker on the bcrypt pool like a login, and
        throttled like one (``CHATD_LOGIN_*``): in cluster mode its failures count
        on every node, and it holds a place in the cluster's count of attempts in
        flight from its address while its password is checked, as a login does.
        The password is checked before the list, so an unknown account, a wrong
        password and an account not in ``CHATD_OPERATORS`` cost the same; the
        first two fail with ``bad-credentials``, the last (right password) with
        ``forbidden``.
        """
        attempt = self.limits.logins.admit(address, fold(name))
        candidates = password_candidates(password)
        if max(len(encoded) for encoded in candidates) > PASSWORD_MAX_BYTES:
            attempt.failed()
            raise ChatError("bad-credentials", BAD_CREDENTIALS)

        def refused() -> None:
            raise _LoginRefused()

        checking, place = self._login_in_turn(
            address,
            lambda: self._first_form_that_passes(name, candidates, address, self.portal.check),
            refused,
        )

        def checked(identity: str) -> str:
            attempt.succeeded()
            place.end()
            if fold(identity) not in self.config.operators:
                raise ChatError("forbidden", f"{identity} is not a server operator")
            # A connection gone while the password was checked has nobody to empower.
            if session.active:
                session.set_oper(True)
            return str(identity)

        def failed(failure: Failure) -> Failure:
            _refused_or_guessed(failure, attempt, place)
            place.end()
            if failure.check(ChatError) and failure.value.code == "banned":
                # The right password of a banned account: no guess, and no operator.
                attempt.succeeded()
                raise ChatError("forbidden", "that account is banned")
            attempt.abandoned()
            return failure

        return checking.addCallbacks(checked, failed)

    # guests ---------------------------------------------------------------------------

    def guest(self, name: str, peer: str, mind) -> defer.Deferred:
        """Start a guest's session under ``name`` (``CHATD_GUESTS=on``); fire with
        ``(session, logout)``.

        A guest has no account and no password: its name must be a valid
        user name, no account's (``user-exists``: log in instead) and nobody's
        online, guest or not (``user-exists``). Refused with ``forbidden`` when
        guests are off.
        """
        if not self.config.guests:
            raise ChatError("forbidden", "guests are not allowed here: log in")
        require_user_name(name)
        self._require_free(name)
        checking = self.accounts.exists(name)

        def checked(taken: bool) -> tuple:
            if taken:
                raise ChatError("user-exists", f"{name} is an account: log in to use it")
            self._require_free(name)
            session = self.chat.start_guest(name, mind)
            self.telemetry.guest_started(name, peer)
            return session, session.logout

        return checking.addCallback(checked)

    def _require_free(self, name: str) -> None:
        if fold(name) in self.chat.users:
            raise ChatError("user-exists", f"{name} is in use")

    def _require_no_other_guest(self, name: str, by) -> None:
        user = self.chat.users.get(fold(name)) if self.chat is not None else None
        if user is not None and user.guest and (by is None or by.user is not user):
            raise ChatError("user-exists", f"{name} is in use by a guest")

    def _first_form_that_passes(
        self, name: str, candidates: tuple[bytes, ...], address: str, check
    ) -> defer.Deferred:
        """``check(credentials)`` with the first form of the password; a wrong one
        tries the next form."""
        first, rest = candidates[0], candidates[1:]
        checking = check(AddressedCredentials(name, first, address))
        if rest:

            def try_next(failure: Failure):
                failure.trap(UnauthorizedLogin)
                return self._first_form_that_passes(name, rest, address, check)

            checking.addErrback(try_next)
        return checking

    def _login_in_turn(self, address: str, check, refused) -> tuple[defer.Deferred, _Place]:
        """A password check (a login or an OPER) holding its place in the cluster's
        count of attempts in flight from ``address``, as ``_when_admitted`` runs it."""
        room = self.limits.logins.room(address)
        return self._when_admitted(lambda shared: shared.admit_login(address, room), check, refused)

    def _when_admitted(self, admit, run, refused) -> tuple[defer.Deferred, _Place]:
        """``run()`` now on one node; in cluster mode once ``admit(shared)`` gives it a
        place in the count every node shares (``refused()`` raises when it is full).

        Returns the Deferred of ``run()`` and the attempt's place, to be ended
        when the attempt is over.
        """
        place = _Place()
        if self.shared is None:
            return run(), place

        def admitted(ticket):
            if ticket is None:
                refused()
            place.ticket = ticket
            return run()

        return admit(self.shared).addCallback(admitted), place

    def change_password(
        self, session, old: str, new: str, address: str, peer: str
    ) -> defer.Deferred:
        """Change the session's account password; its other sessions end.

        A wrong old password is a guess like a failed login: a stolen session
        must not be a way round the login throttle. Right or wrong, each
        change costs two bcrypt jobs, so each also counts against the
        account's own allowance (``CHATD_PASSWD_LIMIT``).
        """
        key = fold(session.name)
        attempt = self.limits.logins.admit(address, key)
        try:
            reservation = self.limits.password_changes.admit(key)
        except ChatError:
            attempt.abandoned()
            raise
        changing = self.accounts.change_password(
            session.name, old, new, address, still_wanted=lambda: session.active
        )

        def changed(event_id: int) -> None:
            reservation.used()
            attempt.succeeded()
            session.password_changed(event_id)

        def refused(failure: Failure) -> Failure:
            if failure.check(ChatError) and failure.value.code == "bad-credentials":
                reservation.used()
                attempt.failed()
            else:
                reservation.abandoned()
                attempt.abandoned()
            return failure

        changing.addCallbacks(changed, refused)
        return self.telemetry.watch_password_change(changing, session.name, peer)

    # per-user limits on what a session does -------------------------------------------

    def join(self, session, room: str, address: str) -> defer.Deferred:
        """``session.join(room)`` under the caps on rooms.

        At most ``CHATD_MAX_ROOMS_PER_USER`` rooms per user, and new rooms
        opened per source address under ``CHATD_ROOM_CREATION_LIMIT``; joins
        still in flight count, so parallel joins cannot pass either cap.
        Fails (or raises) ``too-many-rooms``.
        """
        state = session.joining(room)
        if state == "member":
            return session.join(room)
        limits, user = self.limits, fold(session.name)
        most = self.config.max_rooms_per_user
        if session.room_count() + limits.joins_in_flight.get(user, 0) >= most:
            raise ChatError("too-many-rooms", f"you are in {most} rooms already; /part one first")
        opening = None
        if state == "closed":
            opening = limits.room_creations.admit(address)
            if opening is None:
                raise ChatError(
                    "too-many-rooms",
                    "too many new rooms from your address; "
                    + limits.room_creations.wait_text(address),
                )
        limits.join_started(user)

        def joined(result):
            limits.join_ended(user)
            if opening is not None:
                opening.unused() if isinstance(result, Failure) else opening.spent()
            return result

        try:
            joining = session.join(room)
        except Exception:
            joined(Failure())
            raise
        return joining.addBoth(joined)

    def message(
        self, session, user: str, text: str, address: str, kind: str = "say", tags=()
    ) -> defer.Deferred:
        """``session.message(user, text, kind, tags)`` under the limit on stored messages.

        Storing for someone offline writes to the database: limited per
        address and per account (``CHATD_STORED_MESSAGE_LIMIT``), counting the
        ones still being stored. Fails (or raises) ``rate-limited``.
        """
        storing = None
        if not session.is_online(require_user_name(user)):
            if getattr(session, "guest", False):
                raise ChatError(
                    "forbidden", f"{user} is not online, and guests cannot leave messages: log in"
                )
            keys = (address, "user:" + fold(session.name))
            storing = self.limits.stored_messages.admit(*keys)
            if storing is None:
                raise ChatError(
                    "rate-limited",
                    "too many messages stored for people who are away; "
                    + self.limits.stored_messages.wait_text(*keys),
                )
        if storing is None:
            return session.message(user, text, kind, tags)

        def sent(result):
            stored = not isinstance(result, Failure) and result[1] == "stored"
            storing.spent() if stored else storing.unused()
            return result

        try:
            sending = session.message(user, text, kind, tags)
        except Exception:
            storing.unused()
            raise
        return sending.addBoth(sent)
