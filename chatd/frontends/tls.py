"""TLS listeners whose certificate and key are reloaded on SIGHUP, without dropping anyone.

An ``ssl:`` description in ``CHATD_LISTEN`` takes the same arguments as
Twisted's own (``ssl:8443:privateKey=key.pem:certKey=cert.pem``, plus
``interface``, ``backlog``, ``extraCertChain``, ``dhParameters`` and
``sslmethod``), but the listener gets a ``ReloadableTLS`` as its connection
creator instead of a fixed context. ``ReloadableTLS`` builds each new
connection from its current ``CertificateOptions``; ``reload`` reads the
files again and, only if they make a valid pair, swaps in new options. A
connection keeps the context it was made with, so nobody connected is
dropped; the next handshake uses the new certificate.

``HangupReloader`` is the service that calls ``reload`` on SIGHUP (after
``systemctl reload chatd`` or a certificate renewal hook). The signal only
schedules the reload on the reactor thread; the handler itself does nothing
else, which is what makes it safe under twistd's reactor.
"""

import re
import signal

from cryptography.hazmat.primitives import hashes
from cryptography.x509.oid import NameOID
from OpenSSL import SSL
from twisted.application.service import Service
from twisted.internet import ssl
from twisted.internet.endpoints import SSL4ServerEndpoint, serverFromString
from twisted.internet.interfaces import IOpenSSLServerConnectionCreator
from twisted.logger import Logger
from twisted.python.filepath import FilePath
from zope.interface import implementer

from chatd.frontends.proxy import proxy_endpoint, split_proxy_prefix

log = Logger()

# Twisted's _parseSSL takes its arguments in this order when given by position.
_SSL_POSITIONAL = (
    "port",
    "privateKey",
    "certKey",
    "sslmethod",
    "interface",
    "backlog",
    "extraCertChain",
    "dhParameters",
)
_CERTIFICATE = re.compile(
    rb"-----BEGIN CERTIFICATE-----\r?\n.+?\r?\n-----END CERTIFICATE-----", re.DOTALL
)


def parse_description(description: str) -> tuple[str, list[str], dict[str, str]]:
    """Split an endpoint description into its prefix, positional and keyword arguments.

    The grammar is Twisted's: fields separated by ``:``, ``name=value`` for
    keywords (the value may contain ``=``), and a backslash escaping the
    character after it (``interface=\\:\\:1``).
    """
    fields: list[list[str]] = [[""]]
    escaped = False
    for character in description:
        if escaped:
            fields[-1][-1] += character
            escaped = False
        elif character == "\\":
            escaped = True
        elif character == ":":
            fields.append([""])
        elif character == "=" and len(fields[-1]) == 1:
            fields[-1].append("")
        else:
            fields[-1][-1] += character
    prefix, *rest = fields
    args = [field[0] for field in rest if len(field) == 1]
    kwargs = {field[0]: field[1] for field in rest if len(field) == 2}
    return prefix[0], args, kwargs


@implementer(IOpenSSLServerConnectionCreator)
class ReloadableTLS:
    """Server TLS settings read from PEM files, which ``reload`` reads again.

    The certificate and key are checked against each other on every load: a
    mismatched or unreadable pair raises, and the options in use stay as they
    were.
    """

    def __init__(
        self,
        private_key: str,
        cert_key: str | None = None,
        extra_chain: str | None = None,
        dh_parameters: str | None = None,
        method: str | None = None,
    ) -> None:
        self.private_key = private_key
        self.cert_key = cert_key or private_key
        self.extra_chain = extra_chain
        self.dh_parameters = dh_parameters
        self.method = method
        self.certificate: ssl.Certificate | None = None
        self._options = self._load()

    def _load(self) -> ssl.CertificateOptions:
        cert_pem = FilePath(self.cert_key).getContent()
        key_pem = FilePath(self.private_key).getContent()
        # loadPEM checks that the key belongs to the certificate.
        private = ssl.PrivateCertificate.loadPEM(cert_pem + b"\n" + key_pem)
        chain = None
        if self.extra_chain is not None:
            found = _CERTIFICATE.findall(FilePath(self.extra_chain).getContent())
            if not found:
                raise ValueError(f"no PEM certificate in {self.extra_chain}")
            chain = [ssl.Certificate.loadPEM(pem).original.to_cryptography() for pem in found]
        options = {}
        if self.method is not None:
            options["method"] = getattr(SSL, self.method)
        if self.dh_parameters is not None:
            options["dhParameters"] = ssl.DiffieHellmanParameters.fromFile(
                FilePath(self.dh_parameters)
            )
        # cryptography objects: pyOpenSSL deprecates being handed its own X509 and PKey.
        made = ssl.CertificateOptions(
            privateKey=private.privateKey.original.to_cryptography_key(),
            certificate=private.original.to_cryptography(),
            extraCertChain=chain,
            **options,
        )
        # Build the context now, so a problem shows here and not at the next handshake.
        made.getContext()
        self.certificate = ssl.Certificate(private.original)
        return made

    def reload(self) -> None:
        """Read the files again and use them for new connections; raise if they are bad."""
        self._options = self._load()

    def describe(self) -> str:
        """The certificate in use, for the log: subject, expiry and SHA-256 fingerprint."""
        certificate = self.certificate.original.to_cryptography()
        names = certificate.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
        subject = names[0].value if names else "(no common name)"
        expires = certificate.not_valid_after_utc.isoformat()
        fingerprint = certificate.fingerprint(hashes.SHA256()).hex()
        return f"{subject}, expires {expires}, sha256 {fingerprint}"

    def serverConnectionForTLS(self, protocol) -> SSL.Connection:
        """A TLS connection for one new client, made from the options in use now."""
        return self._options.serverConnectionForTLS(protocol)


def server_endpoint(reactor, description: str):
    """The endpoint for ``description``, and its ``ReloadableTLS`` when it is ``ssl:``.

    Other descriptions (``tcp:``, ``tcp6:``, ``unix:``, ...) go to Twisted's
    ``serverFromString`` unchanged, with ``None`` for the TLS part.
    ``haproxy:<description>`` is that endpoint behind a load balancer: each
    connection starts with a PROXY header (``chatd/frontends/proxy.py``).
    """
    inner = split_proxy_prefix(description)
    if inner is not None:
        endpoint, tls = server_endpoint(reactor, inner)
        return proxy_endpoint(reactor, endpoint), tls
    prefix, args, kwargs = parse_description(description)
    if prefix.lower() != "ssl":
        return serverFromString(reactor, description), None
    if len(args) > len(_SSL_POSITIONAL):
        raise ValueError(f"too many arguments in {description!r}")
    settings = dict(zip(_SSL_POSITIONAL, args, strict=False))
    for name, value in kwargs.items():
        if name not in _SSL_POSITIONAL:
            raise ValueError(f"unknown argument {name!r} in {description!r}")
        settings[name] = value
    if "port" not in settings:
        raise ValueError(f"no port in {description!r}")
    tls = ReloadableTLS(
        settings.get("privateKey", "server.pem"),
        settings.get("certKey"),
        settings.get("extraCertChain"),
        settings.get("dhParameters"),
        settings.get("sslmethod"),
    )
    endpoint = SSL4ServerEndpoint(
        reactor,
        int(settings["port"]),
        tls,
        backlog=int(settings.get("backlog", 50)),
        interface=settings.get("interface", ""),
    )
    return endpoint, tls


class HangupReloader(Service):
    """On SIGHUP, reloads the certificate and key of every TLS listener.

    ``listeners`` are objects with ``description`` and ``tls`` (a
    ``ReloadableTLS`` or None). The handler of any other SIGHUP user that was
    installed first is still called after ours.
    """

    name = "tls reload on SIGHUP"

    def __init__(self, reactor, listeners) -> None:
        self._reactor = reactor
        self._listeners = listeners
        self._previous = None
        self._installed = False

    def startService(self) -> None:
        """Install the SIGHUP handler."""
        super().startService()
        try:
            self._previous = signal.signal(signal.SIGHUP, self._hangup)
        except ValueError:
            # Not the main thread (an embedding test runner): no signals to hear.
            log.warn("SIGHUP cannot be handled here; TLS certificates will not be reloaded")
            return
        self._installed = True

    def stopService(self) -> None:
        """Put the previous SIGHUP handler back."""
        super().stopService()
        if self._installed:
            self._installed = False
            signal.signal(signal.SIGHUP, self._previous or signal.SIG_DFL)

    def _hangup(self, number, frame) -> None:
        # A signal handler interrupts whatever the main thread was doing: it
        # only asks the reactor to reload once it is back in its loop.
        self._reactor.callFromThread(self.reload)
        if callable(self._previous):
            self._previous(number, frame)

    def reload(self) -> int:
        """Reload every TLS listener now; return how many reloaded."""
        reloaded = 0
        for listener in self._listeners:
            if listener.tls is None:
                continue
            try:
                listener.tls.reload()
            except Exception:
                log.failure(
                    "TLS reload for {description} failed; keeping the certificate in use",
                    description=listener.description,
                )
                continue
            reloaded += 1
            log.info(
                "reloaded TLS certificate for {description}: {certificate}",
                description=listener.description,
                certificate=listener.tls.describe(),
            )
        if not any(listener.tls is not None for listener in self._listeners):
            log.info("SIGHUP: no TLS listener to reload")
        return reloaded
