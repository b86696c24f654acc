"""The graph keeper's later rounds with its joins in id order and in walk order, side by side.

    nice -n 0 python benchmarks/join_order.py --n 1000000 --rounds 4 --repeats 2 \\
        --json docs/results/join_order.json --markdown docs/results/join_order.md

The product's `GraphKeeper` (the service's default keeper: index dropped after the build, one
copy of the vectors) builds round 0 once; then each run starts from a copy of that graph and
re-embeds rho = 0.3 of N a round with round.py's fine-tuning drift, the same seed in every
run. `walk`: the keeper as shipped (`descent.walk_ranks` orders every join); `id`: the same
keeper with `walk_ranks` returning None (the order before it). Runs alternate id, walk, id,
walk, so that a drift in the shared machine's speed falls on both. Both orders must give the
same graph: the script fails if recall@10 (1000 rows against exact search) differs. Per part,
the keeper's own steps are timed by wrapping the functions it calls (the code runs unchanged).
`--state DIR` keeps the round-0 graph between invocations (a 1M build takes 5-8 minutes).
"""

from __future__ import annotations

import argparse
import collections
import functools
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make `benchmarks` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np

import grace_selection.core.descent as descent
import grace_selection.service.graph_keeper as graph_keeper
from benchmarks.round import DIM, RHO, SEED, K, drift, make_vectors, recall_at_10
from benchmarks.round_report import save_results, write_page
from grace_selection.api.app import make_index_factory
from grace_selection.core.graph import KnnGraph
from grace_selection.core.neighborhood_join import neighborhood_join
from grace_selection.service.built_graph import BuiltGraph

_TIMED = (
    "rescore_edges",
    "join_rows",
    "join_every_neighborhood",
    "join_every_row",
    "sampled_recall",
    "walk_ranks",
)
# What each order changes in the keeper for its runs: "id" is the keeper without the walk.
ORDERS: dict[str, dict[str, Any]] = {"id": {"walk_ranks": lambda graph: None}, "walk": {}}


def log(message: str) -> None:
    print(f"[join-order] {message}", file=sys.stderr, flush=True)


def round_zero(n: int, state: Path | None) -> tuple[Any, Any, Any]:
    """(neighbours, similarities, unit vectors) of the keeper's round-0 lists."""
    if state is not None and (state / "nb.npy").exists():
        return np.load(state / "nb.npy"), np.load(state / "sim.npy"), np.load(state / "unit.npy")
    matrix = make_vectors(n, np.random.default_rng(SEED))
    ids = np.arange(n, dtype=np.int64)
    with tempfile.TemporaryDirectory(prefix="grace-join-order-") as folder:
        keeper = graph_keeper.GraphKeeper(n, DIM, _factory(), Path(folder))
        start = time.perf_counter()
        keeper.update(ids, matrix, 1, K, 0.1, lambda: (ids, matrix, 1), matrix=matrix)
        log(f"round 0 built in {time.perf_counter() - start:.1f} s")
        built = keeper._built  # the keeper's own lists
        assert built is not None
        nb, sim = built.graph.neighbors, built.graph.similarities
    if state is not None:
        state.mkdir(parents=True, exist_ok=True)
        np.save(state / "nb.npy", nb)
        np.save(state / "sim.npy", sim)
        np.save(state / "unit.npy", matrix)
    return nb, sim, matrix


def _factory() -> Any:
    return make_index_factory("hnsw", vector_dtype="float32", keep_index=False, build_parts=0)


def run(
    order: str,
    lists: tuple[Any, Any, Any],
    rounds: int,
    patches: dict[str, Any],
    drift_mode: str = "finetune",
) -> list[dict[str, Any]]:
    """The keeper's later rounds from the round-0 lists, with `patches` (names of
    service.graph_keeper and what they stand for in this run); rows labelled `order`.
    drift_mode: round.py's drift (the fine-tuning task's, or the harsher modelled one)."""
    nb, sim, unit = (np.array(a) for a in lists)  # each run rewrites its own copies
    n = unit.shape[0]
    parts: dict[str, float] = collections.defaultdict(float)
    originals = {name: getattr(graph_keeper, name) for name in {*_TIMED, *patches}}
    for name, fn in patches.items():
        setattr(graph_keeper, name, fn)
    for name in _TIMED:
        setattr(graph_keeper, name, _timed(parts, name, getattr(graph_keeper, name)))
    try:
        with tempfile.TemporaryDirectory(prefix="grace-join-order-") as folder:
            keeper = graph_keeper.GraphKeeper(n, DIM, _factory(), Path(folder))
            keeper._built = BuiltGraph(  # start from the saved round 0
                index=None,
                vectors=unit,
                in_index=np.ones(n, dtype=np.bool_),
                graph=KnnGraph(nb, sim),
                k=K,
            )
            rng = np.random.default_rng(SEED + 1)
            sample = np.sort(rng.choice(n, size=min(n, 1000), replace=False))
            rows = []
            for r in range(1, rounds + 1):
                changed = np.sort(rng.choice(n, size=int(RHO * n), replace=False))
                fresh = drift(unit[changed].astype(np.float32), rng, drift_mode)
                parts.clear()
                cpu, start = time.process_time(), time.perf_counter()
                update = keeper.update(
                    changed, fresh, r + 1, K, 0.1, lambda: (np.arange(n), unit, 0), matrix=unit
                )
                seconds = time.perf_counter() - start
                row = {
                    "order": order,
                    "n": n,
                    "drift": drift_mode,
                    "round": r,
                    "seconds": round(seconds, 3),
                    "cpu": round(time.process_time() - cpu, 2),
                    "recall_at_10": round(recall_at_10(update.graph.neighbors, unit, sample), 4),
                    "joined": update.joined,
                    "pass": update.joined == n,
                    "rebuilt": update.rebuilt,
                    "parts": {name: round(value, 3) for name, value in parts.items()},
                }
                log(json.dumps(row))
                rows.append(row)
            return rows
    finally:
        for name, fn in originals.items():
            setattr(graph_keeper, name, fn)


def _timed(parts: dict[str, float], name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        start = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            parts[name] += time.perf_counter() - start

    return wrapper


def runs_by_round(rows: list[dict[str, Any]]) -> dict[tuple[str, int], list[dict[str, Any]]]:
    """The rows of each (variant, round), in the order they ran."""
    by: dict[tuple[str, int], list[dict[str, Any]]] = collections.defaultdict(list)
    for row in rows:
        by[row["order"], row["round"]].append(row)
    return by


def write_markdown(document: dict[str, Any], path: Path) -> None:
    rows = document["rounds"]
    by = runs_by_round(rows)
    lines = [
        "# The graph keeper's joins in id order and in walk order",
        "",
        "Made on this machine by:",
        "",
        f"    {document['command']}",
        "",
        "The keeper alone (graph upkeep of a later round), from one round-0 graph, the same",
        "drift per round in every run; medians over the runs of each order (they alternate).",
        "`joins s`: the join passes (`join_rows`, and the whole-list pass when it runs).",
        "",
        "| round | pass? | id: seconds | walk: seconds | walk / id | id: joins s | walk: joins s"
        " | recall@10 (both) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    rounds = sorted({r["round"] for r in rows})
    for r in rounds:
        ids, walks = by.get(("id", r), []), by.get(("walk", r), [])
        if not ids or not walks:
            continue
        a = statistics.median(x["seconds"] for x in ids)
        b = statistics.median(x["seconds"] for x in walks)
        ja = statistics.median(_joins(x) for x in ids)
        jb = statistics.median(_joins(x) for x in walks)
        lines.append(
            f"| {r} | {'yes' if ids[0]['pass'] else ''} | {a:.2f} | {b:.2f} | {b / a:.2f} |"
            f" {ja:.2f} | {jb:.2f} | {ids[0]['recall_at_10']:.3f} |"
        )
    write_page(lines, path)


def _joins(row: dict[str, Any]) -> float:
    parts = row["parts"]
    passes = parts.get("join_every_neighborhood", 0.0) + parts.get("join_every_row", 0.0)
    return float(parts.get("join_rows", 0.0) + passes)


def warm_up(lists: tuple[Any, Any, Any]) -> None:
    """numba compiles (or loads) the keeper's kernels here, not in either order's first round."""
    nb, sim, unit = lists
    head = np.where(nb[:64] < 64, nb[:64], -1).astype(np.int32)
    graph = KnnGraph(head, np.where(head >= 0, sim[:64], 0.0).astype(np.float32))
    vectors = np.ascontiguousarray(unit[:64], dtype=np.float32)
    ranks = descent.walk_ranks(graph)
    present = np.ones(64, dtype=np.bool_)
    moved = present.copy()
    graph = descent.rescore_edges(graph, vectors, moved)
    rng = np.random.default_rng(0)
    descent.join_rows(graph, vectors, np.arange(64), present, rng, current=True, ranks=ranks)
    neighborhood_join(graph, vectors, ranks=ranks)


def side_by_side(
    script: str,
    doc: str,
    variants: dict[str, dict[str, Any]],
    write_markdown: Callable[[dict[str, Any], Path], None],
    *,
    rounds: int,
    repeats: int,
    check: Callable[[list[dict[str, Any]], int], None] | None = None,
) -> None:
    """The command line of a side-by-side study of the keeper (this one and pass_join.py):
    each variant (names of service.graph_keeper and what they stand for) runs the later
    rounds from one round-0 graph, the variants alternating; then the JSON and the page."""
    parser = argparse.ArgumentParser(description=doc.split("\n")[0])
    parser.add_argument("--n", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=rounds, help="later rounds after round 0")
    parser.add_argument("--repeats", type=int, default=repeats, help="runs of each variant")
    parser.add_argument("--state", type=Path, help="keep the round-0 graph here")
    parser.add_argument("--drift", choices=("finetune", "modelled"), default="finetune")
    parser.add_argument("--variants", default=",".join(variants), help="which of them to run")
    parser.add_argument("--json", type=Path, default=Path(f"docs/results/{script}.json"))
    parser.add_argument("--markdown", type=Path, default=Path(f"docs/results/{script}.md"))
    args = parser.parse_args()
    lists = round_zero(args.n, args.state)
    warm_up(lists)
    rows: list[dict[str, Any]] = []
    for _ in range(args.repeats):
        for name in args.variants.split(","):
            rows += run(name, lists, args.rounds, variants[name], args.drift)
    if check is not None:
        check(rows, args.rounds)
    document = {
        "command": f"nice -n {os.nice(0)} python benchmarks/{script}.py " + " ".join(sys.argv[1:]),
        "machine": f"{os.cpu_count()} cores",
        "rounds": rows,
    }
    save_results(document, args.json, args.markdown, write_markdown)


def _same_graphs(rows: list[dict[str, Any]], rounds: int) -> None:
    for r in range(1, rounds + 1):
        recalls = {x["recall_at_10"] for x in rows if x["round"] == r}
        if len(recalls) != 1:
            raise SystemExit(f"round {r}: the orders gave different graphs (recall {recalls})")


def main() -> None:
    side_by_side(
        "join_order", __doc__, ORDERS, write_markdown, rounds=4, repeats=2, check=_same_graphs
    )


if __name__ == "__main__":
    main()
