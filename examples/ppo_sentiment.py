"""The TRL "PPO Trainer" docs' training loop, on ppo_core, offline, on a real model.

Teaches SmolLM2-135M-Instruct (or a tiny random model with `--model tiny`) to answer the shipped prompts more
positively, scored by VADER sentiment. Run: `make example` or `python examples/ppo_sentiment.py --help`.
"""

from __future__ import annotations

import argparse
import logging
import tempfile

import torch
from tqdm import tqdm
from transformers import AutoTokenizer

from ppo_core import AutoModelForCausalLMWithValueHead, PPOConfig, PPOTrainer
from ppo_core.prompts import encode_prompt, load_prompts
from ppo_core.registry import DEFAULT_MODEL, resolve_model
from ppo_core.rewards import make_reward
from ppo_core.tiny import save_tiny_model

logger = logging.getLogger("examples.ppo_sentiment")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=DEFAULT_MODEL, help="registry name, folder, hub id, or 'tiny'")
    parser.add_argument("--reward", default="vader", help="vader | length[:N] | classifier folder | module:function")
    parser.add_argument("--dataset", default=None, help="prompt file (csv/json/jsonl/parquet); default: shipped")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--max-steps", type=int, default=None, help="stop after this many PPO steps")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--mini-batch-size", type=int, default=8)
    parser.add_argument("--learning-rate", type=float, default=1.41e-5)
    parser.add_argument("--max-new-tokens", type=int, default=24)
    parser.add_argument("--output", default="my_ppo_model", help="folder for save_pretrained")
    parser.add_argument("--log-with", default=None, choices=[None, "tensorboard"])
    return parser.parse_args()


def load_model(name: str) -> tuple[AutoModelForCausalLMWithValueHead, object]:
    if name == "tiny":  # a random 2-layer model: for a fast smoke run, it learns nothing useful
        name = str(save_tiny_model(tempfile.mkdtemp(prefix="tiny-model-")))
    model = AutoModelForCausalLMWithValueHead.from_pretrained(name)
    tokenizer = AutoTokenizer.from_pretrained(resolve_model(name))
    return model, tokenizer


def main() -> None:
    args = parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    torch.set_num_threads(max(1, torch.get_num_threads()))

    # --- the docs' set-up, with the model and reward names changed ---------------------------------------
    config = PPOConfig(
        model_name=args.model,
        learning_rate=args.learning_rate,
        batch_size=args.batch_size,
        mini_batch_size=args.mini_batch_size,
        log_with=args.log_with,
    )
    model, tokenizer = load_model(config.model_name)
    tokenizer.pad_token = tokenizer.eos_token
    reward_model = make_reward(args.reward)
    dataset = load_prompts(args.dataset)

    def tokenize(sample: dict) -> dict:
        sample["input_ids"] = encode_prompt(tokenizer, sample["query"])  # chat template for instruct models
        return sample

    dataset = dataset.map(tokenize, batched=False)
    ppo_trainer = PPOTrainer(model=model, config=config, dataset=dataset, tokenizer=tokenizer)

    # --- the docs' loop ----------------------------------------------------------------------------------
    generation_kwargs = {
        "min_length": -1,
        "top_k": 0,
        "top_p": 1.0,
        "do_sample": True,
        "pad_token_id": tokenizer.eos_token_id,
        "max_new_tokens": args.max_new_tokens,
    }
    steps = 0
    for epoch in tqdm(range(args.epochs), "epoch: "):
        for batch in tqdm(ppo_trainer.dataloader):
            query_tensors = batch["input_ids"]
            # return_prompt=False: the docs' snippet omits it, which makes the prompt part of the "response"
            response_tensors = ppo_trainer.generate(query_tensors, return_prompt=False, **generation_kwargs)
            batch["response"] = [tokenizer.decode(r.squeeze(), skip_special_tokens=True) for r in response_tensors]
            scores = reward_model(batch["query"], batch["response"])
            rewards = [torch.tensor(s) for s in scores]
            stats = ppo_trainer.step(query_tensors, response_tensors, rewards)
            ppo_trainer.log_stats(stats, batch, rewards)
            steps += 1
            tqdm.write(
                f"epoch {epoch} step {steps}: reward {sum(scores) / len(scores):+.3f} "
                f"kl {stats['objective/kl']:+.3f} step {stats['time/ppo/total']:.1f}s"
            )
            if args.max_steps is not None and steps >= args.max_steps:
                break
        if args.max_steps is not None and steps >= args.max_steps:
            break
    ppo_trainer.save_pretrained(args.output)
    logger.info("saved the trained model to %s", args.output)


if __name__ == "__main__":
    main()
