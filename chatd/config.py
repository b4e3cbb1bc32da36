"""chatd's settings: one frozen value, read from the environment once at start."""

import difflib
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from ipaddress import IPv4Network, IPv6Network, ip_network

IPNetwork = IPv4Network | IPv6Network


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
class Allowance:
    """``count`` events per ``seconds``, as a token bucket that starts full."""

    count: int
    seconds: float

    def __str__(self) -> str:
        return f"{self.count}/{self.seconds:g}"


@dataclass(frozen=True)
class KeepAlive:
    """TCP keep-alive: probe after ``idle`` s of silence, every ``interval`` s, ``count`` times."""

    idle: int
    interval: int
    count: int

    def __str__(self) -> str:
        return f"{self.idle}/{self.interval}/{self.count}"


@dataclass(frozen=True)
class Config:
    """Every setting of a chatd server.

    Each field is read from the environment variable named in its metadata;
    ``Config.from_environ`` parses and validates them all at once, so a bad
    value stops the server at start with a message naming the variable.
    """

    listen: tuple[str, ...] = field(default=("tcp:8004",), metadata={"env": "CHATD_LISTEN"})
    # The IRC door (chatd/frontends/irc/); an empty tuple is "off".
    irc_listen: tuple[str, ...] = field(
        default=("tcp:6667",), metadata={"env": "CHATD_IRC_LISTEN"}
    )
    db_path: str = field(default="chatd.sqlite3", metadata={"env": "CHATD_DB"})
    registration_open: bool = field(default=True, metadata={"env": "CHATD_REGISTRATION"})
    # Guests (chatd/auth_gate.py): an IRC client that never logs in chats under its nick.
    guests: bool = field(default=False, metadata={"env": "CHATD_GUESTS"})
    # Server operators (IRC's OPER, the line door's /oper): account names, folded,
    # whose own password makes a session's user an operator of every room.
    operators: tuple[str, ...] = field(default=(), metadata={"env": "CHATD_OPERATORS"})
    bcrypt_rounds: int = field(default=12, metadata={"env": "CHATD_BCRYPT_ROUNDS"})
    rate_limit: RateLimit | None = field(
        default=RateLimit(10.0, 40), metadata={"env": "CHATD_RATE_LIMIT"}
    )
    # Bytes of client lines per second and burst, on top of the line rate
    # (off with CHATD_RATE_LIMIT=off too); the burst holds a whole line.
    byte_rate: RateLimit | None = field(
        default=RateLimit(16384.0, 262144), metadata={"env": "CHATD_BYTE_RATE"}
    )
    server_name: str = field(default="chatd", metadata={"env": "CHATD_SERVER_NAME"})
    line_limit: int = field(default=4096, metadata={"env": "CHATD_LINE_LIMIT"})
    bcrypt_workers: int = field(default=2, metadata={"env": "CHATD_BCRYPT_WORKERS"})
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
    # Hardening (chatd/limits.py, chatd/tls.py; docs/security.md lists them all).
    flood_limit: int = field(default=50, metadata={"env": "CHATD_FLOOD_LIMIT"})
    max_connections: int = field(default=4096, metadata={"env": "CHATD_MAX_CONNECTIONS"})
    max_connections_per_address: int = field(
        default=256, metadata={"env": "CHATD_MAX_CONNECTIONS_PER_ADDRESS"}
    )
    login_timeout_seconds: float = field(default=60.0, metadata={"env": "CHATD_LOGIN_TIMEOUT"})
    login_failures_per_address: int = field(
        default=10, metadata={"env": "CHATD_LOGIN_FAILURES_PER_ADDRESS"}
    )
    login_failures_per_account: int = field(
        default=20, metadata={"env": "CHATD_LOGIN_FAILURES_PER_ACCOUNT"}
    )
    login_lockout_seconds: float = field(default=1.0, metadata={"env": "CHATD_LOGIN_LOCKOUT"})
    login_lockout_max_seconds: float = field(
        default=900.0, metadata={"env": "CHATD_LOGIN_LOCKOUT_MAX"}
    )
    # Addresses, and separately account names, the login throttle remembers.
    login_table_size: int = field(default=100_000, metadata={"env": "CHATD_LOGIN_TABLE_SIZE"})
    registration_limit: Allowance | None = field(
        default=Allowance(256, 3600.0), metadata={"env": "CHATD_REGISTRATION_LIMIT"}
    )
    bcrypt_queue: int = field(default=256, metadata={"env": "CHATD_BCRYPT_QUEUE"})
    # Rooms one user may be in at once (#lobby included), rooms nobody was in
    # that one address may open, and DMs stored for offline users per address
    # and per account (chatd/limits.py, KeyedAllowance).
    max_rooms_per_user: int = field(default=100, metadata={"env": "CHATD_MAX_ROOMS_PER_USER"})
    room_creation_limit: Allowance | None = field(
        default=Allowance(100, 3600.0), metadata={"env": "CHATD_ROOM_CREATION_LIMIT"}
    )
    stored_message_limit: Allowance | None = field(
        default=Allowance(100, 600.0), metadata={"env": "CHATD_STORED_MESSAGE_LIMIT"}
    )
    # bcrypt jobs one address may have waiting or running at once.
    bcrypt_per_address: int = field(default=8, metadata={"env": "CHATD_BCRYPT_PER_ADDRESS"})
    # /passwd attempts per account, right or wrong old password alike.
    passwd_limit: Allowance | None = field(
        default=Allowance(5, 3600.0), metadata={"env": "CHATD_PASSWD_LIMIT"}
    )
    # Room messages of one session that may wait on commits at once.
    pipeline_depth: int = field(default=32, metadata={"env": "CHATD_PIPELINE_DEPTH"})
    send_queue_soft: int = field(default=64 * 1024, metadata={"env": "CHATD_SEND_QUEUE_SOFT"})
    send_queue_limit: int = field(default=1024 * 1024, metadata={"env": "CHATD_SEND_QUEUE_LIMIT"})
    ping_interval_seconds: float | None = field(
        default=120.0, metadata={"env": "CHATD_PING_INTERVAL"}
    )
    pong_timeout_seconds: float = field(default=60.0, metadata={"env": "CHATD_PONG_TIMEOUT"})
    # Dead peers found by the kernel (chatd/keepalive.py), for every TCP connection.
    tcp_keepalive: KeepAlive | None = field(
        default=KeepAlive(60, 10, 6), metadata={"env": "CHATD_TCP_KEEPALIVE"}
    )
    close_timeout_seconds: float = field(default=10.0, metadata={"env": "CHATD_CLOSE_TIMEOUT"})
    # Direct messages kept for one offline user at once.
    mailbox_limit: int = field(default=1000, metadata={"env": "CHATD_MAILBOX_LIMIT"})
    # The web door (chatd/frontends/web/; docs/web.md). No listeners when off.
    web_listen: tuple[str, ...] = field(default=("tcp:8080",), metadata={"env": "CHATD_WEB_LISTEN"})
    # None: only the page's own origin (the request's Host) may open the WebSocket.
    web_origins: tuple[str, ...] | None = field(
        default=None, metadata={"env": "CHATD_WEB_ORIGINS"}
    )
    # Reverse proxies whose X-Forwarded-For names the real client address.
    web_trusted_proxies: tuple[IPNetwork, ...] = field(
        default=(), metadata={"env": "CHATD_WEB_TRUSTED_PROXIES"}
    )
    # Cluster mode (chatd/cluster/, docs/cluster.md): Redis announces between
    # nodes on one PostgreSQL. None: one node alone.
    redis_url: str | None = field(default=None, metadata={"env": "CHATD_REDIS"})

    def __post_init__(self) -> None:
        # Limits that only make sense together are checked together, so a bad
        # pair stops the server at start rather than misbehaving later.
        if self.send_queue_soft > self.send_queue_limit:
            raise ConfigError(
                "CHATD_SEND_QUEUE_SOFT must not exceed CHATD_SEND_QUEUE_LIMIT"
                f" ({self.send_queue_soft} > {self.send_queue_limit})"
            )
        if self.byte_rate is not None and self.byte_rate.burst < self.line_limit + 2:
            raise ConfigError(
                "CHATD_BYTE_RATE's burst must hold a whole line, CHATD_LINE_LIMIT + 2 bytes"
                f" ({self.byte_rate.burst} < {self.line_limit + 2})"
            )
        if self.login_lockout_seconds > self.login_lockout_max_seconds:
            raise ConfigError(
                "CHATD_LOGIN_LOCKOUT must not exceed CHATD_LOGIN_LOCKOUT_MAX"
                f" ({self.login_lockout_seconds:g} > {self.login_lockout_max_seconds:g})"
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
                    # A URL's password is never repeated in a message.
                    if setting.name == "redis_url":
                        shown = redacted_url(raw)
                    elif setting.name == "db_path":
                        shown = _database_display(raw)
                    else:
                        shown = raw
                    raise ConfigError(f"{setting.metadata['env']}={shown!r}: {error}") from None
        return cls(**values)

    @classmethod
    def variables(cls) -> dict[str, str]:
        """Map each environment variable to the field it sets."""
        return {setting.metadata["env"]: setting.name for setting in fields(cls)}

    @classmethod
    def unknown_variables(cls, environ: Mapping[str, str] | None = None) -> list[str]:
        """A warning for each ``CHATD_*`` name in ``environ`` that no setting reads.

        A misspelled variable would otherwise be ignored in silence, and the
        server would run with the default the operator meant to change. Each
        warning names the variable and, when one is close, the setting meant.
        Unknown names warn rather than stop the server: a variable of a newer
        chatd, left in a shared environment file, must not keep an older one
        from starting.
        """
        environ = os.environ if environ is None else environ
        known = [*cls.variables(), *OTHER_VARIABLES]
        warnings = []
        for name in sorted(environ):
            if not name.startswith("CHATD_") or name in known:
                continue
            close = difflib.get_close_matches(name, known, n=1, cutoff=0.75)
            hint = f" (did you mean {close[0]}?)" if close else ""
            warnings.append(f"unknown variable {name} ignored{hint}")
        return warnings


# CHATD_* names that are not server settings, so never reported as unknown.
OTHER_VARIABLES = (
    "CHATD_PASSWORD",  # chatd-client's password (docs/client.md)
    "CHATD_TEST_REQUIRE_ALL",  # the test suite's (README, Development)
    "CHATD_TEST_DROP_ANNOUNCEMENTS",  # the test suite's hook (chatd/app.py, cluster mode)
)


def is_postgresql(database: str) -> bool:
    """Whether a ``CHATD_DB`` value names PostgreSQL (a URL) rather than an SQLite file."""
    return database.startswith(("postgresql://", "postgres://"))


def redacted_url(url: str) -> str:
    """``url`` with any password replaced by ``***``, for logs and error messages."""
    return re.sub(r"(://[^/@]*:)[^/@]*@", r"\1***@", url)


def _redis_url(raw: str) -> str | None:
    if raw.lower() == "off":
        return None
    from chatd.cluster.redis import parse_redis_url

    parse_redis_url(raw)
    return raw


def _listen(raw: str) -> tuple[str, ...]:
    descriptions = tuple(part.strip() for part in raw.split(","))
    if not all(descriptions):
        raise ValueError("an endpoint description is empty")
    for description in descriptions:
        try:
            check_endpoint(description)
        except ValueError as error:
            if len(descriptions) > 1:
                raise ValueError(f"{description}: {error}") from None
            raise
    return descriptions


def _listen_or_off(raw: str) -> tuple[str, ...]:
    return () if raw.lower() == "off" else _listen(raw)


def check_endpoint(description: str) -> None:
    """Raise ``ValueError`` saying what is wrong with an endpoint description's syntax.

    Only what can be known without listening: the type, the arguments, and
    that ports are numbers from 0 to 65535. A port in use or a missing TLS
    file shows when the server listens (and stops it, naming the variable).
    """
    from twisted.internet.endpoints import serverFromString

    from chatd.frontends.proxy import split_proxy_prefix
    from chatd.frontends.tls import _SSL_POSITIONAL as _SSL_ARGUMENTS
    from chatd.frontends.tls import parse_description

    inner = split_proxy_prefix(description)
    if inner is not None:
        # Behind a load balancer (chatd/frontends/proxy.py): the endpoint inside counts.
        check_endpoint(inner)
        return
    kind, args, kwargs = parse_description(description)
    if kind.lower() == "systemd":
        # Its sockets are inherited: what it can be given is only known at start.
        return
    if kind.lower() == "ssl":
        # chatd's own ssl: (chatd/tls.py): Twisted's arguments, files read at listen time.
        unknown = [name for name in kwargs if name not in _SSL_ARGUMENTS]
        if unknown or len(args) > len(_SSL_ARGUMENTS):
            raise ValueError(f"unknown argument {(unknown or args)[-1]!r}")
        settings = {**dict(zip(_SSL_ARGUMENTS, args, strict=False)), **kwargs}
        if "port" not in settings:
            raise ValueError("no port")
        _port_number(settings["port"])
        if "backlog" in settings:
            _port_number(settings["backlog"], "backlog")
        return
    try:
        # Nothing listens yet: the endpoint only holds its parsed arguments.
        endpoint = serverFromString(None, description)
    except (ValueError, TypeError, KeyError, IndexError) as error:
        message = str(error).replace("_parse", "").strip()
        number = re.fullmatch(r"invalid literal for int\(\) with base 10: (.*)", message)
        if number:
            message = f"{number.group(1)} is not a number"
        unexpected = re.search(r"unexpected keyword argument (.*)", message)
        if unexpected:
            message = f"unknown argument {unexpected.group(1)}"
        missing = re.search(r"missing \d+ required positional arguments?: (.*)", message)
        if missing:
            message = f"missing {missing.group(1)}"
        raise ValueError(message or type(error).__name__) from None
    port = getattr(endpoint, "_port", None)
    if isinstance(port, int) and not 0 <= port <= 65535:
        raise ValueError("the port must be from 0 to 65535")


def _port_number(raw: str, what: str = "port") -> int:
    try:
        value = int(raw)
    except ValueError:
        raise ValueError(f"the {what} must be a number") from None
    if what == "port" and not 0 <= value <= 65535:
        raise ValueError("the port must be from 0 to 65535")
    return value


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
    if not 0 < value < float("inf"):
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


_BYTE_RATE = re.compile(r"(\d+)\s*(k|kib|m|mib)?/(\d+)\s*(k|kib|m|mib)?", re.IGNORECASE)


def _byte_rate(raw: str) -> RateLimit | None:
    if raw.lower() == "off":
        return None
    match = _BYTE_RATE.fullmatch(raw)
    if match is None:
        raise ValueError("must be '<bytes-per-second>/<burst>' (such as 16K/256K) or 'off'")
    per_second = int(match.group(1)) * _UNITS[(match.group(2) or "").lower() or None]
    burst = int(match.group(3)) * _UNITS[(match.group(4) or "").lower() or None]
    if per_second < 1 or burst < 1:
        raise ValueError("the rate and the burst must be at least 1 byte")
    return RateLimit(float(per_second), burst)


_ALLOWANCE = re.compile(r"(\d+)/(\d+(?:\.\d+)?)")


def _allowance(raw: str) -> Allowance | None:
    if raw.lower() == "off":
        return None
    match = _ALLOWANCE.fullmatch(raw)
    if match is None:
        raise ValueError("must be '<count>/<seconds>' (such as 256/3600) or 'off'")
    count, seconds = int(match.group(1)), float(match.group(2))
    if count < 1 or seconds <= 0:
        raise ValueError("the count must be at least 1 and the seconds positive")
    return Allowance(count, seconds)


def _seconds_or_off(raw: str) -> float | None:
    if raw.lower() == "off":
        return None
    return _positive_seconds(raw)


_KEEPALIVE = re.compile(r"(\d+)/(\d+)/(\d+)")


def _keepalive(raw: str) -> KeepAlive | None:
    if raw.lower() == "off":
        return None
    match = _KEEPALIVE.fullmatch(raw)
    if match is None:
        raise ValueError("must be '<idle-seconds>/<interval-seconds>/<probes>' (60/10/6) or 'off'")
    idle, interval, count = (int(group) for group in match.groups())
    if not (1 <= idle <= 32767 and 1 <= interval <= 32767 and 1 <= count <= 127):
        raise ValueError("idle and interval must be 1 to 32767 seconds, probes 1 to 127")
    return KeepAlive(idle, interval, count)


_SIZE = re.compile(r"(\d+)\s*(k|kib|m|mib)?", re.IGNORECASE)
_UNITS = {None: 1, "k": 1024, "kib": 1024, "m": 1 << 20, "mib": 1 << 20}


def _bytes_between(low: int, high: int):
    def parse(raw: str) -> int:
        match = _SIZE.fullmatch(raw)
        if match is None:
            raise ValueError("must be a number of bytes, optionally with K or M (such as 1M)")
        unit = match.group(2).lower() if match.group(2) else None
        value = int(match.group(1)) * _UNITS[unit]
        if not low <= value <= high:
            raise ValueError(f"must be from {low} to {high} bytes")
        return value

    return parse


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
    if raw.lower() == "off":
        return None
    check_endpoint(raw)
    return raw


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


_ORIGIN = re.compile(r"(https?)://([a-z0-9.-]+|\[[0-9a-f:.]+\])(:\d{1,5})?", re.IGNORECASE)


def _origins(raw: str) -> tuple[str, ...]:
    origins = []
    for part in raw.split(","):
        origin = part.strip().rstrip("/").lower()
        match = _ORIGIN.fullmatch(origin)
        if match is None or (match.group(3) and not 0 < int(match.group(3)[1:]) < 65536):
            raise ValueError(
                f"{part.strip()!r} is not an origin such as https://chat.example.com"
                " (a scheme, http or https, and a host with an optional port; no path)"
            )
        origins.append(origin)
    return tuple(origins)


def _networks(raw: str) -> tuple[IPNetwork, ...]:
    if raw.lower() == "off":
        return ()
    networks = []
    for part in raw.split(","):
        try:
            networks.append(ip_network(part.strip(), strict=False))
        except ValueError:
            raise ValueError(
                f"{part.strip()!r} is not an IP address or network (such as 10.0.0.0/8)"
            ) from None
    return tuple(networks)


def _account_names(raw: str) -> tuple[str, ...]:
    """Comma-separated account names, each a valid user name; folded, duplicates once."""
    from chatd.core.names import fold, is_user_name

    names: dict[str, None] = {}
    for part in raw.split(","):
        name = part.strip()
        if not is_user_name(name):
            raise ValueError(
                f"{name!r} is not an account name (a letter then up to 31 letters,"
                " digits, '_', '.' or '-')"
            )
        names[fold(name)] = None
    return tuple(names)


def _database(raw: str) -> str:
    """A database file's path, or a ``postgresql://`` URL that libpq can parse."""
    from chatd.storage.dialect import is_postgres_url

    if is_postgres_url(raw):
        from chatd.storage.postgres.schema import check_url

        check_url(raw)
    return raw


def _database_display(raw: str) -> str:
    """``CHATD_DB`` as a message may show it: a URL's password hidden."""
    from chatd.storage.backends import display_name

    return display_name(raw)


_PARSERS = {
    "listen": _listen,
    "irc_listen": _listen_or_off,
    "db_path": _database,
    "registration_open": _registration,
    "guests": _on_off,
    "operators": _account_names,
    "bcrypt_rounds": _int_between(4, 31),
    "rate_limit": _rate_limit,
    "byte_rate": _byte_rate,
    "server_name": _server_name,
    "line_limit": _int_between(64, 1 << 20),
    "bcrypt_workers": _int_between(1, 64),
    "account_poll_seconds": _positive_seconds,
    "shutdown_grace_seconds": _positive_seconds,
    "log_format": _log_format,
    "log_messages": _on_off,
    "metrics_listen": _endpoint_or_off,
    "room_history_days": _days_or_off,
    "stored_message_days": _days_or_off,
    "flood_limit": _int_between(1, 1_000_000),
    "max_connections": _int_between(1, 1_000_000),
    "max_connections_per_address": _int_between(1, 1_000_000),
    "login_timeout_seconds": _positive_seconds,
    # The protocol promises too-many-attempts after at most 20 failures in a row.
    "login_failures_per_address": _int_between(1, 20),
    "login_failures_per_account": _int_between(1, 1_000_000),
    "login_lockout_seconds": _positive_seconds,
    "login_lockout_max_seconds": _positive_seconds,
    # Fewer records than this would let a handful of fresh addresses or names
    # push a lockout out of memory; more is memory (a few hundred bytes each).
    "login_table_size": _int_between(1000, 10_000_000),
    "registration_limit": _allowance,
    "bcrypt_queue": _int_between(0, 1_000_000),
    "max_rooms_per_user": _int_between(1, 1_000_000),
    "room_creation_limit": _allowance,
    "stored_message_limit": _allowance,
    "bcrypt_per_address": _int_between(1, 1_000_000),
    "passwd_limit": _allowance,
    "pipeline_depth": _int_between(1, 1024),
    "send_queue_soft": _bytes_between(1024, 1 << 30),
    "send_queue_limit": _bytes_between(1024, 1 << 30),
    "ping_interval_seconds": _seconds_or_off,
    "pong_timeout_seconds": _positive_seconds,
    "close_timeout_seconds": _positive_seconds,
    "mailbox_limit": _int_between(1, 1_000_000),
    "tcp_keepalive": _keepalive,
    "web_listen": _listen_or_off,
    "web_origins": _origins,
    "web_trusted_proxies": _networks,
    "redis_url": _redis_url,
}
