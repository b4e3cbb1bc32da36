"""chatd's settings: one frozen value, read from the environment once at start."""

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, fields


class ConfigError(ValueError):
    """A setting has a value chatd cannot use; the message names the variable."""


@dataclass(frozen=True)
class RateLimit:
    """A token bucket: ``per_second`` lines refill, at most ``burst`` at once."""

    per_second: float
    burst: int

    def __str__(self) -> str:
        return f"{self.per_second:g}/{self.burst}"


@dataclass(frozen=True)
class Config:
    """Every setting of a chatd server.

    Each field is read from the environment variable named in its metadata;
    ``Config.from_environ`` parses and validates them all at once, so a bad
    value stops the server at start with a message naming the variable.
    """

    listen: tuple[str, ...] = field(default=("tcp:8004",), metadata={"env": "CHATD_LISTEN"})
    db_path: str = field(default="chatd.sqlite3", metadata={"env": "CHATD_DB"})
    registration_open: bool = field(default=True, metadata={"env": "CHATD_REGISTRATION"})
    bcrypt_rounds: int = field(default=12, metadata={"env": "CHATD_BCRYPT_ROUNDS"})
    rate_limit: RateLimit | None = field(
        default=RateLimit(10.0, 40), metadata={"env": "CHATD_RATE_LIMIT"}
    )
    server_name: str = field(default="chatd", metadata={"env": "CHATD_SERVER_NAME"})
    line_limit: int = field(default=4096, metadata={"env": "CHATD_LINE_LIMIT"})
    bcrypt_threads: int = field(default=2, metadata={"env": "CHATD_BCRYPT_THREADS"})
    account_poll_seconds: float = field(
        default=1.0, metadata={"env": "CHATD_ACCOUNT_POLL_SECONDS"}
    )
    shutdown_grace_seconds: float = field(
        default=5.0, metadata={"env": "CHATD_SHUTDOWN_GRACE_SECONDS"}
    )
    # Operations: logs, metrics and retention (chatd/telemetry.py, metrics.py, retention.py).
    log_format: str = field(default="text", metadata={"env": "CHATD_LOG_FORMAT"})
    log_messages: bool = field(default=False, metadata={"env": "CHATD_LOG_MESSAGES"})
    metrics_listen: str | None = field(default=None, metadata={"env": "CHATD_METRICS_LISTEN"})
    room_history_days: float | None = field(
        default=None, metadata={"env": "CHATD_ROOM_HISTORY_DAYS"}
    )
    stored_message_days: float | None = field(
        default=None, metadata={"env": "CHATD_STORED_MESSAGE_DAYS"}
    )

    @classmethod
    def from_environ(cls, environ: Mapping[str, str] | None = None) -> "Config":
        """Build the configuration from ``environ`` (default: ``os.environ``).

        Unset or empty variables keep their defaults; anything else that does
        not parse raises ``ConfigError``.
        """
        environ = os.environ if environ is None else environ
        values = {}
        for setting in fields(cls):
            raw = environ.get(setting.metadata["env"], "").strip()
            if raw:
                parse = _PARSERS[setting.name]
                try:
                    values[setting.name] = parse(raw)
                except ValueError as error:
                    raise ConfigError(f"{setting.metadata['env']}={raw!r}: {error}") from None
        return cls(**values)

    @classmethod
    def variables(cls) -> dict[str, str]:
        """Map each environment variable to the field it sets."""
        return {setting.metadata["env"]: setting.name for setting in fields(cls)}


def _listen(raw: str) -> tuple[str, ...]:
    descriptions = tuple(part.strip() for part in raw.split(","))
    if not all(descriptions):
        raise ValueError("an endpoint description is empty")
    return descriptions


def _registration(raw: str) -> bool:
    choices = {"open": True, "closed": False}
    if raw.lower() not in choices:
        raise ValueError("must be 'open' or 'closed'")
    return choices[raw.lower()]


def _int_between(low: int, high: int):
    def parse(raw: str) -> int:
        value = int(raw)
        if not low <= value <= high:
            raise ValueError(f"must be a whole number from {low} to {high}")
        return value

    return parse


def _positive_seconds(raw: str) -> float:
    value = float(raw)
    if not value > 0:
        raise ValueError("must be a positive number of seconds")
    return value


_RATE = re.compile(r"(\d+(?:\.\d+)?)/(\d+)")


def _rate_limit(raw: str) -> RateLimit | None:
    if raw.lower() == "off":
        return None
    match = _RATE.fullmatch(raw)
    if match is None:
        raise ValueError("must be '<lines-per-second>/<burst>' (such as 10/40) or 'off'")
    per_second, burst = float(match.group(1)), int(match.group(2))
    if per_second <= 0 or burst < 1:
        raise ValueError("the rate must be positive and the burst at least 1")
    return RateLimit(per_second, burst)


def _server_name(raw: str) -> str:
    if " " in raw:
        raise ValueError("must not contain spaces")
    return raw


def _log_format(raw: str) -> str:
    if raw.lower() not in ("text", "json"):
        raise ValueError("must be 'text' or 'json'")
    return raw.lower()


def _on_off(raw: str) -> bool:
    choices = {"on": True, "off": False}
    if raw.lower() not in choices:
        raise ValueError("must be 'on' or 'off'")
    return choices[raw.lower()]


def _endpoint_or_off(raw: str) -> str | None:
    return None if raw.lower() == "off" else raw


def _days_or_off(raw: str) -> float | None:
    if raw.lower() == "off":
        return None
    try:
        days = float(raw)
    except ValueError:
        days = 0.0
    if not 0 < days < float("inf"):
        raise ValueError("must be a positive number of days or 'off'")
    return days


_PARSERS = {
    "listen": _listen,
    "db_path": str,
    "registration_open": _registration,
    "bcrypt_rounds": _int_between(4, 31),
    "rate_limit": _rate_limit,
    "server_name": _server_name,
    "line_limit": _int_between(64, 1 << 20),
    "bcrypt_threads": _int_between(1, 64),
    "account_poll_seconds": _positive_seconds,
    "shutdown_grace_seconds": _positive_seconds,
    "log_format": _log_format,
    "log_messages": _on_off,
    "metrics_listen": _endpoint_or_off,
    "room_history_days": _days_or_off,
    "stored_message_days": _days_or_off,
}
