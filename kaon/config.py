"""Settings, read from environment variables (``KAON_*``) or a ``kaon.toml``/.env file.

Nothing else in Kaon reads ``os.environ``: every module asks :func:`get_settings`.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """Where Kaon keeps its state and where it looks for data."""

    model_config = SettingsConfigDict(
        env_prefix="KAON_", env_file=".env", env_file_encoding="utf-8", extra="ignore"
    )

    home: Path = Field(
        default_factory=lambda: Path.home() / ".kaon",
        description="Folder for the database, artifacts and logs.",
    )
    database_url: str | None = Field(
        default=None, description="SQLAlchemy URL; default: SQLite inside KAON_HOME."
    )
    data_path: str = Field(
        default="", description="':'-separated folders searched for datasets, in order."
    )
    download: bool = Field(
        default=True, description="Allow downloading catalog datasets not found locally."
    )

    @field_validator("home", mode="after")
    @classmethod
    def _expand_home(cls, value: Path) -> Path:
        return value.expanduser().resolve()

    @property
    def db_url(self) -> str:
        return self.database_url or f"sqlite:///{self.home / 'kaon.db'}"

    @property
    def data_dirs(self) -> list[Path]:
        return [Path(p).expanduser() for p in self.data_path.split(":") if p.strip()]

    @property
    def runs_dir(self) -> Path:
        return self.home / "runs"

    @property
    def models_dir(self) -> Path:
        return self.home / "models"

    @property
    def datasets_dir(self) -> Path:
        """Datasets imported with ``kaon data import``."""
        return self.home / "datasets"

    @property
    def cache_dir(self) -> Path:
        """Catalog datasets downloaded from their canonical URL."""
        return self.home / "cache"


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()


def reset_settings() -> None:
    """Forget cached settings (tests and long-lived processes that change env vars)."""
    get_settings.cache_clear()
