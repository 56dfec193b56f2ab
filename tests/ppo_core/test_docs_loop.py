"""The TRL docs' PPO loop, as printed, with only the model and reward names changed, runs on ppo_core."""

from __future__ import annotations

import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch
from datasets import Dataset
from transformers import AutoTokenizer, DistilBertConfig, DistilBertForSequenceClassification, pipeline

from ppo_core import AutoModelForCausalLMWithValueHead, PPOConfig, PPOTrainer
from ppo_core.data import collate_lists
from ppo_core.tiny import tiny_causal_lm, tiny_tokenizer

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def model_folder(tmp_path):
    folder = tmp_path / "policy"
    tiny_causal_lm("gpt2").save_pretrained(folder)
    tiny_tokenizer().save_pretrained(folder)
    return str(folder)


@pytest.fixture
def classifier_folder(tmp_path):
    """A tiny random two-label DistilBERT, standing in for lvwerra/distilbert-imdb (offline)."""
    folder = tmp_path / "classifier"
    config = DistilBertConfig(
        vocab_size=320,
        dim=32,
        n_layers=1,
        n_heads=2,
        hidden_dim=64,
        id2label={0: "NEGATIVE", 1: "POSITIVE"},
        label2id={"NEGATIVE": 0, "POSITIVE": 1},
    )
    DistilBertForSequenceClassification(config).save_pretrained(folder)
    tiny_tokenizer().save_pretrained(folder)
    return str(folder)


def test_docs_loop_runs_unchanged(model_folder, classifier_folder, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    dataset = Dataset.from_dict(
        {
            "query": [
                "Explain the moon landing to a 6 year old.",
                "Why aren't birds real?",
                "What happens if you fire a cannonball at a pumpkin?",
                "I love this",
                "Why is it important to eat socks after meditating?",
            ]
        }
    )
    # ---- from the docs page, names changed: model_name, reward model folder; batch sizes for a tiny run ----
    config = PPOConfig(model_name=model_folder, learning_rate=1.41e-5, batch_size=2, mini_batch_size=2)
    model = AutoModelForCausalLMWithValueHead.from_pretrained(config.model_name)
    tokenizer = AutoTokenizer.from_pretrained(config.model_name)
    tokenizer.pad_token = tokenizer.eos_token
    reward_model = pipeline("text-classification", model=classifier_folder, top_k=None)

    def tokenize(sample):
        sample["input_ids"] = tokenizer.encode(sample["query"])
        return sample

    dataset = dataset.map(tokenize, batched=False)
    ppo_trainer = PPOTrainer(model=model, config=config, dataset=dataset, tokenizer=tokenizer)
    generation_kwargs = {
        "min_length": -1,
        "top_k": 0.0,
        "top_p": 1.0,
        "do_sample": True,
        "pad_token_id": tokenizer.eos_token_id,
        "max_new_tokens": 8,
    }
    epochs = 1
    steps = 0
    for _epoch in range(epochs):
        for batch in ppo_trainer.dataloader:
            query_tensors = batch["input_ids"]
            response_tensors = ppo_trainer.generate(query_tensors, **generation_kwargs)
            batch["response"] = [tokenizer.decode(r.squeeze()) for r in response_tensors]
            texts = [q + r for q, r in zip(batch["query"], batch["response"])]
            pipe_outputs = reward_model(texts)
            rewards = [torch.tensor(output[1]["score"]) for output in pipe_outputs]
            stats = ppo_trainer.step(query_tensors, response_tensors, rewards)
            ppo_trainer.log_stats(stats, batch, rewards)
            steps += 1
    ppo_trainer.save_pretrained("my_ppo_model")
    # -------------------------------------------------------------------------------------------------------
    assert steps == 2  # 5 queries, batch 2: the incomplete last batch is dropped
    assert (tmp_path / "my_ppo_model" / "value_head.safetensors").is_file()


def test_default_collator_gives_lists_of_variable_length_tensors():
    batch = collate_lists([{"query": "a b", "input_ids": [1, 2]}, {"query": "c", "input_ids": [3, 4, 5]}])
    assert batch["query"] == ["a b", "c"]
    assert [t.tolist() for t in batch["input_ids"]] == [[1, 2], [3, 4, 5]]
    assert all(t.dtype == torch.long for t in batch["input_ids"])


def test_dataloader_drops_incomplete_last_batch(model_folder):
    dataset = Dataset.from_dict({"query": [f"q{i}" for i in range(7)], "input_ids": [[1, i + 2] for i in range(7)]})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = AutoModelForCausalLMWithValueHead.from_pretrained(model_folder)
        trainer = PPOTrainer(
            PPOConfig(batch_size=3, mini_batch_size=3), model, tokenizer=tiny_tokenizer(), dataset=dataset
        )
    sizes = [len(b["query"]) for b in trainer.dataloader]
    assert sizes == [3, 3]


@pytest.mark.slow
def test_example_script_runs_on_a_tiny_model(tmp_path):
    out = tmp_path / "out"
    result = subprocess.run(
        [
            sys.executable,
            str(ROOT / "examples" / "ppo_sentiment.py"),
            "--model",
            "tiny",
            "--max-steps",
            "1",
            "--batch-size",
            "4",
            "--mini-batch-size",
            "2",
            "--max-new-tokens",
            "4",
            "--output",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "step 1: reward" in result.stdout + result.stderr
    assert (out / "model.safetensors").is_file() and (out / "value_head.safetensors").is_file()
