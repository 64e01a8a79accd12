"""A database Kaon cannot use is a clean error (the CLI prints it), never a traceback."""

from __future__ import annotations

from pathlib import Path

import pytest

from kaon.config import reset_settings
from kaon.db.engine import get_engine
from kaon.errors import ConfigError, KaonError, UnavailableError


@pytest.mark.parametrize(("url", "error", "words"), [
    ("bogus", ConfigError, "The database URL 'bogus' is not valid"),
    ("postgresql+psycopg://nobody:s3cret@127.0.0.1:1/x", UnavailableError,
     "Cannot reach the database postgresql+psycopg://nobody:***@127.0.0.1:1/x"),
])
def test_a_database_url_that_cannot_be_used(kaon_home: Path, monkeypatch: pytest.MonkeyPatch,
                                            url: str, error: type[KaonError],
                                            words: str) -> None:
    monkeypatch.setenv("KAON_DATABASE_URL", url)
    reset_settings()
    with pytest.raises(error) as refused:
        get_engine()
    assert words in refused.value.message and "s3cret" not in str(refused.value)
    assert "KAON_DATABASE_URL" in (refused.value.hint or "")


def test_a_home_that_cannot_hold_the_database(monkeypatch: pytest.MonkeyPatch,
                                              kaon_home: Path) -> None:
    kaon_home.parent.mkdir(parents=True, exist_ok=True)
    blocker = kaon_home.parent / "a-file"
    blocker.write_text("")
    monkeypatch.setenv("KAON_HOME", str(blocker / "home"))
    reset_settings()
    with pytest.raises(ConfigError) as refused:
        get_engine()
    assert "Cannot create the database" in refused.value.message
    assert "KAON_HOME" in (refused.value.hint or "")
