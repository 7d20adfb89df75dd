"""What streamers grant the bot on the invite screen (their tokens encrypted).

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-06
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from tmi_cluster.store.models import UTCDateTime

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Add the grants table."""
    op.create_table(
        "tmi_cluster_grants",
        sa.Column("user_id", sa.String(32), nullable=False),
        sa.Column("login", sa.String(25), nullable=False),
        sa.Column("scopes", sa.JSON(), nullable=False),
        sa.Column("access_token", sa.Text(), nullable=False),
        sa.Column("refresh_token", sa.Text(), nullable=False),
        sa.Column("expires_at", UTCDateTime(), nullable=True),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("user_id", name="pk_tmi_cluster_grants"),
        sa.UniqueConstraint("login", name="uq_tmi_cluster_grants_login"),
    )


def downgrade() -> None:
    """Drop it (and every grant with it)."""
    op.drop_table("tmi_cluster_grants")
