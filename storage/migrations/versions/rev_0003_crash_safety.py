"""Crash safety: steps lost in a crash (their batches went back to training) and reward-model quarantine.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    op.create_table(
        "lost_steps",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("batch_id", sa.Integer(), nullable=False),
        sa.Column("policy_version", sa.Integer(), nullable=False),
        sa.Column("stats", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("lost_at", sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(["batch_id"], ["training_batches.id"], name="fk_lost_steps_batch_id_training_batches"),
        sa.PrimaryKeyConstraint("id", name="pk_lost_steps"),
    )
    op.create_table(
        "score_quarantine",
        sa.Column("sample_id", sa.Integer(), nullable=False),
        sa.Column("source", sa.String(length=200), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(["sample_id"], ["samples.id"], name="fk_score_quarantine_sample_id_samples"),
        sa.PrimaryKeyConstraint("sample_id", "source", name="pk_score_quarantine"),
    )


def downgrade() -> None:
    op.drop_table("score_quarantine")
    op.drop_table("lost_steps")
