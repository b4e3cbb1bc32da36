"""The naming rules of the wire protocol, applied once at the edge.

User and room names are compared case-insensitively: ``fold`` gives the key
they are stored and looked up under, while the spelling a user registered
with (or a room was first created with) is kept for display.
"""

import re

from chatd.errors import ChatError

_USER_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_.-]{0,31}")
_ROOM_NAME = re.compile(r"#[A-Za-z0-9_.-]{1,32}")

PASSWORD_MIN_BYTES = 8
PASSWORD_MAX_BYTES = 1024

LOBBY = "#lobby"


def fold(name: str) -> str:
    """Return the case-insensitive key of a user or room name."""
    return name.lower()


def is_user_name(name: str) -> bool:
    """Tell whether ``name`` is a well-formed user name."""
    return _USER_NAME.fullmatch(name) is not None


def is_room_name(name: str) -> bool:
    """Tell whether ``name`` is a well-formed room name (with its ``#``)."""
    return _ROOM_NAME.fullmatch(name) is not None


def require_user_name(name: str) -> str:
    """Return ``name`` if it is a valid user name, else raise ``invalid-name``."""
    if not is_user_name(name):
        raise ChatError(
            "invalid-name",
            "user names are a letter then up to 31 letters, digits, '_', '.' or '-'",
        )
    return name


def require_room_name(name: str) -> str:
    """Return ``name`` if it is a valid room name, else raise ``invalid-name``."""
    if not is_room_name(name):
        raise ChatError(
            "invalid-name",
            "room names are '#' then 1 to 32 letters, digits, '_', '.' or '-'",
        )
    return name


def require_strong_password(password: str) -> bytes:
    """Return the UTF-8 bytes of ``password``, or raise ``weak-password``."""
    encoded = password.encode("utf-8")
    if len(encoded) < PASSWORD_MIN_BYTES:
        raise ChatError("weak-password", f"passwords have at least {PASSWORD_MIN_BYTES} bytes")
    if len(encoded) > PASSWORD_MAX_BYTES:
        raise ChatError("weak-password", f"passwords have at most {PASSWORD_MAX_BYTES} bytes")
    return encoded
