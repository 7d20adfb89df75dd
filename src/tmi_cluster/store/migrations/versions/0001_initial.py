"""The initial schema: channels, supervisors, processes, history.

Revision ID: 0001
Revises:
Create Date: 2026-11-28
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from tmi_cluster.store.models import BigId, UTCDateTime

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Create the four tables."""
    op.create_table(
        "tmi_cluster_channels",
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
        sa.Column("login", sa.String(25), nullable=False),
        sa.Column("wanted", sa.Boolean(), nullable=False),
        sa.Column("authorized", sa.Boolean(), nullable=False),
        sa.Column("authorized_at", UTCDateTime(), nullable=True),
        sa.Column("revoked", sa.Boolean(), nullable=False),
        sa.Column("reconnect", sa.Boolean(), nullable=False),
        sa.Column("options", sa.JSON(), nullable=False),
        sa.Column("acknowledged_at", UTCDateTime(), nullable=True),
        sa.Column("last_join_outcome", sa.String(40), nullable=True),
        sa.Column("last_join_at", UTCDateTime(), nullable=True),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_tmi_cluster_channels"),
        sa.UniqueConstraint("login", name="uq_tmi_cluster_channels_login"),
    )
    op.create_index("ix_tmi_cluster_channels_wanted", "tmi_cluster_channels", ["wanted"])
    op.create_table(
        "tmi_cluster_supervisors",
        sa.Column("id", sa.String(64), nullable=False),
        sa.Column("hostname", sa.String(255), nullable=False),
        sa.Column("pid", sa.Integer(), nullable=False),
        sa.Column("state", sa.String(20), nullable=False),
        sa.Column("options", sa.JSON(), nullable=False),
        sa.Column("metrics", sa.JSON(), nullable=False),
        sa.Column("started_at", UTCDateTime(), nullable=False),
        sa.Column("last_seen_at", UTCDateTime(), nullable=False),
        sa.Column("stopped_at", UTCDateTime(), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_tmi_cluster_supervisors"),
    )
    op.create_index("ix_tmi_cluster_supervisors_hostname", "tmi_cluster_supervisors", ["hostname"])
    op.create_table(
        "tmi_cluster_supervisor_processes",
        sa.Column("id", sa.String(64), nullable=False),
        sa.Column("supervisor_id", sa.String(64), nullable=False),
        sa.Column("pid", sa.Integer(), nullable=True),
        sa.Column("state", sa.String(20), nullable=False),
        sa.Column("channels", sa.Integer(), nullable=False),
        sa.Column("metrics", sa.JSON(), nullable=False),
        sa.Column("started_at", UTCDateTime(), nullable=False),
        sa.Column("last_seen_at", UTCDateTime(), nullable=False),
        sa.Column("stopped_at", UTCDateTime(), nullable=True),
        sa.Column("exit_code", sa.Integer(), nullable=True),
        sa.ForeignKeyConstraint(
            ["supervisor_id"],
            ["tmi_cluster_supervisors.id"],
            name="fk_tmi_cluster_supervisor_processes_supervisor_id",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name="pk_tmi_cluster_supervisor_processes"),
    )
    op.create_index(
        "ix_tmi_cluster_supervisor_processes_supervisor_id",
        "tmi_cluster_supervisor_processes",
        ["supervisor_id"],
    )
    op.create_table(
        "tmi_cluster_history",
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
        sa.Column("at", UTCDateTime(), nullable=False),
        sa.Column("supervisor_id", sa.String(64), nullable=False),
        sa.Column("process_id", sa.String(64), nullable=True),
        sa.Column("state", sa.String(20), nullable=False),
        sa.Column("detail", sa.String(500), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_tmi_cluster_history"),
    )
    op.create_index("ix_tmi_cluster_history_at", "tmi_cluster_history", ["at"])
    op.create_index(
        "ix_tmi_cluster_history_supervisor_id", "tmi_cluster_history", ["supervisor_id"]
    )
    op.create_index("ix_tmi_cluster_history_process_id", "tmi_cluster_history", ["process_id"])


def downgrade() -> None:
    """Drop the four tables."""
    op.drop_table("tmi_cluster_history")
    op.drop_table("tmi_cluster_supervisor_processes")
    op.drop_table("tmi_cluster_supervisors")
    op.drop_table("tmi_cluster_channels")
