"""Keep rating history: ratings.updated_at (backfilled from created_at) and the rating_history table.

Revision ID: 0002
Revises: 0001
Create Date: 2025-02-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    # Add nullable, backfill, then make NOT NULL: on SQLite the batch context rebuilds the table.
    with op.batch_alter_table("ratings") as batch:
        batch.add_column(sa.Column("updated_at", sa.DateTime(), nullable=True))
    op.execute(sa.text("UPDATE ratings SET updated_at = created_at"))
    with op.batch_alter_table("ratings") as batch:
        batch.alter_column("updated_at", existing_type=sa.DateTime(), nullable=False)
        batch.create_index("ix_ratings_rater_updated", ["rater_id", "updated_at"])
    op.create_table(
        "rating_history",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("sample_id", sa.Integer(), nullable=False),
        sa.Column("rater_id", sa.Integer(), nullable=False),
        sa.Column("action", sa.String(length=16), nullable=False),
        sa.Column("old_score", sa.Float(), nullable=False),
        sa.Column("new_score", sa.Float(), nullable=True),
        sa.Column("changed_at", sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(["rater_id"], ["raters.id"], name="fk_rating_history_rater_id_raters"),
        sa.ForeignKeyConstraint(["sample_id"], ["samples.id"], name="fk_rating_history_sample_id_samples"),
        sa.PrimaryKeyConstraint("id", name="pk_rating_history"),
    )
    op.create_index("ix_rating_history_sample_id", "rating_history", ["sample_id"])


def downgrade() -> None:
    op.drop_index("ix_rating_history_sample_id", table_name="rating_history")
    op.drop_table("rating_history")
    with op.batch_alter_table("ratings") as batch:
        batch.drop_index("ix_ratings_rater_updated")
        batch.drop_column("updated_at")
