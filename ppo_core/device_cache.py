"""`PPOConfig.optimize_device_cache`: give memory the step no longer uses back between the stages of a step.

As in TRL 0.11 (`PPODecorators.empty_device_cache`): garbage-collect, then empty the accelerator's caching
allocator (CUDA, XPU, NPU, MPS, ... through accelerate). On the CPU there is no caching allocator, but glibc keeps
freed heap pages in the process; `malloc_trim` hands them back to the system, which is what a CPU "cache" is.
Chosen once at construction (`release_for`), so the step calls a function and tests no flag.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
from collections.abc import Callable

from accelerate.utils.memory import clear_device_cache


def release_device_cache() -> None:
    """Collect garbage, empty the accelerator cache, and return free heap pages to the system (glibc)."""
    clear_device_cache(garbage_collection=True)
    trim = _malloc_trim()
    if trim is not None:
        trim(0)


def keep_device_cache() -> None:
    """`optimize_device_cache=False` (the default): nothing is released between stages."""


def release_for(optimize_device_cache: bool) -> Callable[[], None]:
    return release_device_cache if optimize_device_cache else keep_device_cache


@functools.cache
def _malloc_trim() -> Callable[[int], int] | None:
    """glibc's `malloc_trim`, or None where the C library has none (macOS, musl)."""
    name = ctypes.util.find_library("c")
    try:
        return ctypes.CDLL(name).malloc_trim if name else None
    except (OSError, AttributeError):
        return None
