"""models.last_version: version numbers are never reused after a version is deleted

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("models") as batch:
        batch.add_column(sa.Column("last_version", sa.Integer(), nullable=False,
                                   server_default="0"))
    op.execute("UPDATE models SET last_version = (SELECT COALESCE(MAX(version), 0) "
               "FROM model_versions WHERE model_versions.model_id = models.id)")


def downgrade() -> None:
    with op.batch_alter_table("models") as batch:
        batch.drop_column("last_version")
