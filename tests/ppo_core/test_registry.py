"""Model registry: folders pass through, the GGUF model converts once and loads offline."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoTokenizer

from ppo_core import AutoModelForCausalLMWithValueHead
from ppo_core.prompts import DEFAULT_PROMPTS, encode_prompt, load_prompts
from ppo_core.registry import resolve_model


def test_folder_passes_through(tmp_path):
    assert resolve_model(tmp_path) == str(tmp_path)


def test_missing_local_path_is_an_error(tmp_path):
    with pytest.raises(ValueError, match="not found"):
        resolve_model(str(tmp_path / "missing"))


def test_shipped_prompts_load_with_a_query_column(tmp_path):
    dataset = load_prompts()
    assert dataset.column_names == ["query"] and len(dataset) >= 50
    assert DEFAULT_PROMPTS.is_file()
    csv = tmp_path / "p.csv"
    csv.write_text("text,other\nhello,1\nworld,2\n")
    assert load_prompts(csv, query_column="text")["query"] == ["hello", "world"]
    with pytest.raises(ValueError, match="column 'prompt' not in the dataset"):
        load_prompts(csv, query_column="prompt")


@pytest.mark.slow
def test_smollm2_loads_offline_with_chat_template_and_generates():
    folder = resolve_model("smollm2-135m-instruct")
    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForCausalLMWithValueHead.from_pretrained("smollm2-135m-instruct")
    assert model.config.model_type == "llama"
    ids = torch.tensor([encode_prompt(tokenizer, "What is the capital of France?")])
    assert "<|im_start|>assistant" in tokenizer.decode(ids[0])
    out = model.generate(input_ids=ids, max_new_tokens=8, do_sample=False, pad_token_id=tokenizer.eos_token_id)
    assert "Paris" in tokenizer.decode(out[0, ids.shape[1] :])
