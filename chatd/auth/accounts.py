"""Accounts: registering, authenticating and changing passwords.

Each operation reads or writes through the ``Database`` and hashes through
the ``PasswordHasher``, so none of it runs on the reactor thread. bcrypt
jobs name the address (and account) they are for, so the hasher's fair
queue can take turns between them.
"""

from collections.abc import Callable

from twisted.internet import defer
from twisted.logger import Logger

from chatd.auth.passwords import PasswordHasher
from chatd.core.errors import ChatError
from chatd.core.names import fold, password_candidates, require_strong_password, require_user_name
from chatd.storage import rows, transactions
from chatd.storage.sqlite.database import Database

BAD_CREDENTIALS = "unknown user or wrong password"

log = Logger()


class Accounts:
    """The account operations of a running server."""

    def __init__(
        self, database: Database, hasher: PasswordHasher, clock, registration_open: bool
    ) -> None:
        self._database = database
        self._hasher = hasher
        self._clock = clock
        self.registration_open = registration_open
        # Told the name key of each account created here (the chat service
        # ends any session left under that name by an account deleted before).
        self.on_created: Callable[[str], None] | None = None

    def _now(self) -> int:
        return int(self._clock.seconds() * 1000)

    @defer.inlineCallbacks
    def register(self, name: str, password: str, address: str | None = None):
        """Create an account; fire with its name, or fail with a ``ChatError``."""
        if not self.registration_open:
            raise ChatError("registration-closed", "ask the operator for an account")
        require_user_name(name)
        encoded = require_strong_password(password)
        # Checked before hashing too, so a taken name costs no bcrypt work;
        # the insert below still settles a race between two registrations.
        taken = yield self._database.read(transactions.user_exists, fold(name))
        if taken:
            raise ChatError("user-exists", f"{name} is taken")
        password_hash = yield self._hasher.hash(encoded, address, fold(name))
        yield self._database.write(transactions.create_user, name, password_hash, self._now())
        if self.on_created is not None:
            self.on_created(fold(name))
        return name

    def exists(self, name: str) -> defer.Deferred:
        """Fire with whether an account is called ``name``."""
        return self._database.read(transactions.user_exists, fold(name))

    @defer.inlineCallbacks
    def login_check(
        self, name: str, password: bytes, address: str | None = None, rehash: bool = True
    ):
        """Fire with ``(account or None, event id)``: the account if ``password`` is
        right, and the newest account event id as it was before the check began.

        An unknown name costs a bcrypt check against a dummy hash at the current
        cost, so it cannot be told from a wrong password by its answer or its
        timing. A right password whose hash is at another cost than the current
        one is hashed again at the current cost.
        """
        key = fold(name)
        account, seen = yield self._database.read(transactions.find_account_for_login, key)
        stored = None if account is None else account.password_hash
        matched = yield self._hasher.check(password, stored, address, key)
        if not matched:
            return None, seen
        if rehash and self._hasher.needs_rehash(stored):
            yield self._rehash(account, password, address)
        return account, seen

    @defer.inlineCallbacks
    def _rehash(self, account: rows.Account, password: bytes, address: str | None):
        """Store ``password`` again at the current cost; a failure only leaves it for later."""
        try:
            upgraded = yield self._hasher.hash(password, address, fold(account.name))
            yield self._database.write(
                transactions.upgrade_password_hash, account.id, account.password_hash, upgraded
            )
        except Exception:
            log.failure("rehashing the password of {name}", name=account.name)

    @defer.inlineCallbacks
    def authenticate(self, name: str, password: bytes, address: str | None = None):
        """Fire with the account if ``password`` is right, else with None."""
        account, _seen = yield self.login_check(name, password, address)
        return account

    @defer.inlineCallbacks
    def change_password(
        self,
        name: str,
        old: str,
        new: str,
        address: str | None = None,
        still_wanted: Callable[[], bool] | None = None,
    ):
        """Replace the password of ``name`` after checking the old one.

        ``still_wanted``, if given, is asked once the old password matched: a
        session ended meanwhile (by another change, a kick) changes nothing.

        Fires with the id of the ``passwd`` account event it recorded: sessions
        of the account that started before it end, and so do logins in progress.
        """
        encoded = require_strong_password(new)
        # No rehash of the old password: the new one is hashed at the current cost.
        for candidate in password_candidates(old):
            account, _seen = yield self.login_check(name, candidate, address, rehash=False)
            if account is not None:
                break
        if account is None:
            raise ChatError("bad-credentials", "the old password is wrong")
        if still_wanted is not None and not still_wanted():
            raise ChatError("session-ended", "the session ended before the change was made")
        password_hash = yield self._hasher.hash(encoded, address, fold(name))
        event_id = yield self._database.write(
            transactions.change_password_hash, account.identity, password_hash, self._now()
        )
        if event_id is None:
            raise ChatError("bad-credentials", "the account is gone")
        return event_id
