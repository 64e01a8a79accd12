"""Settings: environment variables, the TOML config file, and strictness."""

from __future__ import annotations

from pathlib import Path

import pytest

from kaon.config import get_settings, reset_settings
from kaon.errors import ConfigError


def test_defaults_put_the_sqlite_database_inside_kaon_home(kaon_home: Path) -> None:
    settings = get_settings()
    assert settings.home == kaon_home.resolve()
    assert settings.db_url == f"sqlite:///{kaon_home.resolve() / 'kaon.db'}"


def test_data_path_is_split_on_colons(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KAON_DATA_PATH", "/a:/b::")
    reset_settings()
    assert [str(p) for p in get_settings().data_dirs] == ["/a", "/b"]


def test_toml_file_is_read_and_env_vars_win(tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "kaon.toml"
    config.write_text('data_path = "/from/toml"\ndatabase_url = "sqlite:////tmp/x.db"\n')
    monkeypatch.setenv("KAON_CONFIG", str(config))
    monkeypatch.delenv("KAON_DATA_PATH")
    reset_settings()
    assert get_settings().data_path == "/from/toml"
    monkeypatch.setenv("KAON_DATABASE_URL", "sqlite:////tmp/env.db")
    reset_settings()
    assert get_settings().db_url == "sqlite:////tmp/env.db"


def test_unknown_key_in_the_toml_file_is_named(tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "kaon.toml"
    config.write_text('hoem = "/typo"\n')
    monkeypatch.setenv("KAON_CONFIG", str(config))
    reset_settings()
    with pytest.raises(ConfigError, match="hoem"):
        get_settings()


def test_invalid_value_is_a_config_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KAON_DOWNLOAD", "maybe")
    reset_settings()
    with pytest.raises(ConfigError, match="download"):
        get_settings()


def test_the_platform_settings_come_from_a_toml_file_too(tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    from kaon.platform.plans import plans_path

    config = tmp_path / "kaon.toml"
    config.write_text(f'plans_file = "{tmp_path / "my-plans.toml"}"\njob_stale_s = 4\n')
    monkeypatch.setenv("KAON_CONFIG", str(config))
    monkeypatch.delenv("KAON_PLANS_FILE", raising=False)
    reset_settings()
    assert plans_path() == tmp_path / "my-plans.toml"
    assert get_settings().job_stale_s == 4.0
