"""Engine and sessions. The schema is brought to the Alembic head on first use."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path

from sqlalchemy import Engine, create_engine, event, make_url
from sqlalchemy.exc import ArgumentError, OperationalError
from sqlalchemy.orm import Session, sessionmaker

from kaon.config import get_settings
from kaon.errors import ConfigError, UnavailableError

_MIGRATIONS = Path(__file__).parent / "migrations"
VERSION_TABLE = "kaon_alembic_version"  # Optuna's storage owns the default alembic_version
_lock = threading.Lock()


def alembic_config(url: str):  # type: ignore[no-untyped-def]
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(_MIGRATIONS))
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


def upgrade(engine: Engine) -> None:
    """Run pending migrations (a no-op when the database is at head)."""
    from alembic import command
    from alembic.runtime.migration import MigrationContext
    from alembic.script import ScriptDirectory

    cfg = alembic_config(engine.url.render_as_string(hide_password=False))
    head = ScriptDirectory.from_config(cfg).get_current_head()
    with engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={"version_table": VERSION_TABLE})
        if context.get_current_revision() == head:
            return
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "head")


def _shown(url: str) -> str:
    """``url`` without its password, for messages."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return url.rpartition("@")[2]


@lru_cache(maxsize=8)
def _engine_for(url: str) -> Engine:
    """The engine for ``url``, at the schema's head; a URL that cannot be used is a
    ConfigError. A database that cannot be reached stays SQLAlchemy's OperationalError: the
    servers answer it with a 503 that names nothing of the database, and the CLI turns it
    into :func:`unreachable`'s message."""
    try:
        return _connect(url)
    except ArgumentError as exc:
        raise ConfigError(f"The database URL {_shown(url)!r} is not valid: {exc}",
                          hint="Set KAON_DATABASE_URL to e.g. postgresql+psycopg://user@host/db "
                               "or sqlite:////abs/path.db, or unset it to use KAON_HOME's "
                               "kaon.db.") from None
    except OSError as exc:
        raise ConfigError(f"Cannot create the database {_shown(url)}: {exc.strerror} "
                          f"({exc.filename})",
                          hint="Set KAON_HOME to a folder Kaon may write in.") from None


def unreachable(exc: OperationalError) -> UnavailableError:
    """What the CLI says of a database it cannot reach (the URL without its password)."""
    reason = str(exc.orig or exc).strip().splitlines()[0]
    hint = ("Another Kaon process holds it (a migration, a long write): retry in a moment."
            if "locked" in reason else
            "Start the database, or point KAON_DATABASE_URL at one that runs.")
    return UnavailableError(f"Cannot reach the database {_shown(get_settings().db_url)}: "
                            f"{reason}", hint=hint)


def _connect(url: str) -> Engine:
    if url.startswith("sqlite:///"):
        Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"timeout": 30, "check_same_thread": False})

        @event.listens_for(engine, "connect")
        def _pragmas(dbapi_conn, _record):  # type: ignore[no-untyped-def]
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.close()
    else:
        engine = create_engine(url, pool_pre_ping=True)
    with _lock:
        upgrade(engine)
    return engine


def get_engine() -> Engine:
    return _engine_for(get_settings().db_url)


@contextmanager
def session_scope() -> Iterator[Session]:
    """A transaction: committed on success, rolled back on error."""
    session = sessionmaker(get_engine(), expire_on_commit=False)()
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()
