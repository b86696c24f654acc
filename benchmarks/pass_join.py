"""The graph keeper's passes over every row, three ways, over the same later rounds side by side.

    nice -n 0 python benchmarks/pass_join.py --n 1000000 --rounds 7 --repeats 1 \\
        --state /tmp/round0 --json docs/results/pass_join.json \\
        --markdown docs/results/pass_join.md

When a round's sampled recall@10 falls below the target (0.92), the keeper runs passes over
every row. `shipped`: the keeper as shipped, NN-descent's local join over each node's whole
list and up to 10 nodes that list it (`built_graph.join_every_neighborhood`), then, if the
sample still reads below the target, every row rebuilt from its neighbours' whole lists and 8
random nodes (`built_graph.join_every_row`). `neighborhood`: the local join alone; `rows`:
the whole-list pass alone (the keeper before the local join). A variant leaves a pass out by
replacing it with one that returns the graph unchanged (the keeper then samples recall once
more: ~0.5 s at 1M). Everything else is the product's `GraphKeeper` unchanged, from one
round-0 graph, with the same re-embedded rows and drift per round in every run (round.py's
fine-tuning drift, or `--drift modelled`, rho 0.3); runs alternate between the variants. The
passes can fall in different rounds (the graphs differ once one ran), so the page compares
each round and the totals: seconds and CPU seconds over all later rounds, and the lowest
recall@10 (1000 rows against exact search). `--variants` runs some of them.
"""

from __future__ import annotations

import collections
import statistics
import sys
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make `benchmarks` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np
import numpy.typing as npt

from benchmarks.join_order import runs_by_round, side_by_side
from benchmarks.round_report import write_page
from grace_selection.core.graph import KnnGraph
from grace_selection.service.built_graph import BuiltGraph, join_every_row

_ROWS_RANDOM = 8  # as the keeper's _JOIN_ALL_RANDOM


def whole_lists(built: BuiltGraph, ranks: npt.NDArray[np.int64] | None = None) -> KnnGraph:
    """The whole-list pass in the local join's place, its random nodes seeded by the row count
    (as this study's first runs were; the keeper seeds them by the round)."""
    return join_every_row(built, int(np.count_nonzero(built.in_index)), _ROWS_RANDOM, ranks)


def unchanged(built: BuiltGraph, *_: Any) -> KnnGraph:
    """A pass left out."""
    return built.graph


PASSES: dict[str, dict[str, Any]] = {
    "rows": {"join_every_neighborhood": whole_lists, "join_every_row": unchanged},
    "neighborhood": {"join_every_row": unchanged},
    "shipped": {},
}


def write_markdown(document: dict[str, Any], path: Path) -> None:
    rows = document["rounds"]
    by = runs_by_round(rows)
    lines = [
        "# The keeper's pass over every row: NN-descent's local join against whole-list joins",
        "",
        "Made on this machine by:",
        "",
        f"    {document['command']}",
        "",
        "The keeper alone (graph upkeep of later rounds), from one round-0 graph, the same",
        "drift per round in every run; medians over the runs of each pass (they alternate).",
        "`pass`: a pass over every row ran in that round (recall fell below the target).",
        "",
    ]
    names = [name for name in PASSES if any(row["order"] == name for row in rows)]
    lines += [
        "| round | "
        + " | ".join(f"{n}: seconds | {n}: pass | {n}: recall@10" for n in names)
        + " |",
        "|---|" + "---|---|---|" * len(names),
    ]
    totals: dict[tuple[str, str], list[float]] = collections.defaultdict(list)
    for r in sorted({row["round"] for row in rows}):
        cells = []
        for name in names:
            runs = by.get((name, r), [])
            if not runs:
                cells += ["-", "-", "-"]
                continue
            seconds = statistics.median(x["seconds"] for x in runs)
            totals[name, "seconds"].append(seconds)
            totals[name, "cpu"].append(statistics.median(x["cpu"] for x in runs))
            totals[name, "recall"].append(min(x["recall_at_10"] for x in runs))
            passed = "yes" if any(x["pass"] for x in runs) else ""
            cells += [f"{seconds:.2f}", passed, f"{runs[0]['recall_at_10']:.3f}"]
        lines.append(f"| {r} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "| pass | seconds, all later rounds | CPU seconds | lowest recall@10 |",
        "|---|---|---|---|",
    ]
    for name in names:
        seconds = totals.get((name, "seconds"), [])
        if seconds:
            cpu, recall = totals[name, "cpu"], totals[name, "recall"]
            lines.append(f"| {name} | {sum(seconds):.1f} | {sum(cpu):.1f} | {min(recall):.3f} |")
    write_page(lines, path)


def main() -> None:
    side_by_side("pass_join", __doc__, PASSES, write_markdown, rounds=7, repeats=1)


if __name__ == "__main__":
    main()
