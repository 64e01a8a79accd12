"""Database access: engine, sessions, ORM tables; schema via Alembic migrations."""

from kaon.db.engine import get_engine, session_scope

__all__ = ["get_engine", "session_scope"]
