"""chatd: a small multi-user chat server on Twisted."""

__version__ = "0.1.0"
