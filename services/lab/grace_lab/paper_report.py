"""Turns paper_table.py's JSON rows into the markdown table (mean +- sd) and a curve plot."""

from __future__ import annotations

import json
import statistics
from collections import defaultdict
from pathlib import Path
from typing import Any


def final_metrics(result: Any) -> dict[str, Any]:
    """The fields of a row that this report reads, from a `coreset_training.RunResult`."""
    return {
        "perplexity": result.final.overall,
        "worst_source_perplexity": result.final.worst,
        "perplexity_by_source": result.final.by_stratum,
        "scoring_passes_per_n": result.scoring_passes_per_n,
    }


def _mean_sd(values: list[float]) -> str:
    if len(values) == 1:
        return f"{values[0]:.2f}"
    return f"{statistics.mean(values):.2f} ± {statistics.stdev(values):.2f}"


def summarize(rows: list[dict[str, Any]]) -> dict[tuple[float, str], dict[str, Any]]:
    """(budget, method) -> lists of each metric over seeds, in first-seen method order."""
    groups: dict[tuple[float, str], dict[str, Any]] = defaultdict(lambda: defaultdict(list))
    for row in rows:
        group = groups[(row["budget"], row["method"])]
        group["seed"].append(row["seed"])
        group["ppl"].append(row["perplexity"])
        group["worst"].append(row["worst_source_perplexity"])
        group["passes"].append(row["scoring_passes_per_n"])
        group["wall"].append(row["wall_seconds"])
        for source, value in row["perplexity_by_source"].items():
            group[f"src:{source}"].append(value)
    return groups


def beats_on_every_seed(
    rows: list[dict[str, Any]], method: str, others: list[str], budget: float, metric: str
) -> bool:
    """True if `method` has lower `metric` than each of `others` on every seed."""
    by = {(r["method"], r["seed"]): r[metric] for r in rows if r["budget"] == budget}
    seeds = {seed for (m, seed) in by if m == method}
    return bool(seeds) and all(
        by[(method, s)] < by[(o, s)] for s in seeds for o in others if (o, s) in by
    )


STATIC = ("random static", "top-loss static", "facility location static", "message passing static")
FULL_RESCORING = "GRACE full re-scoring"


def goal_table(rows: list[dict[str, Any]]) -> str:
    """The issue's goal, row by row: does a GRACE partial row beat random-per-round and every
    static method on overall and on worst-source perplexity on every seed, and what does it
    cost next to full re-scoring (extra scoring passes per N, as a share)?"""
    head = "| budget | method | beats random per round | beats every static | cost vs full |"
    lines = [head, "|---|---|---|---|---|"]
    groups = summarize(rows)
    for budget, method in groups:
        if not method.startswith("GRACE rho"):
            continue
        cells = []
        for others in (["random per round"], list(STATIC)):
            verdicts = [
                beats_on_every_seed(rows, method, others, budget, metric)
                for metric in ("perplexity", "worst_source_perplexity")
            ]
            cells.append(
                f"overall {'yes' if verdicts[0] else 'no'}, worst {'yes' if verdicts[1] else 'no'}"
            )
        full = groups.get((budget, FULL_RESCORING))
        passes = statistics.mean(groups[(budget, method)]["passes"])
        cost = "" if not full else f"{passes / statistics.mean(full['passes']):.0%}"
        lines.append(f"| {budget:.0%} | {method} | {cells[0]} | {cells[1]} | {cost} |")
    return "\n".join(lines)


def markdown_table(rows: list[dict[str, Any]]) -> str:
    groups = summarize(rows)
    sources = sorted({s for r in rows for s in r["perplexity_by_source"]})
    head = ["budget", "method", "seeds", "val ppl", "worst source", *sources]
    head += ["scoring passes / N", "wall s"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for (budget, method), g in groups.items():
        cells = [f"{budget:.0%}", method, str(len(g["seed"])), _mean_sd(g["ppl"])]
        cells.append(_mean_sd(g["worst"]))
        cells += [_mean_sd(g[f"src:{s}"]) for s in sources]
        cells += [f"{statistics.mean(g['passes']):.2f}", f"{statistics.median(g['wall']):.0f}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot_curves(path: Path, curves: dict[str, list[list[float]]]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    budgets = sorted({name.rsplit(" @ ", 1)[1] for name in curves})
    fig, axes = plt.subplots(1, len(budgets), figsize=(7 * len(budgets), 5), squeeze=False)
    for ax, budget in zip(axes[0], budgets, strict=True):
        for name, points in curves.items():
            method, b = name.rsplit(" @ ", 1)
            if b != budget:
                continue
            style = "-" if method.startswith("GRACE") else "--"
            ax.plot([p[0] for p in points], [p[1] for p in points], style, label=method)
        ax.set(title=f"held-out perplexity, budget {budget} (first seed)", xlabel="step")
        ax.set(ylabel="perplexity", yscale="log")
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def merge_results(sources: list[Path], target: Path) -> None:
    """One results file from several (a table split over processes by seed or budget).

    Settings must agree except for which seeds and budgets each part ran; curves are kept from
    the part that ran the lowest seed, as a single run keeps its first seed's.
    """
    parts = [json.loads(path.read_text()) for path in sources]
    ignored = {"seeds", "budgets", "seconds"}
    reference = {k: v for k, v in parts[0]["settings"].items() if k not in ignored}
    for path, part in zip(sources, parts, strict=True):
        settings = {k: v for k, v in part["settings"].items() if k not in ignored}
        if settings != reference:
            raise ValueError(f"{path}: settings {settings} differ from {reference}")
    rows = [row for part in parts for row in part["rows"]]
    seeds = sorted({row["seed"] for row in rows})
    budgets = sorted({row["budget"] for row in rows})
    curves: dict[str, Any] = {}
    for part in sorted(parts, key=lambda p: min((r["seed"] for r in p["rows"]), default=0)):
        for name, points in part["curves"].items():
            curves.setdefault(name, points)
    settings = {
        **reference,
        "seeds": ",".join(map(str, seeds)),
        "budgets": ",".join(map(str, budgets)),
        "seconds": sum(part["settings"]["seconds"] for part in parts),
    }
    tmp = target.with_suffix(".tmp")
    tmp.write_text(json.dumps({"settings": settings, "rows": rows, "curves": curves}, indent=1))
    tmp.replace(target)


def write_outputs(json_path: Path, md_path: Path, command: str) -> None:
    payload = json.loads(json_path.read_text())
    rows = payload["rows"]
    plot_path = md_path.with_name(md_path.stem + "_curves.png")
    plot_curves(plot_path, payload["curves"])
    settings = payload["settings"]
    text = [
        "# The paper table: GRACE on real text",
        "",
        f"Command: `{command}`",
        "",
        "Settings: " + ", ".join(f"{k}={v}" for k, v in settings.items()),
        "",
        markdown_table(rows),
        "",
        "The goal, checked on every seed (a row wins only if it is lower on each seed):",
        "",
        goal_table(rows),
        "",
        f"![held-out perplexity curves]({plot_path.name})",
        "",
    ]
    md_path.write_text("\n".join(text))
