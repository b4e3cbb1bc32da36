"""Log formats: twistd's text lines by default, or JSON lines for log shippers.

With ``CHATD_LOG_FORMAT=json`` the application gives twistd a log observer
of its own (twistd uses an application's ``ILogObserver`` component in place
of its text log) that writes one JSON object per line to standard output,
where systemd's journal (or a container runtime) collects it.

Each object is flat, so Vector, Fluent Bit, Promtail or Filebeat can read it
without a template: ``timestamp`` (UTC, ISO 8601), ``level``, ``namespace``,
``message`` (the text twistd would have printed), ``failure`` (a traceback,
when there is one), and every key of the event itself, such as the
``chatd_event``, ``user``, ``peer`` and ``reason`` of ``chatd.ops.telemetry``.
Twisted's own ``jsonFileLogObserver`` is meant for reading logs back into
Twisted (record separators, format templates, serialized objects); this one
is meant for a shipper.
"""

import json
import sys
import threading
from datetime import UTC, datetime
from typing import IO

from twisted.logger import ILogObserver, formatEvent
from zope.interface import implementer

# Keys of old-style (twisted.python.log) events that the fields above replace.
_LEGACY_KEYS = frozenset({"message", "format", "isError", "why", "failure", "printed", "time"})


def event_as_record(event: dict) -> dict:
    """The flat, JSON-ready form of a ``twisted.logger`` event."""
    record: dict = {
        "timestamp": datetime.fromtimestamp(event.get("log_time", 0), UTC).isoformat(
            timespec="milliseconds"
        ).replace("+00:00", "Z"),
        "level": getattr(event.get("log_level"), "name", "info"),
        "namespace": event.get("log_namespace", ""),
        "message": formatEvent(event),
    }
    failure = event.get("log_failure")
    if failure is not None:
        record["failure"] = failure.getTraceback()
    for key, value in event.items():
        if key.startswith("log_") or key in _LEGACY_KEYS or key in record:
            continue
        record[key] = value if isinstance(value, str | int | float | bool | None) else str(value)
    return record


@implementer(ILogObserver)
class JsonLinesObserver:
    """Writes each event as one line of JSON to ``stream``."""

    def __init__(self, stream: IO[str]) -> None:
        self._stream = stream
        # Events come from the database threads too.
        self._lock = threading.Lock()

    def __call__(self, event: dict) -> None:
        line = json.dumps(event_as_record(event), ensure_ascii=False, default=str)
        with self._lock:
            self._stream.write(line + "\n")
            self._stream.flush()


def log_observer(log_format: str, stream: IO[str] | None = None) -> ILogObserver | None:
    """The observer for ``CHATD_LOG_FORMAT``; None leaves twistd's text log in place."""
    if log_format == "json":
        return JsonLinesObserver(stream or sys.stdout)
    return None
