"""JSON access logs, one line per request, each with a request id (``X-Request-ID``)."""

from __future__ import annotations

import itertools
import json
import logging
import re
import secrets
import sys
from datetime import datetime, timezone
from typing import Any

logger = logging.getLogger("kaon.access")
_SAFE_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
# Ids made here: a random 64-bit prefix per process and a counter, unique across processes and
# restarts (the gateway keys usage events by them) without a system call per request.
_PREFIX = secrets.token_hex(8)
_COUNTER = itertools.count(1)
_KEY_IN_QUERY = re.compile(r"(?i)(api(?:_|%5f)key=)[^&\s\"']+")


def _redact(value: Any) -> Any:
    return _KEY_IN_QUERY.sub(r"\1REDACTED", value) if isinstance(value, str) else value


class RedactKeys(logging.Filter):
    """Replace ``api_key=…`` in a record with ``api_key=REDACTED``: browsers, which cannot
    set headers on a WebSocket, put the key in the URL, and uvicorn logs URLs whole. The
    arguments are redacted one by one, keeping their shape (uvicorn's access formatter
    unpacks them)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple):
            record.args = tuple(_redact(a) for a in record.args)
        elif isinstance(record.args, dict):
            record.args = {k: _redact(v) for k, v in record.args.items()}
        record.msg = _redact(record.msg)
        return True


def redact_keys_in_server_logs() -> None:
    """Install :class:`RedactKeys` on uvicorn's loggers (idempotent)."""
    for name in ("uvicorn.error", "uvicorn.access"):
        target = logging.getLogger(name)
        if not any(isinstance(f, RedactKeys) for f in target.filters):
            target.addFilter(RedactKeys())


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        payload: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, timezone.utc).isoformat(),
            "level": record.levelname.lower(), "logger": record.name, "msg": record.getMessage()}
        payload.update(getattr(record, "fields", {}))
        return json.dumps(payload, default=str)


class _Stderr(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to whatever ``sys.stderr`` is when a record comes (as ``logging.lastResort``
    does), not the stream of the moment it was made: a host that swaps ``sys.stderr`` and
    closes the old one (a test's capture, a notebook cell) would otherwise get a
    "Logging error" for every line after."""

    @property  # type: ignore[override]
    def stream(self) -> Any:
        return sys.stderr

    @stream.setter
    def stream(self, _: Any) -> None:
        pass


def configure(level: int = logging.INFO) -> None:
    """Send access logs as JSON lines to stderr (idempotent)."""
    if any(isinstance(h.formatter, JsonFormatter) for h in logger.handlers):
        return
    handler = _Stderr()
    handler.setFormatter(JsonFormatter())
    logger.addHandler(handler)
    logger.setLevel(level)
    logger.propagate = False


def request_id(incoming: str | None) -> str:
    """Keep a caller's well-formed id (so traces join up); otherwise make one."""
    if incoming and _SAFE_ID.match(incoming):
        return incoming
    return f"{_PREFIX}{next(_COUNTER):x}"


def access(fields: dict[str, Any]) -> None:
    logger.info("request", extra={"fields": fields})
