"""Issue 9, items 8 to 10, on a whole server in-process on real loopback sockets: many
connections from one address at once against the login, registration and /passwd limits,
and account changes made while a password is being checked. Counts, never timings."""

import pytest
import pytest_twisted
from twisted.internet import defer

from chatd.config import Allowance
from chatd.storage import transactions
from tests.netclient import connect, start_server


def final(line: str) -> bool:
    """A command's final reply."""
    return line.startswith(("OK ", "ERR "))


@defer.inlineCallbacks
def connect_many(port: int, count: int, bind: str | None = None, batch: int = 50):
    """``count`` connections, opened ``batch`` at a time; fire with the list."""
    clients = []
    while len(clients) < count:
        wanted = min(batch, count - len(clients))
        clients += yield defer.gatherResults([connect(port, bind=bind) for _ in range(wanted)])
    return clients


@defer.inlineCallbacks
def stop(server, clients):
    """Close every client, then stop the server."""
    for client in clients:
        client.transport.loseConnection()
    yield server.stopService()


@pytest_twisted.inlineCallbacks
def test_250_parallel_wrong_logins_from_one_address_check_at_most_ten(tmp_path):
    """Item 8: 250 connections from 127.0.0.1 each send one wrong /login alice at once:
    at most 10 (CHATD_LOGIN_FAILURES_PER_ADDRESS) are checked, every other one is answered
    too-many-attempts - and the owner, from another address, still logs in."""
    server, port = yield start_server(tmp_path)
    clients = []
    try:
        owner = yield connect(port, bind="127.0.0.2")
        clients.append(owner)
        yield owner.login("alice")
        owner.transport.loseConnection()
        yield owner.closed
        clients += yield connect_many(port, 250)
        for client in clients[1:]:
            client.send("/login alice wrong-password")
        replies = yield defer.gatherResults([client.expect(final) for client in clients[1:]])
        finals = [lines[-1] for lines in replies]
        checked = [line for line in finals if line.startswith("ERR bad-credentials")]
        refused = [line for line in finals if line.startswith("ERR too-many-attempts")]
        assert 1 <= len(checked) <= 10
        assert len(checked) + len(refused) == 250
        home = yield connect(port, bind="127.0.0.2")
        clients.append(home)
        assert (yield home.command("/login alice password1"))[-1] == "OK login alice"
    finally:
        yield stop(server, clients)


@pytest_twisted.inlineCallbacks
def test_100_parallel_registrations_from_one_address_create_at_most_five(tmp_path):
    """Item 8: CHATD_REGISTRATION_LIMIT=5/3600 and 100 /register sent at once from one
    address: exactly five accounts are created."""
    server, port = yield start_server(tmp_path, registration_limit=Allowance(5, 3600.0))
    clients = []
    try:
        clients += yield connect_many(port, 100)
        for number, client in enumerate(clients):
            client.send(f"/register user{number} password1")
        replies = yield defer.gatherResults([client.expect(final) for client in clients])
        finals = [lines[-1] for lines in replies]
        assert sum(1 for line in finals if line.startswith("OK register")) == 5
        assert sum(1 for line in finals if line.startswith("ERR too-many-attempts")) == 95
        users = yield server.database.read(transactions.list_users)
        assert len(users) == 5
    finally:
        yield stop(server, clients)


class Gate:
    """Holds every bcrypt check of the server until opened: a login stopped mid-check."""

    def __init__(self, hasher) -> None:
        self._check = hasher.check
        self.held: list[defer.Deferred] = []
        self.closed = True

    def check(self, *args, **kwargs) -> defer.Deferred:
        if not self.closed:
            return self._check(*args, **kwargs)
        opened: defer.Deferred = defer.Deferred()
        self.held.append(opened)
        return opened.addCallback(lambda _: self._check(*args, **kwargs))

    def open(self) -> None:
        self.closed = False
        held, self.held = self.held, []
        for opened in held:
            opened.callback(None)


@pytest.mark.parametrize(
    ("change", "reply"),
    [
        (lambda: (transactions.set_banned, "alice", True, 1), "ERR banned"),
        (lambda: (transactions.delete_user, "alice", 1), "ERR bad-credentials"),
        (lambda: (transactions.record_account_event, "alice", "kick", 1), "ERR kicked"),
    ],
    ids=["ban", "delete", "kick"],
)
@pytest_twisted.inlineCallbacks
def test_an_account_change_during_the_password_check_is_not_missed(
    tmp_path, monkeypatch, change, reply
):
    """Item 9: a ban, deletion or kick committed while a login's bcrypt check runs: the
    login is refused when its session would start, over a real socket."""
    server, port = yield start_server(tmp_path)
    clients = []
    try:
        alice = yield connect(port)
        clients.append(alice)
        yield alice.login("alice")
        alice.transport.loseConnection()
        gate = Gate(server.hasher)
        monkeypatch.setattr(server.hasher, "check", gate.check)
        late = yield connect(port, bind="127.0.0.2")
        clients.append(late)
        other = yield connect(port, bind="127.0.0.3")
        clients.append(other)
        late.send("/login alice password1")
        for _ in range(1000):
            if gate.held:
                break
            yield other.command("/ping waiting")
        assert gate.held
        yield server.database.write(*change())
        gate.open()
        lines = yield late.expect(final)
        assert lines[-1].startswith(reply + " ")
    finally:
        yield stop(server, clients)


@pytest_twisted.inlineCallbacks
def test_a_name_registered_again_never_reaches_the_dead_accounts_session(tmp_path):
    """Item 9: alice's account is deleted while her session is open and the name is
    registered again: the old session ends, and bob's DM to the new alice never reaches it."""
    server, port = yield start_server(tmp_path, account_poll_seconds=3600.0)
    clients = []
    try:
        old, bob, newcomer = yield defer.gatherResults([connect(port) for _ in range(3)])
        clients += [old, bob, newcomer]
        yield old.login("alice")
        yield bob.login("bob")
        yield server.database.write(transactions.delete_user, "alice", 1)
        assert (yield newcomer.command("/register alice password2")) == ["OK register alice"]
        yield old.expect("BYE account-deleted")
        assert (yield bob.command("/msg alice for the new alice"))[-1] == "OK msg alice stored"
        lines = yield newcomer.command("/login alice password2")
        assert any(line.endswith("for the new alice") for line in lines)
        yield old.closed
        assert not any("for the new alice" in line for line in old.lines)
    finally:
        yield stop(server, clients)


@pytest_twisted.inlineCallbacks
def test_300_sessions_changing_passwords_do_not_starve_other_logins(tmp_path):
    """Item 10: 300 sessions of one account send /passwd with the right old password at
    once: at most CHATD_PASSWD_LIMIT (5) are checked, the first change ends the others with
    BYE password-changed, and bob's login from another address is answered OK meanwhile."""
    server, port = yield start_server(
        tmp_path, bcrypt_queue=16, max_connections_per_address=400
    )
    clients = []
    try:
        bob = yield connect(port, bind="127.0.0.2")
        clients.append(bob)
        assert (yield bob.command("/register bob password1")) == ["OK register bob"]
        sessions = yield connect_many(port, 300)
        clients += sessions
        yield sessions[0].command("/register mallory password1")
        for start in range(0, 300, 8):
            batch = sessions[start : start + 8]
            for session in batch:
                session.send("/login mallory password1")
            logins = yield defer.gatherResults([session.expect(final) for session in batch])
            assert all(lines[-1] == "OK login mallory" for lines in logins)
        for session in sessions:
            session.send("/passwd password1 password1")
        bob.send("/login bob password1")
        assert (yield bob.expect(final))[-1] == "OK login bob"
        replies = yield defer.gatherResults(
            [
                session.expect(lambda line: final(line) or line.startswith("BYE "))
                for session in sessions
            ]
        )
        answers = [lines[-1] for lines in replies]
        changed = sum(1 for line in answers if line == "OK passwd")
        assert 1 <= changed <= 5
        pairs = zip(sessions, answers, strict=True)
        ended = [session for session, line in pairs if line != "OK passwd"]
        yield defer.gatherResults([session.closed for session in ended])
        assert all("BYE password-changed" in session.lines for session in ended)
    finally:
        yield stop(server, clients)
