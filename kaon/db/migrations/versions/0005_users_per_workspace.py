"""users.email is no longer unique: a member added by a workspace is a user of that workspace

Adding a member by e-mail used to link the one user with that address, whichever workspace it
came from: the workspace that added it then held a key acting as that user, whose list of
workspaces (and display name) it could read. Members are now new users; an index stays for
lookups. The downgrade fails while two users share an address.

Revision ID: 0005
Revises: 0004
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

_NAMES = {"uq": "uq_%(table_name)s_%(column_0_name)s"}  # SQLite reflects it unnamed


def upgrade() -> None:
    uniques = sa.inspect(op.get_bind()).get_unique_constraints("users")
    name = next((u["name"] for u in uniques if u["column_names"] == ["email"]), None)
    with op.batch_alter_table("users", naming_convention=_NAMES) as batch:
        batch.drop_constraint(name or "uq_users_email", type_="unique")
        batch.create_index("ix_users_email", ["email"])


def downgrade() -> None:
    with op.batch_alter_table("users", naming_convention=_NAMES) as batch:
        batch.drop_index("ix_users_email")
        batch.create_unique_constraint("uq_users_email", ["email"])
