"""Training batches: claim exactly once, finish with a step record, fail (retry), recover expired claims.

Exactly-once, on any database:
1. Membership is the single column ``samples.batch_id``: a sample can never be in two batches.
2. Taking a sample is a compare-and-set: ``UPDATE samples SET batch_id = :new WHERE id = :picked AND
   batch_id IS NULL AND <still scored, open>``; if a rowcount is not 1, another claimer won that sample,
   the savepoint is rolled back and we pick again. Under PostgreSQL's READ COMMITTED
   the UPDATE waits for the other transaction's row locks and re-checks the WHERE on the committed row.
3. Every batch state change is ``UPDATE ... WHERE id = :id AND status = :expected [AND claim_token = :t]``
   with a rowcount check, so a batch is claimed by one trainer at a time and a trainer whose claim expired
   (and was released and re-claimed) cannot also finish it.
On SQLite, write transactions also start with BEGIN IMMEDIATE (engine.py), so these races never even start:
claimers queue on the database's single write lock.

Lifecycle: ``claimed -> trained`` (finish_batch) or ``claimed -> pending`` (fail_batch with attempts left,
return_batch after an infrastructure fault, or its claim expired: crash recovery) or ``claimed -> failed``
(out of attempts, or bad data). A pending batch is re-claimed, with the same samples and frozen scores, before
any new batch is formed. A failed batch keeps its samples, so they are never trained, until an admin requeues it
(``requeue_failed_batch``); its error is kept for inspection. ``trained -> pending`` is start-up recovery of steps
whose weights a crash lost (history.retire_steps_after). A pending batch of another size than the trainer's
(the batch size changed across a restart) is ``released``: its samples go back to the open pool, where their
scores are frozen again from the same ratings into batches of the new size.
"""

from __future__ import annotations

import math
import uuid
from collections import defaultdict
from collections.abc import Sequence
from datetime import datetime, timedelta

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from storage.batch_bounds import BatchBounds, batch_bounds
from storage.conversions import batch_record, step_record
from storage.errors import BatchStateError, InvalidInput, InvalidStep, StaleClaim, UnknownBatch
from storage.queries import check_seconds, has_usable_score, is_open, lease_free, resolve_now, rowcount
from storage.records import BatchRecord, BatchSample, ClaimedBatch, StepIn, StepRecord
from storage.schema import (
    BATCH_CLAIMED,
    BATCH_FAILED,
    BATCH_PENDING,
    BATCH_RELEASED,
    BATCH_TRAINED,
    Prompt,
    Rating,
    Sample,
    TrainingBatch,
    TrainingStep,
)
from storage.scoring import training_score
from storage.validation import (
    MAX_NAME_CHARS,
    check_id,
    check_int,
    check_json_dict,
    check_number_dict,
    check_text,
)

MAX_ERROR_CHARS = 10_000
_CLAIM_TRIES = 5


class _LostRace(Exception):
    """Another claimer took some of the picked samples; roll back the savepoint and pick again."""


def claim_next_batch(
    s: Session,
    size: int,
    claimer: str,
    *,
    min_policy_version: int | None = None,
    use_auto_scores: bool = True,
    max_attempts: int = 3,
    now: datetime | None = None,
    max_size: int | None = None,
    multiple: int = 1,
) -> ClaimedBatch | None:
    """Atomically take a batch of at least ``size`` scored samples for training, or None.

    With ``max_size`` (>= ``size``) the batch takes every claimable sample up to ``max_size``, rounded down to a
    ``multiple`` (the trainer's minibatch), so whatever raters scored while a step ran goes into the next step;
    without it the batch holds exactly ``size`` (the fixed batch of TRL).
    A pending batch (released by crash recovery or a failed attempt) is taken first; one whose size is outside
    ``size..max_size`` (or not a ``multiple``) is released to the open pool instead (the bounds changed across a
    restart). Otherwise open samples with a usable score (scoring.py) that no rater is looking at, newest
    policy version first; their training scores are frozen into the batch. With ``min_policy_version``,
    open samples from older policies are marked stale first (``mark_stale``: never a sample a person rated). A
    pending batch is never judged stale again (see ``_reclaim_pending``).
    """
    bounds = batch_bounds(size, max_size, multiple)
    claimer = check_text(claimer, "claimer", InvalidInput, max_chars=MAX_NAME_CHARS)
    max_attempts = check_int(max_attempts, "max_attempts", minimum=1)
    now = resolve_now(now)
    if min_policy_version is not None:
        mark_stale(s, check_int(min_policy_version, "min_policy_version"), now=now)
    batch_id = _reclaim_pending(s, bounds, claimer, now)
    if batch_id is None:
        batch_id = _claim_new(s, bounds, claimer, use_auto_scores, max_attempts, now)
    return None if batch_id is None else _claimed_batch(s, batch_id)


def finish_batch(s: Session, batch: ClaimedBatch | int, step: StepIn, *, now: datetime | None = None) -> StepRecord:
    """Mark a claimed batch trained and store its step. Pass the ClaimedBatch itself so that a claim that
    expired meanwhile is refused (``StaleClaim``) instead of training the batch twice."""
    if not isinstance(step, StepIn):
        raise InvalidStep("finish_batch takes a StepIn")
    now = resolve_now(now)
    row = _claimed_row(s, batch)
    _transition(s, row, BATCH_TRAINED, finished_at=now, error=None, claim_token=None)
    saved = TrainingStep(
        batch_id=row.id,
        policy_version=int(step.policy_version),
        # The checked forms: plain floats and JSON data even when the trainer passed numpy scalars.
        stats=check_number_dict(step.stats, "stats", InvalidStep),
        config=check_json_dict(step.config, "config", InvalidStep),
        durations=check_number_dict(step.durations, "durations", InvalidStep, non_negative=True),
        created_at=now,
    )
    s.add(saved)
    s.flush()
    return step_record(saved, row.size, row.score_mean)


def fail_batch(
    s: Session, batch: ClaimedBatch | int, error: str, *, retry: bool = True, now: datetime | None = None
) -> BatchRecord:
    """Record a failed training attempt. The batch goes back to pending (same samples, same scores) while
    it has attempts left and ``retry`` is True, else it is failed for good and its samples never trained."""
    if not isinstance(error, str):
        raise InvalidInput(f"error must be text, got {type(error).__name__}")
    now = resolve_now(now)
    row = _claimed_row(s, batch)
    retrying = retry and row.attempts < row.max_attempts
    _transition(
        s,
        row,
        BATCH_PENDING if retrying else BATCH_FAILED,
        error=error[:MAX_ERROR_CHARS] or "failed",
        claim_token=None,
        finished_at=None if retrying else now,
    )
    return batch_record(_load(s, row.id))


def return_batch(s: Session, batch: ClaimedBatch | int, error: str) -> BatchRecord:
    """Put a claimed batch back to pending whatever its attempts: the fault was the trainer's (a full disk, out
    of memory, a database error), not the batch's, so it must never cost the batch its training."""
    if not isinstance(error, str):
        raise InvalidInput(f"error must be text, got {type(error).__name__}")
    row = _claimed_row(s, batch)
    _transition(s, row, BATCH_PENDING, error=error[:MAX_ERROR_CHARS] or "returned", claim_token=None)
    return batch_record(_load(s, row.id))


def requeue_failed_batch(s: Session, batch_id: int) -> BatchRecord:
    """An admin's second chance for a batch that failed for good: back to pending with fresh attempts, its samples
    and frozen scores unchanged. ``BatchStateError`` for a batch that is not failed or holds no samples."""
    row = _load(s, batch_id)
    if row.status != BATCH_FAILED:
        raise BatchStateError(f"batch {row.id} is {row.status!r}, not failed")
    if not s.scalar(select(func.count()).select_from(Sample).where(Sample.batch_id == row.id)):
        raise BatchStateError(f"batch {row.id} holds no samples")
    _transition(s, row, BATCH_PENDING, attempts=0, finished_at=None, claim_token=None)
    return batch_record(_load(s, row.id))


def release_expired_claims(s: Session, max_age_seconds: float, *, now: datetime | None = None) -> list[int]:
    """Put batches claimed more than ``max_age_seconds`` ago (a crashed or hung trainer) back to pending,
    or to failed when they are out of attempts. Returns the ids released."""
    now = resolve_now(now)
    cutoff = now - timedelta(seconds=check_seconds(max_age_seconds, "max_age_seconds"))
    stale_claims = s.scalars(
        select(TrainingBatch)
        .where(TrainingBatch.status == BATCH_CLAIMED, TrainingBatch.claimed_at <= cutoff)
        .order_by(TrainingBatch.id)
    ).all()
    released: list[int] = []
    for row in stale_claims:
        out_of_attempts = row.attempts >= row.max_attempts
        note = f"claim by {row.claimed_by!r} expired (attempt {row.attempts} of {row.max_attempts})"
        new_status = BATCH_FAILED if out_of_attempts else BATCH_PENDING
        finished = now if out_of_attempts else None
        if _try_transition(s, row, new_status, error=note, claim_token=None, finished_at=finished):
            released.append(row.id)
    return released


def release_all_claims(s: Session) -> list[int]:
    """Start-up recovery for the only trainer of a database: every claim left is from a dead process. The
    batches go back to pending whatever their attempts (a crash is not the batch's fault)."""
    rows = s.scalars(select(TrainingBatch).where(TrainingBatch.status == BATCH_CLAIMED).order_by(TrainingBatch.id))
    released: list[int] = []
    for row in rows.all():
        note = f"claim by {row.claimed_by!r} left by a process that stopped (attempt {row.attempts})"
        if _try_transition(s, row, BATCH_PENDING, error=note, claim_token=None, finished_at=None):
            released.append(row.id)
    return released


def mark_stale(s: Session, min_policy_version: int, *, now: datetime | None = None) -> int:
    """Mark open samples generated by policies older than ``min_policy_version`` stale; returns how many.

    A sample a person rated is never stale: it is trained whatever its age, the importance correction of its
    stored behaviour log-probs (truncated at 1) only ever lowering its weight, because a human rating is the
    scarcest thing in the app. Nor is one a rater is looking at now (an unexpired lease): their rating is coming.
    So only unrated and machine-scored samples age out."""
    min_policy_version = check_int(min_policy_version, "min_policy_version")
    now = resolve_now(now)
    result = s.execute(
        update(Sample)
        .where(is_open(), Sample.policy_version < min_policy_version, Sample.human_n == 0, lease_free(now))
        .values(stale=True, lease_rater_id=None, lease_expires_at=None)
        .execution_options(synchronize_session=False)
    )
    return rowcount(result)


def get_batch(s: Session, batch_id: int) -> BatchRecord:
    return batch_record(_load(s, batch_id))


def list_batches(s: Session, *, status: str | None = None, limit: int = 100) -> list[BatchRecord]:
    stmt = select(TrainingBatch).order_by(TrainingBatch.id.desc()).limit(check_int(limit, "limit", minimum=1))
    if status is not None:
        stmt = stmt.where(TrainingBatch.status == status)
    return [batch_record(b) for b in s.scalars(stmt)]


def _reclaim_pending(s: Session, bounds: BatchBounds, claimer: str, now: datetime) -> int | None:
    """Take the oldest pending batch of a size within ``bounds``; dissolve those of another size.

    Staleness is judged once, when a batch is first formed: a batch back in pending (a failed attempt, a claim
    a crash left, a step a crash lost) is trained whatever its age, because its stored behaviour log-probs
    correct it. Judging it again would throw away ratings for time the trainer lost, not for anything the
    raters did (a restart resumes under a fresh version number; a lost step is retrained first)."""
    pending = s.scalars(
        select(TrainingBatch).where(TrainingBatch.status == BATCH_PENDING).order_by(TrainingBatch.id)
    ).all()
    for row in pending:
        if not bounds.fits(row.size):
            _release_to_pool(s, row, bounds, now)
            continue
        token = str(uuid.uuid4())
        values = {"claimed_by": claimer, "claimed_at": now, "claim_token": token, "attempts": row.attempts + 1}
        if _try_transition(s, row, BATCH_CLAIMED, **values):
            return row.id
    return None


def _release_to_pool(s: Session, row: TrainingBatch, bounds: BatchBounds, now: datetime) -> None:
    """Dissolve a pending batch of another size: its samples go back to the open pool (their ratings decide
    their scores again at the next claim) and the empty batch is marked released."""
    note = f"released: {row.size} samples back to the open pool for batches of {bounds.describe()}"
    if _try_transition(s, row, BATCH_RELEASED, error=note, finished_at=now):
        s.execute(
            update(Sample)
            .where(Sample.batch_id == row.id)
            .values(batch_id=None, train_score=None, lease_rater_id=None, lease_expires_at=None)
            .execution_options(synchronize_session=False)
        )


def _claim_new(
    s: Session, bounds: BatchBounds, claimer: str, use_auto_scores: bool, max_attempts: int, now: datetime
) -> int | None:
    claimable = (is_open(), has_usable_score(use_auto_scores), lease_free(now))
    for _ in range(_CLAIM_TRIES):
        found = s.scalars(
            select(Sample.id)
            .where(*claimable)
            .order_by(Sample.policy_version.desc(), Sample.id.desc())
            .limit(bounds.high)
            .with_for_update(skip_locked=True)  # never wait on a rater's or another claimer's row: see samples._QUEUE
        ).all()
        size = bounds.take(len(found))
        if size == 0:
            return None
        picked = found[:size]
        try:
            with s.begin_nested():  # a savepoint: losing the race undoes only this try
                batch = TrainingBatch(
                    status=BATCH_CLAIMED,
                    size=size,
                    claimed_by=claimer,
                    claimed_at=now,
                    claim_token=str(uuid.uuid4()),
                    attempts=1,
                    max_attempts=max_attempts,
                    created_at=now,
                )
                s.add(batch)
                s.flush()
                # One compare-and-set per sample: `id = :id` always plans as a primary-key lookup, where
                # `id IN (...) AND batch_id IS NULL` may be planned as a scan of the open pool.
                for sample_id in picked:
                    won = s.execute(
                        update(Sample)
                        .where(Sample.id == sample_id, *claimable)
                        .values(batch_id=batch.id, lease_rater_id=None, lease_expires_at=None)
                        .execution_options(synchronize_session=False)
                    )
                    if rowcount(won) != 1:
                        raise _LostRace
                batch.score_mean = _freeze_scores(s, batch.id, picked, use_auto_scores)
                return batch.id
        except _LostRace:
            continue
    return None


def _freeze_scores(s: Session, batch_id: int, sample_ids: Sequence[int], use_auto_scores: bool) -> float:
    """Compute each sample's training score from its ratings (rows now locked by our UPDATE) and store it."""
    ratings: dict[int, list[tuple[str, float]]] = defaultdict(list)
    for sample_id, source, score in s.execute(
        select(Rating.sample_id, Rating.source, Rating.score).where(Rating.sample_id.in_(sample_ids))
    ).tuples():
        ratings[sample_id].append((source, score))
    scores = {sid: training_score(ratings[sid], use_auto_scores=use_auto_scores) for sid in sample_ids}
    if any(v is None for v in scores.values()):
        raise _LostRace  # a rating was undone between our pick and our update
    s.execute(update(Sample), [{"id": sid, "train_score": score} for sid, score in scores.items()])
    return math.fsum(v for v in scores.values() if v is not None) / len(scores)


def _claimed_batch(s: Session, batch_id: int) -> ClaimedBatch:
    row = _load(s, batch_id)
    stmt = (
        select(Sample, Prompt.text)
        .join(Prompt, Prompt.id == Sample.prompt_id)
        .where(Sample.batch_id == batch_id)
        .order_by(Sample.policy_version.desc(), Sample.id.desc())
        .execution_options(populate_existing=True)
    )
    samples = tuple(
        BatchSample(
            sample_id=smp.id,
            prompt_id=smp.prompt_id,
            prompt_text=text,
            response_text=smp.response_text,
            query_ids=tuple(smp.query_ids),
            response_ids=tuple(smp.response_ids),
            score=float(smp.train_score if smp.train_score is not None else math.nan),
            policy_version=smp.policy_version,
            behaviour_logprobs=tuple(smp.behaviour_logprobs),
        )
        for smp, text in s.execute(stmt).tuples()
    )
    assert row.claim_token is not None and row.claimed_by is not None and row.claimed_at is not None
    return ClaimedBatch(
        batch_id=row.id,
        claim_token=row.claim_token,
        claimed_by=row.claimed_by,
        claimed_at=row.claimed_at,
        attempt=row.attempts,
        samples=samples,
    )


def _claimed_row(s: Session, batch: ClaimedBatch | int) -> TrainingBatch:
    batch_id = batch.batch_id if isinstance(batch, ClaimedBatch) else batch
    row = _load(s, batch_id)
    if isinstance(batch, ClaimedBatch) and row.claim_token != batch.claim_token:
        raise StaleClaim(
            f"batch {row.id}: this claim (attempt {batch.attempt}) is no longer valid; the batch is now "
            f"{row.status!r} (attempt {row.attempts}), probably because the claim expired"
        )
    if row.status != BATCH_CLAIMED:
        raise BatchStateError(f"batch {row.id} is {row.status!r}, not claimed")
    return row


def _transition(s: Session, row: TrainingBatch, status: str, **values: object) -> None:
    if not _try_transition(s, row, status, **values):
        raise StaleClaim(f"batch {row.id} changed state while we were updating it")


def _try_transition(s: Session, row: TrainingBatch, status: str, **values: object) -> bool:
    """Compare-and-set on (status, claim_token) as we last read them."""
    result = s.execute(
        update(TrainingBatch)
        .where(
            TrainingBatch.id == row.id,
            TrainingBatch.status == row.status,
            TrainingBatch.claim_token.is_(None)
            if row.claim_token is None
            else TrainingBatch.claim_token == row.claim_token,
        )
        .values(status=status, **values)
        .execution_options(synchronize_session=False)
    )
    return rowcount(result) == 1


def _load(s: Session, batch_id: int) -> TrainingBatch:
    row = s.scalars(
        select(TrainingBatch)
        .where(TrainingBatch.id == check_id(batch_id, "batch_id", UnknownBatch))
        .execution_options(populate_existing=True)
    ).one_or_none()
    if row is None:
        raise UnknownBatch(f"no training batch with id {batch_id}")
    return row
