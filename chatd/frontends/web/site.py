"""The web door's HTTP side: the chat page's static files at ``/``, the WebSocket at ``/ws``.

Every response carries the security headers: a Content-Security-Policy
that allows only the page's own files (no inline script or style, no
framing) and connections only to this host's ``/ws``, ``nosniff``, no
referrer, and no caching without revalidation (a new release is seen at
once). Static files are served from the package; directories are not
listed.
"""

import re
from pathlib import Path

from autobahn.twisted.resource import WebSocketResource
from twisted.web import pages, server, static

from chatd.frontends.line.protocol import ChatServerFactory
from chatd.frontends.web.socket import ChatWebSocketFactory, OriginPolicy

STATIC = Path(__file__).resolve().parent / "static"
# Idle HTTP connections (not WebSockets) are closed after this many seconds.
HTTP_IDLE_SECONDS = 60
# A Host header that can be written into the policy as it is; anything else gets 'none'.
_HOST = re.compile(r"([a-z0-9.-]+|\[[0-9a-f:.]+\])(:\d{1,5})?", re.IGNORECASE)


def content_security_policy(host: str | None) -> str:
    """The policy for a page requested with ``Host: host``: its own files, its own ``/ws``."""
    if host is not None and _HOST.fullmatch(host):
        connect = f"ws://{host}/ws wss://{host}/ws"
    else:
        connect = "'none'"
    return (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        f"manifest-src 'self'; connect-src {connect}; base-uri 'none'; form-action 'none'; "
        "frame-ancestors 'none'"
    )


SECURITY_HEADERS = {
    b"X-Content-Type-Options": b"nosniff",
    b"Referrer-Policy": b"no-referrer",
    b"X-Frame-Options": b"DENY",
    b"Cross-Origin-Opener-Policy": b"same-origin",
    b"Cache-Control": b"no-cache",
}


class SecureRequest(server.Request):
    """A request whose response, whatever it is, carries the security headers."""

    def process(self) -> None:
        """Set the headers, then serve as usual."""
        host = self.getHeader(b"host")
        policy = content_security_policy(host.decode("latin-1") if host else None)
        self.setHeader(b"Content-Security-Policy", policy.encode("ascii"))
        for name, value in SECURITY_HEADERS.items():
            self.setHeader(name, value)
        super().process()


class StaticFiles(static.File):
    """The page's files, with module-friendly types and no directory listings."""

    contentTypes = {
        **static.File.contentTypes,
        ".html": "text/html; charset=utf-8",
        ".css": "text/css; charset=utf-8",
        ".js": "text/javascript; charset=utf-8",
        ".svg": "image/svg+xml",
        ".webmanifest": "application/manifest+json",
    }

    def directoryListing(self):
        """No listings: a directory without index.html is not found."""
        return pages.notFound()


def make_site(chat: ChatServerFactory) -> server.Site:
    """The web door's site, onto the line door's factory (same limits and connections)."""
    root = StaticFiles(str(STATIC))
    root.indexNames = ["index.html"]
    origins = OriginPolicy(chat.config.web_origins)
    root.putChild(b"ws", WebSocketResource(ChatWebSocketFactory(chat, origins)))
    site = server.Site(root, requestFactory=SecureRequest, timeout=HTTP_IDLE_SECONDS)
    site.noisy = False
    site.displayTracebacks = False
    return site
