"""Initial feedback store: prompts, raters, samples, ratings, skips, batches, steps, checkpoints.

Revision ID: 0001
Revises:
Create Date: 2025-01-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    _create_raters_and_prompts()
    _create_batches()
    _create_samples()
    _create_ratings_and_skips()
    _create_steps_and_checkpoints()


def _create_raters_and_prompts() -> None:
    op.create_table(
        "raters",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("role", sa.String(length=16), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_raters"),
        sa.UniqueConstraint("name", name="uq_raters_name"),
    )
    op.create_table(
        "prompts",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("source", sa.String(length=500), nullable=False),
        sa.Column("row", sa.Integer(), nullable=False),
        sa.Column("sample_count", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_prompts"),
        sa.UniqueConstraint("source", "row", name="uq_prompts_source_row"),
    )
    op.create_index("ix_prompts_generation", "prompts", ["sample_count", "id"])


def _create_batches() -> None:
    op.create_table(
        "training_batches",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("size", sa.Integer(), nullable=False),
        sa.Column("claimed_by", sa.String(length=200), nullable=True),
        sa.Column("claimed_at", sa.DateTime(), nullable=True),
        sa.Column("claim_token", sa.String(length=36), nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("max_attempts", sa.Integer(), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("score_mean", sa.Float(), nullable=True),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("finished_at", sa.DateTime(), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_training_batches"),
    )
    op.create_index("ix_training_batches_status", "training_batches", ["status", "id"])


def _create_ratings_and_skips() -> None:
    op.create_table(
        "ratings",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("sample_id", sa.Integer(), nullable=False),
        sa.Column("rater_id", sa.Integer(), nullable=False),
        sa.Column("source", sa.String(length=200), nullable=False),
        sa.Column("score", sa.Float(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(["rater_id"], ["raters.id"], name="fk_ratings_rater_id_raters"),
        sa.ForeignKeyConstraint(["sample_id"], ["samples.id"], name="fk_ratings_sample_id_samples"),
        sa.PrimaryKeyConstraint("id", name="pk_ratings"),
        sa.UniqueConstraint("sample_id", "rater_id", name="uq_ratings_sample_rater"),
    )
    op.create_table(
        "skips",
        sa.Column("rater_id", sa.Integer(), nullable=False),
        sa.Column("sample_id", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(["rater_id"], ["raters.id"], name="fk_skips_rater_id_raters"),
        sa.ForeignKeyConstraint(["sample_id"], ["samples.id"], name="fk_skips_sample_id_samples"),
        sa.PrimaryKeyConstraint("rater_id", "sample_id", name="pk_skips"),
    )


def _create_steps_and_checkpoints() -> None:
    op.create_table(
        "training_steps",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("batch_id", sa.Integer(), nullable=False),
        sa.Column("policy_version", sa.Integer(), nullable=False),
        sa.Column("stats", sa.JSON(), nullable=False),
        sa.Column("config", sa.JSON(), nullable=False),
        sa.Column("durations", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["batch_id"], ["training_batches.id"], name="fk_training_steps_batch_id_training_batches"
        ),
        sa.PrimaryKeyConstraint("id", name="pk_training_steps"),
        sa.UniqueConstraint("batch_id", name="uq_training_steps_batch_id"),
    )
    op.create_table(
        "checkpoints",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("folder", sa.String(length=1000), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_checkpoints"),
        sa.UniqueConstraint("version", name="uq_checkpoints_version"),
    )


def _create_samples() -> None:
    op.create_table(
        "samples",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("prompt_id", sa.Integer(), nullable=False),
        sa.Column("response_text", sa.Text(), nullable=False),
        sa.Column("query_ids", sa.JSON(), nullable=False),
        sa.Column("response_ids", sa.JSON(), nullable=False),
        sa.Column("behaviour_logprobs", sa.JSON(), nullable=False),
        sa.Column("policy_version", sa.Integer(), nullable=False),
        sa.Column("generation_settings", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("human_n", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("auto_n", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("stale", sa.Boolean(), server_default=sa.false(), nullable=False),
        sa.Column("lease_rater_id", sa.Integer(), nullable=True),
        sa.Column("lease_expires_at", sa.DateTime(), nullable=True),
        sa.Column("batch_id", sa.Integer(), nullable=True),
        sa.Column("train_score", sa.Float(), nullable=True),
        sa.ForeignKeyConstraint(["batch_id"], ["training_batches.id"], name="fk_samples_batch_id_training_batches"),
        sa.ForeignKeyConstraint(["lease_rater_id"], ["raters.id"], name="fk_samples_lease_rater_id_raters"),
        sa.ForeignKeyConstraint(["prompt_id"], ["prompts.id"], name="fk_samples_prompt_id_prompts"),
        sa.PrimaryKeyConstraint("id", name="pk_samples"),
    )
    op.create_index("ix_samples_prompt_id", "samples", ["prompt_id"])
    op.create_index("ix_samples_lease_rater_id", "samples", ["lease_rater_id"])
    op.create_index(
        "ix_samples_queue",
        "samples",
        ["batch_id", "stale", sa.text("policy_version DESC"), "human_n", sa.text("id DESC")],
    )
    op.create_index(
        "ix_samples_claim", "samples", ["batch_id", "stale", sa.text("policy_version DESC"), sa.text("id DESC")]
    )


def downgrade() -> None:
    for table in ("checkpoints", "training_steps", "skips", "ratings", "samples", "training_batches"):
        op.drop_table(table)
    op.drop_table("prompts")
    op.drop_table("raters")
