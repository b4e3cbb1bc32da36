"""Passwords, the cred checker and realm, and the interfaces classes declare."""

import pytest
from twisted.cred.checkers import ICredentialsChecker
from twisted.cred.credentials import UsernamePassword
from twisted.cred.error import UnauthorizedLogin
from twisted.cred.portal import IRealm
from zope.interface.verify import verifyObject

from chatd.auth.cred import AccountChecker, ChatRealm
from chatd.auth.passwords import SCHEME, check_password, hash_password
from chatd.core.errors import ChatError
from chatd.core.interfaces import IChatClient, IChatSession
from chatd.frontends.line.protocol import ChatProtocol
from chatd.storage import transactions
from tests.support import ChatHarness, RecordingClient


def check(harness: ChatHarness, name: str, password: bytes):
    """Run the checker and return its result or failure value."""
    checker = AccountChecker(harness.accounts)
    outcome = []
    checker.requestAvatarId(UsernamePassword(name, password)).addBoth(outcome.append)
    result = outcome[0]
    return result.value if hasattr(result, "value") else result


@pytest.fixture
def accounts() -> ChatHarness:
    """A harness with alice (password1) and a banned mallory."""
    harness = ChatHarness()
    harness.accounts.register("alice", "password1")
    harness.accounts.register("Mallory", "password1")
    harness.database.write(transactions.set_banned, "mallory", True, 0)
    return harness


def test_right_password(accounts):
    """The right password gives the display name as avatar id."""
    assert check(accounts, "ALICE", b"password1") == "alice"


def test_wrong_password_and_unknown_user_fail_alike(accounts):
    """Both fail with the same UnauthorizedLogin message."""
    wrong = check(accounts, "alice", b"password2")
    unknown = check(accounts, "nobody", b"password1")
    assert isinstance(wrong, UnauthorizedLogin) and isinstance(unknown, UnauthorizedLogin)
    assert str(wrong) == str(unknown)


def test_unknown_user_costs_a_bcrypt_check(accounts, monkeypatch):
    """An unknown name is checked against the dummy hash: the same work as a wrong password."""
    import chatd.auth.passwords

    checked = []
    real = chatd.auth.passwords.check_password
    monkeypatch.setattr(
        chatd.auth.passwords, "check_password", lambda p, s: checked.append(s) or real(p, s)
    )
    check(accounts, "nobody", b"password1")
    check(accounts, "alice", b"password2")
    assert len(checked) == 2 and all(stored.startswith(SCHEME) for stored in checked)


def test_banned_only_after_the_right_password(accounts):
    """A banned account is 'banned' with its password, 'bad credentials' without."""
    banned = check(accounts, "mallory", b"password1")
    assert isinstance(banned, ChatError) and banned.code == "banned"
    assert isinstance(check(accounts, "mallory", b"password2"), UnauthorizedLogin)


@pytest.mark.parametrize("length", [72, 73, 1024])
def test_every_byte_of_a_long_password_counts(length):
    """Passwords equal in their first 72 (or 1023) bytes are still different passwords."""
    password = b"p" * length
    stored = hash_password(password, 4)
    assert check_password(password, stored)
    assert not check_password(password[:-1] + b"q", stored)
    assert not check_password(password[:72], stored) or length == 72


def test_stored_hashes_are_bcrypt_at_the_configured_cost():
    """The stored form names the scheme and carries bcrypt's cost."""
    stored = hash_password(b"password1", 5)
    assert stored.startswith(SCHEME + "$2b$05$")


def test_an_unknown_hash_scheme_never_matches():
    """A stored value in any other form is not a match (and not an error)."""
    assert not check_password(b"password1", "plain:password1")


def test_interfaces_are_implemented():
    """Every class that declares an interface provides it."""
    harness = ChatHarness()
    client = harness.logged_in("alice")
    session = client.protocol.session
    assert verifyObject(ICredentialsChecker, AccountChecker(harness.accounts))
    assert verifyObject(IRealm, ChatRealm(harness.chat))
    assert verifyObject(IChatSession, session)
    assert verifyObject(IChatClient, client.protocol)
    assert verifyObject(IChatClient, RecordingClient())
    assert isinstance(client.protocol, ChatProtocol)


def test_every_other_implementer_provides_what_it_declares(tmp_path):
    """SendQueue, ReloadableTLS, JsonLinesObserver, ReportingEndpoint, the plugin maker."""
    import io

    from twisted.application.service import IServiceMaker
    from twisted.internet.endpoints import TCP4ClientEndpoint
    from twisted.internet.interfaces import (
        IOpenSSLServerConnectionCreator,
        IPushProducer,
        IStreamClientEndpoint,
    )
    from twisted.internet.task import Clock
    from twisted.internet.testing import StringTransport
    from twisted.logger import ILogObserver
    from twisted.plugin import IPlugin
    from zope.interface import providedBy

    from chatd.client.connection import ReportingEndpoint
    from chatd.frontends.limits import SendQueue
    from chatd.frontends.tls import ReloadableTLS
    from chatd.ops.logs import JsonLinesObserver
    from tests.certs import make_certificate
    from twisted.plugins.chatd_plugin import serviceMaker

    def ignore(*_args) -> None:
        return None

    key, cert = make_certificate(tmp_path, "server")
    declared = {
        SendQueue(StringTransport(), 10, 20, ignore, ignore, ignore): {IPushProducer},
        ReloadableTLS(str(key), str(cert)): {IOpenSSLServerConnectionCreator},
        JsonLinesObserver(io.StringIO()): {ILogObserver},
        ReportingEndpoint(TCP4ClientEndpoint(Clock(), "127.0.0.1", 1), ignore): {
            IStreamClientEndpoint
        },
        serviceMaker: {IServiceMaker, IPlugin},
    }
    for provider, interfaces in declared.items():
        assert set(providedBy(provider)) == interfaces, provider
        for interface in interfaces:
            assert verifyObject(interface, provider)


def test_the_realm_gives_only_chat_sessions():
    """Asking the realm for another interface is refused."""
    from zope.interface import Interface

    class IOther(Interface):
        pass

    with pytest.raises(NotImplementedError):
        ChatRealm(ChatHarness().chat).requestAvatar("alice", RecordingClient(), IOther)


def test_registration_hashes_at_the_configured_cost():
    """CHATD_BCRYPT_ROUNDS decides the cost of the hashes registration stores."""
    from chatd.config import Config

    harness = ChatHarness(Config(bcrypt_rounds=5, rate_limit=None))
    harness.client().send("/register alice password1")
    stored = transactions.find_account(harness.database.connection, "alice").password_hash
    assert stored.startswith(SCHEME + "$2b$05$")
