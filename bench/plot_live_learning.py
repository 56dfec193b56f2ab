"""Plot held-out preference of v0 and the live version per run (docs/live-learning.png).

Reads RESULT lines of `bench/live_learning.py` (its `held_out`) or of a combined evaluation
(`{"v0_only": {"v0": ...}, "<run>": {"version": N, "live": ...}}`), one file per argument.

    python bench/plot_live_learning.py docs/live-learning.png runs/evaluated.txt
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

RESULT_PREFIX = "RESULT "


def runs(paths: list[Path]) -> tuple[dict[str, float], dict[str, tuple[int, dict[str, float]]]]:
    """(v0's scores, run name -> (live version, its scores)) from the RESULT lines found."""
    v0: dict[str, float] = {}
    live: dict[str, tuple[int, dict[str, float]]] = {}
    for path in paths:
        for line in path.read_text(encoding="utf-8").splitlines():
            if not line.startswith(RESULT_PREFIX):
                continue
            result: dict[str, Any] = json.loads(line[len(RESULT_PREFIX) :])
            if "held_out" in result:  # one bench run
                v0 = result["held_out"]["v0"]
                live[run_label(result)] = (result["live_version"], result["held_out"]["live"])
                continue
            v0 = result.pop("v0_only", {}).get("v0", v0)
            for name, item in result.items():
                live[name] = (item["version"], item["live"])
    return v0, live


def run_label(result: dict[str, Any]) -> str:
    """The run's name: "3 raters", and on a second line the reward it passed to the app, if any."""
    args: list[str] = result.get("app_args", [])
    reward = args[args.index("--reward") + 1] if "--reward" in args[:-1] else None
    raters = f"{result['raters']} rater{'s' if result['raters'] != 1 else ''}"
    return f"{raters}\n{reward}" if reward else raters


def plot(png: Path, v0: dict[str, float], live: dict[str, tuple[int, dict[str, float]]]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    kinds = ("greedy", "sampled", "all")
    fig, ax = plt.subplots(figsize=(max(7.0, 1.4 * (len(live) + 1)), 3.8))
    labels = ["v0", *(f"{name}\nv{version}" for name, (version, _) in live.items())]
    values = [v0, *(scores for _, scores in live.values())]
    width = 0.8 / len(kinds)
    for i, kind in enumerate(kinds):
        xs = [j + (i - 1) * width for j in range(len(labels))]
        ax.bar(xs, [v.get(kind, float("nan")) for v in values], width, label=kind)
    ax.set_xticks(range(len(labels)), labels)
    ax.set_ylabel("held-out preference (VADER)")
    ax.set_title("Held-out prompts: version 0 and the live version of each run")
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(png, dpi=110)


def main(argv: list[str]) -> int:
    png, *files = argv
    v0, live = runs([Path(f) for f in files])
    plot(Path(png), v0, live)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
