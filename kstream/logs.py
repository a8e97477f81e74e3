"""Log output of the CLI: text for people, JSON lines for log pipelines; secrets never.

:func:`setup` is called once, at the edge (``kstream run``); importing this module configures
nothing. JSON lines carry ``time``, ``level``, ``logger``, ``message``, ``worker`` (this worker
process: ``host/pid``), and what the line is about when the caller says so through ``extra``:
``topology``, ``node``, and for message-level events ``topic``, ``partition``, ``offset``,
``kstream_id`` (never a payload: the runtime does not pass one).

Every line, in either format, goes through :func:`redact`: a librdkafka property or flag that
holds a secret (``sasl.password=...``, ``ssl.key.password: ...``, ``...token=...``) keeps its
name and loses its value, wherever it appears (an error message quoting a config, librdkafka's
own log lines).
"""

from __future__ import annotations

import json
import logging
import os
import re
import socket
import sys
from datetime import UTC, datetime
from typing import Literal, TextIO

LogFormat = Literal["text", "json"]

CONTEXT_FIELDS = ("topology", "node", "topic", "partition", "offset", "kstream_id", "trash_id")
"""``extra`` keys a JSON line carries when the log call gives them."""

_SECRET = re.compile(
    r"(?P<name>[\w.-]*(?:password|passwd|secret|token|sasl\.jaas\.config|sasl\.oauthbearer\.config)[\w.-]*)"
    r"(?P<sep>['\"]?\s*[=:]\s*['\"]?)(?P<value>[^\s'\",;}]+)",
    re.IGNORECASE,
)
REDACTED = "[redacted]"


def redact(text: str) -> str:
    """``text`` with the value of every secret-looking ``name=value`` / ``name: value`` replaced."""
    return _SECRET.sub(lambda m: f"{m['name']}{m['sep']}{REDACTED}", text)


class TextFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        return redact(super().format(record))


class JsonFormatter(logging.Formatter):
    """One JSON object per line."""

    def __init__(self, worker: str | None = None) -> None:
        super().__init__()
        self.worker = worker or f"{socket.gethostname()}/{os.getpid()}"

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, object] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "worker": self.worker,
        }
        for name in CONTEXT_FIELDS:
            value = record.__dict__.get(name)
            if value is not None:
                line[name] = value
        if record.exc_info:
            line["error"] = self.formatException(record.exc_info)
        return redact(json.dumps(line, default=str, ensure_ascii=False))


def setup(level: str = "info", fmt: LogFormat = "text", stream: TextIO | None = None) -> None:
    """Send every log line of the process to ``stream`` (stderr) in ``fmt``, from ``level`` up."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(getattr(logging, level.upper(), logging.INFO))
