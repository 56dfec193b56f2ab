"""An in-memory stand-in for FeedbackService, for iterating on the page before the backend exists.

Not used by the end-to-end tests (they drive the real service); handy for `python -m tests.ui.fake_service`.
"""

from __future__ import annotations

import logging
import tempfile
import threading
from dataclasses import dataclass, field

from app.views import (
    Assignment,
    Comparison,
    Dashboard,
    HistoryPoint,
    NextResult,
    Progress,
    RaterView,
    RatingRow,
)

PROMPTS = ["Tell me a happy story about a cat.", "Write a short poem about the sea.", "How do I bake bread?"]


@dataclass
class FakeService:
    batch_size: int = 4
    admins: tuple[str, ...] = ("admin",)
    version: int = 0
    raters: dict[str, RaterView] = field(default_factory=dict)
    samples: dict[int, Assignment] = field(default_factory=dict)
    ratings: list[tuple[int, int, float]] = field(default_factory=list)  # rater, sample, score
    points: list[HistoryPoint] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    paused: bool = False

    def add(self, prompt: str, response: str) -> int:
        sid = len(self.samples) + 1
        self.samples[sid] = Assignment(sid, prompt, response, self.version)
        return sid

    def login(self, name: str) -> RaterView:
        if not name.strip():
            raise ValueError("empty name")
        with self.lock:
            return self.raters.setdefault(name, RaterView(len(self.raters) + 1, name, name in self.admins))

    def _progress(self, rater_id: int) -> Progress:
        mine = [r for r in self.ratings if r[0] == rater_id]
        return Progress(len(mine), 0, bool(mine))

    def next_for(self, rater_id: int, notice: str | None = None) -> NextResult:
        done = {s for r, s, _ in self.ratings if r == rater_id}
        todo = [a for sid, a in self.samples.items() if sid not in done]
        if not todo:
            for i in range(self.batch_size):
                self.add(PROMPTS[i % len(PROMPTS)], f"v{self.version} answer {len(self.samples)} <b>bold</b>")
            return NextResult(None, "Generating responses... 0 of 4 ready", self._progress(rater_id), notice)
        return NextResult(todo[0], None, self._progress(rater_id), notice)

    def rate(self, rater_id: int, sample_id: int, score: float) -> NextResult:
        with self.lock:
            if any(r == rater_id and s == sample_id for r, s, _ in self.ratings):
                raise ValueError("already rated")
            self.ratings.append((rater_id, sample_id, score))
            if len(self.ratings) % self.batch_size == 0 and not self.paused:
                self.version += 1
                n = len(self.points)
                self.points.append(HistoryPoint(n, self.version, score, 0.01 * n, 0.1, 0.2, "now"))
            return self.next_for(rater_id, "Rating saved")

    def skip(self, rater_id: int, sample_id: int) -> NextResult:
        return self.rate(rater_id, sample_id, 0.0)

    def undo(self, rater_id: int) -> NextResult:
        with self.lock:
            mine = [r for r in self.ratings if r[0] == rater_id]
            if not mine:
                raise ValueError("nothing to undo")
            self.ratings.remove(mine[-1])
            return self.next_for(rater_id, "Undone")

    def guidelines(self) -> str:
        return "### Guidelines\n- **+1**: helpful, correct, kind\n- **-1**: wrong, rude or off-topic"

    def score_range(self) -> tuple[float, float]:
        return (-1.0, 1.0)

    def dashboard(self) -> Dashboard:
        counts = {"unrated": len(self.samples) - len(self.ratings), "scored": len(self.ratings), "trained": 0}
        state = "paused" if self.paused else "running"
        return Dashboard(self.version, state, "human", counts, 3, 8, 1.5, None)

    def history(self) -> list[HistoryPoint]:
        return list(self.points)

    def recent_ratings(self, limit: int = 20) -> list[RatingRow]:
        return [
            RatingRow(
                "now",
                str(r),
                "human",
                sc,
                self.samples[s].policy_version,
                self.samples[s].prompt,
                self.samples[s].response,
            )
            for r, s, sc in self.ratings[-limit:]
        ]

    def compare(self, prompt: str | None = None) -> Comparison:
        p = prompt or PROMPTS[0]
        return Comparison(p, 0, "first <i>answer</i>", self.version, "current answer")

    def _admin(self, rater_id: int) -> None:
        if not any(r.id == rater_id and r.is_admin for r in self.raters.values()):
            raise PermissionError("only admins can change training")

    def set_paused(self, rater_id: int, paused: bool) -> None:
        self._admin(rater_id)
        self.paused = paused

    def set_reward_source(self, rater_id: int, spec: str) -> None:
        self._admin(rater_id)

    def save_checkpoint(self, rater_id: int) -> str:
        self._admin(rater_id)
        return "/tmp/ckpt"

    def export(self, fmt: str) -> str:
        path = tempfile.mktemp(suffix=f".{fmt}")
        with open(path, "w") as f:
            f.write("{}\n")
        return path


if __name__ == "__main__":
    from app.ui import build_ui

    logging.basicConfig(level=logging.INFO)
    svc = FakeService()
    svc.add("Say hi", 'Hi! <script>alert("x")</script> <img src=x onerror="alert(1)">')
    build_ui(svc).launch(server_port=7861)
