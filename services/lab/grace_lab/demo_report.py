"""What the demo prints and leaves behind: a log line per round, a table, a plot, JSON."""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from grace_lab.coreset_training import RoundRecord, RunResult

log = logging.getLogger("grace.demo")


def log_round(record: RoundRecord) -> None:
    churn = "-" if record.churn is None else f"{record.churn:.0%}"
    rescored = record.info.get("rescored_fraction")
    extra = "" if rescored is None else f" | rescored {rescored:.0%}"
    select = record.info.get("select_seconds")
    timing = "" if select is None else f" | select {select:.2f}s"
    log.info(
        "round %d | step %d | coreset %d | churn %s%s | val ppl %.1f (worst source %.1f)%s",
        record.round,
        record.step,
        record.coreset_size,
        churn,
        extra,
        record.perplexity.overall,
        record.perplexity.worst,
        timing,
    )


def format_table(results: Sequence[RunResult], names: Sequence[str]) -> str:
    head = ["method", "val ppl", "worst source", *names, "scoring passes / N", "wall s"]
    rows = [
        [
            r.method,
            f"{r.final.overall:.2f}",
            f"{r.final.worst:.2f}",
            *(f"{r.final.by_stratum.get(name, float('nan')):.2f}" for name in names),
            f"{r.scoring_passes_per_n:.2f}",
            f"{r.wall_seconds:.0f}",
        ]
        for r in results
    ]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def write_report(
    out: Path, results: Sequence[RunResult], names: Sequence[str], settings: dict[str, Any]
) -> str:
    """results.md (table), results.json (every round) and perplexity.png; returns the table."""
    table = format_table(results, names)
    (out / "results.md").write_text(
        "# GRACE demo\n\nSettings: "
        + ", ".join(f"{k}={v}" for k, v in settings.items())
        + "\n\n"
        + table
        + "\n\n![held-out perplexity](perplexity.png)\n"
    )
    (out / "results.json").write_text(json.dumps([_as_json(r) for r in results], indent=2))
    plot_curves(out / "perplexity.png", results)
    return table


def _as_json(result: RunResult) -> dict[str, Any]:
    return {
        "method": result.method,
        "seed": result.seed,
        "scoring_passes_per_n": result.scoring_passes_per_n,
        "wall_seconds": result.wall_seconds,
        "rounds": [
            {
                "round": r.round,
                "step": r.step,
                "coreset_size": r.coreset_size,
                "churn": r.churn,
                "scored_fraction": r.scored_fraction,
                "perplexity": r.perplexity.overall,
                "perplexity_by_source": r.perplexity.by_stratum,
                "seconds": r.seconds,
                "info": r.info,
            }
            for r in result.records
        ],
    }


def plot_curves(path: Path, results: Sequence[RunResult]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (overall, worst) = plt.subplots(1, 2, figsize=(10, 4), constrained_layout=True)
    for result in results:
        steps = [r.step for r in result.records]
        overall.plot(
            steps, [r.perplexity.overall for r in result.records], marker="o", label=result.method
        )
        worst.plot(
            steps, [r.perplexity.worst for r in result.records], marker="o", label=result.method
        )
    overall.set(title="held-out perplexity", xlabel="optimiser step", ylabel="perplexity")
    worst.set(title="worst source", xlabel="optimiser step", ylabel="perplexity")
    overall.legend()
    fig.savefig(path, dpi=120)
    plt.close(fig)
