"""docs/platform.md's Python runs as written, against a real `kaon up`.

Each ```python block is executed in order against a platform started for the test (its own
KAON_HOME, a small random-weight `digits` model deployed as `digits`), with the page's URL
replaced by the test server's and the admin key in KEY and KAON_API_KEY, as the page says.
The printed labels of the first block come from a trained model on the page; here only that
it runs is checked. The second block must meet the free plan's replica limit.
"""

from __future__ import annotations

import contextlib
import io
from pathlib import Path

import pytest

from tests.docs.test_education import python_blocks, run_blocks
from tests.platform.platform_server import running_platform

PAGE = Path(__file__).resolve().parents[2] / "docs" / "platform.md"


@pytest.mark.slow
def test_the_platform_page_s_python_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                         shared_datasets: Path) -> None:
    blocks = python_blocks(PAGE.read_text(encoding="utf-8"))
    assert len(blocks) >= 2
    with running_platform(tmp_path / "home") as up:
        up.process.deploy("digits", "digits")
        monkeypatch.setenv("KEY", up.key)
        monkeypatch.setenv("KAON_API_KEY", up.key)
        printed = io.StringIO()
        with contextlib.redirect_stdout(printed):
            run_blocks([b.replace("http://127.0.0.1:8080", up.url) for b in blocks],
                       "platform")
    assert "allows at most 1 replica" in printed.getvalue()
