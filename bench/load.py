"""Many raters at once against the real app: errors, latency, no sample shown to two raters at once, nothing lost.

    .venv/bin/python bench/load.py                          # 20 raters for 5 minutes
    .venv/bin/python bench/load.py --raters 5 --seconds 30  # a quick look

Starts `python -m app` on a tiny random GPT-2 (its own temporary data folder, training running: batch 4, 8 new
tokens, one PPO epoch) and runs `--raters` simulated raters through gradio_client, one Client (one browser tab)
and one thread each, for `--seconds`. Each rater loops: think (50-400 ms), then rate (a random score in [-1, 1],
85%), skip (10%) or undo (5%); with nothing to rate it polls /next every 0.3-0.7 s, as the page's timer does.
Every call's latency and outcome is recorded. At the end the app is stopped with SIGTERM and its database read.

Latency is a gradio_client call from submit to result (queue join + event stream): the page's round trip, plus
the client's own CPU. On two cores that share is large (`bench_cpu_s`: gradio_client spends ~0.1 s of CPU per call),
so with 20 raters the figures measure the machine as much as the app; `app_cpu_s` is the app's share.

Checks (the last stdout line is `RESULT {json}`):

- `errors`: calls that raised, were refused by the page (every output `gr.skip()`), or answered with an
  unexpected status (a rate that does not say "Rating saved", ...). 0 expected.
- `lost`: ratings the server acknowledged ("Rating saved", minus the ones it acknowledged undoing) that are not in
  the ratings table with their score, matched per rater as a multiset of (sample, score). 0 expected.
- `double_held`: samples two raters were shown at the same time. The page's outputs carry no sample id, so a
  shown sample is known by (prompt, response, version), resolved to sample ids from the database at the end.
  Each rater keeps intervals during which the sample it shows is certainly leased to it (`SimulatedRater`:
  from receiving the answer to sending its next rate/skip/undo; the server leases before it answers and only
  that rater's own action ends the lease). Two raters' intervals that overlap on a key that names one sample are
  a double hold for certain: both were shown it while both held it. Two such intervals on a key several samples
  share (a tiny model sometimes answers "") are `ambiguous`, unless the database poller below saw the two raters
  holding different samples.
- `lease_mismatch`: a second, independent view. A thread polls `samples.lease_rater_id` every 100 ms in a
  read-only WAL snapshot; a poll taken entirely inside a rater's interval must show a sample with the shown key
  leased to that rater. A page that shows a rater a sample leased to someone else (or to nobody) fails here even
  when the other holder is not one of our raters' open intervals.
- `steps`: rows in training_steps (PPO steps); more than 0 expected.
"""

from __future__ import annotations

import argparse
import bisect
import logging
import os
import random
import sqlite3
import sys
import tempfile
import threading
import time
from collections import defaultdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.app_process import (
    AppConfig,
    AppProcess,
    RaterLog,
    SampleKey,
    SimulatedRater,
    count,
    emit_result,
    human_ratings,
    missing_ratings,
    percentile,
    read_db,
    sample_keys,
    tiny_model,
    write_prompts,
)

LOG = logging.getLogger("bench.load")
POLL_S = 0.1
Poll = tuple[float, float, dict[int, list[int]]]
"""(before, after, rater id -> sample ids leased to them): one read-only snapshot between those two times."""


def rater_loop(url: str, name: str, seed: int, deadline: float, max_calls: int) -> RaterLog:
    """One rater's session until `deadline` (or `max_calls`); exceptions are recorded as call outcomes."""
    rng = random.Random(seed)
    rater = SimulatedRater(url, name)
    rater.call("/next")
    while time.monotonic() < deadline and len(rater.log.calls) < max_calls:
        if rater.current is None:
            time.sleep(rng.uniform(0.3, 0.7))
            rater.call("/next")
            continue
        time.sleep(rng.uniform(0.05, 0.4))
        roll = rng.random()
        if roll < 0.05:
            rater.call("/undo")
        elif roll < 0.15:
            rater.call("/skip")
        else:
            rater.call("/rate", round(rng.uniform(-1.0, 1.0), 2))
    return rater.finish()


def run_rater(url: str, name: str, seed: int, deadline: float, max_calls: int, out: dict[str, RaterLog]) -> None:
    try:
        out[name] = rater_loop(url, name, seed, deadline, max_calls)
    except Exception:
        LOG.exception("rater %s could not run", name)


class LeasePoller(threading.Thread):
    """Reads who holds which sample every `POLL_S` seconds (read-only; bounded by `max_polls`)."""

    def __init__(self, db_path: Path, max_polls: int) -> None:
        super().__init__(name="lease-poller", daemon=True)
        self.db_path, self.max_polls = db_path, max_polls
        self.polls: list[Poll] = []
        self.stop = threading.Event()

    def run(self) -> None:
        with read_db(self.db_path) as conn:
            while not self.stop.is_set() and len(self.polls) < self.max_polls:
                try:
                    self.polls.append(self._poll(conn))
                except sqlite3.Error as err:
                    LOG.warning("lease poll failed: %s", err)
                self.stop.wait(POLL_S)

    @staticmethod
    def _poll(conn: sqlite3.Connection) -> Poll:
        now = datetime.now(UTC).replace(tzinfo=None).strftime("%Y-%m-%d %H:%M:%S.%f")
        before = time.monotonic()
        rows = conn.execute(
            "SELECT lease_rater_id, id FROM samples WHERE lease_rater_id IS NOT NULL AND lease_expires_at > ?", (now,)
        ).fetchall()
        after = time.monotonic()
        held: dict[int, list[int]] = defaultdict(list)
        for rater_id, sample_id in rows:
            held[int(rater_id)].append(int(sample_id))
        return before, after, dict(held)


def polls_inside(polls: list[Poll], starts: list[float], start: float, end: float) -> list[Poll]:
    """The polls taken entirely inside [start, end] (`starts`: each poll's `before`, sorted)."""
    i = bisect.bisect_left(starts, start)
    out = []
    while i < len(polls) and polls[i][0] <= end:
        if polls[i][1] <= end:
            out.append(polls[i])
        i += 1
    return out


def lease_mismatches(
    logs: list[RaterLog],
    polls: list[Poll],
    keys: dict[SampleKey, list[int]],
    rater_ids: dict[str, int],
    stale: set[int],
) -> list[str]:
    """Polls inside a rater's holding interval that do not show a sample with the shown key leased to them.

    One case is allowed: the trainer marks samples too old to train stale and ends their leases (storage
    `mark_stale`); a stale sample is never shown again, so a rater who holds nothing while showing a sample that
    ended up stale is no double hold. Holding another sample, or another rater holding this one, never is allowed.
    """
    starts = [p[0] for p in polls]
    bad = []
    for log in logs:
        rid = rater_ids[log.name]
        for start, end, key in log.intervals:
            ids = set(keys.get(key, ()))
            for before, _after, held in polls_inside(polls, starts, start, end):
                mine = set(held.get(rid, ()))
                if ids & mine:
                    continue
                others = {r for r, held_ids in held.items() if r != rid and ids & set(held_ids)}
                if not mine and not others and ids & stale:
                    continue
                bad.append(
                    f"{log.name} shows {sorted(ids)} at {before:.2f}; holds {sorted(mine)}; also held by {others}"
                )
    return bad


def double_holds(
    logs: list[RaterLog], polls: list[Poll], keys: dict[SampleKey, list[int]], rater_ids: dict[str, int]
) -> tuple[set[int], int]:
    """(samples certainly shown to two raters at once, overlaps on ambiguous keys the poller did not resolve)."""
    by_key: dict[SampleKey, list[tuple[float, float, str]]] = defaultdict(list)
    for log in logs:
        for start, end, key in log.intervals:
            by_key[key].append((start, end, log.name))
    starts = [p[0] for p in polls]
    certain: set[int] = set()
    ambiguous = 0
    for key, spans in by_key.items():
        spans.sort()
        for i, (_start_a, end_a, a) in enumerate(spans):
            for start_b, end_b, b in spans[i + 1 :]:
                if start_b >= end_a:
                    break
                if a == b:
                    continue
                ids = keys.get(key, [])
                if len(ids) == 1:
                    certain.add(ids[0])
                elif not _seen_apart(
                    polls_inside(polls, starts, start_b, min(end_a, end_b)), ids, rater_ids[a], rater_ids[b]
                ):
                    ambiguous += 1
    return certain, ambiguous


def _seen_apart(polls: list[Poll], ids: list[int], a: int, b: int) -> bool:
    """A poll showed raters a and b each holding a different one of the look-alike samples `ids`."""
    for _before, _after, held in polls:
        mine, theirs = set(held.get(a, ())) & set(ids), set(held.get(b, ())) & set(ids)
        if mine and theirs and mine != theirs:
            return True
    return False


def check(logs: list[RaterLog], polls: list[Poll], db_path: Path) -> dict[str, Any]:
    with read_db(db_path) as conn:
        keys = sample_keys(conn)
        stored = human_ratings(conn)
        rater_ids = {name: int(i) for i, name in conn.execute("SELECT id, name FROM raters")}
        steps = count(conn, "SELECT COUNT(*) FROM training_steps")
        ratings = count(conn, "SELECT COUNT(*) FROM ratings WHERE source = 'human'")
        stale = {int(i) for (i,) in conn.execute("SELECT id FROM samples WHERE stale")}
    missing = missing_ratings(logs, stored)
    mismatches = lease_mismatches(logs, polls, keys, rater_ids, stale)
    doubled, ambiguous = double_holds(logs, polls, keys, rater_ids)
    unknown = {k for log in logs for _s, _e, k in log.intervals if k not in keys}
    for what, items in (("lost", missing), ("lease mismatch", mismatches), ("unknown key", unknown)):
        for item in list(items)[:10]:
            LOG.error("%s: %s", what, item)
    if doubled:
        LOG.error("samples shown to two raters at once: %s", sorted(doubled)[:20])
    acknowledged = sum(len(log.acknowledged) for log in logs)
    return {
        "ratings": ratings,
        "acknowledged": acknowledged,
        "lost": len(missing),
        "double_held": len(doubled),
        "ambiguous": ambiguous,
        "lease_mismatch": len(mismatches),
        "unknown_keys": len(unknown),
        "polls": len(polls),
        "steps": steps,
    }


def latency(logs: list[RaterLog]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    calls = [c for log in logs for c in log.calls]
    for endpoint in ("/rate", "/next", "/skip", "/undo", "/login"):
        ms = [c.ms for c in calls if c.endpoint == endpoint and c.outcome == "ok"]
        name = endpoint.strip("/")
        out[f"{name}_calls"] = len([c for c in calls if c.endpoint == endpoint])
        out[f"{name}_p50_ms"], out[f"{name}_p95_ms"] = percentile(ms, 50), percentile(ms, 95)
    errors = [c for c in calls if c.outcome != "ok"]
    for c in errors[:10]:
        LOG.error("%s %s: %s", c.rater, c.endpoint, c.outcome)
    out.update(calls=len(calls), errors=len(errors), max_ms=max((c.ms for c in calls), default=None))
    return out


def run(args: argparse.Namespace, root: Path) -> dict[str, Any]:
    model = tiny_model(root / "model")
    config = AppConfig(
        model, write_prompts(root / "prompts.jsonl"), root / "data", checkpoint_every=args.checkpoint_every
    )
    app = AppProcess(config, root / "app.log")
    try:
        ready_s = app.wait_ready(args.ready_timeout)
        LOG.info("app up in %.1f s at %s; %d raters for %.0f s", ready_s, app.url, args.raters, args.seconds)
        poller = LeasePoller(config.db_path, max_polls=int(args.seconds / POLL_S) + 600)
        poller.start()
        app_cpu, bench_cpu = app.cpu_seconds() or 0.0, time.process_time()
        logs = drive(app.url, args)
        poller.stop.set()
        poller.join(timeout=30)
        cpu = {"app_cpu_s": round((app.cpu_seconds() or 0.0) - app_cpu, 1)}
        cpu["bench_cpu_s"] = round(time.process_time() - bench_cpu, 1)  # the raters' own share of the 2 cores
    finally:
        exit_code = app.stop()
    LOG.info("app stopped with status %d; log: %s", exit_code, app.log_path)
    result = {"raters": args.raters, "seconds": args.seconds, "ready_s": round(ready_s, 2), "exit_code": exit_code}
    result.update(cpu, load_avg_1m=round(os.getloadavg()[0], 2), cores=os.cpu_count())
    result.update(latency(logs))
    result.update(check(logs, poller.polls, config.db_path))
    return result


def drive(url: str, args: argparse.Namespace) -> list[RaterLog]:
    """All raters in threads until the deadline; a rater still stuck in a call 60 s later is reported, not awaited."""
    deadline = time.monotonic() + args.seconds
    out: dict[str, RaterLog] = {}
    threads = [
        threading.Thread(
            target=run_rater,
            args=(url, f"rater{i:02d}", args.seed * 1000 + i, deadline, int(args.seconds * 10) + 20, out),
            daemon=True,
        )
        for i in range(args.raters)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=max(0.0, deadline - time.monotonic()) + 60)
    stuck = [t.name for t in threads if t.is_alive()]
    if stuck or len(out) < args.raters:
        raise RuntimeError(f"{args.raters - len(out)} raters did not finish (stuck in a call: {len(stuck)})")
    return [out[name] for name in sorted(out)]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--raters", type=int, default=20)
    p.add_argument("--seconds", type=float, default=300.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--checkpoint-every", type=int, default=10)
    p.add_argument("--ready-timeout", type=float, default=180.0, help="seconds for the app to print 'Running on'")
    p.add_argument("--keep", type=Path, default=None, help="keep the model, data and app log in this folder")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    logging.getLogger("httpx").setLevel(logging.WARNING)
    args = parse_args(argv)
    if args.keep is not None:
        args.keep.mkdir(parents=True, exist_ok=True)
        result = run(args, args.keep)
    else:
        with tempfile.TemporaryDirectory(prefix="bench-load-") as tmp:
            result = run(args, Path(tmp))
    emit_result(result)
    bad = result["errors"] or result["lost"] or result["double_held"] or result["lease_mismatch"] or not result["steps"]
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
