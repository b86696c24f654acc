"""The fine-tuning table's report: summaries, compute-to-target, the goal check, a plot.

Rows are `{method, budget, seed, heldout_loss, heldout_ppl, per_stratum, compute_fraction,
scoring_fraction, compute_to_target, wall_seconds}`; curves are `{method, budget, seed,
points: [[compute share of C, held-out loss], ...]}`.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import Any

BASELINE = "random_per_round"
FULL = "full_data"
GRACE = "grace"


def compute_to_target(points: Sequence[Sequence[float]], target: float) -> float | None:
    """The first compute share at which a curve reaches `target` (linear between points)."""
    previous: Sequence[float] | None = None
    for point in points:
        x, y = point[0], point[1]
        if y <= target:
            if previous is None or previous[1] == y:
                return float(x)
            x0, y0 = previous[0], previous[1]
            return float(x0 + (x - x0) * (y0 - target) / (y0 - y))
        previous = point
    return None


def add_compute_to_target(rows: list[dict[str, Any]], curves: list[dict[str, Any]]) -> None:
    """Fill each row's compute_to_target: where its run first reaches the held-out loss that
    full data ends at on the same seed (null if it never does)."""
    targets = {r["seed"]: r["heldout_loss"] for r in rows if r["method"] == FULL}
    by_key = {(c["method"], c["budget"], c["seed"]): c["points"] for c in curves}
    for row in rows:
        target = targets.get(row["seed"])
        points = by_key.get((row["method"], row["budget"], row["seed"]))
        row["compute_to_target"] = (
            None if target is None or points is None else compute_to_target(points, target)
        )


def summarize(rows: list[dict[str, Any]]) -> dict[tuple[float, str], dict[str, Any]]:
    groups: dict[tuple[float, str], list[dict[str, Any]]] = {}
    for row in rows:
        groups.setdefault((row["budget"], row["method"]), []).append(row)
    out: dict[tuple[float, str], dict[str, Any]] = {}
    for key, members in sorted(groups.items()):
        strata = sorted({s for m in members for s in m["per_stratum"]})
        out[key] = {
            "seeds": sorted(m["seed"] for m in members),
            "loss": _mean_sd([m["heldout_loss"] for m in members]),
            "worst": _mean_sd([max(m["per_stratum"].values()) for m in members]),
            "per_stratum": {
                s: _mean_sd([m["per_stratum"][s] for m in members if s in m["per_stratum"]])
                for s in strata
            },
            "compute": statistics.mean(m["compute_fraction"] for m in members),
            "scoring": statistics.mean(m["scoring_fraction"] for m in members),
            "wall": statistics.median(m["wall_seconds"] for m in members),
        }
    return out


def _mean_sd(values: list[float]) -> tuple[float, float]:
    if not values:
        return (float("nan"), float("nan"))
    return statistics.mean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def check_goal(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The issue's three goals, seed by seed."""
    budgets = sorted({r["budget"] for r in rows if r["method"] != FULL})
    loss = {(r["method"], r["budget"], r["seed"]): r["heldout_loss"] for r in rows}
    seeds = sorted({r["seed"] for r in rows if r["method"] == GRACE})
    per_budget: dict[str, Any] = {}
    beats_random_everywhere = bool(seeds)
    best_at = 0
    for budget in budgets:
        wins = [
            loss[(GRACE, budget, s)] < loss[(BASELINE, budget, s)]
            for s in seeds
            if (GRACE, budget, s) in loss and (BASELINE, budget, s) in loss
        ]
        beats_random_everywhere &= bool(wins) and all(wins)
        # Each method over the seeds GRACE ran that it has too (parts may be run apart).
        means = {
            m: statistics.mean(present)
            for m in {r["method"] for r in rows if r["budget"] == budget}
            if (present := [loss[(m, budget, s)] for s in seeds if (m, budget, s) in loss])
        }
        best = GRACE in means and all(means[GRACE] < v for m, v in means.items() if m != GRACE)
        best_at += int(best)
        per_budget[str(budget)] = {"beats_random_by_seed": wins, "best_mean": best, "means": means}
    largest = max(budgets) if budgets else None
    ctt = {(r["method"], r["seed"]): r["compute_to_target"] for r in rows if r["budget"] == largest}
    ratios: list[float] = []
    for s in seeds:
        ours, theirs = ctt.get((GRACE, s)), ctt.get((BASELINE, s))
        if ours is None:
            ratios.append(float("inf"))
        elif theirs is None:
            ratios.append(ours / (0.7 * largest) * 0.7 if largest else float("inf"))
        else:
            ratios.append(ours / theirs)
    median_ratio = statistics.median(ratios) if ratios else float("inf")
    return {
        "seeds": seeds,
        "by_budget": per_budget,
        "beats_random_at_every_budget_and_seed": beats_random_everywhere,
        "best_mean_at_budgets": best_at,
        "best_mean_at_two_or_more": best_at >= 2,
        "compute_to_target_ratio_by_seed": ratios,
        "compute_to_target_ratio_median": median_ratio,
        "compute_to_target_met": median_ratio <= 0.7,
        "met": beats_random_everywhere and best_at >= 2 and median_ratio <= 0.7,
    }


def markdown_tables(rows: list[dict[str, Any]], names: Sequence[str]) -> str:
    summary = summarize(rows)
    head = ["budget", "method", "held-out loss", "worst stratum", *names]
    head += ["compute / C", "scoring share", "wall s (median)"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for (budget, method), s in summary.items():
        cells = [f"{budget:g}", method, _fmt(s["loss"]), _fmt(s["worst"])]
        cells += [_fmt(s["per_stratum"].get(n, (float("nan"), 0.0))) for n in names]
        cells += [f"{s['compute']:.2f}", f"{s['scoring'] / max(s['compute'], 1e-12):.0%}"]
        cells.append(f"{s['wall']:.0f}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def ctt_table(rows: list[dict[str, Any]]) -> str:
    largest = max((r["budget"] for r in rows if r["method"] != FULL), default=None)
    chosen = [r for r in rows if r["budget"] in (largest, 1.0)]
    methods = sorted({r["method"] for r in chosen})
    seeds = sorted({r["seed"] for r in chosen})
    lines = ["| method | " + " | ".join(f"seed {s}" for s in seeds) + " |"]
    lines.append("|" + "---|" * (len(seeds) + 1))
    for m in methods:
        cells = []
        for s in seeds:
            v = next(
                (r["compute_to_target"] for r in chosen if (r["method"], r["seed"]) == (m, s)), None
            )
            cells.append("never" if v is None else f"{v:.3f}")
        lines.append(f"| {m} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _fmt(pair: tuple[float, float]) -> str:
    mean, sd = pair
    return f"{mean:.4f} ± {sd:.4f}"


def plot_curves(path: Path, curves: list[dict[str, Any]]) -> None:
    """Held-out loss against total compute (share of C), one panel per budget, seeds averaged
    point by point (every seed of a method measures at the same shares of its budget)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    budgets = sorted({c["budget"] for c in curves if c["method"] != FULL})
    fig, axes = plt.subplots(
        1, max(1, len(budgets)), figsize=(5 * max(1, len(budgets)), 4), squeeze=False
    )
    full = [c for c in curves if c["method"] == FULL]
    for ax, budget in zip(axes[0], budgets, strict=False):
        chosen = [c for c in curves if c["budget"] == budget] + full
        for method in sorted({c["method"] for c in chosen}):
            runs = [c["points"] for c in chosen if c["method"] == method]
            width = min(len(p) for p in runs)
            xs = [statistics.mean(p[i][0] for p in runs) for i in range(width)]
            ys = [statistics.mean(p[i][1] for p in runs) for i in range(width)]
            style = "-" if method in (GRACE, BASELINE, FULL) else "--"
            ax.plot(xs, ys, style, marker=".", label=method, linewidth=2 if method == GRACE else 1)
        ax.set(title=f"budget {budget:g} x C", xlabel="total compute / C", ylabel="held-out loss")
        ax.set_xlim(0, max(1.0, budget) * 1.02)
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
