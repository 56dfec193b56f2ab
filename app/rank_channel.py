"""The messages between the processes of a data-parallel `rlhf-live train` (app.distributed_trainer).

Rank 0 alone talks to the database and the weights folder. Every exchange is rank 0 sending each rank a `Control`
(`scatter_object_list`: each rank gets only its own shard of a batch) and every rank answering with a `Report`
(`all_gather_object`), so no rank ever waits in a collective the others will not enter: whatever a rank needs to
know (a step to take, the step's fate, stop) arrives in the next control, and whatever rank 0 needs to know (a
failure, a SIGTERM on another rank, the weights' digest) in the next report. Between steps rank 0 sends "idle"
every `--poll-seconds`, which keeps the others out of the process group's timeout while nobody rates.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

import torch
import torch.distributed as dist

from storage.records import BatchSample

ControlKind = Literal["hello", "idle", "step", "keep", "undo", "stop"]
"""hello: load the resume point's trainer state, report the weights' digest; idle: nothing to do; step: train on
the shard; keep / undo: the last step was recorded / must be undone (restore the snapshot); stop: report the
weights' digest and exit."""


@dataclass(frozen=True)
class Shard:
    """One rank's part of a claimed batch, as plain data (token ids, scores, log-probs)."""

    queries: list[list[int]]
    responses: list[list[int]]
    scores: list[float]
    behaviour_logprobs: list[list[float]]

    def __len__(self) -> int:
        return len(self.scores)

    def tensors(self) -> tuple[list[torch.Tensor], list[torch.Tensor], list[torch.Tensor], list[torch.Tensor]]:
        """(queries (Lq,), responses (Lr,), scores (), behaviour log-probs (Lr,)), one of each per sample."""
        return (
            [torch.tensor(x, dtype=torch.long) for x in self.queries],
            [torch.tensor(x, dtype=torch.long) for x in self.responses],
            [torch.tensor(x, dtype=torch.float32) for x in self.scores],
            [torch.tensor(x, dtype=torch.float32) for x in self.behaviour_logprobs],
        )


def split_batch(samples: Sequence[BatchSample], world_size: int) -> list[Shard]:
    """Consecutive equal parts, one per rank (the claim made the batch a multiple of the world size)."""
    if len(samples) % world_size:
        raise ValueError(f"a batch of {len(samples)} samples does not split over {world_size} processes")
    k = len(samples) // world_size
    parts = [samples[r * k : (r + 1) * k] for r in range(world_size)]
    return [
        Shard(
            queries=[list(x.query_ids) for x in part],
            responses=[list(x.response_ids) for x in part],
            scores=[float(x.score) for x in part],
            behaviour_logprobs=[list(x.behaviour_logprobs) for x in part],
        )
        for part in parts
    ]


@dataclass(frozen=True)
class Control:
    kind: ControlKind
    shard: Shard | None = None
    """With "step": this rank's samples."""
    mini_batch_size: int | None = None
    """With "step": samples per forward/backward pass on each rank (None: the whole shard)."""
    resume_folder: str | None = None
    """With "hello": the checkpoint folder rank 0 resumed from (optimizer, KL, step, score moments, RNG)."""


@dataclass(frozen=True)
class Report:
    ok: bool = True
    error: str | None = None
    """What failed on this rank (type and message), for rank 0's error log."""
    stop: bool = False
    """This rank was asked to stop (SIGTERM / SIGINT)."""
    digest: str | None = None
    """With "hello" and "stop": sha256 of this rank's weights."""


class RankChannel:
    """One exchange at a time over the default process group: rank 0 `send()`s then `collect()`s, the others
    `receive()` then `reply()`. Used from one thread per process."""

    def __init__(self, rank: int, world_size: int) -> None:
        self.rank, self.world_size = rank, world_size

    def send(self, controls: Sequence[Control]) -> None:
        """Rank 0: send `controls[r]` to rank r (its own, `controls[0]`, stays here); `collect()` follows."""
        if len(controls) != self.world_size:
            raise ValueError(f"{len(controls)} controls for {self.world_size} processes")
        self._scatter(list(controls))

    def collect(self) -> list[Report]:
        """Rank 0: every rank's report, in rank order. Rank 0's own is the default one: it acts on its own results
        directly."""
        return self._gather(Report())

    def exchange(self, controls: Sequence[Control]) -> list[Report]:
        self.send(controls)
        return self.collect()

    def broadcast(self, control: Control) -> list[Report]:
        return self.exchange([control] * self.world_size)

    def receive(self) -> Control:
        """Ranks > 0: the next control from rank 0 (blocks)."""
        return self._scatter(None)

    def reply(self, report: Report) -> None:
        """Ranks > 0: answer the control received."""
        self._gather(report)

    def _scatter(self, controls: list[Control] | None) -> Control:
        out: list[Control | None] = [None]
        dist.scatter_object_list(out, controls, src=0)
        assert isinstance(out[0], Control)
        return out[0]

    def _gather(self, report: Report) -> list[Report]:
        out: list[Report | None] = [None] * self.world_size
        dist.all_gather_object(out, report)
        return [r if r is not None else Report(ok=False, error="no report") for r in out]


def weights_digest(state: Mapping[str, torch.Tensor]) -> str:
    """sha256 over every tensor's name, dtype, shape and bytes, in name order: equal digests, equal weights."""
    digest = hashlib.sha256()
    for name in sorted(state):
        tensor = state[name].detach().to("cpu").contiguous()
        digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()
