"""Each channel's sender: the bot account (of ``tmi.identities``) that sends in it, as the
Database channel manager records it (NULL: the settings choose).

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-06
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Add ``sender``."""
    with op.batch_alter_table("tmi_cluster_channels") as batch:
        batch.add_column(sa.Column("sender", sa.String(25), nullable=True))


def downgrade() -> None:
    """Drop ``sender``."""
    with op.batch_alter_table("tmi_cluster_channels") as batch:
        batch.drop_column("sender")
