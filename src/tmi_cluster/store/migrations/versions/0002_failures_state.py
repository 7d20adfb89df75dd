"""Failed joins on channels (attempts, next retry, given up) and the cluster's own state.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from tmi_cluster.store.models import UTCDateTime

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Add the failure columns and the state table."""
    with op.batch_alter_table("tmi_cluster_channels") as batch:
        batch.add_column(sa.Column("failures", sa.Integer(), nullable=False, server_default="0"))
        batch.add_column(sa.Column("retry_at", UTCDateTime(), nullable=True))
        batch.add_column(
            sa.Column("given_up", sa.Boolean(), nullable=False, server_default=sa.false())
        )
    op.create_table(
        "tmi_cluster_state",
        sa.Column("key", sa.String(64), nullable=False),
        sa.Column("value", sa.JSON(), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("key", name="pk_tmi_cluster_state"),
    )


def downgrade() -> None:
    """Drop them again."""
    op.drop_table("tmi_cluster_state")
    with op.batch_alter_table("tmi_cluster_channels") as batch:
        batch.drop_column("given_up")
        batch.drop_column("retry_at")
        batch.drop_column("failures")
