"""Server logs never carry an API key given in a URL (a browser's WebSocket ``?api_key=``)."""

from __future__ import annotations

import io
import json
import logging
import sys
from collections.abc import Iterator

import pytest

from kaon.serve import logs

SECRET = "kaon_0123456789ab_" + "x" * 43


@pytest.fixture
def captured(caplog: pytest.LogCaptureFixture) -> Iterator[pytest.LogCaptureFixture]:
    """caplog's handler on uvicorn's loggers themselves: a uvicorn.Config made earlier in this
    process stops them from propagating to the root logger."""
    logs.redact_keys_in_server_logs()
    logs.redact_keys_in_server_logs()  # idempotent: one filter
    targets = [logging.getLogger(n) for n in ("uvicorn.error", "uvicorn.access")]
    saved = [(t.level, t.propagate) for t in targets]
    for target in targets:
        assert sum(isinstance(f, logs.RedactKeys) for f in target.filters) == 1
        target.addHandler(caplog.handler)
        target.setLevel(logging.INFO)
        target.propagate = False  # each record once, whatever an earlier Config set
    try:
        yield caplog
    finally:
        for target, (level, propagate) in zip(targets, saved, strict=True):
            target.removeHandler(caplog.handler)
            target.setLevel(level)
            target.propagate = propagate


def test_a_websocket_line_has_the_key_redacted_and_the_rest_kept(
        captured: pytest.LogCaptureFixture) -> None:
    uvicorn = logging.getLogger("uvicorn.error")  # what uvicorn's WebSocket protocol logs
    uvicorn.info('%s - "WebSocket %s" [accepted]', "10.0.0.7:5123",
                 f"/d/cam/v1/models/m/stream?fps=25&api_key={SECRET}&policy=drop")
    uvicorn.info(f"/stream?API%5FKEY={SECRET}")  # decoded and case-folded by Starlette too
    uvicorn.info("no key here: %d frames", 3)
    assert SECRET not in captured.text
    assert captured.messages == [
        '10.0.0.7:5123 - "WebSocket /d/cam/v1/models/m/stream?fps=25&api_key=REDACTED'
        '&policy=drop" [accepted]', "/stream?API%5FKEY=REDACTED", "no key here: 3 frames"]


def test_an_access_line_keeps_the_five_arguments_its_formatter_unpacks(
        captured: pytest.LogCaptureFixture) -> None:
    from uvicorn.logging import AccessFormatter

    logging.getLogger("uvicorn.access").info(
        '%s - "%s %s HTTP/%s" %d', "10.0.0.7:5123", "GET", f"/d/x/v2?api_key={SECRET}",
        "1.1", 200)
    (record,) = captured.records
    assert isinstance(record.args, tuple) and len(record.args) == 5
    line = AccessFormatter(use_colors=False).format(record)
    assert SECRET not in line and "/d/x/v2?api_key=REDACTED" in line and "200" in line


def test_access_lines_follow_sys_stderr_when_it_is_swapped(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A host that swaps sys.stderr and closes the old stream (a test's capture, a notebook
    cell) still gets its access lines, not a "Logging error" for each."""
    saved = list(logs.logger.handlers)
    for handler in saved:
        logs.logger.removeHandler(handler)
    first, second = io.StringIO(), io.StringIO()
    try:
        monkeypatch.setattr(sys, "stderr", first)
        logs.configure()
        logs.configure()  # idempotent: one handler
        assert len(logs.logger.handlers) == 1
        first.close()
        monkeypatch.setattr(sys, "stderr", second)
        logs.access({"path": "/readyz", "status": 200})
        line = json.loads(second.getvalue())
        assert line["msg"] == "request" and line["path"] == "/readyz"
    finally:
        for handler in list(logs.logger.handlers):
            logs.logger.removeHandler(handler)
        for handler in saved:
            logs.logger.addHandler(handler)
