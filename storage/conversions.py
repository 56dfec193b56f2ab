"""ORM row -> frozen record conversions (repository functions never hand out live rows)."""

from __future__ import annotations

from storage.records import (
    BatchRecord,
    CheckpointRecord,
    LostStepRecord,
    PromptRecord,
    RaterRecord,
    RatingRecord,
    SampleRecord,
    StepRecord,
)
from storage.schema import Checkpoint, LostStep, Prompt, Rater, Rating, Sample, TrainingBatch, TrainingStep


def rater_record(rater: Rater) -> RaterRecord:
    return RaterRecord(id=rater.id, name=rater.name, role=rater.role, created_at=rater.created_at)


def prompt_record(prompt: Prompt) -> PromptRecord:
    return PromptRecord(
        id=prompt.id,
        text=prompt.text,
        source=prompt.source,
        row=prompt.row,
        sample_count=prompt.sample_count,
        created_at=prompt.created_at,
    )


def sample_record(sample: Sample, prompt_text: str) -> SampleRecord:
    return SampleRecord(
        id=sample.id,
        prompt_id=sample.prompt_id,
        prompt_text=prompt_text,
        response_text=sample.response_text,
        query_ids=tuple(sample.query_ids),
        response_ids=tuple(sample.response_ids),
        policy_version=sample.policy_version,
        behaviour_logprobs=tuple(sample.behaviour_logprobs),
        generation_settings=dict(sample.generation_settings),
        created_at=sample.created_at,
        human_ratings=sample.human_n,
        auto_ratings=sample.auto_n,
        lease_expires_at=sample.lease_expires_at,
    )


def rating_record(rating: Rating, rater_name: str) -> RatingRecord:
    return RatingRecord(
        id=rating.id,
        sample_id=rating.sample_id,
        rater_id=rating.rater_id,
        rater_name=rater_name,
        source=rating.source,
        score=rating.score,
        created_at=rating.created_at,
        updated_at=rating.updated_at,
    )


def batch_record(batch: TrainingBatch) -> BatchRecord:
    return BatchRecord(
        id=batch.id,
        status=batch.status,
        size=batch.size,
        claimed_by=batch.claimed_by,
        claimed_at=batch.claimed_at,
        attempts=batch.attempts,
        max_attempts=batch.max_attempts,
        error=batch.error,
        score_mean=batch.score_mean,
        created_at=batch.created_at,
        finished_at=batch.finished_at,
    )


def step_record(step: TrainingStep, batch_size: int, score_mean: float | None) -> StepRecord:
    return StepRecord(
        id=step.id,
        batch_id=step.batch_id,
        policy_version=step.policy_version,
        stats=dict(step.stats),
        config=dict(step.config),
        durations=dict(step.durations),
        created_at=step.created_at,
        batch_size=batch_size,
        score_mean=score_mean,
    )


def checkpoint_record(checkpoint: Checkpoint) -> CheckpointRecord:
    return CheckpointRecord(version=checkpoint.version, folder=checkpoint.folder, created_at=checkpoint.created_at)


def lost_step_record(step: LostStep) -> LostStepRecord:
    return LostStepRecord(
        id=step.id,
        batch_id=step.batch_id,
        policy_version=step.policy_version,
        stats=dict(step.stats),
        created_at=step.created_at,
        lost_at=step.lost_at,
    )
