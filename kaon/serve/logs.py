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


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        payload: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, timezone.utc).isoformat(),
            "level": record.levelname.lower(), "logger": record.name, "msg": record.getMessage()}
        payload.update(getattr(record, "fields", {}))
        return json.dumps(payload, default=str)


def configure(level: int = logging.INFO) -> None:
    """Send access logs as JSON lines to stderr (idempotent)."""
    if any(isinstance(h.formatter, JsonFormatter) for h in logger.handlers):
        return
    handler = logging.StreamHandler(sys.stderr)
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
