"""The MNIST tutorial runs as written.

Every ```python block of `docs/tutorial-mnist.md` is executed in order in one namespace, on
real MNIST from KAON_DATA_PATH; a block that raises (or fails one of its own asserts) fails the
test. The page creates its scratch KAON_HOME with ``tempfile.mkdtemp``; here that lands inside
pytest's tmp_path, so nothing leaks outside the test.
"""

from __future__ import annotations

import re
import tempfile
from pathlib import Path
from typing import Any

import pytest

from tests.docs.test_education import python_blocks, run_blocks

REPO = Path(__file__).resolve().parents[2]
PAGE = REPO / "docs" / "tutorial-mnist.md"


@pytest.fixture(scope="module")
def page_text() -> str:
    assert PAGE.is_file(), f"missing tutorial page: {PAGE}"
    return PAGE.read_text(encoding="utf-8")


def test_tutorial_has_runnable_blocks_and_shows_the_client_without_running_it(
        page_text: str) -> None:
    blocks = python_blocks(page_text)
    assert len(blocks) >= 8
    assert all(block.strip() for block in blocks)
    # The real-server part is documentation only: no executed block starts a server.
    assert not any(re.search(r"\bClient\(|uvicorn", block) for block in blocks)
    assert "kaon serve mnist-tutorial@production" in page_text
    assert "Client(\"http://127.0.0.1:8000\")" in page_text


def test_every_python_block_runs_in_order(
        page_text: str, shared_datasets: Path, kaon_home: Path, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    namespace: dict[str, Any] = run_blocks(python_blocks(page_text), PAGE.name)

    # The page really wrote into its own scratch home, under this test's tmp_path.
    home = Path(namespace["settings"].home)
    assert home.parent == tmp_path.resolve() and home.name.startswith("kaon-tutorial-")
    assert (home / "kaon.db").is_file()
    assert not kaon_home.exists()  # the fixture's home was never used
    # And it went the whole way: two versions, the alias moved, a served prediction.
    assert namespace["result"].model == "mnist-tutorial:1"
    assert namespace["result_v2"].model == "mnist-tutorial:2"
    assert namespace["production"].version == 2
    assert len(namespace["body"]["predictions"]) == 4
