"""The feedback store's tables (SQLAlchemy 2.0 typed declarative).

Nothing here is SQLite-specific: the same metadata creates the schema on PostgreSQL. Times are stored as
naive UTC (``UTCDateTime``) and read back timezone-aware. Token ids and log-probs are JSON lists.

Sample lifecycle, encoded in ``samples`` itself so the hot queries hit one index:
``batch_id IS NULL AND NOT stale`` is the *open* pool (rateable, claimable when scored);
``batch_id`` set means the sample belongs to exactly one training batch (a column holds one value, so a
sample can never be in two batches); ``stale`` means the trainer declared it too old to train on.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, ClassVar, Final

from sqlalchemy import (
    JSON,
    DateTime,
    Dialect,
    Float,
    ForeignKey,
    Index,
    MetaData,
    String,
    Text,
    UniqueConstraint,
    and_,
    false,
)
from sqlalchemy import text as sql_text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator

# The Alembic revision this code's tables correspond to (storage/migrations/versions/).
SCHEMA_VERSION: Final = "0008"

HUMAN_SOURCE: Final = "human"
ROLES: Final = ("rater", "admin", "model")
HUMAN_ROLES: Final = ("rater", "admin")
MODEL_RATER_PREFIX: Final = "reward:"

BATCH_PENDING: Final = "pending"
BATCH_CLAIMED: Final = "claimed"
BATCH_TRAINED: Final = "trained"
BATCH_FAILED: Final = "failed"
BATCH_RELEASED: Final = "released"
"""A pending batch dissolved because the batch size changed: its samples went back to the open pool."""

ANSWERS: Final = ("a_better", "b_better", "tie", "both_bad")
"""A rater's answer to a pair (revision 0004): which of the two responses is better, a tie, or neither is good."""

# Named constraints, so Alembic's batch mode can alter SQLite tables.
NAMING_CONVENTION: Final = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def utcnow() -> datetime:
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """Stores naive UTC, returns aware UTC; refuses naive datetimes so local times never sneak in."""

    impl = DateTime
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to the feedback store; use datetime.now(UTC)")
        return value.astimezone(UTC).replace(tzinfo=None)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        return None if value is None else value.replace(tzinfo=UTC)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map: ClassVar[dict[Any, Any]] = {
        datetime: UTCDateTime(),
        dict[str, Any]: JSON,
        list[int]: JSON,
        list[float]: JSON,
    }


class Rater(Base):
    """A person (role rater/admin) or a reward model (role model, named ``reward:<source>``)."""

    __tablename__ = "raters"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    role: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime]


class Prompt(Base):
    __tablename__ = "prompts"
    id: Mapped[int] = mapped_column(primary_key=True)
    text: Mapped[str] = mapped_column(Text)
    source: Mapped[str] = mapped_column(String(500))
    row: Mapped[int]
    # Kept up to date by add_samples so prompts_for_generation is an index walk (fewest samples first).
    sample_count: Mapped[int] = mapped_column(default=0, server_default=sql_text("0"))
    created_at: Mapped[datetime]

    __table_args__ = (
        UniqueConstraint("source", "row", name="uq_prompts_source_row"),
        Index("ix_prompts_generation", "sample_count", "id"),
    )


class TrainingBatch(Base):
    __tablename__ = "training_batches"
    id: Mapped[int] = mapped_column(primary_key=True)
    status: Mapped[str] = mapped_column(String(16))
    size: Mapped[int]
    claimed_by: Mapped[str | None] = mapped_column(String(200))
    claimed_at: Mapped[datetime | None]
    # A fresh uuid per claim: finishing with an old token (claim expired, batch re-claimed) is refused.
    claim_token: Mapped[str | None] = mapped_column(String(36))
    attempts: Mapped[int] = mapped_column(default=0)
    max_attempts: Mapped[int]
    error: Mapped[str | None] = mapped_column(Text)
    score_mean: Mapped[float | None] = mapped_column(Float)
    created_at: Mapped[datetime]
    finished_at: Mapped[datetime | None]

    __table_args__ = (Index("ix_training_batches_status", "status", "id"),)


class Sample(Base):
    __tablename__ = "samples"
    id: Mapped[int] = mapped_column(primary_key=True)
    prompt_id: Mapped[int] = mapped_column(ForeignKey("prompts.id"), index=True)
    response_text: Mapped[str] = mapped_column(Text)
    query_ids: Mapped[list[int]]
    response_ids: Mapped[list[int]]
    behaviour_logprobs: Mapped[list[float]]
    policy_version: Mapped[int]
    generation_settings: Mapped[dict[str, Any]]
    created_at: Mapped[datetime]
    # Rating counters, maintained by record_rating / undo_last_rating in the same transaction.
    human_n: Mapped[int] = mapped_column(default=0, server_default=sql_text("0"))
    auto_n: Mapped[int] = mapped_column(default=0, server_default=sql_text("0"))
    stale: Mapped[bool] = mapped_column(default=False, server_default=false())
    lease_rater_id: Mapped[int | None] = mapped_column(ForeignKey("raters.id"), index=True)
    lease_expires_at: Mapped[datetime | None]
    batch_id: Mapped[int | None] = mapped_column(ForeignKey("training_batches.id"))
    # The training score frozen when the batch was claimed (the mixed-mode mean at that moment).
    train_score: Mapped[float | None] = mapped_column(Float)


# Rater queue: open samples, newest policy first, fewest human ratings first, newest first.
Index(
    "ix_samples_queue",
    Sample.batch_id,
    Sample.stale,
    Sample.policy_version.desc(),
    Sample.human_n,
    Sample.id.desc(),
)
# Claim: open samples, newest policy first; its prefix also serves `WHERE batch_id = :id`.
Index("ix_samples_claim", Sample.batch_id, Sample.stale, Sample.policy_version.desc(), Sample.id.desc())
# PostgreSQL only: its planner does not count `batch_id IS NULL` as fixing that column for the ORDER BY, so it could
# not walk the two indexes above in order and sorted the whole open pool on every rater request and claim
# (bench/storage.py --plan). These cover open samples only, in queue and claim order. SQLite walks the ones above.
OPEN_SAMPLES = and_(Sample.batch_id.is_(None), Sample.stale == false())
POSTGRESQL_ONLY_INDEXES: Final = frozenset({"ix_samples_open_queue", "ix_samples_open_claim"})
Index(
    "ix_samples_open_queue",
    Sample.policy_version.desc(),
    Sample.human_n,
    Sample.id.desc(),
    postgresql_where=OPEN_SAMPLES,
).ddl_if(dialect="postgresql")
Index(
    "ix_samples_open_claim",
    Sample.policy_version.desc(),
    Sample.id.desc(),
    postgresql_where=OPEN_SAMPLES,
).ddl_if(dialect="postgresql")


class Rating(Base):
    __tablename__ = "ratings"
    id: Mapped[int] = mapped_column(primary_key=True)
    sample_id: Mapped[int] = mapped_column(ForeignKey("samples.id"))
    rater_id: Mapped[int] = mapped_column(ForeignKey("raters.id"))
    source: Mapped[str] = mapped_column(String(200))
    score: Mapped[float] = mapped_column(Float)
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]  # added in revision 0002

    __table_args__ = (
        # One rater rates one sample once (a resubmission updates this row and writes rating_history).
        UniqueConstraint("sample_id", "rater_id", name="uq_ratings_sample_rater"),
        Index("ix_ratings_rater_updated", "rater_id", "updated_at"),  # added in revision 0002
    )


class RatingHistory(Base):
    """Every change to a stored rating (revision 0002): an update keeps the old score, an undo the deleted one."""

    __tablename__ = "rating_history"
    id: Mapped[int] = mapped_column(primary_key=True)
    sample_id: Mapped[int] = mapped_column(ForeignKey("samples.id"), index=True)
    rater_id: Mapped[int] = mapped_column(ForeignKey("raters.id"))
    action: Mapped[str] = mapped_column(String(16))
    old_score: Mapped[float] = mapped_column(Float)
    new_score: Mapped[float | None] = mapped_column(Float)
    changed_at: Mapped[datetime]


class Skip(Base):
    __tablename__ = "skips"
    rater_id: Mapped[int] = mapped_column(ForeignKey("raters.id"), primary_key=True)
    sample_id: Mapped[int] = mapped_column(ForeignKey("samples.id"), primary_key=True)
    created_at: Mapped[datetime]


class TrainingStep(Base):
    __tablename__ = "training_steps"
    id: Mapped[int] = mapped_column(primary_key=True)
    batch_id: Mapped[int] = mapped_column(ForeignKey("training_batches.id"), unique=True)
    policy_version: Mapped[int]
    stats: Mapped[dict[str, Any]]
    config: Mapped[dict[str, Any]]
    durations: Mapped[dict[str, Any]]
    created_at: Mapped[datetime]


class Checkpoint(Base):
    __tablename__ = "checkpoints"
    id: Mapped[int] = mapped_column(primary_key=True)
    version: Mapped[int] = mapped_column(unique=True)
    folder: Mapped[str] = mapped_column(String(1000))
    created_at: Mapped[datetime]


class LostStep(Base):
    """A step whose weights were lost in a crash (revision 0003): trained after the checkpoint that was loaded on
    restart. Its batch went back to pending and is trained again; the row keeps the version number retired
    (samples generated by those weights keep it) and the step's stats for the record."""

    __tablename__ = "lost_steps"
    id: Mapped[int] = mapped_column(primary_key=True)
    batch_id: Mapped[int] = mapped_column(ForeignKey("training_batches.id"))
    policy_version: Mapped[int]
    stats: Mapped[dict[str, Any]]
    created_at: Mapped[datetime]
    lost_at: Mapped[datetime]


class ScoreQuarantine(Base):
    """A sample the reward model ``source`` could not score (it raised or ran out of time; revision 0003):
    never offered to that reward model again, still rateable by people."""

    __tablename__ = "score_quarantine"
    sample_id: Mapped[int] = mapped_column(ForeignKey("samples.id"), primary_key=True)
    source: Mapped[str] = mapped_column(String(200), primary_key=True)
    reason: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime]


class ProcessOwner(Base):
    """A process of the app that may hold claims (revision 0005): `rlhf-live train`, `serve` or the all-in-one.

    ``owner`` is the id it writes into ``training_batches.claimed_by``; it refreshes ``heartbeat_at`` while it
    lives. A process whose heartbeat is older than the expiry, or that wrote ``stopped_at``, is dead: its claims
    may be released by anyone's start-up recovery. ``sole_role`` is unique (NULLs are not): the trainer of a
    database sets it to ``trainer``, so a second live trainer cannot register, on any backend."""

    __tablename__ = "process_owners"
    owner: Mapped[str] = mapped_column(String(200), primary_key=True)
    role: Mapped[str] = mapped_column(String(16))
    sole_role: Mapped[str | None] = mapped_column(String(16), unique=True)
    machine: Mapped[str] = mapped_column(String(300))
    """Host name and PID namespace: a process on the same machine can tell whether ``pid`` still runs."""
    pid: Mapped[int]
    started_at: Mapped[datetime]
    heartbeat_at: Mapped[datetime]
    stopped_at: Mapped[datetime | None]


class PublishedVersion(Base):
    """A policy version the trainer wrote to the shared weights folder (revision 0005), announced for the
    front-ends: ``path`` was renamed into place and fsynced before this row was committed."""

    __tablename__ = "published_versions"
    version: Mapped[int] = mapped_column(primary_key=True, autoincrement=False)
    path: Mapped[str] = mapped_column(String(1000))
    sha256: Mapped[str] = mapped_column(String(64))
    published_by: Mapped[str] = mapped_column(String(200))
    published_at: Mapped[datetime]


class Pair(Base):
    """Two responses to the same prompt shown side by side (revision 0004): A on the left, B on the right. At least
    one of them was open when the pair was formed; the other may be an older version's (trained, even). A pair is
    leased to one rater at a time (``lease_*``), as a sample is, and its open members are leased with it."""

    __tablename__ = "pairs"
    id: Mapped[int] = mapped_column(primary_key=True)
    prompt_id: Mapped[int] = mapped_column(ForeignKey("prompts.id"), index=True)
    sample_a_id: Mapped[int] = mapped_column(ForeignKey("samples.id"))
    sample_b_id: Mapped[int] = mapped_column(ForeignKey("samples.id"), index=True)
    compared_n: Mapped[int] = mapped_column(default=0, server_default=sql_text("0"))
    lease_rater_id: Mapped[int | None] = mapped_column(ForeignKey("raters.id"), index=True)
    lease_expires_at: Mapped[datetime | None]
    created_at: Mapped[datetime]

    __table_args__ = (UniqueConstraint("sample_a_id", "sample_b_id", name="uq_pairs_samples"),)


class PairComparison(Base):
    """One rater's answer to one pair (revision 0004); a resubmission is refused, an undo deletes the row and keeps
    it in `comparison_history`."""

    __tablename__ = "comparisons"
    id: Mapped[int] = mapped_column(primary_key=True)
    pair_id: Mapped[int] = mapped_column(ForeignKey("pairs.id"))
    rater_id: Mapped[int] = mapped_column(ForeignKey("raters.id"))
    answer: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime]

    __table_args__ = (
        UniqueConstraint("pair_id", "rater_id", name="uq_comparisons_pair_rater"),
        Index("ix_comparisons_rater_created", "rater_id", "created_at"),
    )


class ComparisonHistory(Base):
    """Every undone comparison (revision 0006), as `rating_history` keeps undone ratings: the deleted answer, when
    it was given and when it was taken back."""

    __tablename__ = "comparison_history"
    id: Mapped[int] = mapped_column(primary_key=True)
    pair_id: Mapped[int] = mapped_column(ForeignKey("pairs.id"), index=True)
    rater_id: Mapped[int] = mapped_column(ForeignKey("raters.id"))
    action: Mapped[str] = mapped_column(String(16))
    old_answer: Mapped[str] = mapped_column(String(16))
    answered_at: Mapped[datetime]
    changed_at: Mapped[datetime]


class PairSkip(Base):
    """A pair a rater skipped (revision 0004): never shown to them again."""

    __tablename__ = "pair_skips"
    rater_id: Mapped[int] = mapped_column(ForeignKey("raters.id"), primary_key=True)
    pair_id: Mapped[int] = mapped_column(ForeignKey("pairs.id"), primary_key=True)
    created_at: Mapped[datetime]


class AdminSwitch(Base):
    """An admin's run-time switch that every process of a deployment follows (revision 0008): the rating mode
    and the reward source chosen on any front-end (storage.switches). One row per switch, the latest value."""

    __tablename__ = "admin_switches"
    name: Mapped[str] = mapped_column(String(32), primary_key=True)
    value: Mapped[str] = mapped_column(String(200))
    changed_by: Mapped[str] = mapped_column(String(200))
    changed_at: Mapped[datetime]
