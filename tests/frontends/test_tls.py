"""chatd/tls.py in-process: ssl: descriptions, ReloadableTLS and the SIGHUP handler."""

import signal

import pytest
from OpenSSL import crypto
from twisted.internet import task
from twisted.internet.endpoints import SSL4ServerEndpoint, TCP4ServerEndpoint
from twisted.internet.error import VerifyError
from twisted.internet.protocol import Protocol, ServerFactory
from twisted.internet.testing import MemoryReactor
from twisted.protocols.tls import TLSMemoryBIOFactory

from chatd.frontends.tls import HangupReloader, ReloadableTLS, parse_description, server_endpoint
from tests.certs import install, make_certificate

# chatd/tls.py hands Twisted cryptography objects: pyOpenSSL's deprecation
# warnings (for its own X509 and PKey) would be errors here.
pytestmark = pytest.mark.filterwarnings("error::DeprecationWarning")


@pytest.fixture
def pair(tmp_path):
    """Two self-signed certificates, and the files a listener reads (holding the first)."""
    first = make_certificate(tmp_path, "first")
    second = make_certificate(tmp_path, "second")
    key, cert = tmp_path / "live.key", tmp_path / "live.pem"
    install(first[0], key)
    install(first[1], cert)
    return {"first": first, "second": second, "key": key, "cert": cert}


def subject_of_new_connection(tls: ReloadableTLS) -> str:
    """The certificate subject a client connecting now would be shown."""
    factory = TLSMemoryBIOFactory(tls, False, ServerFactory.forProtocol(Protocol))
    connection = tls.serverConnectionForTLS(factory.buildProtocol(None))
    return connection.get_certificate().to_cryptography().subject.rfc4514_string()


@pytest.mark.parametrize(
    ("description", "parsed"),
    [
        ("tcp:8004", ("tcp", ["8004"], {})),
        (
            "ssl:8443:privateKey=k.pem:certKey=c.pem",
            ("ssl", ["8443"], {"privateKey": "k.pem", "certKey": "c.pem"}),
        ),
        ("tcp6:0:interface=\\:\\:1", ("tcp6", ["0"], {"interface": "::1"})),
        ("ssl:port=1:privateKey=a=b.pem", ("ssl", [], {"port": "1", "privateKey": "a=b.pem"})),
        ("unix:/run/chatd\\:x.sock", ("unix", ["/run/chatd:x.sock"], {})),
    ],
)
def test_descriptions_parse_like_twisteds(description, parsed):
    """Colons separate, the first = splits a keyword, a backslash escapes."""
    assert parse_description(description) == parsed


def test_non_tls_descriptions_go_to_twisted_unchanged():
    """tcp: and friends get Twisted's own endpoint and no TLS part."""
    endpoint, tls = server_endpoint(MemoryReactor(), "tcp:0:interface=127.0.0.1")
    assert isinstance(endpoint, TCP4ServerEndpoint) and tls is None


def test_an_ssl_description_gets_a_reloadable_creator(pair):
    """ssl: makes an SSL4ServerEndpoint around a ReloadableTLS, keywords or positions."""
    reactor = MemoryReactor()
    for description in (
        f"ssl:0:privateKey={pair['key']}:certKey={pair['cert']}:interface=127.0.0.1:backlog=7",
        f"ssl:0:{pair['key']}:{pair['cert']}",
    ):
        endpoint, tls = server_endpoint(reactor, description)
        assert isinstance(endpoint, SSL4ServerEndpoint)
        assert isinstance(tls, ReloadableTLS) and "first" in tls.describe()
    endpoint.listen(object())
    _port, _factory, creator, backlog, interface = reactor.sslServers[-1]
    assert creator is tls and (backlog, interface) == (50, "")


@pytest.mark.parametrize(
    ("description", "problem"),
    [
        ("ssl:0:privateKey=/nonexistent.pem", "No such file"),
        ("ssl:privateKey=x.pem", "no port"),
        ("ssl:0:privateKey=x.pem:colour=blue", "unknown argument 'colour'"),
    ],
)
def test_bad_ssl_descriptions_fail_at_start(description, problem):
    """A description that cannot work is an error when the listener starts."""
    with pytest.raises((ValueError, OSError), match=problem):
        server_endpoint(MemoryReactor(), description)


def test_reload_swaps_the_certificate_for_new_connections(pair):
    """After reload, new TLS connections are made from the new certificate and key."""
    tls = ReloadableTLS(str(pair["key"]), str(pair["cert"]))
    assert subject_of_new_connection(tls) == "CN=first"
    install(pair["second"][0], pair["key"])
    install(pair["second"][1], pair["cert"])
    tls.reload()
    assert subject_of_new_connection(tls) == "CN=second"
    assert "second" in tls.describe() and "sha256" in tls.describe()


def test_a_bad_pair_is_refused_and_the_old_one_kept(pair):
    """A key that does not match the certificate: reload raises, the old pair stays."""
    tls = ReloadableTLS(str(pair["key"]), str(pair["cert"]))
    install(pair["second"][0], pair["key"])
    with pytest.raises(VerifyError, match="do not match"):
        tls.reload()
    pair["cert"].write_bytes(b"not a certificate")
    with pytest.raises(crypto.Error):
        tls.reload()
    assert subject_of_new_connection(tls) == "CN=first"


class Listener:
    """What HangupReloader needs of a listener."""

    def __init__(self, description: str, tls) -> None:
        self.description = description
        self.tls = tls


class CallingReactor(task.Clock):
    """callFromThread runs at once: the handler's only job is to ask for it."""

    def __init__(self) -> None:
        super().__init__()
        self.called: list = []

    def callFromThread(self, function, *args):
        """Record and run."""
        self.called.append(function)
        function(*args)


def test_sighup_reloads_every_tls_listener_and_chains_the_previous_handler(pair):
    """A real SIGHUP to this process: reload scheduled, other handler still called, then undone."""
    heard = []
    previous = signal.signal(signal.SIGHUP, lambda number, frame: heard.append(number))
    try:
        tls = ReloadableTLS(str(pair["key"]), str(pair["cert"]))
        reactor = CallingReactor()
        reloader = HangupReloader(reactor, [Listener("tcp:0", None), Listener("ssl:0", tls)])
        reloader.startService()
        install(pair["second"][0], pair["key"])
        install(pair["second"][1], pair["cert"])
        signal.raise_signal(signal.SIGHUP)
        assert reactor.called == [reloader.reload]
        assert "second" in tls.describe()
        assert heard == [signal.SIGHUP]
        reloader.stopService()
        signal.raise_signal(signal.SIGHUP)
        assert len(reactor.called) == 1 and heard == [signal.SIGHUP, signal.SIGHUP]
    finally:
        signal.signal(signal.SIGHUP, previous)


def test_a_failed_reload_is_logged_and_counted_out(pair):
    """reload() reports how many listeners took the new files; a failure is logged."""
    from twisted.logger import globalLogPublisher

    tls = ReloadableTLS(str(pair["key"]), str(pair["cert"]))
    reloader = HangupReloader(CallingReactor(), [Listener("ssl:0", tls)])
    assert reloader.reload() == 1
    pair["key"].write_bytes(b"garbage")
    logged = []
    globalLogPublisher.addObserver(logged.append)
    try:
        assert reloader.reload() == 0
    finally:
        globalLogPublisher.removeObserver(logged.append)
    assert any("keeping the certificate in use" in e.get("log_format", "") for e in logged)
