"""usage_counters: the bytes each workspace stores now, as the 'stored' row of storage_bytes

Storage was counted like requests, per month of upload: a deleted or replaced dataset still
counted, and a hard cap started afresh each month. Storage events are now signed changes and
this row holds their sum, which the cap applies to. Data only; no table changes.

Revision ID: 0006
Revises: 0005
"""

from __future__ import annotations

from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("INSERT INTO usage_counters (workspace_id, period, metric, used) "
               "SELECT workspace_id, 'stored', 'storage_bytes', SUM(quantity) "
               "FROM usage_events WHERE metric = 'storage_bytes' GROUP BY workspace_id")


def downgrade() -> None:
    op.execute("DELETE FROM usage_counters WHERE period = 'stored'")
