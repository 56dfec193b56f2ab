"""One run of the TRL docs' sentiment loop under a wall-clock budget, in one fresh process: `RESULT {json}` last.

The same file runs in two environments (driven by bench/sentiment_vs_trl.py), so at module level it imports
nothing from this repository:

- `--impl ours`: the main `.venv`, `ppo_core`;
- `--impl trl`: `.trl-venv`, TRL 0.11.4 + transformers 4.45.2 (bench/trl_env.py).

Both sides read one workload file written by the driver: the prompts as token ids (the chat template applied once,
by ppo_core's tokenizer), so queries are identical bit for bit; SmolLM2-135M-Instruct loaded as bench/step_worker.py
loads it on each side; the docs' `PPOConfig` (learning rate 1.41e-5, 4 PPO epochs, adaptive KL from 0.2 towards
6) with the batch, minibatch and seed given; the docs' sampling (top_k 0, top_p 1, `max_new_tokens`); VADER
compound of the response as the score.

The loop is the docs' loop: sample a batch of training prompts, `generate`, score, `step`. It runs until
`budget_s` of wall clock has passed (a step that starts inside the budget finishes). Before and after, the held-out
prompts are answered greedily once and by `samples` sampled answers each under a fixed sampling seed; the held-out
score is the mean VADER of those answers.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from step_worker import smollm2_gguf_base, smollm2_ours_base

LOG = logging.getLogger("bench.sentiment_worker")
RESULT = "RESULT "
EVAL_SEED = 1234
EVAL_BATCH = 16


def load(impl: str) -> tuple[Any, Any, Any, Any]:
    """(base causal LM, tokenizer, PPOConfig class, PPOTrainer class, value-head class) of one side."""
    if impl == "ours":
        from ppo_core import AutoModelForCausalLMWithValueHead, PPOConfig, PPOTrainer  # type: ignore[import-not-found]

        base, tok = smollm2_ours_base()
    else:
        from trl import AutoModelForCausalLMWithValueHead, PPOConfig, PPOTrainer  # type: ignore[import-not-found]

        base, tok = smollm2_gguf_base()
    return base, tok, (PPOConfig, PPOTrainer), AutoModelForCausalLMWithValueHead


def vader() -> Any:
    from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

    analyzer = SentimentIntensityAnalyzer()
    return lambda text: float(analyzer.polarity_scores(text)["compound"])


def answers(trainer: Any, tok: Any, queries: list[torch.Tensor], batch: int, **kwargs: Any) -> list[str]:
    out = trainer.generate(queries, batch_size=batch, return_prompt=False, **kwargs)
    return [tok.decode(r, skip_special_tokens=True) for r in out]


def held_out(trainer: Any, tok: Any, queries: list[torch.Tensor], gen: dict[str, Any], samples: int) -> dict[str, Any]:
    """Mean VADER of greedy and of sampled answers to the held-out prompts (fixed sampling seed)."""
    score = vader()
    rng = torch.get_rng_state()
    greedy_kwargs = {k: v for k, v in gen.items() if k not in ("top_k", "top_p", "do_sample")}
    greedy = [score(t) for t in answers(trainer, tok, queries, EVAL_BATCH, do_sample=False, **greedy_kwargs)]
    torch.manual_seed(EVAL_SEED)
    repeated = [q for q in queries for _ in range(samples)]
    sampled = [score(t) for t in answers(trainer, tok, repeated, EVAL_BATCH, **gen)]
    torch.set_rng_state(rng)
    return {
        "greedy": sum(greedy) / len(greedy),
        "sampled": sum(sampled) / len(sampled),
        "all": (sum(greedy) + sum(sampled)) / (len(greedy) + len(sampled)),
        "n": len(greedy) + len(sampled),
        "sampled_scores": [round(s, 4) for s in sampled],
    }


def stat(stats: dict[str, Any], key: str) -> float:
    value = stats[key]
    return float(value.item() if hasattr(value, "item") else value)


def run(args: argparse.Namespace) -> dict[str, Any]:
    work = json.loads(Path(args.workload).read_text())
    torch.manual_seed(args.seed)
    base, tok, (config_cls, trainer_cls), vhead_cls = load(args.impl)
    torch.manual_seed(args.seed)  # the value head is drawn at random: the same draw on both sides
    model = vhead_cls.from_pretrained(base)
    config = config_cls(batch_size=args.batch, mini_batch_size=args.mini_batch, seed=args.seed)
    trainer = trainer_cls(config=config, model=model, ref_model=None, tokenizer=tok)
    eos = int(work["eos_token_id"])
    gen = {"min_length": -1, "top_k": 0, "top_p": 1.0, "do_sample": True, "pad_token_id": eos}
    gen |= {"eos_token_id": eos, "max_new_tokens": args.max_new_tokens}
    train = [torch.tensor(ids, dtype=torch.long) for ids in work["train"]]
    held = [torch.tensor(ids, dtype=torch.long) for ids in work["held_out"]]
    before = held_out(trainer, tok, held, gen, args.samples)
    LOG.info("%s seed %d: held-out before %.4f", args.impl, args.seed, before["all"])
    score = vader()
    order = torch.Generator().manual_seed(args.seed)
    steps: list[dict[str, float]] = []
    start = time.perf_counter()
    while time.perf_counter() - start < args.budget_s:
        picks = torch.randperm(len(train), generator=order)[: args.batch].tolist()
        queries = [train[i] for i in picks]
        responses = trainer.generate(queries, batch_size=args.batch, return_prompt=False, **gen)
        texts = [tok.decode(r, skip_special_tokens=True) for r in responses]
        scores = [score(t) for t in texts]
        stats = trainer.step(queries, responses, [torch.tensor(s) for s in scores])
        steps.append(
            {
                "t": round(time.perf_counter() - start, 2),
                "reward": round(sum(scores) / len(scores), 4),
                "kl": round(stat(stats, "objective/kl"), 4),
                "kl_coef": round(stat(stats, "objective/kl_coef"), 5),
                "response_len": round(sum(len(r) for r in responses) / len(responses), 2),
            }
        )
        LOG.info("%s seed %d step %d: %s", args.impl, args.seed, len(steps), steps[-1])
    train_s = time.perf_counter() - start
    after = held_out(trainer, tok, held, gen, args.samples)
    LOG.info("%s seed %d: held-out after %.4f (%d steps)", args.impl, args.seed, after["all"], len(steps))
    return {
        "impl": args.impl,
        "seed": args.seed,
        "threads": torch.get_num_threads(),
        "train_s": round(train_s, 1),
        "n_steps": len(steps),
        "before": before,
        "after": after,
        "gain": after["all"] - before["all"],
        "steps": steps,
    }


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--impl", choices=("ours", "trl"), required=True)
    p.add_argument("--workload", required=True, help="JSON file written by bench/sentiment_vs_trl.py")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--budget-s", type=float, default=1200.0)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--mini-batch", type=int, default=4)
    p.add_argument("--max-new-tokens", type=int, default=24)
    p.add_argument("--samples", type=int, default=8, help="sampled held-out answers per prompt")
    p.add_argument("--threads", type=int, default=1)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s", stream=sys.stderr)
    torch.set_num_threads(args.threads)
    print(RESULT + json.dumps(run(args)), flush=True)


if __name__ == "__main__":
    main()
