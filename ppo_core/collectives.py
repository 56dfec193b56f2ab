"""What a step needs from the other processes of a data-parallel run: sums, maxima and row gathers.

Each process passes its own `batch_size` samples to `step()`. Whatever is a statistic of the batch (advantage
whitening, score scaling, the token count that normalises the loss, the KL the controller reads, every figure
`step()` returns) is taken over the global batch, so the result does not depend on how the samples are split
(TRL 0.11 whitens per process). With one process every collective is the identity.
"""

from __future__ import annotations

from typing import Any, Protocol

import torch
import torch.distributed as dist
from accelerate.utils import pad_across_processes


class Collectives(Protocol):
    """Cross-process operations; each returns the same value on every process."""

    num_processes: int

    def sum(self, tensor: torch.Tensor) -> torch.Tensor:
        """Element-wise sum over processes (same shape on every process)."""
        ...

    def max(self, tensor: torch.Tensor) -> torch.Tensor:
        """Element-wise maximum over processes (same shape on every process)."""
        ...

    def gather_rows(self, tensor: torch.Tensor) -> torch.Tensor:
        """`(b, ...)` on each process -> `(P * b, ...)`, rows in process order; dim 1 (when there is one) is
        right-padded with zeros to the longest over processes, so `(b, R_p)` tensors line up as `(P * b, R)`."""
        ...


class SingleProcess:
    """One process: every collective returns its input."""

    num_processes = 1

    def sum(self, tensor: torch.Tensor) -> torch.Tensor:
        return tensor

    def max(self, tensor: torch.Tensor) -> torch.Tensor:
        return tensor

    def gather_rows(self, tensor: torch.Tensor) -> torch.Tensor:
        return tensor


class ProcessGroup:
    """The processes `accelerate` started (torchrun / `accelerate launch`; gloo on CPU, NCCL on GPUs)."""

    def __init__(self, accelerator: Any) -> None:
        self.accelerator = accelerator
        self.num_processes = int(accelerator.num_processes)

    def sum(self, tensor: torch.Tensor) -> torch.Tensor:
        return self._all_reduce(tensor, dist.ReduceOp.SUM)

    def max(self, tensor: torch.Tensor) -> torch.Tensor:
        return self._all_reduce(tensor, dist.ReduceOp.MAX)

    def gather_rows(self, tensor: torch.Tensor) -> torch.Tensor:
        out = tensor.detach().to(self.accelerator.device).contiguous()  # NCCL only moves GPU tensors
        if out.dim() > 1:
            out = pad_across_processes(out, dim=1, pad_index=0)
        return self.accelerator.gather(out).to(tensor.device)

    def _all_reduce(self, tensor: torch.Tensor, op: Any) -> torch.Tensor:
        out = tensor.detach().to(self.accelerator.device, copy=True)  # a copy: the input stays this process's
        dist.all_reduce(out, op=op)
        return out.to(tensor.device)


def collectives_for(accelerator: Any) -> Collectives:
    """`ProcessGroup` when accelerate started more than one process, else `SingleProcess` (chosen once)."""
    return ProcessGroup(accelerator) if accelerator.num_processes > 1 else SingleProcess()
