"""Small pieces: the weight publisher, state copies, settings checks, the worker loop."""

from __future__ import annotations

import ast
import os
import threading
import time
from pathlib import Path

import pytest
import torch
from torch import nn

from app.policy import PolicyPublisher, copy_state
from app.settings import AppSettings
from app.worker import ErrorLog, Worker

ROOT = Path(__file__).resolve().parents[2]


def test_the_publisher_swaps_version_and_weights_together() -> None:
    publisher = PolicyPublisher(0, {"w": torch.zeros(2)})
    publisher.publish(1, {"w": torch.ones(2)})
    version, state = publisher.latest()
    assert version == 1 and torch.equal(state["w"], torch.ones(2))
    with pytest.raises(ValueError, match="not newer"):
        publisher.publish(1, {"w": torch.full((2,), 2.0)})
    with pytest.raises(TypeError):
        state["w"] = torch.zeros(2)  # type: ignore[index]  # read-only view


def test_readers_never_see_a_version_with_someone_elses_weights() -> None:
    publisher = PolicyPublisher(0, {"w": torch.zeros(1)})
    mismatches: list[tuple[int, float]] = []
    stop = threading.Event()

    def read() -> None:
        while not stop.is_set():
            version, state = publisher.latest()
            if float(state["w"]) != version:
                mismatches.append((version, float(state["w"])))

    reader = threading.Thread(target=read)
    reader.start()
    for v in range(1, 300):
        publisher.publish(v, {"w": torch.full((1,), float(v))})
    stop.set()
    reader.join()
    assert mismatches == []


def test_copy_state_is_detached_and_keeps_tied_weights_as_one_copy() -> None:
    embedding, head = nn.Embedding(5, 3), nn.Linear(3, 5, bias=False)
    head.weight = embedding.weight  # tied like an LM head
    state = copy_state(nn.Sequential(embedding, head))
    assert state["0.weight"] is state["1.weight"]
    with torch.no_grad():
        embedding.weight.add_(1.0)
    assert not torch.equal(state["0.weight"], embedding.weight)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"batch_size": 0}, "--batch-size"),
        ({"max_staleness": -1}, "--max-staleness"),
        ({"temperature": 0.0}, "--temperature"),
        ({"device": "tpu"}, "--device"),
        ({"port": 70000}, "--port"),
    ],
)
def test_settings_are_validated(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        AppSettings(**kwargs)  # type: ignore[arg-type]


def test_a_worker_records_errors_keeps_going_and_stops_on_its_event() -> None:
    class Flaky(Worker):
        name = "flaky"
        error_backoff_s = 0.0

        def __init__(self) -> None:
            super().__init__(ErrorLog(), poll_seconds=0.01)
            self.ticks = 0

        def tick(self) -> bool:
            self.ticks += 1
            if self.ticks == 2:
                raise RuntimeError("boom")
            return False

    worker = Flaky()
    worker.start()
    deadline = time.monotonic() + 10
    while worker.ticks < 5 and time.monotonic() < deadline:
        time.sleep(0.01)
    worker.stop()
    assert worker.join(5) and not worker.alive
    last = worker.errors.last()
    assert worker.ticks >= 5 and last is not None and last.message == "RuntimeError: boom"
    assert worker.fatal is None


def test_app_imports_only_app_ppo_core_storage_and_libraries_and_nobody_imports_app() -> None:
    def imported(folder: str) -> set[str]:
        names: set[str] = set()
        for path in (ROOT / folder).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if isinstance(node, ast.Import):
                    names.update(alias.name.split(".")[0] for alias in node.names)
                elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                    names.add(node.module.split(".")[0])
        return names

    assert "app" not in imported("ppo_core") | imported("storage")
    assert not {"gradio", "sqlalchemy"} & (imported("ppo_core"))
    backend = {p for p in (ROOT / "app").glob("*.py")}
    gradio_users = {p.name for p in backend if "gradio" in p.read_text(encoding="utf-8")}
    assert gradio_users <= {"__main__.py"}  # the backend is plain Python; only the entry point launches Gradio


@pytest.mark.skipif(not hasattr(os, "getpriority"), reason="per-thread priority is a Linux feature")
def test_workers_run_at_a_lower_priority_than_the_threads_serving_raters() -> None:
    seen: list[int] = []

    class Probe(Worker):
        name = "probe"

        def tick(self) -> bool:
            seen.append(os.getpriority(os.PRIO_PROCESS, threading.get_native_id()))
            self.stop_event.set()
            return True

    worker = Probe(ErrorLog(), poll_seconds=0.01)
    worker.start()
    assert worker.join(5)
    assert seen == [min(19, os.getpriority(os.PRIO_PROCESS, 0) + 10)]
