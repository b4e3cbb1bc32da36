"""The naming rules of the wire protocol, applied once at the edge.

User and room names are compared case-insensitively: ``fold`` gives the key
they are stored and looked up under, while the spelling a user registered
with (or a room was first created with) is kept for display.
"""

import re
import unicodedata

from chatd.core.errors import ChatError

_USER_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_.-]{0,31}")
_ROOM_NAME = re.compile(r"#[A-Za-z0-9_.-]{1,32}")

PASSWORD_MIN_BYTES = 8
PASSWORD_MAX_BYTES = 1024

LOBBY = "#lobby"


def fold(name: str) -> str:
    """Return the case-insensitive key of a user or room name."""
    return name.lower()


# Characters and pairs that look alike in common fonts, folded together in
# this order after lower-casing: I/l/1 (and i, as I lower-cases to it), O/0,
# rn/m, vv/w. Two user names with one skeleton cannot both be registered.
# storage.SKELETON_SQL computes the same in SQL; a test keeps them equal.
CONFUSABLES = (("1", "l"), ("i", "l"), ("0", "o"), ("rn", "m"), ("vv", "w"))


def skeleton(name: str) -> str:
    """Return what ``name`` looks like: equal for look-alikes such as aIice and alice."""
    folded = fold(name)
    for look_alike, shown_as in CONFUSABLES:
        folded = folded.replace(look_alike, shown_as)
    return folded


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


def normalize_password(password: str) -> str:
    """Return ``password`` in Unicode NFC, the form every new hash is made from.

    The same password typed on different systems may arrive composed (NFC
    ``ä``) or decomposed (NFD ``a`` + combining diaeresis); both must log in.
    """
    return unicodedata.normalize("NFC", password)


def password_candidates(password: str) -> tuple[bytes, ...]:
    """The byte strings a typed password may have been hashed from, to try in order.

    First its NFC form (every hash made since passwords are normalised);
    then, only if that differs, the bytes as typed, which a hash made before
    normalisation holds.
    """
    normalized = normalize_password(password).encode("utf-8")
    typed = password.encode("utf-8")
    return (normalized,) if typed == normalized else (normalized, typed)


def require_strong_password(password: str) -> bytes:
    """Return the UTF-8 bytes of ``password`` in NFC, or raise ``weak-password``."""
    encoded = normalize_password(password).encode("utf-8")
    if len(encoded) < PASSWORD_MIN_BYTES:
        raise ChatError("weak-password", f"passwords have at least {PASSWORD_MIN_BYTES} bytes")
    if len(encoded) > PASSWORD_MAX_BYTES:
        raise ChatError("weak-password", f"passwords have at most {PASSWORD_MAX_BYTES} bytes")
    return encoded
