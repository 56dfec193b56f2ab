"""Export: JSONL / parquet / datasets round trips, and the pairwise (prompt, chosen, rejected) view."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path

import datasets
import pytest
from storage_helpers import in_tx, new_sample, rater

import storage
from storage import Database, StepIn


def _fill(db: Database) -> dict[str, int]:
    run = in_tx(db)
    run(storage.add_prompts, ["Say hi.", "Tell a joke."], source="s")
    p_hi, p_joke = (p.id for p in run(storage.prompts_for_generation, 2))
    hi_a, hi_b, hi_c, joke_a, joke_b = run(
        storage.add_samples,
        [
            new_sample(p_hi, 0, "Hello!"),
            new_sample(p_hi, 1, "Go away."),
            new_sample(p_hi, 1, "Hi, nice to meet you."),
            new_sample(p_joke, 1, "Knock knock."),
            new_sample(p_joke, 1, "No."),
        ],
    )
    alice, bob = rater(db, "alice"), rater(db, "bob")
    vader = run(storage.get_or_create_model_rater, "vader").id
    run(storage.record_rating, hi_a, alice, 0.5)
    run(storage.record_rating, hi_b, alice, -1.0)
    run(storage.record_rating, hi_c, alice, 0.5)  # ties hi_a: no pair between them
    run(storage.record_rating, hi_c, bob, 1.0)  # mean 0.75
    run(storage.record_rating, joke_a, vader, 0.4, source="vader")  # automatic only
    run(storage.record_rating, joke_b, vader, -0.2, source="vader")
    batch = run(storage.claim_next_batch, 2, "trainer")
    run(storage.finish_batch, batch, StepIn(2, {"kl": 0.0}))
    return {"hi_a": hi_a, "hi_b": hi_b, "hi_c": hi_c, "joke_a": joke_a, "joke_b": joke_b}


def test_jsonl_export_round_trips_through_datasets(db: Database, tmp_path: Path) -> None:
    ids = _fill(db)
    path = tmp_path / "ratings.jsonl"
    with db.read_session_factory.begin() as s:
        assert storage.export_jsonl(s, path) == 6
        expected = list(storage.iter_ratings(s))
    loaded = datasets.Dataset.from_json(str(path), cache_dir=str(tmp_path / "cache"))
    assert loaded.num_rows == 6
    first = loaded[0]
    assert {"prompt", "response", "score", "rater", "source", "policy_version", "created_at"} <= set(first)
    assert (first["prompt"], first["response"], first["score"], first["rater"]) == ("Say hi.", "Hello!", 0.5, "alice")
    assert datetime.fromisoformat(first["created_at"]) == expected[0]["created_at"]
    assert [r["source"] for r in loaded] == [r["source"] for r in expected]
    trained = [r for r in loaded if r["batch_status"] == "trained"]
    assert {r["sample_id"] for r in trained} == {ids["joke_a"], ids["joke_b"]}  # newest version, newest first
    assert [r["training_score"] for r in trained] == [0.4, -0.2]


def test_dataset_and_parquet_exports_agree(db: Database, tmp_path: Path) -> None:
    ids = _fill(db)
    with db.read_session_factory.begin() as s:
        ds = storage.to_dataset(s)
        assert storage.export_parquet(s, tmp_path / "ratings.parquet") == 6
    from_parquet = datasets.Dataset.from_parquet(str(tmp_path / "ratings.parquet"), cache_dir=str(tmp_path / "c"))
    assert ds.num_rows == from_parquet.num_rows == 6
    assert ds.to_list() == from_parquet.to_list()
    assert ds.features["created_at"].dtype.startswith("timestamp")
    by_sample = {(r["sample_id"], r["rater"]): r for r in ds}
    assert by_sample[(ids["hi_c"], "bob")]["score"] == 1.0
    assert by_sample[(ids["joke_a"], "reward:vader")]["source"] == "vader"


def test_pairwise_dataset_is_in_trl_preference_shape(db: Database) -> None:
    ids = _fill(db)
    with db.read_session_factory.begin() as s:
        pairs = storage.pairwise_dataset(s)
        human_only = storage.pairwise_dataset(s, use_auto_scores=False)
        wide_margin = storage.pairwise_dataset(s, min_margin=1.0)
    assert {"prompt", "chosen", "rejected", "score_chosen", "score_rejected"} <= set(pairs.column_names)
    got = {(r["chosen_sample_id"], r["rejected_sample_id"]): (r["score_chosen"], r["score_rejected"]) for r in pairs}
    assert got == {
        (ids["hi_c"], ids["hi_a"]): (0.75, 0.5),
        (ids["hi_c"], ids["hi_b"]): (0.75, -1.0),
        (ids["hi_a"], ids["hi_b"]): (0.5, -1.0),
        (ids["joke_a"], ids["joke_b"]): (0.4, -0.2),
    }
    row = next(r for r in pairs if r["chosen_sample_id"] == ids["joke_a"])
    assert (row["prompt"], row["chosen"], row["rejected"]) == ("Tell a joke.", "Knock knock.", "No.")
    assert all(r["score_chosen"] > r["score_rejected"] for r in pairs)
    assert human_only.num_rows == 3  # the joke pair rested on automatic scores only
    assert wide_margin.num_rows == 2  # 0.75 vs 0.5 and 0.4 vs -0.2 are within a margin of 1


def test_export_of_an_empty_store(db: Database, tmp_path: Path) -> None:
    with db.read_session_factory.begin() as s:
        assert storage.export_jsonl(s, tmp_path / "empty.jsonl") == 0
        assert storage.to_dataset(s).num_rows == 0
        assert storage.pairwise_dataset(s).column_names[:3] == ["prompt", "chosen", "rejected"]
    with pytest.raises(storage.InvalidInput), db.read_session_factory.begin() as s:
        storage.pairwise_dataset(s, min_margin=-1)


def test_jsonl_lines_are_plain_json(db: Database, tmp_path: Path) -> None:
    _fill(db)
    with db.read_session_factory.begin() as s:
        storage.export_jsonl(s, tmp_path / "r.jsonl")
    lines = (tmp_path / "r.jsonl").read_text().splitlines()
    assert all(isinstance(json.loads(line)["score"], float) for line in lines)
