"""The generator thread: keeps a buffer of unrated samples from the current policy in the database.

It owns its own copy of the policy (the trainer trains another instance) and, between batches, loads the newest
published weights into it as a whole. A batch in progress is cut short and thrown away when newer weights are
published (so raters see the new version within about a token's time) or when the app stops.

Raters are served only the newest version that has samples (`GeneratorStatus.serving`), so the version they see
never goes back; unrated samples of older versions are left to age out (generation is cheap next to a rating).
The generator stays at most `--max-batch-size` samples ahead of the trainer (`count_in_flight`): raters then never
score more during a step than the next step takes, so every rating is trained one step later (docs/live-learning.md).
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from contextlib import nullcontext
from dataclasses import dataclass, replace
from typing import Any

import torch
from transformers import StoppingCriteria, StoppingCriteriaList

from app.errors import UserError
from app.models import Runtime
from app.policy import PolicyPublisher, load_published
from app.settings import AppSettings
from app.staleness import StalenessWindow
from app.views import Comparison
from app.worker import ErrorLog, Worker
from ppo_core.generation import generate_batch
from ppo_core.prompts import encode_prompt
from storage.engine import Database
from storage.prompts import prompts_for_generation
from storage.records import NewSample, PromptRecord
from storage.samples import add_samples, count_in_flight, count_unrated_unleased

log = logging.getLogger(__name__)

COMPARE_TIMEOUT_S = 300.0


@dataclass(frozen=True)
class GeneratorStatus:
    state: str
    """"starting" | "generating" | "idle" | "held" (`--max-batch-size` samples ahead of the trainer) | "stopped"."""
    version: int
    """Version of the weights the generator is using."""
    ready: int
    """Unrated samples nobody is looking at (the buffer level)."""
    target: int
    tokens_per_s: float | None
    """Of the last finished batch."""
    batches: int
    samples: int
    loaded_at: float
    """`time.monotonic()` when `version` was loaded."""
    serving: int = 0
    """The newest version with stored samples: raters are shown samples of it (or newer) only."""
    in_flight: int = 0
    """Samples rated but not yet trained, held by raters, or ready: at `--max-batch-size` the generator waits."""


class _Interrupt(StoppingCriteria):
    """Ends `generate` for the whole batch as soon as `should_stop()` is true."""

    def __init__(self, should_stop: Callable[[], bool]) -> None:
        self.should_stop = should_stop
        self.fired = False

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor, **kwargs: Any) -> torch.Tensor:
        self.fired = self.fired or self.should_stop()
        return torch.full((input_ids.shape[0],), self.fired, dtype=torch.bool, device=input_ids.device)


def sampling_kwargs(settings: AppSettings) -> dict[str, Any]:
    """Generation settings of the live policy (stored with every sample)."""
    return {
        "do_sample": True,
        "temperature": settings.temperature,
        "top_p": settings.top_p,
        "top_k": 0,
        "max_new_tokens": settings.max_new_tokens,
    }


class PromptEncoder:
    """Prompt text -> token ids through the chat template, cut to the last `max_tokens` tokens; memoised."""

    def __init__(self, tokenizer: Any, max_tokens: int) -> None:
        self.tokenizer = tokenizer
        self.max_tokens = max_tokens
        self._cache: dict[str, list[int]] = {}

    def __call__(self, text: str) -> list[int]:
        ids = self._cache.get(text)
        if ids is None:
            ids = encode_prompt(self.tokenizer, text)[-self.max_tokens :]
            if len(self._cache) < 10_000:
                self._cache[text] = ids
        return ids


def generate_samples(
    model: torch.nn.Module,
    tokenizer: Any,
    encode: PromptEncoder,
    prompts: Sequence[PromptRecord],
    version: int,
    kwargs: dict[str, Any],
    interrupt: _Interrupt | None = None,
) -> list[NewSample] | None:
    """One batched generation; None when `interrupt` cut it short (the partial batch is thrown away)."""
    queries = [torch.tensor(encode(p.text), dtype=torch.long) for p in prompts]
    gen_kwargs = dict(kwargs)
    if interrupt is not None:
        gen_kwargs["stopping_criteria"] = StoppingCriteriaList([interrupt])
    out = generate_batch(
        model,
        queries,
        tokenizer.pad_token_id,
        tokenizer.eos_token_id,
        gen_kwargs,
        return_prompt=False,
        output_logprobs=True,
    )
    if interrupt is not None and interrupt.fired:
        return None
    assert out.logprobs is not None
    settings = {**kwargs, "model_version": version}
    samples = []
    for prompt, query, response, logprobs in zip(prompts, queries, out.sequences, out.logprobs):
        if len(response) == 0:
            continue
        # hit the length limit without an end-of-text token: the page marks the answer as cut (stored with the
        # sample's generation settings, so no migration)
        cut = len(response) >= kwargs["max_new_tokens"] and int(response[-1]) != tokenizer.eos_token_id
        samples.append(
            NewSample(
                prompt_id=prompt.id,
                response_text=tokenizer.decode(response, skip_special_tokens=True),
                query_ids=query.tolist(),
                response_ids=response.tolist(),
                policy_version=version,
                behaviour_logprobs=logprobs.clamp(max=0.0).tolist(),
                generation_settings={**settings, "cut": cut},
            )
        )
    return samples


@dataclass
class _CompareRequest:
    prompt: str
    future: Future[Comparison]


class GeneratorWorker(Worker):
    name = "generator"

    def __init__(
        self,
        db: Database,
        model: torch.nn.Module,
        reference: torch.nn.Module,
        tokenizer: Any,
        publisher: PolicyPublisher,
        settings: AppSettings,
        runtime: Runtime,
        errors: ErrorLog,
        window: StalenessWindow | None = None,
    ) -> None:
        super().__init__(errors, settings.poll_seconds)
        self.db = db
        self.model = model  # owned by this thread
        self.reference = reference  # frozen, shared read-only
        self.tokenizer = tokenizer
        self.publisher = publisher
        self.runtime = runtime
        self.kwargs = sampling_kwargs(settings)
        self.greedy_kwargs = {"do_sample": False, "max_new_tokens": settings.max_new_tokens}
        self.batch_size = settings.batch_size
        self.max_in_flight = settings.effective_max_batch_size
        self.window = window or StalenessWindow(settings.max_staleness)
        self.encode = PromptEncoder(tokenizer, settings.max_prompt_tokens)
        version = publisher.version
        self.status = GeneratorStatus("starting", version, 0, settings.buffer_target, None, 0, 0, time.monotonic())
        self._served_version = version
        """The newest version that has generated a batch (a new version gets one batch at once)."""
        self.twins: Callable[[], bool] = lambda: False
        """When true (pairwise mode), each prompt gets two responses per batch, so a pair can form at once."""
        self._requests: queue.Queue[_CompareRequest] = queue.Queue()
        self._compare_lock = threading.Lock()
        self._first_cache: dict[str, str] = {}
        self._current_cache: dict[tuple[str, int], str] = {}

    # ----------------------------------------------------------------------------------------- in the thread
    def setup(self) -> None:
        if self.runtime.device.type == "cpu":
            torch.set_num_threads(self.runtime.gen_threads)  # per thread with OpenMP; see docs/app.md

    def teardown(self) -> None:
        self.status = replace(self.status, state="stopped")
        self._fail_pending(UserError("the generator has stopped"))

    def tick(self) -> bool:
        self.serve_requests()
        self.load_newest()
        with self.db.read_session_factory.begin() as s:
            ready = count_unrated_unleased(s, min_policy_version=self.status.serving)
            in_flight = count_in_flight(s, self.status.version)
        self.status = replace(self.status, ready=ready, in_flight=in_flight)
        wanted = min(self.status.target - ready, self.batch_size)
        if self._served_version < self.status.version:
            # New weights: one batch from them at once, even over the target, so raters (served the newest
            # version only) see the new version right away; older unrated samples age out.
            wanted = self.batch_size
        if in_flight >= self.max_in_flight:
            self.status = replace(self.status, state="held")
            return False
        wanted = min(wanted, self.max_in_flight - in_flight)
        if wanted <= 0:
            self.status = replace(self.status, state="idle")
            return False
        with self.db.read_session_factory.begin() as s:
            prompts = prompts_for_generation(s, wanted)
        if self.twins():
            prompts = [p for p in prompts[: (len(prompts) + 1) // 2] for _ in range(2)]
        if not prompts:
            self.status = replace(self.status, state="idle")
            return False
        self.status = replace(self.status, state="generating")
        self._generate(prompts)
        return True

    def load_newest(self) -> bool:
        """Load newer published weights, whole, between batches; True when it did."""
        version, state = self.publisher.latest()
        if version == self.status.version:
            return False
        load_published(self.model, state)
        self.status = replace(self.status, version=version, loaded_at=time.monotonic())
        log.info("generator now uses version %d", version)
        return True

    def _generate(self, prompts: Sequence[PromptRecord]) -> None:
        version = self.status.version
        interrupt = _Interrupt(lambda: self.stop_event.is_set() or self.publisher.version != version)
        start = time.perf_counter()
        with self._autocast():
            samples = generate_samples(
                self.model, self.tokenizer, self.encode, prompts, version, self.kwargs, interrupt
            )
        seconds = time.perf_counter() - start
        if samples is None:
            log.info("generation with version %d interrupted (newer weights or stopping)", version)
            return
        if samples:
            with self.db.session_factory.begin() as s:
                add_samples(s, samples)
        self._served_version = version
        tokens = sum(len(x.response_ids) for x in samples)
        st = self.status
        self.status = replace(
            st,
            serving=max(st.serving, version) if samples else st.serving,
            ready=st.ready + len(samples),
            tokens_per_s=tokens / seconds if seconds > 0 else None,
            batches=st.batches + 1,
            samples=st.samples + len(samples),
        )

    def _autocast(self) -> Any:
        if self.runtime.bf16:
            return torch.autocast(device_type=self.runtime.device.type, dtype=torch.bfloat16)
        return nullcontext()

    def serve_requests(self) -> None:
        while True:
            try:
                request = self._requests.get_nowait()
            except queue.Empty:
                return
            if not request.future.set_running_or_notify_cancel():
                continue
            try:
                request.future.set_result(self._compare(request.prompt))
            except Exception as err:
                request.future.set_exception(err)

    def _compare(self, prompt: str) -> Comparison:
        self.load_newest()
        version = self.status.version
        first, current = self._cached(prompt, version)
        first = first if first is not None else self._greedy(self.reference, prompt)
        current = current if current is not None else self._greedy(self.model, prompt)
        with self._compare_lock:
            if len(self._first_cache) < 1000:
                self._first_cache[prompt] = first
            self._current_cache = {k: v for k, v in self._current_cache.items() if k[1] == version}
            self._current_cache[(prompt, version)] = current
        return Comparison(prompt, 0, first, version, current)

    def _greedy(self, model: torch.nn.Module, prompt: str) -> str:
        query = torch.tensor(self.encode(prompt), dtype=torch.long)
        with self._autocast():
            out = generate_batch(
                model,
                [query],
                self.tokenizer.pad_token_id,
                self.tokenizer.eos_token_id,
                self.greedy_kwargs,
                return_prompt=False,
            )
        return str(self.tokenizer.decode(out.sequences[0], skip_special_tokens=True))

    def _fail_pending(self, err: Exception) -> None:
        while True:
            try:
                request = self._requests.get_nowait()
            except queue.Empty:
                return
            if request.future.set_running_or_notify_cancel():
                request.future.set_exception(err)

    # -------------------------------------------------------------------------------------- from outside
    def _cached(self, prompt: str, version: int) -> tuple[str | None, str | None]:
        with self._compare_lock:
            return self._first_cache.get(prompt), self._current_cache.get((prompt, version))

    def compare(self, prompt: str, timeout: float = COMPARE_TIMEOUT_S) -> Comparison:
        """Greedy answers of version 0 and of the current version; computed in the generator thread."""
        version = self.publisher.version
        first, current = self._cached(prompt, version)
        if first is not None and current is not None:
            return Comparison(prompt, 0, first, version, current)
        if not self.alive:
            raise UserError("the generator is not running, so no comparison can be made")
        request = _CompareRequest(prompt, Future())
        self._requests.put(request)
        self.wake.set()
        try:
            return request.future.result(timeout)
        except TimeoutError:
            request.future.cancel()
            raise UserError("the generator is busy; try the comparison again in a moment") from None
