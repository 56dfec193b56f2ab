"""LoRA against full fine-tuning of SmolLM2 in the app's configuration (`--lora` or not), side by side, one run.

    .venv/bin/python bench/lora.py                              # cost + learning, 3 seeds x 180 s per side
    .venv/bin/python bench/lora.py --seeds 2 --budget-s 240     # another learning budget
    .venv/bin/python bench/lora.py --skip-cost --concurrent --budget-s 480   # learning, both sides at once
    .venv/bin/python bench/lora.py --skip-learn                 # cost only (~5 min on 2 cores)
    .venv/bin/python bench/lora.py --model tiny --budget-s 10   # a smoke run of the script

Every measurement runs in a fresh process (so memory peaks never mix), built exactly as the app builds its models
(`app.models.load_models`: for full fine-tuning the policy, a frozen reference copy and the generator's copy; for
LoRA one base shared by all three, app/lora.py), with the app's defaults (learning rates included) except the ones
below.

Cost (per side): median seconds of `PPOTrainer.step` on a batch of sampled responses to the shipped prompts, the
crash-safety snapshot the trainer thread takes before each step (`TrainerSnapshot.capture`), publish (the trainer's
`publish_state` + the generator's `load_published`), a checkpoint (`app.checkpoints.save_checkpoint`: seconds,
folder bytes, and the bytes of the weights/optimizer files without the tokenizer), and memory, all as resident
set (/proc/self/status) minus the resident set before the models were loaded: `loaded_rss_delta_mb` once loaded,
`load_peak_delta_mb` the peak while loading (`VmHWM`), and `train_peak_delta_mb` the peak from then on, through the
steps, snapshots, publishes and checkpoint (`VmHWM` restarted after loading; `peak_memory_ratio` compares this one).

Learning (per side and seed, the same wall-clock budget): the docs' sentiment task (VADER reward of the response)
on 48 of the 64 shipped prompts; the held-out score is the mean VADER of 2 sampled responses to each of the other 16
prompts under a fixed sampling seed, before and after; `gain_per_min` = (after - before) / training minutes. The
budget counts generation + scoring + PPO steps (not the two evaluations); a step that starts inside it finishes.

Log to stderr; the last stdout line is `RESULT {json}`.
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import json
import logging
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch

from app.checkpoints import TrainerState, save_checkpoint
from app.generator import PromptEncoder, sampling_kwargs
from app.models import Models, choose_runtime, load_models
from app.policy import load_published, publish_state
from app.settings import AppSettings
from bench.held_out import HELD_OUT
from ppo_core.generation import generate_batch
from ppo_core.prompts import load_prompts
from ppo_core.rewards import make_reward
from ppo_core.trainer_state import TrainerSnapshot

LOG = logging.getLogger("bench.lora")
RESULT = "RESULT "
EVAL_SEED = 1234
OUT_DIR = Path(__file__).resolve().parent / "out"
STAMP = time.strftime("%Y%m%d-%H%M%S")
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.json", "merges.txt", "special_tokens_map.json")


# ------------------------------------------------------------------------------------------------- in a worker
def rss_mb(field: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no {field} in /proc/self/status")


def reset_peak() -> float:
    """Return freed heap to the system and restart the peak (VmHWM), so the training peak is not the loading
    transient (safetensors pages + the tensors being filled); returns the resident MiB now."""
    gc.collect()
    ctypes.CDLL("libc.so.6").malloc_trim(0)
    Path("/proc/self/clear_refs").write_text("5")
    return rss_mb("VmRSS")


def build(args: argparse.Namespace, mode: str, seed: int, data_dir: Path) -> tuple[AppSettings, Models]:
    model = args.model
    if model == "tiny":
        from ppo_core.tiny import save_tiny_model

        model = str(save_tiny_model(data_dir / "tiny", "llama", n_layer=2, n_embd=64))
    settings = AppSettings(
        model=model,
        data_dir=data_dir,
        lora=mode == "lora",
        batch_size=args.batch,
        max_new_tokens=args.max_new_tokens,
        threads=args.threads,
        seed=seed,
    )
    return settings, load_models(settings, choose_runtime(settings), None, 0)


def sample(
    models: Models, settings: AppSettings, prompts: list[str], encode: PromptEncoder, greedy: bool = False
) -> Any:
    queries = [torch.tensor(encode(p), dtype=torch.long) for p in prompts]
    policy = models.trainer.accelerator.unwrap_model(models.trainer.model)
    was_training = policy.training
    policy.eval()
    kwargs = sampling_kwargs(settings)
    if greedy:
        kwargs = {"do_sample": False, "max_new_tokens": kwargs["max_new_tokens"]}
    out = generate_batch(policy, queries, models.tokenizer.pad_token_id, models.tokenizer.eos_token_id, kwargs)
    policy.train(was_training)
    responses = [r if len(r) else torch.tensor([models.tokenizer.eos_token_id]) for r in out.sequences]
    texts = [models.tokenizer.decode(r, skip_special_tokens=True) for r in responses]
    return queries, responses, texts


def split_prompts() -> tuple[list[str], list[str]]:
    texts = list(load_prompts(None)["query"])
    held_out = texts[3::4] + list(HELD_OUT)  # a quarter of the shipped prompts, and 12 in no dataset
    return [t for i, t in enumerate(texts) if i % 4 != 3], held_out


def cost(args: argparse.Namespace, mode: str, data_dir: Path) -> dict[str, Any]:
    base_rss = rss_mb("VmRSS")
    start = time.perf_counter()
    settings, models = build(args, mode, 0, data_dir)
    load_s = time.perf_counter() - start
    load_peak = rss_mb("VmHWM")
    train_base = reset_peak()
    trainer, tokenizer = models.trainer, models.tokenizer
    policy = trainer.accelerator.unwrap_model(trainer.model)
    encode = PromptEncoder(tokenizer, settings.max_prompt_tokens)
    train, _ = split_prompts()
    vader = make_reward("vader")
    snapshot = TrainerSnapshot(trainer)
    step_s, snapshot_s = [], []
    for i in range(1 + args.repeats):  # the first step warms up
        prompts = train[i * args.batch : (i + 1) * args.batch]
        queries, responses, texts = sample(models, settings, prompts, encode)
        scores = [torch.tensor(s) for s in vader(prompts, texts)]
        t0 = time.perf_counter()
        snapshot.capture()
        t1 = time.perf_counter()
        trainer.step(queries, responses, scores)
        t2 = time.perf_counter()
        snapshot_s.append(t1 - t0)
        step_s.append(t2 - t1)
        LOG.info("%s step %d: %.1f s (snapshot %.2f s)", mode, i, t2 - t1, t1 - t0)
    snapshot.close()
    publish_s, published = [], {}
    for _ in range(5):
        t0 = time.perf_counter()
        published = publish_state(policy)
        load_published(models.generator_model, published)
        publish_s.append(time.perf_counter() - t0)
    with tempfile.TemporaryDirectory(dir=data_dir) as root:
        t0 = time.perf_counter()
        folder = save_checkpoint(Path(root), trainer, TrainerState(1, 0.2, 1, settings.model))
        checkpoint_s = time.perf_counter() - t0
        sizes = {f.name: f.stat().st_size for f in folder.rglob("*") if f.is_file()}
    return {
        "mode": mode,
        "learning_rate": settings.effective_learning_rate,
        "load_s": load_s,
        "step_median_s": statistics.median(step_s[1:]),
        "step_s": step_s,
        "snapshot_median_s": statistics.median(snapshot_s[1:]),
        "publish_median_s": statistics.median(publish_s),
        "publish_mb": sum(t.numel() * t.element_size() for t in _unique(published.values())) / 2**20,
        "checkpoint_s": checkpoint_s,
        "checkpoint_mb": sum(sizes.values()) / 2**20,
        "checkpoint_weights_mb": sum(v for k, v in sizes.items() if k not in TOKENIZER_FILES) / 2**20,
        "checkpoint_files": sizes,
        "trainable_params": sum(p.numel() for p in policy.parameters() if p.requires_grad),
        "base_rss_mb": base_rss,
        "loaded_rss_delta_mb": train_base - base_rss,
        "load_peak_delta_mb": load_peak - base_rss,
        "train_peak_delta_mb": rss_mb("VmHWM") - base_rss,
    }


def _unique(tensors: Any) -> list[torch.Tensor]:
    """Each tensor once (a tied embedding and LM head are one copy)."""
    return list({t.data_ptr(): t for t in tensors}.values())


def held_out_score(
    models: Models, settings: AppSettings, prompts: list[str], encode: PromptEncoder, samples: int
) -> dict[str, float]:
    """Mean VADER of one greedy and `samples` sampled answers to each held-out prompt (fixed sampling seed)."""
    vader = make_reward("vader")
    state = torch.get_rng_state()
    _, _, greedy = sample(models, settings, prompts, encode, greedy=True)
    torch.manual_seed(EVAL_SEED)
    repeated = [p for p in prompts for _ in range(samples)]
    _, _, sampled = sample(models, settings, repeated, encode)
    torch.set_rng_state(state)
    g, r = vader(prompts, greedy), vader(repeated, sampled)
    return {"greedy": statistics.fmean(g), "sampled": statistics.fmean(r), "all": statistics.fmean(g + r)}


def learn(args: argparse.Namespace, mode: str, seed: int, data_dir: Path) -> dict[str, Any]:
    settings, models = build(args, mode, seed, data_dir)
    encode = PromptEncoder(models.tokenizer, settings.max_prompt_tokens)
    train, held_out = split_prompts()
    order = torch.randperm(len(train), generator=torch.Generator().manual_seed(seed)).tolist()
    vader = make_reward("vader")
    before = held_out_score(models, settings, held_out, encode, args.samples)
    start, steps, rewards = time.perf_counter(), 0, []
    while time.perf_counter() - start < args.budget_s:
        picks = [train[order[(steps * args.batch + k) % len(order)]] for k in range(args.batch)]
        queries, responses, texts = sample(models, settings, picks, encode)
        scores = vader(picks, texts)
        models.trainer.step(queries, responses, [torch.tensor(s) for s in scores])
        rewards.append(sum(scores) / len(scores))
        steps += 1
        LOG.info(
            "%s seed %d step %d: reward %+.3f at %.0f s", mode, seed, steps, rewards[-1], time.perf_counter() - start
        )
    train_s = time.perf_counter() - start
    after = held_out_score(models, settings, held_out, encode, args.samples)
    return {
        "mode": mode,
        "seed": seed,
        "learning_rate": settings.effective_learning_rate,
        "train_s": train_s,
        "steps": steps,
        "held_out_before": before,
        "held_out_after": after,
        "gain": after["all"] - before["all"],
        "gain_per_min": (after["all"] - before["all"]) / (train_s / 60),
        "train_rewards": rewards,
    }


def worker(args: argparse.Namespace) -> None:
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory(prefix="bench-lora-") as tmp:
        if args.worker == "cost":
            result = cost(args, args.mode, Path(tmp))
        else:
            result = learn(args, args.mode, args.seed, Path(tmp))
    print(RESULT + json.dumps(result), flush=True)


# ------------------------------------------------------------------------------------------------ the driver
def start(args: argparse.Namespace, *extra: str) -> tuple[subprocess.Popen[str], tuple[str, ...]]:
    cmd = [sys.executable, __file__, *extra, f"--model={args.model}", f"--batch={args.batch}"]
    cmd += [f"--max-new-tokens={args.max_new_tokens}", f"--threads={args.threads}", f"--repeats={args.repeats}"]
    cmd += [f"--budget-s={args.budget_s}", f"--samples={args.samples}"]
    LOG.info("run %s", " ".join(extra))
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True), extra


def finish(started: tuple[subprocess.Popen[str], tuple[str, ...]]) -> dict[str, Any]:
    proc, extra = started
    out, _ = proc.communicate()
    lines = [line for line in out.splitlines() if line.startswith(RESULT)]
    if proc.returncode or not lines:
        raise RuntimeError(f"worker {' '.join(extra)} failed (rc={proc.returncode})")
    result = dict(json.loads(lines[-1][len(RESULT) :]))
    OUT_DIR.mkdir(parents=True, exist_ok=True)  # each result as it comes: a long run cut short keeps its parts
    name = "-".join(x.split("=")[1] for x in extra)
    (OUT_DIR / f"lora-{STAMP}-{name}.json").write_text(json.dumps(result, indent=1))
    LOG.info("%s: %s", name, json.dumps({k: v for k, v in result.items() if not isinstance(v, list | dict)}))
    return result


def run(args: argparse.Namespace, *extra: str) -> dict[str, Any]:
    return finish(start(args, *extra))


def learn_seed(args: argparse.Namespace, seed: int) -> list[dict[str, Any]]:
    """Both sides of one seed: at the same time (one thread each), or one after the other."""
    extras = [("--worker=learn", f"--mode={mode}", f"--seed={seed}") for mode in ("full", "lora")]
    if args.concurrent:
        return [finish(p) for p in [start(args, *e) for e in extras]]
    return [run(args, *e) for e in extras]


def summarise(costs: list[dict[str, Any]], learning: list[dict[str, Any]]) -> dict[str, Any]:
    by_mode = {c["mode"]: c for c in costs}
    out: dict[str, Any] = {}
    if {"full", "lora"} <= by_mode.keys():
        full, lora = by_mode["full"], by_mode["lora"]
        out["peak_memory_ratio"] = lora["train_peak_delta_mb"] / full["train_peak_delta_mb"]
        out["load_peak_ratio"] = lora["load_peak_delta_mb"] / full["load_peak_delta_mb"]
        out["step_time_ratio"] = lora["step_median_s"] / full["step_median_s"]
        out["goal_memory_le_half"] = out["peak_memory_ratio"] <= 0.5
        out["goal_publish_le_0_2_s"] = lora["publish_median_s"] <= 0.2
    for mode in ("full", "lora"):
        gains = [r["gain_per_min"] for r in learning if r["mode"] == mode]
        if gains:
            out[f"{mode}_gain_per_min_mean"] = statistics.mean(gains)
            out[f"{mode}_gain_per_min_sd"] = statistics.stdev(gains) if len(gains) > 1 else None
            out[f"{mode}_steps_mean"] = statistics.mean(r["steps"] for r in learning if r["mode"] == mode)
    return out


def table(costs: list[dict[str, Any]], learning: list[dict[str, Any]]) -> str:
    keys = ("step_median_s", "snapshot_median_s", "publish_median_s", "publish_mb", "checkpoint_s")
    keys += ("checkpoint_mb", "checkpoint_weights_mb", "loaded_rss_delta_mb", "load_peak_delta_mb")
    keys += ("train_peak_delta_mb", "trainable_params", "learning_rate")
    lines = [f"{'':24}" + "".join(f"{c['mode']:>14}" for c in costs)]
    lines += [f"{k:24}" + "".join(f"{c[k]:>14.4g}" for c in costs) for k in keys]
    for r in learning:
        lines.append(
            f"{r['mode']} seed {r['seed']}: {r['steps']} steps in {r['train_s']:.0f} s, held-out "
            f"{r['held_out_before']['all']:+.3f} -> {r['held_out_after']['all']:+.3f} ({r['gain_per_min']:+.4f}/min)"
        )
    return "\n".join(lines)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default=AppSettings.model, help="registry name or folder, or 'tiny' (a smoke run)")
    p.add_argument("--batch", type=int, default=AppSettings.batch_size)
    p.add_argument("--max-new-tokens", type=int, default=24)
    p.add_argument("--threads", type=int, default=1, help="torch threads of each worker (1: a shared machine)")
    p.add_argument("--repeats", type=int, default=1, help="timed steps of the cost run (after one warm-up)")
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--budget-s", type=float, default=180.0, help="training wall-clock seconds per side and seed")
    p.add_argument("--samples", type=int, default=8, help="sampled held-out answers per prompt (plus one greedy)")
    p.add_argument("--concurrent", action="store_true", help="run both sides of a seed at once, --threads each")
    p.add_argument("--skip-learn", action="store_true")
    p.add_argument("--skip-cost", action="store_true")
    p.add_argument("--worker", choices=("cost", "learn"), help=argparse.SUPPRESS)
    p.add_argument("--mode", choices=("full", "lora"), help=argparse.SUPPRESS)
    p.add_argument("--seed", type=int, default=0, help=argparse.SUPPRESS)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(name)s %(message)s")
    args = parse_args(argv)
    if args.worker:
        worker(args)
        return
    costs = [] if args.skip_cost else [run(args, "--worker=cost", f"--mode={m}") for m in ("full", "lora")]
    learning = []
    if not args.skip_learn:
        for seed in range(args.seeds):  # the sides alternate (or run together), so a busy minute hits both
            learning += learn_seed(args, seed)
    LOG.info(
        "LoRA vs full fine-tuning (%s, batch %d, %d new tokens)\n%s",
        args.model,
        args.batch,
        args.max_new_tokens,
        table(costs, learning),
    )
    payload = {
        "bench": "lora",
        "model": args.model,
        "batch": args.batch,
        "max_new_tokens": args.max_new_tokens,
        "threads": args.threads,
        "budget_s": args.budget_s,
        "seeds": args.seeds,
        "cost": costs,
        "learning": learning,
        "summary": summarise(costs, learning),
    }
    print(RESULT + json.dumps(payload), flush=True)


if __name__ == "__main__":
    main()
