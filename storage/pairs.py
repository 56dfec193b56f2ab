"""Pairs: two responses to the same prompt shown side by side, the pair queue with leases, comparisons, skip, undo.

A pair is formed from an open sample that is in no pair yet and a partner of the same prompt: another open, unpaired
sample (the generator writes two per prompt in pairwise mode, so usually the same version), else the newest other
sample of the prompt, open or not (the live version against an older one, possibly already trained).

Leases work as for single samples (storage/samples.py): a pair is leased to one rater at a time by a compare-and-set
on ``pairs.lease_*``, and its *open* members are leased with it by the same compare-and-set on ``samples.lease_*``
that single ratings use, inside one savepoint: so a pair is never shown to two raters at once, an open sample is in
front of at most one rater (in either mode), and the trainer never claims a sample under a rater's eyes. A rater
holds at most one pair lease. Locks are always taken pair first, then samples (newest version, then newest id, the
claim's order), so lease, comparison and claim transactions on PostgreSQL cannot deadlock on each other.

A comparison is stored once per (pair, rater): the same answer again is a no-op (a double click), a different one
is refused with ``AlreadyRated``; undo deletes it and keeps the answer in ``comparison_history``, unless a sample
whose score it set has since been put in a training batch (``RatingLocked``), as for single ratings. Comparisons
become training scores in storage/pair_scores.py.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta

from sqlalchemy import ColumnElement, Select, and_, case, delete, exists, func, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, aliased

from storage.errors import AlreadyRated, InvalidInput, RatingLocked, UnknownSample
from storage.queries import check_seconds, is_open, lease_free, resolve_now, rowcount
from storage.raters import load_rater
from storage.records import ComparisonRecord, PairProgress, PairRecord
from storage.samples import DEFAULT_LEASE_SECONDS
from storage.schema import (
    ANSWERS,
    ComparisonHistory,
    Pair,
    PairComparison,
    PairSkip,
    Prompt,
    Sample,
    TrainingBatch,
    utcnow,
)
from storage.validation import check_id

_CANDIDATES = 8
ALREADY_COMPARED_MESSAGE = "You have already compared these responses (in another tab?); use Undo to change it."


class UnknownPair(InvalidInput):
    """A pair id that does not exist."""


class _Lost(Exception):
    """Another rater holds the pair or one of its open samples: roll back the savepoint, try the next one."""


def next_pair_for_rater(
    s: Session, rater_id: int, *, lease_seconds: float = DEFAULT_LEASE_SECONDS, now: datetime | None = None
) -> PairRecord | None:
    """The pair to show this rater, leased to them (with its open samples) for ``lease_seconds``; None when none.

    Asking again returns the same pair (lease renewed) until they answer or skip it or the lease expires. Otherwise
    an existing pair they have neither compared nor skipped, fewest comparisons first, then newest; otherwise a
    new pair (see the module docstring).
    """
    rater = load_rater(s, rater_id)
    lease = check_seconds(lease_seconds, "lease_seconds")
    now = resolve_now(now)
    until = now + timedelta(seconds=lease)
    held = s.scalar(
        _offerable(rater.id)
        .where(Pair.lease_rater_id == rater.id, Pair.lease_expires_at > now)
        .order_by(Pair.lease_expires_at.desc(), Pair.id.desc())
        .limit(1)
    )
    if held is not None and _lease_pair(s, held, rater.id, now, until):
        return _pair_record(s, held)
    for _ in range(3):
        candidates = s.scalars(
            _offerable(rater.id)
            .where(_pair_lease_free(now, rater.id))
            .order_by(Pair.compared_n, Pair.id.desc())
            .limit(_CANDIDATES)
        ).all()
        for pair_id in candidates:
            if _lease_pair(s, pair_id, rater.id, now, until):
                return _pair_record(s, pair_id)
        if len(candidates) < _CANDIDATES:
            break
    for sample_id in _unpaired(s, rater.id, now):
        formed = _form_pair(s, sample_id, rater.id, now, until)
        if formed is not None:
            return _pair_record(s, formed)
    return None


def record_comparison(s: Session, pair_id: int, rater_id: int, answer: str) -> ComparisonRecord:
    """Store this rater's answer to the pair and end their lease on it (and on its samples).

    ``answer`` is one of ``schema.ANSWERS``. The same answer again is a no-op; a different one raises
    ``AlreadyRated`` (undo first). Raises ``InvalidInput`` for another answer or a reward-model rater,
    ``UnknownPair``/``UnknownRater`` for bad ids, writing nothing.
    """
    if answer not in ANSWERS:
        raise InvalidInput(f"answer must be one of {', '.join(ANSWERS)}, got {answer!r}")
    rater = load_rater(s, rater_id)
    if rater.role == "model":
        raise InvalidInput("comparisons are made by people, not reward models")
    pair = _load_pair_for_update(s, pair_id)
    row = s.scalars(
        select(PairComparison).where(PairComparison.pair_id == pair.id, PairComparison.rater_id == rater.id)
    ).one_or_none()
    if row is not None and row.answer != answer:
        raise AlreadyRated(ALREADY_COMPARED_MESSAGE)
    if row is None:
        row = PairComparison(pair_id=pair.id, rater_id=rater.id, answer=answer, created_at=utcnow())
        s.add(row)
        pair.compared_n += 1
    _end_lease(s, pair, rater.id)
    s.flush()
    return _comparison_record(row, pair.prompt_id)


def skip_pair(s: Session, rater_id: int, pair_id: int) -> None:
    """Never show this pair to this rater again; ends their lease on it. Idempotent."""
    rater = load_rater(s, rater_id)
    pair = _load_pair_for_update(s, pair_id)
    if s.get(PairSkip, (rater.id, pair.id), populate_existing=True) is None:
        s.add(PairSkip(rater_id=rater.id, pair_id=pair.id, created_at=utcnow()))
    _end_lease(s, pair, rater.id)
    s.flush()


def undo_last_comparison(
    s: Session, rater_id: int, *, lease_seconds: float = DEFAULT_LEASE_SECONDS, now: datetime | None = None
) -> ComparisonRecord | None:
    """Delete this rater's most recent comparison and lease its pair back to them (when free); None if none.
    The deleted answer is kept in ``comparison_history`` (as ``rating_history`` keeps an undone rating).

    Raises ``RatingLocked`` when one of the pair's samples went into a training batch after the comparison was
    made (its frozen score may contain it). The caller refits the prompt's scores (storage/pair_scores.py).
    """
    rater = load_rater(s, rater_id)
    lease = check_seconds(lease_seconds, "lease_seconds")
    now = resolve_now(now)
    row = s.scalars(_last_comparison(rater.id).execution_options(populate_existing=True)).first()
    if row is None:
        return None
    pair = _load_pair_for_update(s, row.pair_id)
    if _locked(s, row):
        raise RatingLocked(f"a sample of pair {pair.id} is already in a training batch; cannot undo")
    record = _comparison_record(row, pair.prompt_id)
    if rowcount(s.execute(delete(PairComparison).where(PairComparison.id == row.id))) != 1:
        return None  # a second tab undid it first
    pair.compared_n -= 1
    s.add(
        ComparisonHistory(
            pair_id=pair.id,
            rater_id=rater.id,
            action="undo",
            old_answer=record.answer,
            answered_at=record.created_at,
            changed_at=now,
        )
    )
    s.flush()
    _lease_pair(s, pair.id, rater.id, now, now + timedelta(seconds=lease))
    return record


def pair_progress(s: Session, rater_id: int) -> PairProgress:
    rater = load_rater(s, rater_id)
    compared = s.scalar(select(func.count()).where(PairComparison.rater_id == rater.id)) or 0
    skipped = s.scalar(select(func.count()).select_from(PairSkip).where(PairSkip.rater_id == rater.id)) or 0
    last = s.scalars(_last_comparison(rater.id)).first()
    return PairProgress(compared, skipped, last is not None and not _locked(s, last))


def get_pair(s: Session, pair_id: int) -> PairRecord:
    return _pair_record(s, _load_pair(s, pair_id).id)


# ------------------------------------------------------------------------------------------------ internals
def _offerable(rater_id: int) -> Select[int]:
    """Pairs with an open member that this rater has neither compared nor skipped."""
    compared = exists(
        select(PairComparison.id).where(PairComparison.pair_id == Pair.id, PairComparison.rater_id == rater_id)
    )
    skipped = exists(select(PairSkip.pair_id).where(PairSkip.pair_id == Pair.id, PairSkip.rater_id == rater_id))
    has_open = exists(
        select(Sample.id).where(or_(Sample.id == Pair.sample_a_id, Sample.id == Pair.sample_b_id), is_open())
    )
    return select(Pair.id).where(has_open, ~compared, ~skipped)


def _pair_lease_free(now: datetime, rater_id: int) -> ColumnElement[bool]:
    return or_(Pair.lease_expires_at.is_(None), Pair.lease_expires_at <= now, Pair.lease_rater_id == rater_id)


def _lease_pair(s: Session, pair_id: int, rater_id: int, now: datetime, until: datetime) -> bool:
    """Compare-and-set the pair's lease, then its open members', in one savepoint; False (nothing changed) when
    another rater holds either. Ends the rater's other pair and sample leases (one pair at a time)."""
    try:
        with s.begin_nested():
            won = s.execute(
                update(Pair)
                .where(Pair.id == pair_id, _pair_lease_free(now, rater_id))
                .values(lease_rater_id=rater_id, lease_expires_at=until)
                .execution_options(synchronize_session=False)
            )
            if rowcount(won) != 1:
                raise _Lost
            a, b = s.execute(select(Pair.sample_a_id, Pair.sample_b_id).where(Pair.id == pair_id)).tuples().one()
            members = s.scalars(  # primary-key lookups, in the claim's lock order
                select(Sample.id)
                .where(Sample.id.in_([a, b]), is_open())
                .order_by(Sample.policy_version.desc(), Sample.id.desc())
            ).all()
            if not members:
                raise _Lost  # both samples left the open pool: nothing to learn from it any more
            for sample_id in members:
                took = s.execute(
                    update(Sample)
                    .where(Sample.id == sample_id, is_open(), lease_free(now, rater_id))
                    .values(lease_rater_id=rater_id, lease_expires_at=until)
                    .execution_options(synchronize_session=False)
                )
                if rowcount(took) != 1:
                    raise _Lost
            _release_others(s, rater_id, pair_id, members)
            return True
    except _Lost:
        return False


def _release_others(s: Session, rater_id: int, pair_id: int, keep: Sequence[int]) -> None:
    s.execute(
        update(Pair)
        .where(Pair.lease_rater_id == rater_id, Pair.id != pair_id)
        .values(lease_rater_id=None, lease_expires_at=None)
        .execution_options(synchronize_session=False)
    )
    s.execute(
        update(Sample)
        .where(Sample.lease_rater_id == rater_id, Sample.id.not_in(keep))
        .values(lease_rater_id=None, lease_expires_at=None)
        .execution_options(synchronize_session=False)
    )


def _end_lease(s: Session, pair: Pair, rater_id: int) -> None:
    if pair.lease_rater_id == rater_id:
        pair.lease_rater_id = None
        pair.lease_expires_at = None
    s.execute(
        update(Sample)
        .where(Sample.id.in_([pair.sample_a_id, pair.sample_b_id]), Sample.lease_rater_id == rater_id)
        .values(lease_rater_id=None, lease_expires_at=None)
        .execution_options(synchronize_session=False)
    )


def _unpaired(s: Session, rater_id: int, now: datetime) -> list[int]:
    """Open samples in no pair that nobody else holds, newest version first."""
    in_pair = exists(select(Pair.id).where(or_(Pair.sample_a_id == Sample.id, Pair.sample_b_id == Sample.id)))
    stmt = (
        select(Sample.id)
        .where(is_open(), lease_free(now, rater_id), ~in_pair)
        .order_by(Sample.policy_version.desc(), Sample.id.desc())
        .limit(_CANDIDATES)
    )
    return list(s.scalars(stmt).all())


def _form_pair(s: Session, sample_id: int, rater_id: int, now: datetime, until: datetime) -> int | None:
    """Pair ``sample_id`` with a partner of its prompt and lease the new pair; None when there is no partner or
    another rater took one of the samples first."""
    driver = s.get(Sample, sample_id)
    if driver is None:
        return None
    in_pair = exists(select(Pair.id).where(or_(Pair.sample_a_id == Sample.id, Pair.sample_b_id == Sample.id)))
    fresh = and_(is_open(), ~in_pair)
    partner = s.scalar(
        select(Sample.id)
        .where(
            Sample.prompt_id == driver.prompt_id,
            Sample.id != driver.id,
            Sample.stale.is_(False),
            or_(Sample.batch_id.is_not(None), lease_free(now, rater_id)),
        )
        .order_by(case((fresh, 0), else_=1), Sample.policy_version.desc(), Sample.id.desc())
        .limit(1)
    )
    if partner is None:
        return None
    # Which response goes on the left alternates with the ids, so neither side is always the newer one.
    a, b = (driver.id, partner) if (driver.id + partner) % 2 else (partner, driver.id)
    try:
        with s.begin_nested():
            pair = Pair(prompt_id=driver.prompt_id, sample_a_id=a, sample_b_id=b, compared_n=0, created_at=utcnow())
            s.add(pair)
            s.flush()
            if not _lease_pair(s, pair.id, rater_id, now, until):
                raise _Lost
            return pair.id
    except (_Lost, IntegrityError):  # IntegrityError: another rater formed the same pair at the same moment
        return None


def _locked(s: Session, row: PairComparison) -> bool:
    """A member of the pair went into a training batch formed after this comparison was made."""
    pair = aliased(Pair)
    stmt = (
        select(func.count())
        .select_from(Sample)
        .join(TrainingBatch, TrainingBatch.id == Sample.batch_id)
        .join(pair, or_(pair.sample_a_id == Sample.id, pair.sample_b_id == Sample.id))
        .where(pair.id == row.pair_id, TrainingBatch.created_at >= row.created_at)
    )
    return (s.scalar(stmt) or 0) > 0


def _last_comparison(rater_id: int) -> Select[PairComparison]:
    return (
        select(PairComparison)
        .where(PairComparison.rater_id == rater_id)
        .order_by(PairComparison.created_at.desc(), PairComparison.id.desc())
        .limit(1)
    )


def _load_pair(s: Session, pair_id: int) -> Pair:
    pair = s.get(Pair, check_id(pair_id, "pair_id", UnknownPair), populate_existing=True)
    if pair is None:
        raise UnknownPair(f"no pair with id {pair_id}")
    return pair


def _load_pair_for_update(s: Session, pair_id: int) -> Pair:
    """Row-locks the pair (no-op on SQLite, already serialised): two tabs answering it at once are ordered."""
    pair = s.scalars(
        select(Pair)
        .where(Pair.id == check_id(pair_id, "pair_id", UnknownPair))
        .with_for_update()
        .execution_options(populate_existing=True)
    ).one_or_none()
    if pair is None:
        raise UnknownPair(f"no pair with id {pair_id}")
    return pair


def _pair_record(s: Session, pair_id: int) -> PairRecord:
    a, b = aliased(Sample), aliased(Sample)
    row = s.execute(
        select(Pair, Prompt.text, a.response_text, a.policy_version, b.response_text, b.policy_version)
        .join(Prompt, Prompt.id == Pair.prompt_id)
        .join(a, a.id == Pair.sample_a_id)
        .join(b, b.id == Pair.sample_b_id)
        .where(Pair.id == pair_id)
        .execution_options(populate_existing=True)
    ).one_or_none()
    if row is None:
        raise UnknownSample(f"pair {pair_id} has lost a sample")
    pair, prompt, resp_a, ver_a, resp_b, ver_b = row.tuple()
    return PairRecord(
        pair.id, pair.prompt_id, prompt, pair.sample_a_id, resp_a, ver_a, pair.sample_b_id, resp_b, ver_b,
        pair.lease_expires_at,
    )  # fmt: skip


def _comparison_record(row: PairComparison, prompt_id: int) -> ComparisonRecord:
    return ComparisonRecord(row.id, row.pair_id, prompt_id, row.rater_id, row.answer, row.created_at)
