"""How fast do the selectors pick 10% of a large k-NN graph, and how do they compare to apricot?

    python benchmarks/selection.py --sizes 100000,1000000 --json docs/results/selection.json

writes the JSON and, next to it, the markdown page (docs/results/selection.md).

For each size a synthetic clustered k-NN graph (k = 10, `benchmarks/synthetic_graph.py`) is built
once and saved; every measurement then runs in a fresh Python process that loads it, so each
peak RSS (VmHWM of that process) belongs to one measurement: the loaded inputs plus the
work. `seconds` is wall time of the selector call alone (graph and utility in, ids out);
`select_coreset` adds rank normalisation, CRAIG weights and the digest. At the smallest size
apricot's lazy-greedy FacilityLocationSelection runs on the very same sparse similarity, and
our facility location runs with lambda = 0 so both maximise the same objective. The HNSW rows
time `HnswNeighborIndex` on clustered d = 384 vectors. Progress goes to stderr.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make `benchmarks` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np

from benchmarks.selection_report import write_markdown
from benchmarks.synthetic_graph import make_clustered_graph, make_clustered_vectors, make_scores
from grace_selection.core import SELECTORS, KnnGraph, SelectionConfig, select_coreset
from grace_selection.core.budget import budget_size
from grace_selection.core.facility_location import facility_location_objective
from grace_selection.core.importance import combine_scores
from grace_selection.core.similarity import SparseSimilarity, build_sparse_similarity

SEED = 0
FRACTION = 0.1
SELECTOR_ORDER = ("graph_message_passing", "facility_location")


def log(message: str) -> None:
    print(f"[selection-bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def rss_mb() -> float:
    """Current resident set size of this process."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def peak_rss_mb() -> float:
    """This process's peak resident set (VmHWM). Not ru_maxrss: Linux carries that over from
    the parent across fork and exec, so a child would report the parent's peak."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024  # kB
    raise RuntimeError("no VmHWM in /proc/self/status; peak RSS needs Linux")


def load_graph(folder: Path) -> KnnGraph:
    return KnnGraph(np.load(folder / "neighbors.npy"), np.load(folder / "similarities.npy"))


def timed(fn: Any, repeats: int) -> tuple[list[float], list[float], Any]:
    walls, cpus, result = [], [], None
    for _ in range(repeats):
        wall, cpu = time.perf_counter(), time.process_time()
        result = fn()
        walls.append(time.perf_counter() - wall)
        cpus.append(time.process_time() - cpu)
    return walls, cpus, result


def measure_selector(spec: dict[str, Any]) -> dict[str, Any]:
    """In a fresh process: time one selector (and select_coreset) on the saved graph."""
    graph = load_graph(Path(spec["folder"]))
    scores = make_scores(graph.n, SEED)
    config = SelectionConfig(
        selector=spec["selector"], budget_fraction=FRACTION, diversity_weight=spec["lam"]
    )
    utility, eligible = combine_scores(scores, config)
    budget = budget_size(graph.n, FRACTION)
    select = SELECTORS[spec["selector"]]
    before = rss_mb()

    def run_selector() -> Any:
        return select(graph, utility, eligible, budget, config, np.random.default_rng(SEED))

    walls, cpus, picks = timed(run_selector, spec["repeats"])
    out: dict[str, Any] = {
        "seconds": walls,
        "cpu_seconds": cpus,
        "rss_before_mb": before,
        "peak_rss_mb": peak_rss_mb(),
    }
    if spec["with_coreset"]:
        walls, _, _ = timed(
            lambda: select_coreset(graph, scores, config, round_=0, seed=SEED), spec["repeats"]
        )
        out["select_coreset_seconds"] = walls
        out["select_coreset_peak_rss_mb"] = peak_rss_mb()
    if spec["selector"] == "facility_location":
        similarity = build_sparse_similarity(graph)
        out["objective"] = facility_location_objective(similarity, utility, picks, spec["lam"])
    return out


def measure_apricot(spec: dict[str, Any]) -> dict[str, Any]:
    """In a fresh process: apricot's lazy greedy on the saved sparse similarity."""
    from apricot import FacilityLocationSelection
    from scipy.sparse import csr_matrix

    folder = Path(spec["folder"])
    indptr = np.load(folder / "indptr.npy")
    cols, vals = np.load(folder / "cols.npy"), np.load(folder / "vals.npy")
    n = indptr.shape[0] - 1
    # apricot's sparse kernel is typed float64 data with int32 indices and indptr. scipy may
    # sort a row's indices in place, so it gets its own copies, never our arrays.
    matrix = csr_matrix(
        (vals.astype(np.float64), cols.copy(), indptr.astype(np.int32)), shape=(n, n)
    )
    budget = budget_size(n, FRACTION)

    def fit(size: int, data: Any) -> Any:
        return FacilityLocationSelection(size, metric="precomputed", optimizer="lazy").fit(data)

    tiny = csr_matrix(np.eye(100))  # apricot compiles its numba kernel on every fit
    fixed, _, _ = timed(lambda: fit(10, tiny), spec["repeats"])
    before = rss_mb()
    walls, cpus, selector = timed(lambda: fit(budget, matrix), spec["repeats"])
    out: dict[str, Any] = {"seconds": walls, "cpu_seconds": cpus, "fixed_seconds": fixed}
    out |= {"rss_before_mb": before, "peak_rss_mb": peak_rss_mb()}
    similarity = SparseSimilarity(indptr, cols, vals)
    utility = np.zeros(n, dtype=np.float32)
    ranking = np.asarray(selector.ranking, dtype=np.int64)
    out["objective"] = facility_location_objective(similarity, utility, ranking, 0.0)
    out["count"] = int(np.unique(ranking).shape[0])
    return out


def measure_hnsw(spec: dict[str, Any]) -> dict[str, Any]:
    """In a fresh process: build HnswNeighborIndex on clustered vectors, then the full graph."""
    from grace_selection.adapters.hnsw_index import HnswNeighborIndex

    n, dim, k = spec["n"], spec["dim"], spec["k"]
    vectors = make_clustered_vectors(n, dim, SEED)
    ids = np.arange(n, dtype=np.int64)
    before = rss_mb()
    wall = time.perf_counter()
    index = HnswNeighborIndex(dim, capacity=n)
    index.upsert(ids, vectors)
    build = time.perf_counter() - wall
    wall = time.perf_counter()
    graph = index.knn_graph(k)
    query = time.perf_counter() - wall
    peak = peak_rss_mb()  # before the recall check below allocates its own blocks
    # Recall@k of a sample of rows against exact search (the graph excludes self).
    rng = np.random.default_rng(SEED)
    rows = rng.choice(n, size=min(n, 1000), replace=False)
    hits = 0
    for block in np.array_split(rows, max(1, rows.shape[0] // 100)):
        sims = vectors[block] @ vectors.T  # (b, N)
        sims[np.arange(block.shape[0]), block] = -np.inf
        exact = np.argpartition(-sims, k, axis=1)[:, :k]
        hits += sum(
            len(set(exact[r].tolist()) & set(graph.neighbors[row].tolist()))
            for r, row in enumerate(block)
        )
    folder = Path(spec["folder"])  # the real graph, for the apricot comparison
    np.save(folder / "neighbors.npy", graph.neighbors)
    np.save(folder / "similarities.npy", graph.similarities)
    return {
        "build_seconds": build,
        "query_seconds": query,
        "recall_at_k": hits / (rows.shape[0] * k),
        "rss_before_mb": before,
        "peak_rss_mb": peak,
    }


MEASURES = {"selector": measure_selector, "apricot": measure_apricot, "hnsw": measure_hnsw}


def in_fresh_process(kind: str, spec: dict[str, Any]) -> dict[str, Any]:
    payload = json.dumps({"kind": kind, **spec})
    done = subprocess.run(
        [sys.executable, __file__, "--measure", payload],
        check=True,
        stdout=subprocess.PIPE,
        text=True,
    )
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def bench_size(n: int, k: int, repeats: int, baseline: bool, work: Path) -> list[dict[str, Any]]:
    log(f"n={n}: building the synthetic k-NN graph")
    graph = make_clustered_graph(n, k, SEED)
    folder = work / f"n{n}"
    folder.mkdir()
    np.save(folder / "neighbors.npy", graph.neighbors)
    np.save(folder / "similarities.npy", graph.similarities)
    budget = budget_size(n, FRACTION)
    rows = []
    for name in SELECTOR_ORDER:
        log(f"n={n}: {name}, {repeats} repeats")
        spec = {"folder": str(folder), "selector": name, "lam": 1.0, "repeats": repeats}
        got = in_fresh_process("selector", spec | {"with_coreset": True})
        row = {"n": n, "k": k, "budget": budget, "selector": name}
        row |= summarize(got, "seconds") | summarize(got, "cpu_seconds")
        row |= summarize(got, "select_coreset_seconds")
        row |= {
            key: got[key] for key in ("rss_before_mb", "peak_rss_mb", "select_coreset_peak_rss_mb")
        }
        if "objective" in got:
            row["objective_lambda_1"] = got["objective"]
        if baseline and name == "facility_location":
            row |= compare_with_apricot(graph, folder, repeats)
        log(f"n={n}: {name}: median {row['seconds_median']:.3f} s")
        rows.append(row)
    return rows


def compare_with_apricot(graph: KnnGraph, folder: Path, repeats: int) -> dict[str, Any]:
    similarity = build_sparse_similarity(graph)
    np.save(folder / "indptr.npy", similarity.indptr)
    np.save(folder / "cols.npy", similarity.cols)
    np.save(folder / "vals.npy", similarity.vals)
    log(f"n={graph.n}: facility location with lambda = 0 (the objective apricot maximises)")
    spec = {"folder": str(folder), "selector": "facility_location", "lam": 0.0}
    ours = in_fresh_process("selector", spec | {"repeats": repeats, "with_coreset": False})
    log(f"n={graph.n}: apricot FacilityLocationSelection, {repeats} repeats (slow)")
    theirs = in_fresh_process("apricot", {"folder": str(folder), "repeats": repeats})
    if theirs["count"] != budget_size(graph.n, FRACTION):
        raise RuntimeError(f"apricot returned {theirs['count']} distinct picks")
    ours_median = statistics.median(ours["seconds"])
    theirs_median = statistics.median(theirs["seconds"])
    return {
        "baseline": "apricot 0.6.1 FacilityLocationSelection(metric='precomputed', "
        "optimizer='lazy') on the same scipy CSR similarity",
        "baseline_seconds_median": theirs_median,
        "baseline_seconds": theirs["seconds"],
        "baseline_fixed_seconds_median": statistics.median(theirs["fixed_seconds"]),
        "baseline_peak_rss_mb": theirs["peak_rss_mb"],
        "same_objective_seconds_median": ours_median,
        "same_objective_seconds": ours["seconds"],
        "speedup": theirs_median / ours_median,
        "baseline_cpu_seconds_median": statistics.median(theirs["cpu_seconds"]),
        "same_objective_cpu_seconds_median": statistics.median(ours["cpu_seconds"]),
        "cpu_speedup": statistics.median(theirs["cpu_seconds"])
        / statistics.median(ours["cpu_seconds"]),
        "objective": ours["objective"],
        "baseline_objective": theirs["objective"],
        "objective_ratio": ours["objective"] / theirs["objective"],
    }


def bench_hnsw(args: argparse.Namespace, work: Path) -> list[dict[str, Any]]:
    """Time the HNSW graph build and query; then, on that real k-NN graph, facility location
    against apricot once more (a real graph's similarities are shaped unlike the synthetic's)."""
    if not args.hnsw_size:
        return []
    n = args.hnsw_size
    log(f"HNSW: build and all-points query at n={n}, d={args.hnsw_dim}")
    folder = work / f"hnsw{n}"
    folder.mkdir()
    spec = {"n": n, "dim": args.hnsw_dim, "k": args.k}
    row = spec | in_fresh_process("hnsw", spec | {"folder": str(folder)})
    log(f"HNSW: build {row['build_seconds']:.1f} s, query {row['query_seconds']:.1f} s")
    if not args.no_baseline:
        row["facility_location"] = compare_with_apricot(load_graph(folder), folder, args.repeats)
    return [row]


def summarize(got: dict[str, Any], key: str) -> dict[str, Any]:
    if key not in got:
        return {}
    return {f"{key}_median": statistics.median(got[key]), key: got[key]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="100000,1000000", help="comma-separated N values")
    parser.add_argument("--json", type=Path, required=False, help="write all results here")
    parser.add_argument(
        "--markdown", type=Path, help="write the results page here (default: JSON path, .md)"
    )
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--hnsw-size", type=int, default=100_000, help="0 skips the HNSW rows")
    parser.add_argument("--hnsw-dim", type=int, default=384)
    parser.add_argument("--no-baseline", action="store_true", help="skip apricot")
    parser.add_argument("--measure", help=argparse.SUPPRESS)  # internal: one fresh-process run
    args = parser.parse_args(argv)
    if args.measure:
        spec = json.loads(args.measure)
        print(json.dumps(MEASURES[spec.pop("kind")](spec)))
        return 0
    if args.json is None:
        parser.error("--json PATH is required")
    if args.repeats < 1:
        parser.error("--repeats must be >= 1")
    sizes = sorted(int(s) for s in args.sizes.split(","))
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="grace-selection-bench-") as tmp:
        for i, n in enumerate(sizes):
            rows += bench_size(n, args.k, args.repeats, not args.no_baseline and i == 0, Path(tmp))
        hnsw = bench_hnsw(args, Path(tmp))
    command = "python benchmarks/selection.py " + " ".join(sys.argv[1:] if argv is None else argv)
    result = {
        "command": command,
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "numpy": np.__version__,
            "load_average_at_end": os.getloadavg(),
        },
        "rows": rows,
        "hnsw": hnsw,
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=2) + "\n")
    log(f"wrote {args.json}")
    markdown = args.markdown or args.json.with_suffix(".md")
    write_markdown(result, markdown)
    log(f"wrote {markdown}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
