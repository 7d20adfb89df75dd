"""The stale cleanup's index: wanted channels by their last acknowledgement (it replaces the
index of ``wanted`` alone, its first column: one index less to write per channel).

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-01
"""

from __future__ import annotations

from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Add the index, drop the one of ``wanted`` alone."""
    op.create_index(
        "ix_tmi_cluster_channels_wanted_acknowledged",
        "tmi_cluster_channels",
        ["wanted", "acknowledged_at"],
    )
    op.drop_index("ix_tmi_cluster_channels_wanted", "tmi_cluster_channels")


def downgrade() -> None:
    """The index of ``wanted`` alone again."""
    op.create_index("ix_tmi_cluster_channels_wanted", "tmi_cluster_channels", ["wanted"])
    op.drop_index("ix_tmi_cluster_channels_wanted_acknowledged", "tmi_cluster_channels")
