"""Prompts: import from lists, datasets and files, idempotently; bad prompts write nothing; round robin."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import datasets
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from storage_helpers import in_tx, new_sample, snapshot

import storage
from storage import Database

TEXTS = ["Tell me a joke.", "Write a haiku about rain.", "Say something kind."]


def _write(path: Path, kind: str) -> Path:
    file = path / f"prompts.{kind}"
    if kind == "txt":
        file.write_text("Tell me a joke.\n\nWrite a haiku about rain.\nSay something kind.\n")
    elif kind == "csv":
        with file.open("w", newline="") as f:
            writer = csv.writer(f)
            writer.writerows([["id", "prompt"], *[[i, t] for i, t in enumerate(TEXTS)]])
    elif kind == "jsonl":
        file.write_text("".join(json.dumps({"prompt": t}) + "\n" for t in TEXTS))
    elif kind == "json":
        file.write_text(json.dumps([{"prompt": t} for t in TEXTS]))
    else:
        pq.write_table(pa.table({"prompt": TEXTS}), file)
    return file


@pytest.mark.parametrize("kind", ["txt", "csv", "jsonl", "json", "parquet"])
def test_file_import_is_idempotent(db: Database, tmp_path: Path, kind: str) -> None:
    run = in_tx(db)
    file = _write(tmp_path, kind)
    first = run(storage.add_prompts_from_file, file)
    assert (first.added, first.existing) == (3, 0)
    again = run(storage.add_prompts_from_file, str(file))  # the app re-imports on every start
    assert (again.added, again.existing, again.changed) == (0, 3, 0)
    assert sorted(p.text for p in run(storage.prompts_for_generation, 10)) == sorted(TEXTS)


def test_dataset_import_is_idempotent_and_grows_with_new_rows(db: Database) -> None:
    run = in_tx(db)
    ds = datasets.Dataset.from_dict({"query": TEXTS[:2]})
    assert run(storage.add_prompts_from_dataset, ds, "query", source="mine").added == 2
    grown = datasets.Dataset.from_dict({"query": TEXTS})
    result = run(storage.add_prompts_from_dataset, grown, "query", source="mine")
    assert (result.added, result.existing) == (1, 2)
    with pytest.raises(storage.InvalidPrompt, match="pass source"):
        run(storage.add_prompts_from_dataset, grown, "query")  # unnamed dataset, no source
    with pytest.raises(storage.InvalidPrompt, match="no column"):
        run(storage.add_prompts_from_dataset, grown, "prompt", source="mine")


def test_changed_text_keeps_the_stored_prompt(db: Database) -> None:
    run = in_tx(db)
    run(storage.add_prompts, ["a", "b"], source="s")
    result = run(storage.add_prompts, ["a", "B!"], source="s")
    assert (result.added, result.changed) == (0, 1)
    assert sorted(p.text for p in run(storage.prompts_for_generation, 5)) == ["a", "b"]


@pytest.mark.parametrize("bad", ["", "   \n", None, 42, "x" * 20_001])
def test_empty_oversized_or_non_text_prompts_write_nothing(db: Database, bad: object) -> None:
    run = in_tx(db)
    run(storage.add_prompts, ["existing"], source="s0")
    before = snapshot(db)
    with pytest.raises(storage.InvalidPrompt, match="row 1"):
        run(storage.add_prompts, ["fine", bad, "also fine"], source="s")
    assert snapshot(db) == before


def test_bad_files(db: Database, tmp_path: Path) -> None:
    run = in_tx(db)
    (tmp_path / "p.xml").write_text("<p/>")
    (tmp_path / "p.jsonl").write_text('{"prompt": "ok"}\n{not json\n')
    (tmp_path / "q.csv").write_text("question\nwhy?\n")
    cases = [("p.xml", "unsupported"), ("p.jsonl", "invalid JSON"), ("q.csv", "no column"), ("x.txt", "not")]
    for name, match in cases:
        with pytest.raises(storage.InvalidPrompt, match=match):
            run(storage.add_prompts_from_file, tmp_path / name)
    assert run(storage.count_prompts) == 0


def test_prompts_for_generation_round_robins_by_fewest_samples(db: Database) -> None:
    run = in_tx(db)
    run(storage.add_prompts, ["p0", "p1", "p2"], source="s")
    p0, p1, p2 = (p.id for p in run(storage.prompts_for_generation, 3))
    run(storage.add_samples, [new_sample(p0), new_sample(p1), new_sample(p0)])
    assert [p.id for p in run(storage.prompts_for_generation, 3)] == [p2, p1, p0]
    assert [p.id for p in run(storage.prompts_for_generation, 1)] == [p2]
    with pytest.raises(storage.InvalidInput):
        run(storage.prompts_for_generation, 0)
