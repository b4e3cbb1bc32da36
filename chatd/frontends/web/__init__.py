"""The web door: a chat page and a WebSocket speaking the line protocol (docs/web.md)."""

from chatd.frontends.web.site import make_site

__all__ = ["make_site"]
