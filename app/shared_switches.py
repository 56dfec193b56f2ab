"""An admin's switches reach every process of a split deployment (`rlhf-live serve` front-ends, `rlhf-live train`).

The front-end where an admin switches the rating mode or the reward source applies it at once and `announce`s it
to the database (storage.switches); every process's `SharedSwitches` thread polls that table and applies what
changed: a front-end switches its rating mode and asks its reward thread for the new source (only among its own
`--reward-choices`: nothing stored selects code to run that the operator did not configure); the trainer follows
the rating mode and the reward's kind, which decide whether it trains automatic scores. Only a change is applied,
so a switch that fails in one process is not retried there until an admin switches again.

At start each process takes the deployment's current switches over its own `--mode` and `--reward` (a front-end
that joins late serves what the others serve). The all-in-one app has no other process to tell and does not use it.
"""

from __future__ import annotations

import logging

from app.errors import UserError
from app.rating_mode import MODES, RatingMode
from app.reward_source import HUMAN, RewardControl
from app.worker import ErrorLog, Worker
from storage.engine import Database
from storage.switches import RATING_MODE, REWARD_SOURCE, read_switches, set_switch

log = logging.getLogger(__name__)


class SharedSwitches(Worker):
    """Follows the deployment's switches; `rewards` is None in the trainer (it only needs the reward's kind)."""

    name = "switches"

    def __init__(
        self,
        db: Database,
        errors: ErrorLog,
        poll_seconds: float,
        mode: RatingMode,
        rewards: RewardControl | None,
        reward_spec: str,
    ) -> None:
        super().__init__(errors, poll_seconds)
        self.db = db
        self.mode = mode
        self.rewards = rewards
        self.reward_spec = reward_spec.strip()
        """The deployment's reward source as this process last saw it."""
        self._seen: dict[str, str] = {}

    def reward_is_auto(self) -> bool:
        """Whether the deployment's reward source makes automatic scores (every source but `human`)."""
        return self.reward_spec != HUMAN

    # ------------------------------------------------------------------------------------ this process's admin
    def announce(self, name: str, value: str, changed_by: str) -> None:
        """Tell the other processes: this process has already applied `value`."""
        with self.db.session_factory.begin() as s:
            set_switch(s, name, value, changed_by)
        self._seen[name] = value
        if name == REWARD_SOURCE:
            self.reward_spec = value

    # ---------------------------------------------------------------------------------------------- the thread
    def tick(self) -> bool:
        with self.db.read_session_factory.begin() as s:
            stored = {name: record.value for name, record in read_switches(s).items()}
        changed = {name: value for name, value in stored.items() if self._seen.get(name) != value}
        for name, value in changed.items():
            self._seen[name] = value
            self._apply(name, value)
        return False

    def _apply(self, name: str, value: str) -> None:
        if name == RATING_MODE and value in MODES:
            if self.mode.current() != value:
                self.mode.set(value)
                log.info("rating mode is now %s (an admin's switch in another process)", value)
        elif name == REWARD_SOURCE:
            self._apply_reward(value)
        else:
            log.warning("ignored the stored switch %s=%r: not one this version knows", name, value)

    def _apply_reward(self, spec: str) -> None:
        if self.rewards is None:  # the trainer: only the kind matters
            self.reward_spec = spec
            log.info("reward source is now %s (an admin's switch in another process)", spec)
            return
        try:
            self.rewards.request(spec)
        except UserError:
            log.warning("ignored the switch to reward source %r: not in this process's --reward-choices", spec)
            return
        self.reward_spec = spec
