"""Accounts: registering, authenticating and changing passwords.

Each operation reads or writes through the ``Database`` and hashes through
the ``PasswordHasher``, so none of it runs on the reactor thread.
"""

from twisted.internet import defer

from chatd import storage
from chatd.errors import ChatError
from chatd.names import fold, password_candidates, require_strong_password, require_user_name
from chatd.passwords import PasswordHasher

BAD_CREDENTIALS = "unknown user or wrong password"


class Accounts:
    """The account operations of a running server."""

    def __init__(
        self, database: storage.Database, hasher: PasswordHasher, clock, registration_open: bool
    ) -> None:
        self._database = database
        self._hasher = hasher
        self._clock = clock
        self.registration_open = registration_open

    def _now(self) -> int:
        return int(self._clock.seconds() * 1000)

    @defer.inlineCallbacks
    def register(self, name: str, password: str):
        """Create an account; fire with its name, or fail with a ``ChatError``."""
        if not self.registration_open:
            raise ChatError("registration-closed", "ask the operator for an account")
        require_user_name(name)
        encoded = require_strong_password(password)
        # Checked before hashing too, so a taken name costs no bcrypt work;
        # the insert below still settles a race between two registrations.
        taken = yield self._database.read(storage.user_exists, fold(name))
        if taken:
            raise ChatError("user-exists", f"{name} is taken")
        password_hash = yield self._hasher.hash(encoded)
        yield self._database.write(storage.create_user, name, password_hash, self._now())
        return name

    @defer.inlineCallbacks
    def authenticate(self, name: str, password: bytes):
        """Fire with the account if ``password`` is right, else with None.

        An unknown name costs a bcrypt check against a dummy hash, so it
        cannot be told from a wrong password by its answer or its timing.
        """
        account = yield self._database.read(storage.find_account, fold(name))
        stored = None if account is None else account.password_hash
        matched = yield self._hasher.check(password, stored)
        return account if matched else None

    @defer.inlineCallbacks
    def change_password(self, name: str, old: str, new: str):
        """Replace the password of ``name`` after checking the old one."""
        encoded = require_strong_password(new)
        for candidate in password_candidates(old):
            account = yield self.authenticate(name, candidate)
            if account is not None:
                break
        if account is None:
            raise ChatError("bad-credentials", "the old password is wrong")
        password_hash = yield self._hasher.hash(encoded)
        yield self._database.write(storage.set_password_hash, fold(name), password_hash)
