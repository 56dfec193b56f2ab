"""Live-loop speed of the app backend: step time, publish time, and generation throughput, with and without a step.

    .venv/bin/python bench/publish.py                  # SmolLM2-135M-Instruct (the app's default), batch 8, CPU
    .venv/bin/python bench/publish.py --model tiny     # a tiny random model: a quick run (~30 s)

Measured on the real `FeedbackService` (SQLite in a temp folder), in this order:
1. Generation, batch B, same prompts, same sampling settings, with the generator thread's torch thread count:
   `gen_tok_s` (the app's generator path: chat-template encoding, `ppo_core.generation.generate_batch` with behaviour
   log-probs, decoding) against `hf_generate_tok_s` (plain `model.generate` on the same left-padded batch).
2. Contention for each thread split G:T (generator threads : trainer threads): generation tokens/s alone and while a
   PPO step runs in another thread, and the step's seconds alone and while generating.
3. The loop: the service's threads run; B samples are rated; `publish_s` is the time from the last score of a batch
   to the generator using the new weights (target <= `step_s` + 1 s); also `rate()` latency in the service.
Log to stderr; the last stdout line is `RESULT {json}`.
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch

from app.bootstrap import build_service
from app.generator import PromptEncoder, generate_samples, sampling_kwargs
from app.service import FeedbackService
from app.settings import AppSettings
from ppo_core.generation import left_pad
from storage.prompts import prompts_for_generation
from storage.records import PromptRecord

LOG = logging.getLogger("bench.publish")


def tiny_model(folder: Path) -> Path:
    from ppo_core.tiny import tiny_causal_lm, tiny_tokenizer

    tiny_causal_lm("llama", n_layer=2, n_embd=64).save_pretrained(folder)
    tiny_tokenizer(chat=True).save_pretrained(folder)
    return folder


def settings_for(args: argparse.Namespace, data_dir: Path) -> AppSettings:
    model = str(tiny_model(data_dir / "tiny")) if args.model == "tiny" else args.model
    return AppSettings(
        model=model,
        data_dir=data_dir,
        batch_size=args.batch,
        buffer=args.batch,
        max_new_tokens=args.max_new_tokens,
        checkpoint_every=10_000,
        threads=args.threads,
        poll_seconds=0.05,
    )


def generated_tokens(sequences: torch.Tensor, eos: int) -> int:
    """Tokens up to and including the first EOS in each row (what the app stores)."""
    total = 0
    for row in sequences:
        hits = (row == eos).nonzero()
        total += int(hits[0, 0]) + 1 if len(hits) else len(row)
    return total


def time_ours(service: FeedbackService, prompts: list[PromptRecord]) -> float:
    encode = PromptEncoder(service.generator.tokenizer, service.settings.max_prompt_tokens)
    start = time.perf_counter()
    samples = generate_samples(
        service.generator.model, service.generator.tokenizer, encode, prompts, 0, sampling_kwargs(service.settings)
    )
    seconds = time.perf_counter() - start
    assert samples is not None
    return sum(len(x.response_ids) for x in samples) / seconds


def time_hf(service: FeedbackService, prompts: list[PromptRecord]) -> float:
    tok = service.generator.tokenizer
    encode = PromptEncoder(tok, service.settings.max_prompt_tokens)
    model: Any = service.generator.model.pretrained_model
    queries = [torch.tensor(encode(p.text)) for p in prompts]
    start = time.perf_counter()
    input_ids, mask = left_pad(queries, tok.pad_token_id, model.device)
    with torch.no_grad():
        out = model.generate(
            input_ids=input_ids, attention_mask=mask, pad_token_id=tok.pad_token_id, **sampling_kwargs(service.settings)
        )
    seconds = time.perf_counter() - start
    return generated_tokens(out[:, input_ids.shape[1] :], tok.eos_token_id) / seconds


def best_of(n: int, fn: Any, *args: Any) -> float:
    fn(*args)  # warm-up
    return max(fn(*args) for _ in range(n))


def generation(service: FeedbackService, prompts: list[PromptRecord], repeats: int) -> dict[str, float]:
    torch.set_num_threads(service.generator.runtime.gen_threads)
    ours = best_of(repeats, time_ours, service, prompts)
    hf = best_of(repeats, time_hf, service, prompts)
    LOG.info("generation batch %d: ours %.1f tok/s, plain generate %.1f tok/s", len(prompts), ours, hf)
    return {"gen_tok_s": ours, "hf_generate_tok_s": hf}


def timed_step(service: FeedbackService, batch: Any, threads: int) -> float:
    torch.set_num_threads(threads)
    start = time.perf_counter()
    service.trainer.step(batch)
    return time.perf_counter() - start


def contention(service: FeedbackService, prompts: list[PromptRecord], split: tuple[int, int]) -> dict[str, float]:
    """Generation alone / during a step, and a step alone / during generation, with G:T torch threads."""
    from storage.records import BatchSample, ClaimedBatch

    gen_threads, train_threads = split
    encode = PromptEncoder(service.generator.tokenizer, service.settings.max_prompt_tokens)
    samples = generate_samples(
        service.generator.model, service.generator.tokenizer, encode, prompts, 0, sampling_kwargs(service.settings)
    )
    assert samples
    fake = ClaimedBatch(0, "", "bench", None, 1, tuple(  # type: ignore[arg-type]
        BatchSample(i, x.prompt_id, "", "", tuple(x.query_ids), tuple(x.response_ids), 0.5 - (i % 2), 0,
                    tuple(x.behaviour_logprobs))
        for i, x in enumerate(samples)
    ))  # fmt: skip
    step_alone = timed_step(service, fake, train_threads)
    torch.set_num_threads(gen_threads)
    gen_alone = time_ours(service, prompts)
    result: dict[str, float] = {}

    def step_in_background() -> None:
        result["step_during_gen_s"] = timed_step(service, fake, train_threads)

    worker = threading.Thread(target=step_in_background)
    worker.start()
    rates = []
    while worker.is_alive():
        torch.set_num_threads(gen_threads)
        rates.append(time_ours(service, prompts))
    worker.join()
    during = statistics.mean(rates[:-1] or rates)  # the last batch may have run partly after the step
    LOG.info(
        "split %d:%d  gen %.1f tok/s alone, %.1f during a step;  step %.2f s alone, %.2f s during generation",
        gen_threads, train_threads, gen_alone, during, step_alone, result["step_during_gen_s"],
    )  # fmt: skip
    return {
        "gen_tok_s_alone": gen_alone,
        "gen_tok_s_during_step": during,
        "step_s_alone": step_alone,
        "step_s_during_gen": result["step_during_gen_s"],
    }


def live_loop(service: FeedbackService, steps: int) -> dict[str, Any]:
    """Rate full batches through the running service; publish_s = last score -> generator on the new version."""
    service.start()
    rater = service.login("bench")
    publish, step, rate_ms = [], [], []
    for _ in range(steps):
        version = service.publisher.version
        rated = 0
        while rated < service.settings.batch_size:
            nxt = service.next_for(rater.id)
            if nxt.assignment is None or nxt.assignment.policy_version != version:
                if nxt.assignment is not None:
                    service.skip(rater.id, nxt.assignment.sample_id)
                time.sleep(0.05)
                continue
            start = time.perf_counter()
            service.rate(rater.id, nxt.assignment.sample_id, 1.0 if rated % 2 else -1.0)
            rate_ms.append(1000 * (time.perf_counter() - start))
            rated += 1
        last_score = time.monotonic()
        while service.generator.status.version <= version:
            time.sleep(0.005)
        publish.append(service.generator.status.loaded_at - last_score)
        step.append(service.trainer.status.last_step_s or float("nan"))
        LOG.info("version %d: step %.2f s, publish %.2f s after the last score", version + 1, step[-1], publish[-1])
    service.stop()
    return {
        "step_s": statistics.median(step),
        "publish_s": statistics.median(publish),
        "publish_minus_step_s": statistics.median(p - s for p, s in zip(publish, step)),
        "rate_ms_p50": statistics.median(rate_ms),
        "rate_ms_p95": sorted(rate_ms)[max(0, int(0.95 * len(rate_ms)) - 1)],
    }


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="smollm2-135m-instruct", help="registry name, folder, or 'tiny'")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--max-new-tokens", type=int, default=48)
    p.add_argument("--threads", type=int, default=None, help="torch threads in total (default: all cores)")
    p.add_argument("--splits", default="1:1,2:2", help="generator:trainer thread splits to compare")
    p.add_argument("--repeats", type=int, default=2, help="timed generation repeats (best of)")
    p.add_argument("--steps", type=int, default=2, help="live-loop steps for publish_s")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", stream=sys.stderr)
    logging.getLogger("alembic").setLevel(logging.WARNING)
    args = parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench-publish-") as tmp:
        service = build_service(settings_for(args, Path(tmp)))
        with service.db.read_session_factory.begin() as s:
            prompts = prompts_for_generation(s, args.batch)
        runtime = service.generator.runtime
        result: dict[str, Any] = {
            "model": args.model,
            "batch": args.batch,
            "max_new_tokens": args.max_new_tokens,
            "device": str(runtime.device),
            "threads": {"generator": runtime.gen_threads, "trainer": runtime.train_threads},
        }
        result.update(generation(service, prompts, args.repeats))
        splits = [tuple(int(x) for x in item.split(":")) for item in args.splits.split(",") if item]
        result["splits"] = {f"{g}:{t}": contention(service, prompts, (g, t)) for g, t in splits}
        result.update(live_loop(service, args.steps))
    sys.stdout.write("RESULT " + json.dumps(result, sort_keys=True) + "\n")


if __name__ == "__main__":
    main()
