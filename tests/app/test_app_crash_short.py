"""kill -9 the real app (`python -m app`, a subprocess) three times, restart it, and check nothing is lost.

The short form of bench/crash.py (same code): one kill while a PPO step runs, one while a checkpoint folder is
being written, one while a rating is in flight, each at a seeded random instant; `--checkpoint-every 2`, so a kill
after an odd step loses that step's weights and recovery must retrain its batch.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from bench.crash import CrashSettings, run_crash

pytestmark = pytest.mark.slow


def test_kill_9_three_times_loses_no_rating_and_trains_every_batch_once(tmp_path: Path) -> None:
    started = time.monotonic()
    settings = CrashSettings(
        kills=3,
        raters=2,
        seed=7,
        checkpoint_every=2,
        ready_timeout=120.0,
        moment_timeout=15.0,
        drain_timeout=60.0,
        moments=("step", "checkpoint", "rating"),
    )
    result = run_crash(settings, tmp_path)
    details = result["details"]
    assert result["unrecoverable"] == 0, f"a restart did not come up; see {details['app_log']}"
    assert result["kills"] == 3
    assert result["acknowledged"] > 0 and result["steps"] > 0, "raters rated and the app trained"
    assert result["lost_ratings"] == 0, details["lost_ratings"]
    assert result["lost_to_training"] == 0, details["lost_to_training"]
    assert result["trained_twice"] == 0, details["trained_twice"]
    assert result["failed_batches"] == 0
    assert result["errors"] == 0, details["errors"]
    assert result["drained"] and result["final_exit_code"] == 0
    print(f"crash test: {time.monotonic() - started:.0f} s, restarts p50 {result['restart_s_p50']:.1f} s")
