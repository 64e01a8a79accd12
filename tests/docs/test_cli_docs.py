"""docs/cli.md's exit-code table says what kaon/errors.py does."""

from __future__ import annotations

import re
from pathlib import Path

import kaon.errors
from kaon.train.api import TrainingInterrupted

CLI_MD = Path(__file__).resolve().parents[2] / "docs" / "cli.md"


def test_every_documented_exit_code_matches_its_error_class() -> None:
    rows = re.findall(r"^\| (\d+) \| `(\w+)` \|", CLI_MD.read_text(), flags=re.M)
    assert rows, "the exit-code table is missing from docs/cli.md"
    classes = {**{n: getattr(kaon.errors, n) for n in dir(kaon.errors)},
               "TrainingInterrupted": TrainingInterrupted}
    for code, name in rows:
        assert classes[name].exit_code == int(code), name


def test_every_error_class_is_documented() -> None:
    text = CLI_MD.read_text()
    for name in dir(kaon.errors):
        cls = getattr(kaon.errors, name)
        if isinstance(cls, type) and issubclass(cls, kaon.errors.KaonError) and \
                cls is not kaon.errors.KaonError:
            assert f"`{name}`" in text, name
