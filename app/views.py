"""Plain frozen views the service hands to the UI (see docs/app-service-contract.md)."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class RaterView:
    """A logged-in rater: identity lives in the database, not in gr.State."""

    id: int
    name: str
    is_admin: bool


@dataclass(frozen=True)
class Assignment:
    """One sample offered to a rater."""

    sample_id: int
    prompt: str
    response: str
    policy_version: int
    cut_at: int | None = None
    """The token limit the response was cut at (it ended without an end-of-text token); None when it ended."""


@dataclass(frozen=True)
class Progress:
    """A rater's own progress."""

    rated: int
    skipped: int
    can_undo: bool


@dataclass(frozen=True)
class NextResult:
    """What the rate page shows next."""

    assignment: Assignment | None
    """None when the buffer is empty."""
    waiting: str | None
    """When assignment is None: e.g. "Nothing for you to rate right now: model v2 is writing new responses"."""
    progress: Progress
    notice: str | None
    """e.g. "Rating saved", "Undone", an error message."""


@dataclass(frozen=True)
class Dashboard:
    """Live training status."""

    version: int
    training: str
    """"running" | "paused" | "waiting for 5 more ratings" | "error: ..."."""
    reward_source: str
    counts: dict[str, int] = field(hash=False)
    """prompts, samples, unrated, scored, trained, ratings, raters."""
    buffer_ready: int
    buffer_target: int
    last_step_s: float | None
    last_error: str | None
    reward_note: str | None = None
    """The reward source's state when it is not plainly in use: "switching to vader", a failed switch, scoring
    stopped (reward calls hang)."""
    learned: LearnedRewardView | None = None
    """The learned reward model, when it is among the configured reward sources."""


@dataclass(frozen=True)
class HistoryPoint:
    """One PPO step for the dashboard plots."""

    step: int
    version: int
    mean_score: float
    kl: float
    policy_loss: float
    value_loss: float
    time: str


@dataclass(frozen=True)
class VersionScore:
    """The human ratings of one policy version's samples, for the per-version plot."""

    version: int
    mean_score: float
    ratings: int


@dataclass(frozen=True)
class RatingRow:
    """One recent rating."""

    time: str
    rater: str
    source: str
    score: float
    policy_version: int
    prompt: str
    response: str


@dataclass(frozen=True)
class Comparison:
    """The same prompt answered greedily by the first and the current version."""

    prompt: str
    first_version: int
    first_response: str
    current_version: int
    current_response: str


@dataclass(frozen=True)
class PairAssignment:
    """Two responses to one prompt offered side by side (pairwise mode): A on the left, B on the right."""

    pair_id: int
    prompt: str
    response_a: str
    response_b: str
    version_a: int
    version_b: int


@dataclass(frozen=True)
class PairResult:
    """What the Compare tab shows next."""

    assignment: PairAssignment | None
    """None when there is no pair to compare (the mode is off, or the generator is writing new responses)."""
    waiting: str | None
    progress: Progress
    """`rated` counts this rater's comparisons."""
    notice: str | None


@dataclass(frozen=True)
class LearnedRewardView:
    """The reward model learned from the raters (app/learned/): its fit, its agreement with people, its guard."""

    version: int | None
    """The current fit (`learned@vN`); None before the first fit."""
    needed: int
    """Human-rated samples it needs before it is fit and scores anything (`--learned-min-ratings`)."""
    have: int
    """Human-rated samples so far."""
    fit_n: int = 0
    """Human-rated samples the current fit was fit on."""
    held_out_n: int = 0
    """Human-rated samples kept out of the fit to measure it on."""
    spearman: float | None = None
    """Rank correlation with the held-out human scores (None: too few to say)."""
    pairwise: float | None = None
    """Share of held-out pairs people ordered that it orders the same way."""
    fit_s: float | None = None
    """Seconds the last refit took, embedding included."""
    scoring: bool = False
    """Whether the current reward source lets it score samples (`learned`, `human+learned`)."""
    scored: int = 0
    """Samples it scored (every version)."""
    guarded: int = 0
    """Samples its guard refused to score (far outside what it was fit on): never trained on its score."""
    checks: int = 0
    """Learned scores that people rated afterwards."""
    checks_pairwise: float | None = None
    """On the checks: share of pairs people ordered that its scores ordered the same way."""
    checks_mean_abs_diff: float | None = None
    """On the checks: mean |learned score - human score|."""
