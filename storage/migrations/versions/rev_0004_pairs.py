"""Pairwise rating: pairs of responses to one prompt, raters' comparisons of them, and skipped pairs.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    op.create_table(
        "pairs",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("prompt_id", sa.Integer(), nullable=False),
        sa.Column("sample_a_id", sa.Integer(), nullable=False),
        sa.Column("sample_b_id", sa.Integer(), nullable=False),
        sa.Column("compared_n", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("lease_rater_id", sa.Integer(), nullable=True),
        sa.Column("lease_expires_at", sa.DateTime(), nullable=True),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(["prompt_id"], ["prompts.id"], name="fk_pairs_prompt_id_prompts"),
        sa.ForeignKeyConstraint(["sample_a_id"], ["samples.id"], name="fk_pairs_sample_a_id_samples"),
        sa.ForeignKeyConstraint(["sample_b_id"], ["samples.id"], name="fk_pairs_sample_b_id_samples"),
        sa.ForeignKeyConstraint(["lease_rater_id"], ["raters.id"], name="fk_pairs_lease_rater_id_raters"),
        sa.PrimaryKeyConstraint("id", name="pk_pairs"),
        sa.UniqueConstraint("sample_a_id", "sample_b_id", name="uq_pairs_samples"),
    )
    op.create_index("ix_pairs_prompt_id", "pairs", ["prompt_id"])
    op.create_index("ix_pairs_sample_b_id", "pairs", ["sample_b_id"])
    op.create_index("ix_pairs_lease_rater_id", "pairs", ["lease_rater_id"])
    op.create_table(
        "comparisons",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("pair_id", sa.Integer(), nullable=False),
        sa.Column("rater_id", sa.Integer(), nullable=False),
        sa.Column("answer", sa.String(length=16), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(["pair_id"], ["pairs.id"], name="fk_comparisons_pair_id_pairs"),
        sa.ForeignKeyConstraint(["rater_id"], ["raters.id"], name="fk_comparisons_rater_id_raters"),
        sa.PrimaryKeyConstraint("id", name="pk_comparisons"),
        sa.UniqueConstraint("pair_id", "rater_id", name="uq_comparisons_pair_rater"),
    )
    op.create_index("ix_comparisons_rater_created", "comparisons", ["rater_id", "created_at"])
    op.create_table(
        "pair_skips",
        sa.Column("rater_id", sa.Integer(), nullable=False),
        sa.Column("pair_id", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(["pair_id"], ["pairs.id"], name="fk_pair_skips_pair_id_pairs"),
        sa.ForeignKeyConstraint(["rater_id"], ["raters.id"], name="fk_pair_skips_rater_id_raters"),
        sa.PrimaryKeyConstraint("rater_id", "pair_id", name="pk_pair_skips"),
    )


def downgrade() -> None:
    op.drop_table("pair_skips")
    op.drop_index("ix_comparisons_rater_created", table_name="comparisons")
    op.drop_table("comparisons")
    op.drop_index("ix_pairs_lease_rater_id", table_name="pairs")
    op.drop_index("ix_pairs_sample_b_id", table_name="pairs")
    op.drop_index("ix_pairs_prompt_id", table_name="pairs")
    op.drop_table("pairs")
