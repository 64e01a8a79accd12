"""Settings, from environment variables (``KAON_*``), a ``.env`` file or a TOML config file.

Precedence, highest first: environment variables, ``.env`` in the working directory, the TOML
file named by ``KAON_CONFIG`` (default ``./kaon.toml``), built-in defaults. The TOML file uses
the same names without the prefix (``home = "/srv/kaon"``, ``data_path = "/data"``).
Nothing else in Kaon reads ``os.environ``: every module asks :func:`get_settings`.
"""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path

from pydantic import Field, ValidationError, field_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from kaon.errors import ConfigError


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
    serve_config: str | None = Field(
        default=None, description="Set by `kaon serve --replicas`: JSON for each worker process."
    )
    plans_file: Path | None = Field(
        default=None, description="The platform's plans (TOML); default: the shipped file."
    )
    job_stale_s: float = Field(
        default=15.0, gt=0, description="A running job whose worker has not beaten for this "
                                        "long is requeued."
    )

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        toml_file = Path(os.environ.get("KAON_CONFIG", "kaon.toml"))
        try:
            toml = TomlConfigSettingsSource(settings_cls, toml_file=toml_file)
            values = toml()
        except (ValueError, OSError) as exc:
            raise ConfigError(f"Config file {toml_file} cannot be read: {exc}",
                              hint="Fix the TOML syntax, or point KAON_CONFIG at a file.") from None
        unknown = sorted(set(values) - set(settings_cls.model_fields))
        if unknown:
            raise ConfigError(
                f"Config file {toml_file} has unknown key(s): {', '.join(unknown)}.",
                hint=f"Allowed keys: {', '.join(sorted(settings_cls.model_fields))}.")
        return init_settings, env_settings, dotenv_settings, toml

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
    try:
        return Settings()
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        raise ConfigError(f"Invalid Kaon settings: {problems}.",
                          hint="Check the KAON_* environment variables and kaon.toml.") from None


def reset_settings() -> None:
    """Forget cached settings (tests and long-lived processes that change env vars)."""
    get_settings.cache_clear()
