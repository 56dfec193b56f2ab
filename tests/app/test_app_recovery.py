"""Start-up after a bad end: a truncated checkpoint, leftovers of a crash mid-save, a changed batch size."""

from __future__ import annotations

import shutil
from collections.abc import Callable

from sqlalchemy import select

from app.checkpoints import verify_checkpoint
from app.service import FeedbackService
from storage.batches import claim_next_batch
from storage.history import list_checkpoints, list_lost_steps
from storage.schema import Sample
from tests.app.app_helpers import batches, generate, rate_next, same_weights, weights


def test_a_truncated_checkpoint_is_skipped_and_the_one_before_loads(
    make_service: Callable[..., FeedbackService],
) -> None:
    first = make_service(checkpoint_every=1, keep_checkpoints=2)
    alice = first.login("alice")
    saved, kls = [], []
    for version in (1, 2, 3):
        generate(first, 2)
        rate_next(first, alice.id, 2)
        assert first.trainer.tick() and first.publisher.version == version
        saved.append(weights(first))
        kls.append(first.trainer.trainer.kl_ctl.value)
    root = first.settings.checkpoint_dir
    assert sorted(p.name for p in root.iterdir()) == ["v2", "v3"]  # keep_checkpoints=2: v1 was pruned
    with first.db.read_session_factory.begin() as s:
        assert [c.version for c in list_checkpoints(s)] == [2, 3]
    weights_file = root / "v3" / "model.safetensors"
    weights_file.write_bytes(weights_file.read_bytes()[:1000])  # a power cut mid-write on a disk that lied
    assert verify_checkpoint(root / "v3") is not None and verify_checkpoint(root / "v2") is None
    shutil.copytree(root / "v2", root / "v9")  # a crash after the rename, before the commit: unrecorded
    (root / ".tmp-v10-0a1b2c3d").mkdir()  # a crash mid-write

    restarted = make_service(checkpoint_every=1, keep_checkpoints=2)
    assert same_weights(saved[1], weights(restarted))  # version 2's weights, start-up went on
    assert restarted.publisher.version == 4 and restarted.trainer.status.checkpoint_version == 2
    assert (restarted.trainer.trainer.current_step, restarted.trainer.trainer.kl_ctl.value) == (2, kls[1])
    assert kls[1] != kls[2]
    restarted.trainer.recover()
    assert sorted(p.name for p in root.iterdir()) == ["v2"]  # v3 failed its manifest, v9 and the temp are gone
    with restarted.db.read_session_factory.begin() as s:
        assert [c.version for c in list_checkpoints(s)] == [2]
        assert [x.policy_version for x in list_lost_steps(s)] == [3]
    assert restarted.trainer.tick() and restarted.publisher.version == 5  # the lost step's batch, again
    assert [b.status for b in batches(restarted)] == ["trained"] * 3


def test_pending_batches_of_the_old_size_are_trained_after_the_batch_size_changes(
    make_service: Callable[..., FeedbackService],
) -> None:
    first = make_service(batch_size=2)
    alice = first.login("alice")
    generate(first, 4)
    rated = {a.sample_id for a in rate_next(first, alice.id, 4)}
    with first.db.session_factory.begin() as s:  # a trainer that died holding two claims of size 2
        dead = [claim_next_batch(s, 2, "trainer-that-crashed") for _ in range(2)]
    assert all(b is not None for b in dead)

    bigger = make_service(batch_size=4)
    bigger.trainer.recover()
    assert bigger.trainer.tick() and bigger.publisher.version == 1
    [trained] = [b for b in batches(bigger) if b.status == "trained"]
    assert trained.size == 4
    assert sorted(b.status for b in batches(bigger) if b.id != trained.id) == ["released", "released"]
    with bigger.db.read_session_factory.begin() as s:
        assert set(s.scalars(select(Sample.id).where(Sample.batch_id == trained.id))) == rated
