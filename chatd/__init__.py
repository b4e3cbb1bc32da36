"""chatd: a small multi-user chat server on Twisted."""

from importlib.metadata import PackageNotFoundError, version

try:
    # One version, the package's own (pyproject.toml): what pip installed.
    __version__ = version("chatd")
except PackageNotFoundError:  # a checkout on PYTHONPATH that was never installed
    __version__ = "0+unknown"
