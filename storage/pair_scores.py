"""From comparisons to training scores: the outcomes of one prompt's pairs in, derived per-sample scores out.

Comparisons are not scores, so the app fits a model over them (app/bradley_terry.py) and writes each sample's
fitted score here as an *automatic rating* by a model rater (``reward:<source>``, e.g. ``reward:bt@pairwise``). The
existing claim then trains those samples exactly once, as it trains reward-model scores: the score is frozen in
the batch when it is claimed, later comparisons change the fit but never a frozen score. Only open samples get a
score written (a sample in a batch keeps what it was trained on); an open sample whose comparisons were all undone
loses its derived score, so it is never trained on a comparison that no longer exists. Comparison and scores are
written in the caller's transaction, so they survive a crash together.
"""

from __future__ import annotations

from collections.abc import Mapping

from sqlalchemy import delete, or_, select, update
from sqlalchemy.orm import Session, aliased

from storage.errors import UnknownPrompt
from storage.queries import is_open
from storage.raters import get_or_create_model_rater
from storage.records import PairOutcome
from storage.schema import Pair, PairComparison, Rating, Sample, utcnow
from storage.validation import DEFAULT_SCORE_RANGE, check_id, check_score


def prompt_outcomes(s: Session, prompt_id: int) -> list[PairOutcome]:
    """Every comparison of the prompt's pairs (one per rater and pair), oldest first."""
    prompt_id = check_id(prompt_id, "prompt_id", UnknownPrompt)
    stmt = (
        select(Pair.sample_a_id, Pair.sample_b_id, PairComparison.answer)
        .join(PairComparison, PairComparison.pair_id == Pair.id)
        .where(Pair.prompt_id == prompt_id)
        .order_by(PairComparison.id)
    )
    return [PairOutcome(a, b, answer) for a, b, answer in s.execute(stmt).tuples()]


def compared_open_samples(s: Session, prompt_id: int) -> list[int]:
    """Open samples of the prompt that are in a pair: those whose derived score a refit may change."""
    pair = aliased(Pair)
    stmt = (
        select(Sample.id)
        .join(pair, or_(pair.sample_a_id == Sample.id, pair.sample_b_id == Sample.id))
        .where(Sample.prompt_id == check_id(prompt_id, "prompt_id", UnknownPrompt), is_open())
        .distinct()
    )
    return sorted(s.scalars(stmt).all())


def write_derived_scores(
    s: Session,
    source: str,
    prompt_id: int,
    scores: Mapping[int, float],
    *,
    score_range: tuple[float, float] = DEFAULT_SCORE_RANGE,
) -> int:
    """Make the model rater ``source``'s ratings of the prompt's open, paired samples equal ``scores``.

    A sample missing from ``scores`` loses its rating of this source. Samples in a batch or stale are left alone.
    Returns how many ratings were added, changed or removed. Raises ``InvalidScore`` (writing nothing) for a score
    outside ``score_range``.
    """
    wanted = {int(k): check_score(v, score_range) for k, v in scores.items()}
    rater = get_or_create_model_rater(s, source)
    samples = s.scalars(  # locked in the claim's order, so a concurrent claim waits instead of deadlocking
        select(Sample)
        .where(Sample.prompt_id == check_id(prompt_id, "prompt_id", UnknownPrompt), is_open())
        .order_by(Sample.policy_version.desc(), Sample.id.desc())
        .with_for_update()
        .execution_options(populate_existing=True)
    ).all()
    paired = set(compared_open_samples(s, prompt_id))
    ids = [x.id for x in samples if x.id in paired or x.id in wanted]
    have = {
        r.sample_id: r for r in s.scalars(select(Rating).where(Rating.rater_id == rater.id, Rating.sample_id.in_(ids)))
    }
    now, changed = utcnow(), 0
    for sample_id in ids:
        score, row = wanted.get(sample_id), have.get(sample_id)
        if score is None and row is not None:
            s.execute(delete(Rating).where(Rating.id == row.id).execution_options(synchronize_session=False))
            _bump_auto(s, sample_id, -1)
        elif score is not None and row is None:
            s.add(
                Rating(
                    sample_id=sample_id, rater_id=rater.id, source=source, score=score, created_at=now, updated_at=now
                )
            )
            _bump_auto(s, sample_id, +1)
        elif score is not None and row is not None and row.score != score:
            row.score, row.updated_at = score, now
        else:
            continue
        changed += 1
    s.flush()
    return changed


def _bump_auto(s: Session, sample_id: int, delta: int) -> None:
    s.execute(
        update(Sample)
        .where(Sample.id == sample_id)
        .values(auto_n=Sample.auto_n + delta)
        .execution_options(synchronize_session=False)
    )
