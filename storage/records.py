"""Plain frozen records: what goes into the store and what comes out of it (never live ORM rows)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from storage.errors import InvalidSample, InvalidStep
from storage.validation import (
    MAX_RESPONSE_CHARS,
    check_float_list,
    check_id,
    check_int,
    check_int_list,
    check_json_dict,
    check_number_dict,
)

# ---------------------------------------------------------------------------------------------- inputs


@dataclass(frozen=True)
class NewSample:
    """A generated response waiting to be rated. Validated on construction (raises ``InvalidSample``)."""

    prompt_id: int
    response_text: str
    query_ids: Sequence[int]
    """Token ids of the prompt as the policy saw it (chat template applied)."""
    response_ids: Sequence[int]
    """Token ids of the generated response; one behaviour log-prob per id."""
    policy_version: int
    """Version of the policy that generated it (0 = the initial model)."""
    behaviour_logprobs: Sequence[float]
    """Per-token log-probs of the generating policy, for off-policy correction."""
    generation_settings: Mapping[str, Any] = field(default_factory=dict)
    """Sampling settings (temperature, top_p, max_new_tokens, ...): plain JSON data."""

    def __post_init__(self) -> None:
        check_id(self.prompt_id, "prompt_id", InvalidSample)
        if not isinstance(self.response_text, str) or len(self.response_text) > MAX_RESPONSE_CHARS:
            raise InvalidSample(f"response_text must be text of at most {MAX_RESPONSE_CHARS} characters")
        check_int_list(self.query_ids, "query_ids", InvalidSample)
        response_ids = check_int_list(self.response_ids, "response_ids", InvalidSample)
        logprobs = check_float_list(self.behaviour_logprobs, "behaviour_logprobs", InvalidSample)
        if len(logprobs) != len(response_ids):
            raise InvalidSample(
                f"behaviour_logprobs has {len(logprobs)} values for {len(response_ids)} response tokens"
            )
        if any(lp > 1e-4 for lp in logprobs):
            raise InvalidSample("behaviour_logprobs must be log-probabilities (<= 0)")
        check_int(self.policy_version, "policy_version", InvalidSample)
        check_json_dict(self.generation_settings, "generation_settings", InvalidSample)


@dataclass(frozen=True)
class StepIn:
    """What a finished PPO step reports. Validated on construction (raises ``InvalidStep``)."""

    policy_version: int
    """The policy version this step produced."""
    stats: Mapping[str, float]
    """Finite scalar stats (losses, kl, clipfrac, ...); a step with NaN stats should be failed instead."""
    config: Mapping[str, Any] = field(default_factory=dict)
    """The PPO config used, as plain JSON data."""
    durations: Mapping[str, float] = field(default_factory=dict)
    """Seconds spent per stage (e.g. forward, backward, total); non-negative."""

    def __post_init__(self) -> None:
        check_int(self.policy_version, "policy_version", InvalidStep)
        check_number_dict(self.stats, "stats", InvalidStep)
        check_json_dict(self.config, "config", InvalidStep)
        check_number_dict(self.durations, "durations", InvalidStep, non_negative=True)


# --------------------------------------------------------------------------------------------- outputs


@dataclass(frozen=True)
class RaterRecord:
    id: int
    name: str
    role: str
    """"rater" | "admin" (people) or "model" (a reward model, named ``reward:<source>``)."""
    created_at: datetime


@dataclass(frozen=True)
class PromptRecord:
    id: int
    text: str
    source: str
    row: int
    sample_count: int
    created_at: datetime


@dataclass(frozen=True)
class PromptImport:
    """Result of an (idempotent) prompt import."""

    source: str
    added: int
    """Rows inserted now."""
    existing: int
    """Rows already present for this source (left untouched)."""
    changed: int
    """Of ``existing``, rows whose text now differs; the stored text is kept (samples refer to it)."""


@dataclass(frozen=True)
class SampleRecord:
    id: int
    prompt_id: int
    prompt_text: str
    response_text: str
    query_ids: tuple[int, ...]
    response_ids: tuple[int, ...]
    policy_version: int
    behaviour_logprobs: tuple[float, ...]
    generation_settings: Mapping[str, Any]
    created_at: datetime
    human_ratings: int
    auto_ratings: int
    lease_expires_at: datetime | None


@dataclass(frozen=True)
class RatingRecord:
    id: int
    sample_id: int
    rater_id: int
    rater_name: str
    source: str
    score: float
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True)
class RecentRating:
    """A rating with what was rated, for a "recent ratings" table."""

    rating: RatingRecord
    policy_version: int
    prompt_text: str
    response_text: str


@dataclass(frozen=True)
class RaterProgress:
    rater_id: int
    name: str
    rated: int
    """Ratings this rater has stored."""
    skipped: int
    trained: int
    """Of ``rated``, ratings on samples that are in a trained batch."""
    available: int
    """Open samples this rater has neither rated nor skipped (some may be leased to others)."""
    last_rated_at: datetime | None
    can_undo: bool
    """The rater has a rating whose sample is in no batch yet (undo_last_rating would succeed)."""


@dataclass(frozen=True)
class BatchSample:
    sample_id: int
    prompt_id: int
    prompt_text: str
    response_text: str
    query_ids: tuple[int, ...]
    response_ids: tuple[int, ...]
    score: float
    """The training score frozen at claim time (mixed-mode rule, see docs/storage.md)."""
    policy_version: int
    behaviour_logprobs: tuple[float, ...]


@dataclass(frozen=True)
class ClaimedBatch:
    batch_id: int
    claim_token: str
    """Pass the ClaimedBatch itself to finish_batch/fail_batch so a claim that expired is detected."""
    claimed_by: str
    claimed_at: datetime
    attempt: int
    samples: tuple[BatchSample, ...]

    @property
    def size(self) -> int:
        return len(self.samples)

    @property
    def scores(self) -> tuple[float, ...]:
        return tuple(s.score for s in self.samples)


@dataclass(frozen=True)
class BatchRecord:
    id: int
    status: str
    """"pending" | "claimed" | "trained" | "failed" | "released" (dissolved: batch size changed)."""
    size: int
    claimed_by: str | None
    claimed_at: datetime | None
    attempts: int
    max_attempts: int
    error: str | None
    score_mean: float | None
    created_at: datetime
    finished_at: datetime | None


@dataclass(frozen=True)
class StepRecord:
    id: int
    batch_id: int
    policy_version: int
    stats: Mapping[str, float]
    config: Mapping[str, Any]
    durations: Mapping[str, float]
    created_at: datetime
    batch_size: int
    score_mean: float | None
    """Mean frozen training score of the batch: the reward curve."""


@dataclass(frozen=True)
class LostStepRecord:
    """A step whose weights a crash lost: its batch went back to training, its version number is retired."""

    id: int
    batch_id: int
    policy_version: int
    stats: Mapping[str, float]
    created_at: datetime
    """When the step was trained."""
    lost_at: datetime
    """When start-up recovery found it lost."""


@dataclass(frozen=True)
class CheckpointRecord:
    version: int
    folder: str
    created_at: datetime


@dataclass(frozen=True)
class Counts:
    """Numbers for a dashboard. Sample counts partition ``samples``:
    unrated + scored_not_trained + in_claimed_batches + trained + failed + stale == samples."""

    prompts: int
    samples: int
    unrated: int
    """Open samples without a usable score (no human rating, and no automatic one or human-only mode)."""
    scored_not_trained: int
    """Open samples with a usable score: what the next claims will take."""
    in_claimed_batches: int
    """Samples in pending or claimed batches."""
    trained: int
    failed: int
    """Samples in batches that failed for good."""
    stale: int
    """Samples declared too old to train on (never trained; their ratings are kept)."""
    ratings: int
    human_ratings: int
    auto_ratings: int
    raters: int


@dataclass(frozen=True)
class VersionScore:
    """The human ratings of the samples one policy version wrote."""

    policy_version: int
    mean_score: float
    ratings: int


@dataclass(frozen=True)
class TrainedShare:
    """How many human ratings have been trained on (their sample is in a trained batch), of all of them."""

    trained: int
    total: int


# ---------------------------------------------------------------------------------------------- pairwise


@dataclass(frozen=True)
class PairRecord:
    """Two responses to one prompt, as shown to a rater: A on the left, B on the right."""

    pair_id: int
    prompt_id: int
    prompt_text: str
    sample_a_id: int
    response_a: str
    version_a: int
    sample_b_id: int
    response_b: str
    version_b: int
    lease_expires_at: datetime | None


@dataclass(frozen=True)
class ComparisonRecord:
    id: int
    pair_id: int
    prompt_id: int
    rater_id: int
    answer: str
    """One of ``schema.ANSWERS``: a_better, b_better, tie, both_bad."""
    created_at: datetime


@dataclass(frozen=True)
class PairOutcome:
    """One answer about two samples, the input of a Bradley-Terry fit."""

    sample_a_id: int
    sample_b_id: int
    answer: str


@dataclass(frozen=True)
class PairProgress:
    compared: int
    skipped: int
    can_undo: bool
    """The rater's last comparison can still be undone (no sample it scored has been put in a batch since)."""
