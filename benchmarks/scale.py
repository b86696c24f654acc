"""The sharded round on Ray against the one-process round: time and memory per part, quality.

    nice -n 15 python benchmarks/scale.py --sizes 100000,1000000 --shards 2 \
        --json docs/results/scale.json

For each size, clustered unit vectors (d = 64, `synthetic_graph.make_clustered_vectors`) and a
random utility are made once. Then:
- one-process (sizes up to --compare-max): a fresh Python process builds `HnswNeighborIndex`
  with all cores, queries every point for the k-NN graph and runs facility location
  (`select_facility_location`), the product's round path; it saves graph and picks.
- sharded: `select_sharded` with `RayShardedIndex` on a local Ray cluster (--cpus CPUs, one
  actor per shard, one CPU each): build, graph (fan-out and merge), parts (each shard's greedy),
  merge (RandGreeDi's merge round in the driver). Each actor reports its own seconds and its
  peak RSS after each part; the driver's RSS and the machine's memory in use (MemTotal -
  MemAvailable: the object store's shared copy counted once) are sampled every 50 ms, and
  their peaks kept per part.
Quality: both selections' facility-location objective on the one-process graph (and on the
sharded graph), their overlap, and recall@10 of both graphs against exact search on 1000 rows.
Both indexes use the same HNSW parameters. Progress goes to stderr.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make `benchmarks` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np
import numpy.typing as npt

from benchmarks.scale_report import write_markdown
from benchmarks.synthetic_graph import make_clustered_vectors
from grace_selection.adapters.hnsw_index import HnswNeighborIndex, HnswParams
from grace_selection.core.budget import budget_size
from grace_selection.core.config import SelectionConfig
from grace_selection.core.facility_location import (
    facility_location_objective,
    select_facility_location,
)
from grace_selection.core.graph import KnnGraph
from grace_selection.core.similarity import build_sparse_similarity

SEED = 0
DIM = 64
RECALL_ROWS = 1000


def log(message: str) -> None:
    print(f"[scale-bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def status_mb(field: str) -> float:
    """VmRSS or VmHWM of this process in MB (Linux)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    raise RuntimeError(f"no {field} in /proc/self/status; this benchmark needs Linux")


def machine_used_mb() -> float:
    """Memory in use on the whole machine (MemTotal - MemAvailable), in MB: shared memory (the
    object store) counted once, unlike a sum of the processes' RSS."""
    fields: dict[str, int] = {}
    with open("/proc/meminfo") as f:
        for line in f:
            name, value = line.split(":", 1)
            fields[name] = int(value.split()[0])
    return (fields["MemTotal"] - fields["MemAvailable"]) / 1024


class PeakSampler:
    """The driver's RSS and the machine's memory in use, sampled every 50 ms while a part runs:
    the peak of each over any span of the run (`peak`), by wall-clock bounds."""

    def __init__(self, baseline_machine_mb: float) -> None:
        self.samples: list[tuple[float, float, float]] = []  # (time, driver rss, machine used)
        self.baseline_machine_mb = baseline_machine_mb
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while True:
            self.samples.append((time.perf_counter(), status_mb("VmRSS"), machine_used_mb()))
            if self._stop.wait(0.05):
                return

    def peak(self, start: float, stop: float) -> tuple[float, float]:
        """(driver RSS, machine used) peaks over samples taken in [start, stop]."""
        inside = [s for s in self.samples if start <= s[0] <= stop] or self.samples[-1:]
        return max(s[1] for s in inside), max(s[2] for s in inside)

    def close(self) -> None:
        self._stop.set()
        self._thread.join()


def make_inputs(n: int) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.float32]]:
    vectors = make_clustered_vectors(n, DIM, SEED)
    utility = np.random.default_rng([SEED, 1]).random(n).astype(np.float32)
    return vectors, utility


def run_single(n: int, out: Path, params: HnswParams, config: SelectionConfig) -> None:
    """The one-process path, in its own process so that its peak RSS is its own."""
    vectors, utility = make_inputs(n)
    base = status_mb("VmRSS")
    seconds: dict[str, float] = {}
    cpu: dict[str, float] = {}
    started, began = time.perf_counter(), time.process_time()
    index = HnswNeighborIndex.rebuild(np.arange(n, dtype=np.int64), vectors, params)
    seconds["build"], cpu["build"] = time.perf_counter() - started, time.process_time() - began
    started, began = time.perf_counter(), time.process_time()
    graph = index.knn_graph(config.k)
    seconds["graph"], cpu["graph"] = time.perf_counter() - started, time.process_time() - began
    peak_graph = status_mb("VmHWM")
    del index
    budget = budget_size(n, config.budget_fraction)
    eligible = np.ones(n, dtype=np.bool_)
    started, began = time.perf_counter(), time.process_time()
    picks = select_facility_location(
        graph, utility, eligible, budget, config, np.random.default_rng([SEED, 0])
    )
    seconds["select"], cpu["select"] = time.perf_counter() - started, time.process_time() - began
    np.save(out / "neighbors.npy", graph.neighbors)
    np.save(out / "similarities.npy", graph.similarities)
    np.save(out / "picks.npy", np.sort(picks))
    memory = {"inputs_mb": base, "peak_graph_mb": peak_graph, "peak_mb": status_mb("VmHWM")}
    (out / "single.json").write_text(
        json.dumps({"seconds": seconds, "cpu_seconds": cpu, "memory": memory})
    )


def recall_at_k(
    graph: KnnGraph, vectors: npt.NDArray[np.float32], rows: npt.NDArray[np.int64]
) -> float:
    """Share of the exact k nearest (self excluded) that the graph lists, over `rows`."""
    # A few rows at a time: (rows, N) similarities at 10M are 40 MB a row.
    block = max(1, 2**28 // (4 * vectors.shape[0]))
    found = 0
    for start in range(0, rows.size, block):
        chunk = rows[start : start + block]
        sims = vectors[chunk] @ vectors.T  # (block, N)
        sims[np.arange(chunk.size), chunk] = -np.inf
        exact = np.argpartition(-sims, graph.k - 1, axis=1)[:, : graph.k]
        found += int((graph.neighbors[chunk][:, :, None] == exact[:, None, :]).any(axis=2).sum())
    return found / (rows.size * graph.k)


def run_sharded(
    vectors: npt.NDArray[np.float32],
    utility: npt.NDArray[np.float32],
    shards: int,
    params: HnswParams,
    config: SelectionConfig,
    baseline_machine_mb: float,
) -> tuple[Any, dict[str, Any]]:
    from grace_selection.adapters.ray_shards import RayShardedIndex
    from grace_selection.service.sharded_round import select_sharded

    sampler = PeakSampler(baseline_machine_mb)
    cpu = time.process_time()
    index = RayShardedIndex(DIM, shards, params, cpus_per_shard=1.0)
    try:
        began = time.perf_counter()
        outcome = select_sharded(
            index, vectors, utility, np.ones(vectors.shape[0], np.bool_), config, SEED
        )
        ended = time.perf_counter()
        driver_cpu = time.process_time() - cpu
        reports = index.reports()
    finally:
        index.close()
        sampler.close()
    # select_sharded times its parts one after another: their wall-clock spans, in order.
    spans: dict[str, tuple[float, float]] = {}
    at = began
    for name, seconds in outcome.seconds.items():
        spans[name] = (at, at + seconds)
        at += seconds
    driver, machine = sampler.peak(began, ended)
    by_part = {name: sampler.peak(*span) for name, span in spans.items()}
    baseline = sampler.baseline_machine_mb
    memory = {
        "driver_peak_mb": driver,
        "machine_peak_mb": machine - baseline,
        "driver_peak_mb_by_part": {p: peaks[0] for p, peaks in by_part.items()},
        "machine_peak_mb_by_part": {p: peaks[1] - baseline for p, peaks in by_part.items()},
        "actor_peak_mb": [r["peak_rss_mb"] for r in reports],
        "actor_peak_mb_by_part": {
            p: [r.get(p + "_peak_mb", 0.0) for r in reports] for p in ("load", "query", "select")
        },
        "object_store_vectors_mb": vectors.nbytes / 2**20,
    }
    parts = ("load", "query", "select")
    actor_seconds = {key: [r.get(key, 0.0) for r in reports] for key in parts}
    actor_cpu = {key: [r.get(key + "_cpu", 0.0) for r in reports] for key in parts}
    return outcome, {
        "seconds": outcome.seconds,
        "driver_cpu_seconds": driver_cpu,
        "actor_seconds": actor_seconds,
        "actor_cpu_seconds": actor_cpu,
        "memory": memory,
    }


def measure(n: int, args: argparse.Namespace, params: HnswParams) -> dict[str, Any]:
    config = SelectionConfig(selector="facility_location", k=args.k, budget_fraction=0.1)
    row: dict[str, Any] = {"n": n, "d": DIM, "shards": args.shards, "k": args.k}
    single_dir: Path | None = None
    if n <= args.compare_max:
        single_dir = Path(tempfile.mkdtemp(prefix="scale-single-"))
        log(f"n={n}: one-process round")
        command = [sys.executable, __file__, "--single", str(n), "--out", str(single_dir)]
        command += ["--k", str(args.k), "--ef-construction", str(params.ef_construction)]
        subprocess.run(command, check=True)
        row["single"] = json.loads((single_dir / "single.json").read_text())
    # Machine memory is counted from before the inputs exist: the service holds the vectors too.
    baseline = machine_used_mb()
    vectors, utility = make_inputs(n)
    log(f"n={n}: sharded round on {args.shards} Ray actors")
    outcome, row["sharded"] = run_sharded(vectors, utility, args.shards, params, config, baseline)
    log(f"n={n}: sharded {row['sharded']['seconds']}")
    rows = np.random.default_rng([SEED, 2]).choice(n, size=min(RECALL_ROWS, n), replace=False)
    row["sharded"]["recall_at_10"] = recall_at_k(outcome.graph, vectors, rows)
    row["sharded"]["source"] = outcome.selection.source
    row["seconds_sharded"] = sum(outcome.seconds.values())
    if single_dir is not None:
        graph = KnnGraph(
            np.load(single_dir / "neighbors.npy"), np.load(single_dir / "similarities.npy")
        )
        single_picks = np.load(single_dir / "picks.npy")
        row["single"]["recall_at_10"] = recall_at_k(graph, vectors, rows)
        row["seconds_single"] = sum(row["single"]["seconds"].values())
        weight = config.diversity_weight
        picks = outcome.selection.picks
        for name, on in (
            ("objective_ratio", graph),
            ("objective_ratio_sharded_graph", outcome.graph),
        ):
            similarity = build_sparse_similarity(on)
            ours = facility_location_objective(similarity, utility, picks, weight)
            theirs = facility_location_objective(similarity, utility, single_picks, weight)
            row[name] = ours / theirs
        row["overlap"] = np.intersect1d(picks, single_picks).size / single_picks.size
        row["time_ratio"] = row["seconds_sharded"] / row["seconds_single"]
    else:
        row["objective_ratio"] = None
    return row


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="100000,1000000")
    parser.add_argument("--shards", type=int, default=2)
    parser.add_argument("--cpus", type=int, default=2, help="CPUs of the local Ray cluster")
    parser.add_argument("--compare-max", type=int, default=1_000_000)
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--ef-construction", type=int, default=100)
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--nice", type=int, default=15, help="priority increment of the work")
    parser.add_argument(
        "--append", action="store_true", help="keep the rows of --json of other sizes"
    )
    parser.add_argument("--single", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    params = HnswParams(m=16, ef_construction=args.ef_construction, ef_search=64)
    if args.single:
        config = SelectionConfig(selector="facility_location", k=args.k, budget_fraction=0.1)
        run_single(args.single, args.out, params, config)
        return 0
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    import ray

    # Ray's own processes start at this process's priority (its raylet must register within
    # 30 s, which a starved nice-15 raylet misses on a busy machine); the work then runs at
    # --nice: this process and the subprocess it starts lower themselves, and so does every
    # Ray worker through its setup hook.
    nice = args.nice
    runtime_env = {"worker_process_setup_hook": lambda: os.nice(nice)}
    for attempt in range(4):
        try:
            ray.init(
                address="local",
                num_cpus=args.cpus,
                num_gpus=0,
                include_dashboard=False,
                runtime_env=runtime_env,
            )
            os.nice(nice)
            break
        except Exception as exc:  # Ray raises a bare Exception for this timeout
            log(f"ray.init failed ({exc}); attempt {attempt + 1} of 4")
            ray.shutdown()
    else:
        raise RuntimeError("the local Ray cluster did not start")
    command = "python " + " ".join(["benchmarks/scale.py", *(argv or sys.argv[1:])])
    kept: list[dict[str, Any]] = []
    if args.append and args.json is not None and args.json.exists():
        kept = json.loads(args.json.read_text())["rows"]
    try:
        for n in args.sizes.split(","):
            row = measure(int(n), args, params)
            row["command"] = command
            # Written after every size: a long run that is stopped keeps what it measured.
            kept = [r for r in kept if (r["n"], r["shards"]) != (row["n"], row["shards"])]
            kept.append(row)
            save(kept, args.json, params)
    finally:
        ray.shutdown()
    return 0


def save(rows: list[dict[str, Any]], path: Path | None, params: HnswParams) -> None:
    document = {
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, shared with other jobs",
        "hnsw": {"m": params.m, "ef_construction": params.ef_construction, "ef_search": 64},
        "rows": sorted(rows, key=lambda r: (r["n"], r["shards"])),
    }
    text = json.dumps(document, indent=1)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text + "\n")
        write_markdown(document, path.with_suffix(".md"))
    print(text, flush=True)


if __name__ == "__main__":
    sys.exit(main())
