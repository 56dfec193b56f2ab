"""No rating wasted (issue 9): under a burst of ratings from several raters, every sample a person scored is
trained, the step takes every scored sample waiting (up to --max-batch-size), and the generator stays at most
--max-batch-size samples ahead of the trainer."""

from __future__ import annotations

import time
from collections.abc import Callable

from sqlalchemy import select

from app.service import FeedbackService
from storage.schema import Sample
from tests.app.app_helpers import batches, generate, rate_next


def _rate_everything_offered(service: FeedbackService, rater_ids: list[int]) -> int:
    """Each rater scores whatever they are offered until nothing is left for them; returns how many."""
    rated = 0
    for rater_id in rater_ids:
        result = service.next_for(rater_id)
        while result.assignment is not None:
            result = service.rate(rater_id, result.assignment.sample_id, 0.5 if rated % 2 else -0.5)
            rated += 1
    return rated


def test_a_burst_of_ratings_is_trained_whole_in_batches_within_the_bounds(
    make_service: Callable[..., FeedbackService],
) -> None:
    service = make_service(batch_size=2, max_batch_size=6, buffer=4, max_staleness=0, ppo_epochs=1, max_new_tokens=4)
    raters = [service.login(name).id for name in ("ann", "bo", "cy")]
    rated = 0
    for _ in range(4):  # three fast raters and a trainer that takes one step per round
        for _ in range(4):
            service.generator.tick()
            assert service.generator.status.in_flight <= 6
        rated += _rate_everything_offered(service, raters)
        service.trainer.tick()
    while service.trainer.tick():
        pass
    with service.db.read_session_factory.begin() as s:
        untrained = s.scalars(select(Sample.id).where(Sample.human_n > 0, Sample.batch_id.is_(None))).all()
    sizes = [b.size for b in batches(service)]
    counts = service.dashboard().counts
    assert rated >= 12 and not untrained
    assert counts["human_ratings_trained"] == counts["human_ratings_all"] == rated
    assert all(2 <= n <= 6 for n in sizes) and max(sizes) > 2  # steps take more than the minimum when it waits
    assert all(b.status == "trained" for b in batches(service))


def test_ratings_too_few_for_a_batch_are_trained_once_the_oldest_has_waited_flush_after_s(
    make_service: Callable[..., FeedbackService],
) -> None:
    """The last ratings of a sitting: fewer than --batch-size, nobody rating after them. The trainer waits for a
    full batch until the oldest has waited --flush-after-s, then trains what it has."""
    service = make_service(batch_size=4, flush_after_s=0.5, ppo_epochs=1, max_new_tokens=4)
    generate(service, 4)
    alice = service.login("alice")
    started = time.monotonic()
    rate_next(service, alice.id, 2)
    assert not service.trainer.tick()  # two of four, and they just arrived: the trainer waits
    assert service.dashboard().training == "waiting for 2 more ratings (or trains what it has 0.5 s after the oldest)"
    assert batches(service) == []
    time.sleep(max(0.0, started + 0.6 - time.monotonic()))
    assert service.trainer.tick()
    [batch] = batches(service)
    assert (batch.status, batch.size) == ("trained", 2)
    assert service.trainer.status.version == 1
    assert not service.trainer.tick()  # nothing rated is left waiting: no empty or auto-only step
