"""A database Kaon cannot use is a clean error (the CLI prints it), never a traceback."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy.exc import OperationalError

from kaon.config import reset_settings
from kaon.db.engine import get_engine, unreachable
from kaon.errors import ConfigError, UnavailableError


def test_a_database_url_that_cannot_be_used(kaon_home: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KAON_DATABASE_URL", "bogus")
    reset_settings()
    with pytest.raises(ConfigError) as refused:
        get_engine()
    assert "The database URL 'bogus' is not valid" in refused.value.message
    assert "KAON_DATABASE_URL" in (refused.value.hint or "")


def test_an_unreachable_database_is_named_without_its_password(
        kaon_home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The servers answer it with their generic 503 (it stays SQLAlchemy's error); the CLI
    says which database, without the password."""
    monkeypatch.setenv("KAON_DATABASE_URL", "postgresql+psycopg://nobody:s3cret@127.0.0.1:1/x")
    reset_settings()
    with pytest.raises(OperationalError) as refused:
        get_engine()
    said = unreachable(refused.value)
    assert isinstance(said, UnavailableError) and "s3cret" not in str(said)
    assert said.message.startswith(
        "Cannot reach the database postgresql+psycopg://nobody:***@127.0.0.1:1/x: ")
    assert "KAON_DATABASE_URL" in (said.hint or "")


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
