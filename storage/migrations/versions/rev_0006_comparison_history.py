"""Keep undone comparisons: the comparison_history table (as rating_history keeps undone ratings).

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    op.create_table(
        "comparison_history",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("pair_id", sa.Integer(), nullable=False),
        sa.Column("rater_id", sa.Integer(), nullable=False),
        sa.Column("action", sa.String(length=16), nullable=False),
        sa.Column("old_answer", sa.String(length=16), nullable=False),
        sa.Column("answered_at", sa.DateTime(), nullable=False),
        sa.Column("changed_at", sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(["pair_id"], ["pairs.id"], name="fk_comparison_history_pair_id_pairs"),
        sa.ForeignKeyConstraint(["rater_id"], ["raters.id"], name="fk_comparison_history_rater_id_raters"),
        sa.PrimaryKeyConstraint("id", name="pk_comparison_history"),
    )
    op.create_index("ix_comparison_history_pair_id", "comparison_history", ["pair_id"])


def downgrade() -> None:
    op.drop_index("ix_comparison_history_pair_id", table_name="comparison_history")
    op.drop_table("comparison_history")
