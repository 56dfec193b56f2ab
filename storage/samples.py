"""Samples: adding generated responses, the rater queue with leases, skips, and the reward-model queue.

A lease (``samples.lease_rater_id`` / ``lease_expires_at``) reserves a sample for the rater it was shown to,
so two raters are never shown the same sample at once; it ends when that rater rates or skips it, or
expires. Taking a lease is a conditional UPDATE (``... WHERE lease is free``) whose rowcount says whether we
won, so it is race-free on any database, not only under SQLite's single writer.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from datetime import datetime, timedelta

from sqlalchemy import BindParameter, Integer, bindparam, func, or_, select, update
from sqlalchemy.orm import Session

from storage.conversions import sample_record
from storage.errors import InvalidSample, UnknownPrompt, UnknownSample
from storage.queries import (
    check_seconds,
    is_open,
    lease_free,
    quarantined_for,
    rated_by,
    resolve_now,
    rowcount,
    skipped_by,
)
from storage.raters import check_model_source, load_rater
from storage.records import NewSample, SampleRecord
from storage.schema import (
    HUMAN_SOURCE,
    MODEL_RATER_PREFIX,
    Pair,
    PairComparison,
    Prompt,
    Rater,
    Rating,
    Sample,
    Skip,
    UTCDateTime,
    utcnow,
)
from storage.validation import check_id, check_int

DEFAULT_LEASE_SECONDS = 300.0
_CANDIDATES = 8  # rows fetched per round when several raters race for the top of the queue

# The rater's hot path runs these statements on every click, so they are built once, with bound parameters:
# building a select with its EXISTS subqueries costs ~0.7 ms of Python per call on a 2-core laptop CPU,
# running the prebuilt one ~0.15 ms (bench/storage.py; the SQL itself is a few index lookups).
_RATER: BindParameter[int] = bindparam("q_rater", type_=Integer())
_SAMPLE: BindParameter[int] = bindparam("q_sample", type_=Integer())
_NOW: BindParameter[datetime] = bindparam("q_now", type_=UTCDateTime())
_UNTIL: BindParameter[datetime] = bindparam("q_until", type_=UTCDateTime())
_MIN_VERSION: BindParameter[int] = bindparam("q_min_version", type_=Integer())
_HELD_LEASE = (
    select(Sample.id)
    .where(
        Sample.lease_rater_id == _RATER,
        Sample.lease_expires_at > _NOW,
        is_open(),
        ~rated_by(_RATER),
        ~skipped_by(_RATER),
    )
    .order_by(Sample.lease_expires_at.desc(), Sample.id.desc())  # the most recently leased (e.g. after undo)
    .limit(1)
)
_QUEUE = (
    select(Sample.id)
    .where(
        is_open(),
        lease_free(_NOW, _RATER),
        ~rated_by(_RATER),
        ~skipped_by(_RATER),
        Sample.policy_version >= _MIN_VERSION,
    )
    .order_by(Sample.policy_version.desc(), Sample.human_n, Sample.id.desc())
    .limit(_CANDIDATES)
    # PostgreSQL: never wait on a row another transaction holds. A compare-and-set UPDATE that waits for a claim and
    # then fails its re-check still leaves the row locked by us (READ COMMITTED locks the newest version before it
    # re-evaluates the WHERE), so a rater trying its next candidate while holding that row, and a claimer waiting
    # for it while holding the candidate, deadlock. Rows locked here are ours, so the lease below cannot wait.
    # SQLite ignores FOR UPDATE (BEGIN IMMEDIATE already serialises writers).
    .with_for_update(skip_locked=True)
)
_RENEW_LEASE = (  # only while it is still ours: between the read and this write the lease may have expired and
    # been taken (PostgreSQL's READ COMMITTED), and a renewal must never hand a sample back to a second rater
    update(Sample)
    .where(Sample.id == _SAMPLE, Sample.lease_rater_id == _RATER)
    .values(lease_expires_at=_UNTIL)
    .execution_options(synchronize_session=False)
)
_TAKE_LEASE = (  # compare-and-set: lease the sample only if it is still open and free
    update(Sample)
    .where(Sample.id == _SAMPLE, is_open(), lease_free(_NOW, _RATER))
    .values(lease_rater_id=_RATER, lease_expires_at=_UNTIL)
    .execution_options(synchronize_session=False)
)
_OFFER = (  # compare-and-set: lease one given sample to the rater if it is open, free (or theirs) and still new to them
    update(Sample)
    .where(Sample.id == _SAMPLE, is_open(), lease_free(_NOW, _RATER), ~rated_by(_RATER), ~skipped_by(_RATER))
    .values(lease_rater_id=_RATER, lease_expires_at=_UNTIL)
    .execution_options(synchronize_session=False)
)
_RELEASE_OTHER_LEASES = (
    update(Sample)
    .where(Sample.lease_rater_id == _RATER, Sample.id != _SAMPLE)
    .values(lease_rater_id=None, lease_expires_at=None)
    .execution_options(synchronize_session=False)
)
_RECORD = (
    select(Sample, Prompt.text)
    .join(Prompt, Prompt.id == Sample.prompt_id)
    .where(Sample.id == _SAMPLE)
    .execution_options(populate_existing=True)  # after bulk UPDATEs the identity map may hold an old copy
)


def add_samples(s: Session, samples: Sequence[NewSample]) -> list[int]:
    """Store generated samples (validated as ``NewSample``s); returns their ids in order."""
    items = list(samples)
    if not all(isinstance(x, NewSample) for x in items):
        raise InvalidSample("add_samples takes NewSample records")
    wanted = Counter(x.prompt_id for x in items)
    found = set(s.scalars(select(Prompt.id).where(Prompt.id.in_(wanted))))
    if missing := sorted(set(wanted) - found):
        raise UnknownPrompt(f"no prompt with id {missing[0]} (unknown prompt ids: {missing[:10]})")
    now = utcnow()
    rows = [
        Sample(
            prompt_id=x.prompt_id,
            response_text=x.response_text,
            query_ids=[int(t) for t in x.query_ids],
            response_ids=[int(t) for t in x.response_ids],
            behaviour_logprobs=[float(lp) for lp in x.behaviour_logprobs],
            policy_version=int(x.policy_version),
            generation_settings=dict(x.generation_settings),
            created_at=now,
            human_n=0,
            auto_n=0,
            stale=False,
        )
        for x in items
    ]
    s.add_all(rows)
    for prompt_id, n in sorted(wanted.items()):
        s.execute(
            update(Prompt)
            .where(Prompt.id == prompt_id)
            .values(sample_count=Prompt.sample_count + n)
            .execution_options(synchronize_session=False)
        )
    s.flush()
    return [r.id for r in rows]


def get_sample(s: Session, sample_id: int) -> SampleRecord:
    return _record(s, check_id(sample_id, "sample_id", UnknownSample))


def next_sample_for_rater(
    s: Session,
    rater_id: int,
    *,
    lease_seconds: float = DEFAULT_LEASE_SECONDS,
    now: datetime | None = None,
    min_policy_version: int = 0,
) -> SampleRecord | None:
    """The sample to show this rater, leased to them for ``lease_seconds``; None when nothing is left.

    Asking again returns the same sample (lease renewed) until they rate or skip it or the lease expires.
    Otherwise: an open sample they have neither rated nor skipped and nobody else holds, of a policy version
    ``min_policy_version`` or newer (the app passes the newest version with samples, so the version a rater
    sees never goes back), newest version first, then fewest human ratings (spread raters), then newest.
    """
    rater = load_rater(s, rater_id)
    lease = check_seconds(lease_seconds, "lease_seconds")
    now = resolve_now(now)
    until = now + timedelta(seconds=lease)
    params = {"q_rater": rater.id, "q_now": now, "q_until": until}
    queue_params = {**params, "q_min_version": check_int(min_policy_version, "min_policy_version")}
    held = s.execute(_HELD_LEASE, params).scalar()
    if held is not None and rowcount(s.execute(_RENEW_LEASE, {**params, "q_sample": held})) == 1:
        return _record(s, held)
    for _ in range(3):
        candidates = s.scalars(_QUEUE, queue_params).all()
        for sample_id in candidates:
            if _take_lease(s, sample_id, rater.id, now, until):
                return _record(s, sample_id)
        if len(candidates) < _CANDIDATES:
            break
    return None


def offer_sample(
    s: Session,
    rater_id: int,
    sample_id: int,
    *,
    lease_seconds: float = DEFAULT_LEASE_SECONDS,
    now: datetime | None = None,
) -> SampleRecord | None:
    """``sample_id`` leased to this rater (lease taken or renewed), or None when it cannot be theirs now.

    None when someone else holds an unexpired lease on it, it is in a batch or stale, or the rater has rated or
    skipped it. The app offers the sample an undo gave back this way, and falls back to
    ``next_sample_for_rater`` on None: checking only "is it leased" would show a sample leased to *another*
    rater. Like any new lease, it ends the rater's other leases (a rater holds at most one). Raises
    ``UnknownRater``/``UnknownSample`` for bad ids.
    """
    rater = load_rater(s, rater_id)
    sample = load_sample(s, sample_id)
    lease = check_seconds(lease_seconds, "lease_seconds")
    now = resolve_now(now)
    params = {"q_sample": sample.id, "q_rater": rater.id, "q_now": now, "q_until": now + timedelta(seconds=lease)}
    if rowcount(s.execute(_OFFER, params)) != 1:
        return None
    release_other_leases(s, rater.id, keep=sample.id)
    return _record(s, sample.id)


def skip_sample(s: Session, rater_id: int, sample_id: int) -> None:
    """Never show this sample to this rater again; ends their lease on it. Idempotent."""
    rater = load_rater(s, rater_id)
    sample = load_sample(s, sample_id)
    s.refresh(sample, with_for_update=True)  # two tabs skipping it at once: the second waits here
    if s.get(Skip, (rater.id, sample.id), populate_existing=True) is None:
        s.add(Skip(rater_id=rater.id, sample_id=sample.id, created_at=utcnow()))
    if sample.lease_rater_id == rater.id:
        sample.lease_rater_id = None
        sample.lease_expires_at = None
    s.flush()


def count_unrated_unleased(s: Session, *, now: datetime | None = None, min_policy_version: int | None = None) -> int:
    """Open samples no person has rated and nobody holds: the generator's buffer level.

    With `min_policy_version`, samples from older versions (about to go stale) do not count.
    """
    now = resolve_now(now)
    stmt = select(func.count()).where(is_open(), Sample.human_n == 0, lease_free(now))
    if min_policy_version is not None:
        stmt = stmt.where(Sample.policy_version >= min_policy_version)
    return s.scalar(stmt) or 0


def count_in_flight(s: Session, min_policy_version: int, *, now: datetime | None = None) -> int:
    """Open samples the next training steps will take or raters are about to rate: every sample a person rated
    (never stale), every one a rater holds, and every unrated one of ``min_policy_version`` or newer. The
    generator makes no more while this reaches the trainer's largest batch, so no rating waits beyond one step.
    """
    now = resolve_now(now)
    pending = or_(Sample.human_n > 0, ~lease_free(now), Sample.policy_version >= min_policy_version)
    return s.scalar(select(func.count()).where(is_open(), pending)) or 0


def oldest_waiting_rating(s: Session) -> datetime | None:
    """When the oldest human judgement of an open sample (not yet in a batch) was made: a rating, or a comparison
    of a pair it is in (pairwise mode); None when none waits.

    The trainer trains a smaller batch when this is older than `--flush-after-s`: the last ratings of a sitting
    reach the weights even when too few follow them to fill a batch."""
    rated = (
        select(func.min(Rating.created_at))
        .join(Sample, Sample.id == Rating.sample_id)
        .where(is_open(), Sample.human_n > 0, Rating.source == HUMAN_SOURCE)
    )
    compared = (
        select(func.min(PairComparison.created_at))
        .join(Pair, Pair.id == PairComparison.pair_id)
        .join(Sample, or_(Sample.id == Pair.sample_a_id, Sample.id == Pair.sample_b_id))
        .where(is_open())
    )
    times = [t for t in (s.scalar(rated), s.scalar(compared)) if t is not None]
    return min(times, default=None)


def samples_needing_auto_score(s: Session, source: str, limit: int = 64) -> list[SampleRecord]:
    """Open samples the reward model ``source`` has not scored yet, fewest automatic scores first.

    Samples quarantined for ``source`` (it raised or hung on them: ``storage.quarantine``) are left out, so one
    bad sample cannot stall automatic scoring; people can still rate them.
    """
    source = check_model_source(source)
    limit = check_int(limit, "limit", minimum=1)
    model_id = s.scalar(select(Rater.id).where(Rater.name == MODEL_RATER_PREFIX + source))
    stmt = (
        select(Sample, Prompt.text)
        .join(Prompt, Prompt.id == Sample.prompt_id)
        .where(is_open(), ~quarantined_for(source))
    )
    if model_id is not None:
        stmt = stmt.where(~rated_by(model_id))
    stmt = stmt.order_by(Sample.auto_n, Sample.id.desc()).limit(limit)
    return [sample_record(sample, text) for sample, text in s.execute(stmt).tuples()]


def load_sample(s: Session, sample_id: int) -> Sample:
    """The live row, for repository code; raises ``UnknownSample``."""
    sample = s.get(Sample, check_id(sample_id, "sample_id", UnknownSample))
    if sample is None:
        raise UnknownSample(f"no sample with id {sample_id}")
    return sample


def _record(s: Session, sample_id: int) -> SampleRecord:
    """Read the sample with its prompt, fresh."""
    row = s.execute(_RECORD, {"q_sample": sample_id}).tuples().one_or_none()
    if row is None:
        raise UnknownSample(f"no sample with id {sample_id}")
    return sample_record(*row)


def _take_lease(s: Session, sample_id: int, rater_id: int, now: datetime, until: datetime) -> bool:
    """Compare-and-set: lease the sample only if it is still open and free."""
    won = s.execute(_TAKE_LEASE, {"q_sample": sample_id, "q_rater": rater_id, "q_now": now, "q_until": until})
    if rowcount(won) != 1:
        return False
    release_other_leases(s, rater_id, keep=sample_id)
    return True


def release_other_leases(s: Session, rater_id: int, *, keep: int) -> None:
    """A rater holds at most one lease: free every sample leased to them except ``keep``."""
    s.execute(_RELEASE_OTHER_LEASES, {"q_rater": rater_id, "q_sample": keep})
