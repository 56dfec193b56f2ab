"""`PPOConfig.host_mmap_threshold`: big CPU tensors get their own pages, and give them back when freed.

glibc serves an allocation from its heap unless it is at least `M_MMAP_THRESHOLD` bytes, and that threshold
slides: each time an mmapped block is freed, the threshold rises to its size (up to 32 MB on 64-bit). After the
first step, a PPO step's activations, logits and gradients (1-80 MB each) therefore come from the heap, and the
heap keeps the pages of every hole they leave: the resident set grows past what the tensors need. Pinning the
threshold (which also stops the sliding, see mallopt(3)) gives each big tensor its own mapping, unmapped on
free, so the peak RSS follows what the live tensors need. Measured (docs/ppo_core.md, 2 threads, quiet machine):

| threshold | gpt2-6x384 b8 L16 peak RSS, s/step | SmolLM2 b8 L16 peak RSS, s/step |
|---|---|---|
| None (glibc's sliding default) | 1394-1444 MB, 2.15 s | 3643 MB, 9.45 s |
| 1 MiB | 1234-1239 MB, 2.70-2.96 s | |
| 8 MiB (the default) | 1264-1274 MB, 2.47-2.55 s | 3547 MB, 9.33 s |

TRL 0.11.4 on the same model and stack: 1365-1370 MB. Smaller thresholds save more memory and cost more page faults
(each fresh mapping is zero-filled); on SmolLM2, the app's model, 8 MiB costs no measurable time.

mallopt is process-wide: the setting applies to every later allocation of the process, not just the trainer's.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
from collections.abc import Callable

_M_MMAP_THRESHOLD = -3  # glibc <malloc.h>
MAX_MMAP_THRESHOLD = 32 * 1024 * 1024  # glibc's HEAP_MAX_SIZE / 2 on 64-bit: mallopt refuses larger values


def pin_mmap_threshold(nbytes: int | None) -> bool:
    """Set glibc's mmap threshold to `nbytes` (None: leave the allocator alone). True when it was set; False on
    a C library without mallopt (macOS, musl), where nothing changes."""
    if nbytes is None:
        return False
    if not 0 < nbytes <= MAX_MMAP_THRESHOLD:
        raise ValueError(f"host_mmap_threshold must be in (0, {MAX_MMAP_THRESHOLD}] bytes or None, got {nbytes}")
    mallopt = _mallopt()
    return mallopt is not None and mallopt(_M_MMAP_THRESHOLD, nbytes) == 1


@functools.cache
def _mallopt() -> Callable[[int, int], int] | None:
    name = ctypes.util.find_library("c")
    try:
        return ctypes.CDLL(name).mallopt if name else None
    except (OSError, AttributeError):
        return None
