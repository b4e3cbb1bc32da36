"""TLS: the client against the real server on an ``ssl:`` listener with a self-signed cert."""

from __future__ import annotations

import datetime
import ipaddress
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.client.test_client_e2e import Terminal, run_piped
from tests.serverproc import ServerProcess


def self_signed(directory: Path, name: str) -> tuple[Path, Path]:
    """Write a self-signed certificate for 127.0.0.1 and localhost; return (key, cert) paths."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    key_path = directory / f"{name}.key"
    cert_path = directory / f"{name}.pem"
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    return key_path, cert_path


@pytest.fixture
def tls_server(tmp_path):
    """The real server listening only on TLS, with a fresh self-signed certificate."""
    key, cert = self_signed(tmp_path, "chatd")
    listen = f"ssl:0:privateKey={key}:certKey={cert}:interface=127.0.0.1"
    server = ServerProcess(tmp_path, env={"CHATD_LISTEN": listen}).start()
    server.certificate = cert
    yield server
    server.stop()


def register_over_tls(server) -> None:
    """Register alice over TLS with the client itself (the server speaks only TLS)."""
    result = run_piped(
        server.port, "/register alice pw-alice-123\n", "--tls", "--ca", str(server.certificate)
    )
    assert result.returncode == 0, result.stderr


def test_piped_client_talks_tls_when_it_trusts_the_certificate(tls_server):
    """``--tls --ca cert.pem`` verifies a self-signed server and works as usual."""
    register_over_tls(tls_server)
    result = run_piped(
        tls_server.port,
        "hello over tls\n",
        "--tls",
        "--ca",
        str(tls_server.certificate),
        "--user",
        "alice",
        password="pw-alice-123",
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == ["[#lobby] <alice> hello over tls"]


def test_ca_alone_implies_tls(tls_server):
    """Giving a certificate to trust only makes sense with TLS."""
    result = run_piped(tls_server.port, "/ping\n", "--ca", str(tls_server.certificate))
    assert result.returncode == 0, result.stderr
    assert result.stdout == "* pong\n"


def test_an_untrusted_certificate_is_refused(tls_server, tmp_path):
    """Without the right CA the handshake fails and nothing is sent: exit 3."""
    _, stranger = self_signed(tmp_path, "stranger")
    wrong = run_piped(tls_server.port, "/ping\n", "--tls", "--ca", str(stranger))
    assert wrong.returncode == 3
    assert wrong.stdout == ""
    assert "certificate verify failed" in wrong.stderr
    platform = run_piped(tls_server.port, "/ping\n", "--tls")
    assert platform.returncode == 3


def test_interactive_client_over_tls(tls_server):
    """The terminal client connects, logs in and chats over TLS."""
    register_over_tls(tls_server)
    alice = Terminal(
        tls_server.port,
        "--tls",
        "--ca",
        str(tls_server.certificate),
        "--user",
        "alice",
        password="pw-alice-123",
    )
    try:
        alice.expect("logged in as alice")
        alice.enter("secure hello")
        alice.expect("[#lobby] <alice> secure hello")
        assert alice.quit() == 0
    finally:
        alice.close()


def test_an_unreadable_ca_file_is_a_usage_error(tmp_path):
    """A typo in --ca is reported before anything connects."""
    result = run_piped(1, "", "--ca", str(tmp_path / "missing.pem"))
    assert result.returncode == 2
    assert "cannot read --ca" in result.stderr
