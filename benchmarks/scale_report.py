"""docs/results/scale.md from scale.json: quality, time and memory per part, per-element costs.

python benchmarks/scale_report.py docs/results/scale.json
"""

from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path
from typing import Any


def _f(value: Any, digits: int = 1) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _sum(values: list[float]) -> float:
    return float(sum(values))


def quality_table(rows: list[dict[str, Any]]) -> list[str]:
    lines = [
        "| n | shards | objective ratio (one-process graph) | on the sharded graph | overlap "
        "| recall@10 one-process | recall@10 sharded | kept |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        single = r.get("single", {})
        lines.append(
            f"| {r['n']:,} | {r['shards']} | {_f(r.get('objective_ratio'), 4)} "
            f"| {_f(r.get('objective_ratio_sharded_graph'), 4)} | {_f(r.get('overlap'), 3)} "
            f"| {_f(single.get('recall_at_10'), 4)} | {_f(r['sharded'].get('recall_at_10'), 4)} "
            f"| {r['sharded'].get('source', '-')} |"
        )
    return lines


def time_table(rows: list[dict[str, Any]]) -> list[str]:
    lines = [
        "| n | path | build s | graph s | select s (parts + merge) | total s | CPU s "
        "| peak RSS MB |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        single = r.get("single")
        if single:
            s, cpu = single["seconds"], single.get("cpu_seconds", {})
            lines.append(
                f"| {r['n']:,} | one process | {_f(s['build'])} | {_f(s['graph'])} "
                f"| {_f(s['select'])} | {_f(sum(s.values()))} "
                f"| {_f(sum(cpu.values())) if cpu else '-'} "
                f"| {_f(single['memory']['peak_mb'], 0)} |"
            )
        sh = r["sharded"]
        s, actor_cpu = sh["seconds"], sh.get("actor_cpu_seconds", {})
        cpu = sh.get("driver_cpu_seconds", 0.0) + sum(_sum(v) for v in actor_cpu.values())
        peaks = " + ".join(_f(p, 0) for p in sh["memory"]["actor_peak_mb"])
        lines.append(
            f"| {r['n']:,} | {r['shards']} Ray shards | {_f(s['build'])} | {_f(s['graph'])} "
            f"| {_f(s['parts'])} + {_f(s['merge'])} | {_f(sum(s.values()))} "
            f"| {_f(cpu) if actor_cpu else '-'} "
            f"| driver {_f(sh['memory']['driver_peak_mb'], 0)}, actors {peaks} |"
        )
    return lines


def unit_costs(rows: list[dict[str, Any]]) -> list[str]:
    """CPU microseconds per element (build: per insert; query: per point per shard)."""
    lines = [
        "| n | path | build CPU µs / insert | query CPU µs / (point x shard) "
        "| select CPU µs / point | actor peak bytes / element (with the Ray worker's own) |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        n, single = r["n"], r.get("single")
        if single and single.get("cpu_seconds"):
            cpu = single["cpu_seconds"]
            lines.append(
                f"| {n:,} | one process | {_f(cpu['build'] / n * 1e6)} "
                f"| {_f(cpu['graph'] / n * 1e6)} | {_f(cpu['select'] / n * 1e6)} | - |"
            )
        sh = r["sharded"]
        cpu = sh.get("actor_cpu_seconds")
        if cpu:
            m = r["shards"]
            peak = statistics.median(sh["memory"]["actor_peak_mb"]) * 2**20 / (n / m)
            lines.append(
                f"| {n:,} | {m} Ray shards | {_f(_sum(cpu['load']) / n * 1e6)} "
                f"| {_f(_sum(cpu['query']) / (n * m) * 1e6)} "
                f"| {_f(_sum(cpu['select']) / n * 1e6)} | {_f(peak, 0)} |"
            )
    return lines


def memory_table(rows: list[dict[str, Any]]) -> list[str]:
    """The sharded path's memory through each part, for the rows that sampled it per part."""
    lines = [
        "| n | part | driver peak MB | each actor's peak so far MB | machine in use MB "
        "| machine bytes / element |",
        "|---|---|---|---|---|---|",
    ]
    actor_part = {"build": "load", "graph": "query", "parts": "select", "merge": "select"}
    for r in rows:
        memory = r["sharded"]["memory"]
        machine = memory.get("machine_peak_mb_by_part")
        if not machine:
            continue
        for part, used in machine.items():
            actors = memory["actor_peak_mb_by_part"].get(actor_part[part], [])
            lines.append(
                f"| {r['n']:,} | {part} | {_f(memory['driver_peak_mb_by_part'][part], 0)} "
                f"| {' + '.join(_f(a, 0) for a in actors)} | {_f(used, 0)} "
                f"| {_f(used * 2**20 / r['n'], 0)} |"
            )
    return lines


def write_markdown(document: dict[str, Any], path: Path) -> None:
    rows = document["rows"]
    commands = sorted({r.get("command", document.get("command", "")) for r in rows})
    text = [
        "# The sharded round on Ray against the one-process round",
        "",
        f"Machine: {document['machine']}. HNSW: {document['hnsw']}. d = 64, k = 10, facility "
        "location picks 10%. Made by (under `nice -n 15`):",
        "",
        *[f"    {c}" for c in commands],
        "",
        "## Quality",
        "",
        "Objective ratio: the facility-location objective of the sharded RandGreeDi selection "
        "over the one-process selection's, both on the one-process HNSW graph (and on the "
        "sharded graph). Overlap: shared picks over the budget. `kept`: which candidate "
        "RandGreeDi kept (the merge round, or one part's own picks).",
        "",
        *quality_table(rows),
        "",
        "## Time and memory per part",
        "",
        "Wall seconds on a shared 2-core machine (other engineers' jobs ran at the same time, "
        "so CPU seconds, summed over every process and thread of the path, are the steadier "
        "measure). Sharded: build = split + each actor indexes its shard; graph = every point "
        "queried on every shard, top k merged in the driver; parts = each shard's greedy on "
        "its own graph; merge = the greedy over the union in the driver. Driver peak RSS "
        "includes the vectors; the actors read them from Ray's object store (shared memory, "
        "counted in their RSS as they touch it).",
        "",
        *time_table(rows),
        "",
        "## Costs per element",
        "",
        *unit_costs(rows),
        "",
        "## Memory through the sharded round",
        "",
        "Sampled every 50 ms during each part. Machine in use: MemTotal - MemAvailable over "
        "its value before the inputs were made, so the object store's one copy of the vectors "
        "counts once (the sum of RSS counts it in every process that touched it), and the "
        "driver's input vectors count too. An actor's peak is its VmHWM when the part last "
        "ran (parts and merge: after its greedy).",
        "",
        *memory_table(rows),
        "",
    ]
    path.write_text("\n".join(text))


if __name__ == "__main__":
    source = Path(sys.argv[1])
    write_markdown(json.loads(source.read_text()), source.with_suffix(".md"))
