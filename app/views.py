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
