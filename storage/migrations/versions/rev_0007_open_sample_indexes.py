"""PostgreSQL: partial indexes over open samples, so the rater queue and the batch claim walk an index in order.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | None = None
depends_on: str | None = None

OPEN = sa.text("batch_id IS NULL AND stale = false")


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return  # SQLite walks ix_samples_queue / ix_samples_claim in order already
    op.create_index(
        "ix_samples_open_queue",
        "samples",
        [sa.text("policy_version DESC"), "human_n", sa.text("id DESC")],
        postgresql_where=OPEN,
    )
    op.create_index(
        "ix_samples_open_claim", "samples", [sa.text("policy_version DESC"), sa.text("id DESC")], postgresql_where=OPEN
    )


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.drop_index("ix_samples_open_claim", table_name="samples")
    op.drop_index("ix_samples_open_queue", table_name="samples")
