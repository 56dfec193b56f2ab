"""What a published weights file holds: the whole model, or a LoRA adapter (and value head) of one shape.

`rlhf-live train` writes the kind into each file's safetensors metadata (app.shared_weights); a `rlhf-live serve`
front-end started with other `--lora` options refuses the file whole, before any tensor is loaded, records one line
for the dashboard and keeps serving the version it has. A file without the entry (written before kinds were
recorded) holds full weights: that was the only kind then.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from app.errors import UserError
from app.settings import AppSettings

KIND_KEY = "weights"


class WeightsKindMismatch(UserError):
    """A published version holds another kind of weights than this process loads (safe to show: no server values)."""


@dataclass(frozen=True)
class WeightsKind:
    lora: bool
    """True: the adapter's tensors and the value head; False: every weight of the model."""
    rank: int = 0
    alpha: int = 0
    targets: tuple[str, ...] = ()
    """Sorted names of the adapted layers (or `all-linear`)."""

    @classmethod
    def of(cls, settings: AppSettings) -> WeightsKind:
        """The kind a process with these settings publishes or loads."""
        if not settings.lora:
            return cls(lora=False)
        return cls(True, settings.lora_rank, settings.lora_alpha, tuple(sorted(settings.lora_target_modules)))

    def metadata(self) -> dict[str, str]:
        """safetensors metadata entries (strings only)."""
        if not self.lora:
            return {KIND_KEY: "full"}
        return {
            KIND_KEY: "lora",
            "lora_rank": str(self.rank),
            "lora_alpha": str(self.alpha),
            "lora_target_modules": ",".join(self.targets),
        }

    @classmethod
    def from_metadata(cls, metadata: Mapping[str, str]) -> WeightsKind:
        """The kind recorded in a file (ValueError when the entries are unreadable)."""
        kind = metadata.get(KIND_KEY, "full")
        if kind == "full":
            return cls(lora=False)
        if kind != "lora":
            raise ValueError(f"unknown kind of published weights {kind!r}")
        targets = tuple(sorted(t for t in metadata.get("lora_target_modules", "").split(",") if t))
        return cls(True, int(metadata["lora_rank"]), int(metadata["lora_alpha"]), targets)

    def describe(self) -> str:
        if not self.lora:
            return "full weights"
        return f"a LoRA adapter (rank {self.rank}, alpha {self.alpha}, targets {','.join(self.targets)})"


def check_kind(found: WeightsKind, wanted: WeightsKind, version: int) -> None:
    """WeightsKindMismatch, in one line, unless a file of kind `found` can be loaded by a process of kind `wanted`."""
    if found == wanted:
        return
    raise WeightsKindMismatch(
        f"published version {version} holds {found.describe()} but this front-end loads {wanted.describe()}; "
        "not loaded (it keeps serving its current version): start it with the trainer's --lora options"
    )
