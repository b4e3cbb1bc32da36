"""Logins through twisted.cred: a checker over the account table, and the realm.

The flow is Twisted's own: the protocol hands ``UsernamePassword`` and
itself (the mind) to a ``Portal``; ``AccountChecker`` turns the credentials
into an avatar id (the account's display name) or fails; ``ChatRealm``
turns that id into a logged-in ``Session`` of the chat service, with the
logout callable that ends it.
"""

from twisted.cred import credentials, error
from twisted.cred.checkers import ICredentialsChecker
from twisted.cred.portal import IRealm, Portal
from twisted.internet import defer
from zope.interface import implementer

from chatd.auth.accounts import BAD_CREDENTIALS, Accounts
from chatd.core.errors import ChatError
from chatd.core.interfaces import IChatClient, IChatSession
from chatd.core.service import ChatService
from chatd.ops.telemetry import ObservedPortal


class BadCredentials(error.UnauthorizedLogin):
    """Unknown user or wrong password: deliberately the same to the client."""


class AddressedCredentials(credentials.UsernamePassword):
    """A user name and password, and the source address the login came from.

    The address names the login's turn in the bcrypt workers' fair queue.
    """

    def __init__(self, username, password, address: str | None) -> None:
        super().__init__(username, password)
        self.address = address


class LoginIdentity(str):
    """The avatar id of a checked login: the account's display name, plus what the
    session must be checked against again when it starts.

    ``account_id`` is the account's identity, users.id and users.incarnation
    (a session is bound to it, not to the name); ``seen_event`` the newest account event before the
    password check began: a ban, deletion, kick or password change recorded
    after it was made while the check ran, and stops the login.
    """

    account_id: tuple[int, int]
    seen_event: int

    def __new__(
        cls, name: str, account_id: tuple[int, int], seen_event: int
    ) -> "LoginIdentity":
        identity = super().__new__(cls, name)
        identity.account_id = account_id
        identity.seen_event = seen_event
        return identity


@implementer(ICredentialsChecker)
class AccountChecker:
    """Checks user name and password against the accounts in SQLite.

    A banned account fails with ``banned`` only after its password matched,
    so a ban tells nothing to someone who does not know the password.
    """

    credentialInterfaces = (credentials.IUsernamePassword,)

    def __init__(self, accounts: Accounts) -> None:
        self._accounts = accounts

    @defer.inlineCallbacks
    def requestAvatarId(self, credentials: credentials.IUsernamePassword):
        """Fire with the account's display name, or fail with ``UnauthorizedLogin``."""
        name = credentials.username
        if isinstance(name, bytes):
            name = name.decode("utf-8", "replace")
        address = getattr(credentials, "address", None)
        account, seen = yield self._accounts.login_check(name, credentials.password, address)
        if account is None:
            raise BadCredentials(BAD_CREDENTIALS)
        if account.banned:
            raise ChatError("banned", "this account is banned")
        return LoginIdentity(account.name, account.identity, seen)


@implementer(IRealm)
class ChatRealm:
    """Gives each successful login a ``Session`` of the chat service."""

    def __init__(self, service: ChatService) -> None:
        self._service = service

    def requestAvatar(self, avatarId, mind, *interfaces):
        """Start a session for ``avatarId`` that delivers through ``mind``."""
        if IChatSession not in interfaces:
            raise NotImplementedError("chatd only gives IChatSession avatars")
        starting = self._service.start_session(avatarId, IChatClient(mind))
        return starting.addCallback(lambda session: (IChatSession, session, session.logout))


def make_portal(service: ChatService, accounts: Accounts) -> ObservedPortal:
    """The portal every login of this server goes through, reporting to its telemetry."""
    accounts.on_created = service.account_created
    return ObservedPortal(Portal(ChatRealm(service), [AccountChecker(accounts)]), service.telemetry)
