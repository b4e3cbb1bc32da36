"""The web door on real loopback sockets: a whole ChatdServer, Twisted Web and Autobahn's client.

The page's files and headers are fetched with Twisted's HTTP client; the
WebSocket is opened with Autobahn's. Every wait is a Deferred with a
timeout (``tests/netclient.py``).
"""

import tomllib
from fnmatch import fnmatch
from pathlib import Path

import pytest
import pytest_twisted
from twisted.internet import defer, reactor
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.internet.protocol import Protocol
from twisted.web.client import Agent, PartialDownloadError, readBody
from twisted.web.http_headers import Headers

from chatd.frontends.web.site import STATIC
from tests.netclient import TIMEOUT, connect
from tests.serverproc import ROOT
from tests.websupport import connect_web, handshake, start_web_server


@pytest_twisted.inlineCallbacks
def get(port: int, path: str, headers: dict[str, str] | None = None):
    """GET ``path``; fire with (response, body)."""
    agent = Agent(reactor)
    raw = Headers({name: [value] for name, value in (headers or {}).items()})
    response = yield agent.request(b"GET", f"http://127.0.0.1:{port}{path}".encode(), raw)
    try:
        body = yield readBody(response)
    except PartialDownloadError as error:
        # Autobahn answers a plain GET of /ws and closes without a length.
        body = error.response
    return response, body


def header(response, name: str) -> str:
    """The one value of a response header."""
    (value,) = response.headers.getRawHeaders(name)
    return value


@pytest.fixture
def web_server(tmp_path):
    """A ChatdServer with both doors on 127.0.0.1; yields (line port, web port)."""
    server, line_port, web_port = pytest_twisted.blockon(start_web_server(tmp_path))
    yield line_port, web_port
    pytest_twisted.blockon(server.stopService())


@pytest_twisted.inlineCallbacks
def test_the_page_is_served_with_the_security_headers(web_server):
    """``/`` is index.html, with CSP, nosniff, no referrer, no framing."""
    _, port = web_server
    response, body = yield get(port, "/")
    assert response.code == 200
    assert b'<script type="module" src="js/app.js">' in body
    assert header(response, "Content-Type") == "text/html; charset=utf-8"
    policy = header(response, "Content-Security-Policy")
    assert "default-src 'none'" in policy
    assert "script-src 'self';" in policy
    assert "'unsafe-inline'" not in policy
    assert f"connect-src ws://127.0.0.1:{port}/ws wss://127.0.0.1:{port}/ws;" in policy
    assert "frame-ancestors 'none'" in policy
    assert header(response, "X-Content-Type-Options") == "nosniff"
    assert header(response, "Referrer-Policy") == "no-referrer"


@pytest_twisted.inlineCallbacks
def test_modules_are_served_as_javascript(web_server):
    """Browsers run module scripts only with a JavaScript type (nosniff is strict)."""
    _, port = web_server
    response, body = yield get(port, "/js/app.js")
    assert response.code == 200
    assert header(response, "Content-Type") == "text/javascript; charset=utf-8"
    assert b"import" in body


@pytest_twisted.inlineCallbacks
def test_errors_carry_the_headers_too_and_no_listing(web_server):
    """A missing file, a directory and a plain GET of /ws: no listing, headers everywhere."""
    _, port = web_server
    for path in ("/missing.html", "/js/", "/../chatd.sqlite3", "/ws"):
        response, body = yield get(port, path)
        assert response.code >= 400, path
        assert b"app.js" not in body, path
        if path != "/ws":
            assert header(response, "X-Content-Type-Options") == "nosniff"


@pytest_twisted.inlineCallbacks
def test_a_web_user_and_a_line_user_talk_both_ways(web_server):
    """The same #lobby through both doors."""
    line_port, web_port = web_server
    alice = yield connect_web(web_port)
    yield alice.login("alice")
    bob = yield connect(line_port)
    yield bob.login("bob")
    yield alice.expect("JOIN #lobby bob")
    yield alice.command("hello from the page")
    yield bob.expect("MSG #lobby alice hello from the page")
    yield bob.command("hello from nc")
    yield alice.expect("MSG #lobby bob hello from nc")
    yield bob.command("/msg alice psst")
    yield alice.expect("DM bob alice psst")


@pytest_twisted.inlineCallbacks
def test_a_foreign_origin_is_refused_on_a_real_socket(web_server):
    """The handshake from another site's page gets ``403`` and the connection ends."""
    _, port = web_server
    received = []
    ended: defer.Deferred = defer.Deferred()

    class Raw(Protocol):
        def dataReceived(self, data):
            received.append(data)

        def connectionLost(self, reason=None):
            ended.callback(None)

    raw = yield connectProtocol(TCP4ClientEndpoint(reactor, "127.0.0.1", port), Raw())
    raw.transport.write(handshake(origin="https://evil.example", host=f"127.0.0.1:{port}"))
    yield ended.addTimeout(TIMEOUT, reactor)
    assert b"".join(received).startswith(b"HTTP/1.1 403 ")


@pytest_twisted.inlineCallbacks
def test_without_the_subprotocol_the_handshake_fails(web_server):
    """Autobahn's client sees the refusal: no session without ``chatd.v1``."""
    _, port = web_server
    with pytest.raises(ConnectionError):
        yield connect_web(port, protocols=())


@pytest_twisted.inlineCallbacks
def test_stopping_the_server_says_bye_to_web_sessions(tmp_path):
    """SIGTERM's path: ``BYE shutdown`` to the page, then a clean close."""
    server, _, web_port = yield start_web_server(tmp_path)
    alice = yield connect_web(web_port)
    yield alice.login("alice")
    stopping = server.stopService()
    yield alice.expect("BYE shutdown")
    code = yield alice.closed.addTimeout(TIMEOUT, reactor)
    assert code == 1000
    yield stopping


@pytest_twisted.inlineCallbacks
def test_web_off_listens_on_no_web_port(tmp_path):
    """``CHATD_WEB_LISTEN=off``: no web listener at all."""
    server, _, _ = yield start_web_server(tmp_path, web_listen=("tcp:0:interface=127.0.0.1",))
    yield server.stopService()
    from tests.netclient import start_server

    server, _ = yield start_server(tmp_path, web_listen=())
    assert server.web_listeners == []
    yield server.stopService()


@pytest_twisted.inlineCallbacks
def test_wss_on_an_ssl_listener_and_sighup_reloads_it(tmp_path):
    """``CHATD_WEB_LISTEN=ssl:...``: the page's socket over TLS, its certificate reloadable."""
    from chatd.frontends.tls import HangupReloader
    from tests.certs import make_certificate

    key, certificate = make_certificate(tmp_path, "web")
    listen = f"ssl:0:interface=127.0.0.1:privateKey={key}:certKey={certificate}"
    server, _, port = yield start_web_server(tmp_path, web_listen=(listen,))
    try:
        alice = yield connect_web(port, trust_pem=certificate.read_bytes())
        yield alice.login("alice")
        (reloader,) = [child for child in server if isinstance(child, HangupReloader)]
        assert reloader.reload() == 1
        yield alice.command("still here after the reload")
    finally:
        yield server.stopService()


def test_every_static_file_is_in_the_package_data():
    """pyproject's package-data covers each file of the page, so an install serves it."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    patterns = project["tool"]["setuptools"]["package-data"]["chatd.frontends.web"]
    package = STATIC.parent
    files = [path for path in STATIC.rglob("*") if path.is_file()]
    assert files
    for path in files:
        relative = str(path.relative_to(package))
        assert any(fnmatch(relative, pattern) for pattern in patterns), relative
        assert Path(package, relative).stat().st_size > 0
