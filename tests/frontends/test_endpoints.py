"""tcp6:, unix: and ssl: listeners on the real twistd, and SIGHUP reloading the certificate.

One server listens on all four kinds at once; clients connect for real over
IPv6 loopback, a unix socket and TLS (a self-signed certificate made in the
test), and talk to each other across them.
"""

import re
import shutil
import signal
import socket
import ssl
import tempfile
from pathlib import Path

import pytest

from tests.certs import der_of, install, make_certificate
from tests.serverproc import LineClient, ServerProcess


class SocketClient(LineClient):
    """LineClient over a socket that is already connected (IPv6, unix, TLS)."""

    def __init__(self, connected: socket.socket, timeout: float = 10.0) -> None:
        connected.settimeout(timeout)
        self.socket = connected
        self.timeout = timeout
        self._buffer = b""
        self.hello = self.read_line()


@pytest.fixture
def short_dir():
    """A directory with a short path: a unix socket path must fit in 108 bytes."""
    directory = Path(tempfile.mkdtemp(prefix="chatd-"))
    yield directory
    shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture
def every_kind(tmp_path, short_dir):
    """The real server on tcp, tcp6, unix and ssl at once; ports read from its log."""
    key, cert = tmp_path / "live.key", tmp_path / "live.pem"
    first = make_certificate(tmp_path, "first")
    install(first[0], key)
    install(first[1], cert)
    sock = short_dir / "chatd.sock"
    listen = ",".join(
        [
            "tcp:0:interface=127.0.0.1",
            "tcp6:0:interface=\\:\\:1",
            f"unix:{sock}",
            f"ssl:0:privateKey={key}:certKey={cert}:interface=127.0.0.1",
        ]
    )
    server = ServerProcess(tmp_path, env={"CHATD_LISTEN": listen}).start()
    server.tcp6_port = int(server.wait_for(r"chatd listening on tcp ::1 (\d+)$").group(1))
    server.tls_port = int(
        server.wait_for(r"chatd listening on tcp 127\.0\.0\.1 (\d+) with TLS").group(1)
    )
    server.wait_for(re.escape(f"chatd listening on unix {sock}"))
    server.socket_path = sock
    server.key, server.cert, server.first = key, cert, first
    yield server
    server.stop()


def tcp6_client(server) -> SocketClient:
    """A client over IPv6 loopback."""
    return SocketClient(socket.create_connection(("::1", server.tcp6_port), timeout=10))


def unix_client(server) -> SocketClient:
    """A client over the unix socket."""
    connected = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    connected.settimeout(10)
    connected.connect(str(server.socket_path))
    return SocketClient(connected)


def tls_client(server, trusted: Path) -> SocketClient:
    """A TLS client that trusts only ``trusted`` and checks the name localhost."""
    context = ssl.create_default_context(cafile=str(trusted))
    raw = socket.create_connection(("127.0.0.1", server.tls_port), timeout=10)
    return SocketClient(context.wrap_socket(raw, server_hostname="localhost"))


def presented(client: SocketClient) -> bytes:
    """The certificate the server presented to a TLS client, as DER."""
    return client.socket.getpeercert(binary_form=True)


def test_clients_on_every_kind_of_listener_talk_to_each_other(every_kind):
    """IPv4, IPv6, unix and TLS clients share #lobby."""
    # The TLS client speaks first, so what the others say comes after its OK.
    clients = {
        "secure": tls_client(every_kind, every_kind.first[1]),
        "four": every_kind.connect(),
        "six": tcp6_client(every_kind),
        "local": unix_client(every_kind),
    }
    for name, client in clients.items():
        assert client.hello.startswith("HELLO chatd 1 "), name
        client.login(name)
    assert presented(clients["secure"]) == der_of(every_kind.first[1])
    for name, client in clients.items():
        assert client.command(f"hello from {name}")[-1] == "OK say #lobby"
    secure = clients["secure"].until(lambda line: line == "MSG #lobby local hello from local")
    assert "MSG #lobby four hello from four" in secure
    assert "MSG #lobby six hello from six" in secure
    lines = clients["six"].command("/who")
    assert lines[-2:] == ["WHO #lobby four local secure six", "OK who #lobby"]


def test_sighup_reloads_the_certificate_without_dropping_connections(every_kind, tmp_path):
    """New files + SIGHUP: new TLS clients get the new certificate, old ones go on talking."""
    old = tls_client(every_kind, every_kind.first[1])
    old.login("alice")
    second = make_certificate(tmp_path, "second")
    install(second[0], every_kind.key)
    install(second[1], every_kind.cert)
    every_kind.process.send_signal(signal.SIGHUP)
    every_kind.wait_for(r"reloaded TLS certificate for ssl:0:.*: second, expires")
    new = tls_client(every_kind, second[1])
    assert presented(new) == der_of(second[1])
    new.login("bob")
    assert old.until(lambda line: line == "JOIN #lobby bob")
    assert old.command("still here")[-1] == "OK say #lobby"
    assert new.until(lambda line: line == "MSG #lobby alice still here")
    assert presented(old) == der_of(every_kind.first[1])
    # The old certificate is no longer what a new client is shown.
    with pytest.raises(ssl.SSLCertVerificationError):
        tls_client(every_kind, every_kind.first[1])


def test_a_bad_certificate_on_sighup_keeps_the_old_one(every_kind, tmp_path):
    """A key that does not match: the reload fails, is logged, and TLS goes on as before."""
    tls_client(every_kind, every_kind.first[1]).login("alice")
    stranger_key, _ = make_certificate(tmp_path, "stranger")
    install(stranger_key, every_kind.key)
    every_kind.process.send_signal(signal.SIGHUP)
    every_kind.wait_for(r"TLS reload for ssl:0:.* failed; keeping the certificate in use")
    again = tls_client(every_kind, every_kind.first[1])
    assert presented(again) == der_of(every_kind.first[1])
    assert again.command("/ping still-serving") == ["OK ping still-serving"]
    assert every_kind.process.poll() is None


def test_sighup_without_tls_is_harmless(chatd_server):
    """A server with no TLS listener logs the SIGHUP and keeps running."""
    client = chatd_server.connect()
    chatd_server.process.send_signal(signal.SIGHUP)
    chatd_server.wait_for("SIGHUP: no TLS listener to reload")
    assert client.command("/ping after-hup") == ["OK ping after-hup"]


def test_a_missing_certificate_stops_the_server_at_start(tmp_path):
    """An ssl: listener whose files are missing: one line naming CHATD_LISTEN, exit 1."""
    missing = tmp_path / "missing.pem"
    server = ServerProcess(tmp_path, env={"CHATD_LISTEN": f"ssl:0:privateKey={missing}"})
    with pytest.raises(AssertionError, match=r"server exited \(1\)"):
        server.start(timeout=30)
    assert server.process.wait(30) == 1
    output = server.wait_for_end_of_output()
    failures = [line for line in output if "cannot start" in line]
    assert len(failures) == 1 and not [line for line in output if "Traceback" in line], output
    assert failures[0].endswith(
        f"chatd: cannot start: CHATD_LISTEN=ssl:0:privateKey={missing}:"
        f" No such file or directory: {missing}"
    )
