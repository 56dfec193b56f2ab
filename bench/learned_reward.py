"""Measure the learned reward model (app/learned/): embedding time per sample, fit time, agreement with a synthetic
preference at 50/100/200 ratings, and the rate() latency with and without its refit thread busy.

    .venv/bin/python bench/learned_reward.py [--samples 360] [--texts bench/out/smollm2_texts.jsonl]

Texts: SmolLM2-135M-Instruct answers (temperature 1.0, 48 new tokens) to the shipped prompts, generated once and
cached in `--texts`. Preferences (a simulated rater; the learned model sees only its noisy scores): VADER positivity
of the answer, and answers near 20 words (`length:20`), each plus Gaussian noise (sd 0.2), clipped to [-1, 1].
For n ratings: fit on the first n of a shuffled pool (the head holds out a fifth itself), then score 100 answers
never rated and compare with the noiseless preference (Spearman, pairwise accuracy); 3 shuffles each.
Prints `RESULT {json}`.
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository's `storage`, not bench/storage.py

from app.learned.embedder import Embedder, load_embedder
from app.learned.fit import pairwise_accuracy, spearman
from app.learned.head import fit_head
from ppo_core.rewards import LengthReward, VaderReward

LOG = logging.getLogger("bench.learned_reward")
OUT = Path(__file__).resolve().parent / "out"
TEST = 100
SIZES = (50, 100, 200)
NOISE = 0.2


def generate(n: int, path: Path) -> list[dict[str, str]]:
    """n SmolLM2 answers to the shipped prompts (cached in `path`)."""
    if path.is_file() and len(rows := [json.loads(x) for x in path.read_text().splitlines()]) >= n:
        return rows[:n]
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from ppo_core.prompts import load_prompts
    from ppo_core.registry import resolve_model

    folder = resolve_model("smollm2-135m-instruct")
    tok = AutoTokenizer.from_pretrained(folder, padding_side="left")
    model = AutoModelForCausalLM.from_pretrained(folder).eval()
    prompts = list(load_prompts(None)["query"])
    rows: list[dict[str, str]] = []
    torch.manual_seed(0)
    while len(rows) < n:
        batch = [prompts[(len(rows) + i) % len(prompts)] for i in range(32)]
        chats = [
            tok.apply_chat_template([{"role": "user", "content": p}], tokenize=False, add_generation_prompt=True)
            for p in batch
        ]
        enc = tok(chats, return_tensors="pt", padding=True)
        with torch.no_grad():
            out = model.generate(
                **enc,
                max_new_tokens=48,
                do_sample=True,
                temperature=1.0,
                top_p=1.0,
                pad_token_id=tok.pad_token_id or tok.eos_token_id,
            )
        texts = tok.batch_decode(out[:, enc["input_ids"].shape[1] :], skip_special_tokens=True)
        rows += [{"prompt": p, "response": r.strip()} for p, r in zip(batch, texts)]
        LOG.info("generated %d of %d", len(rows), n)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return rows[:n]


def embed_timed(embedder: Embedder, rows: list[dict[str, str]]) -> tuple[np.ndarray, float]:
    start = time.perf_counter()
    x = embedder.embed([r["prompt"] for r in rows], [r["response"] for r in rows])
    return x, (time.perf_counter() - start) / len(rows)


def agreement(x: np.ndarray, truth: np.ndarray, seed: int) -> dict[str, Any]:
    """Fit on noisy scores of n items of a shuffled pool; measure on TEST never-rated items against the truth."""
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(truth))
    test, pool = order[:TEST], order[TEST:]
    noisy = np.clip(truth + rng.normal(0, NOISE, len(truth)), -1, 1)
    out: dict[str, Any] = {}
    for n in SIZES:
        idx = pool[:n]
        head = fit_head(1, [int(i) + 1 for i in idx], x[idx], noisy[idx])
        pred = head.predict(x[test])
        guarded = sum(v.guarded is not None for v in head.judge(x[test]))
        out[str(n)] = {
            "fit_s": head.fit_s,
            "held_out_spearman": head.held_out.spearman,
            "test_spearman": spearman(pred, truth[test]),
            "test_pairwise": pairwise_accuracy(pred, truth[test]),
            "test_guarded": guarded,
        }
    return out


def summarise(runs: list[dict[str, Any]]) -> dict[str, Any]:
    return {n: {k: round(statistics.mean(r[n][k] for r in runs), 3) for k in runs[0][n]} for n in runs[0]}


def rate_latency(embedder: Embedder, rows: list[dict[str, str]], busy: bool, chunk: int = 32) -> dict[str, float]:
    """p50/p95 ms of FeedbackService.rate() (real SQLite storage, fake generator/trainer) over 120 ratings, with
    the learned reward thread refitting after every 8 ratings and scoring the rest (busy) or not running."""
    from dataclasses import replace

    from app.learned.worker import LearnedRewardWorker
    from app.settings import AppSettings
    from tests.app.fakes import fake_service

    with tempfile.TemporaryDirectory() as tmp:
        settings = AppSettings(
            model="unused",
            data_dir=Path(tmp),
            reward="learned",
            learned_min_ratings=24,
            learned_refit_every=8,
            poll_seconds=0.05,
        )
        service = fake_service(settings)
        from storage.prompts import prompts_for_generation
        from storage.records import NewSample
        from storage.samples import add_samples

        with service.db.session_factory.begin() as s:
            prompt = prompts_for_generation(s, 1)[0]
            add_samples(s, [NewSample(prompt.id, r["response"], [1], [2], 0, [-1.0]) for r in rows[:240]])
        worker = LearnedRewardWorker(service.db, service.rewards, embedder, replace(settings), service.errors)
        worker.chunk = chunk
        if busy:
            worker.start()
        rater = service.login("bench")
        vader = VaderReward()
        times = []
        shown = service.next_for(rater.id).assignment
        for _ in range(120):
            if shown is None:
                break
            score = max(-1.0, min(1.0, vader([""], [shown.response])[0]))
            start = time.perf_counter()
            shown = service.rate(rater.id, shown.sample_id, score).assignment
            times.append(1000 * (time.perf_counter() - start))
            time.sleep(0.05)
        worker.stop()
        worker.join(60)
        fits = worker.status.version or 0
        service.stop()
    q = statistics.quantiles(times, n=20)
    return {
        "p50_ms": round(statistics.median(times), 1),
        "p95_ms": round(q[18], 1),
        "ratings": len(times),
        "refits": fits,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--samples", type=int, default=360)
    parser.add_argument("--texts", type=Path, default=OUT / "smollm2_texts.jsonl")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--chunk", type=int, default=8, help="samples the learned thread scores per transaction")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    torch.set_num_threads(args.threads)
    rows = generate(args.samples, args.texts)
    start = time.perf_counter()
    embedder = load_embedder("all-minilm-l6-v2", OUT / "models")
    load_s = time.perf_counter() - start
    x, per_sample = embed_timed(embedder, rows)
    responses = [r["response"] for r in rows]
    prefs = {"vader": VaderReward(), "length:20": LengthReward(20)}
    result: dict[str, Any] = {
        "samples": len(rows),
        "embed_load_s": round(load_s, 2),
        "embed_ms_per_sample": round(1000 * per_sample, 1),
        "threads": args.threads,
        "chunk": args.chunk,
    }
    for name, pref in prefs.items():
        truth = np.clip(np.array(pref([""] * len(rows), responses)), -1, 1)
        result[name] = summarise([agreement(x, truth, seed) for seed in range(3)])
    result["rate_idle"] = rate_latency(embedder, rows, busy=False)
    result["rate_with_learned_thread"] = rate_latency(embedder, rows, busy=True, chunk=args.chunk)
    print("RESULT " + json.dumps(result, sort_keys=True))


if __name__ == "__main__":
    main()
