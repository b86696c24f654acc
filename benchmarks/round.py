"""A whole round through the service's own code path, and its graph upkeep against peers.

    nice -n 15 python benchmarks/round.py --sizes 100000 \\
        --keepers product,product-f16,before,hnswlib,faiss-hnsw,faiss-ivf,pynndescent \\
        --json docs/results/round.json --markdown docs/results/round.md

Every (keeper, n) runs in a fresh process, one after the other in one invocation, so that the
peak RSS (VmHWM, reset before each round through /proc/self/clear_refs) belongs to it alone.
The job's state is the service's `JobArrays`, fed the service's batches.
- `product`: `step_round` with a `GraphKeeper` over `HnswNeighborIndex` (the round runner's
  path), then the round's arrays published to a `LocalScoreStore`; the keeper drops the
  build's index and the graph searches itself. `product-index` keeps the index
  (GRACE_GRAPH_KEEP_INDEX=true), `product-f16` stores GRACE_GRAPH_VECTORS=float16 and
  `product-parts1` builds with one index (GRACE_GRAPH_BUILD_PARTS=1; the default is two in
  turn); `product-pass` sets GRACE_GRAPH_RECALL_TARGET=1, so that every later round runs the
  passes over every row (their time and peak memory); `product-f16-pass` is both.
  `before`: the same path with the graph keeper and HNSW index of the commit this work started
  from (loaded from git), which rebuilds when more than 6% of N drifted beyond tau.
- peers (round_peers.py): only their graph upkeep is timed, over the same changes.
Data: clustered low-rank embeddings (200 centres in a 32-d latent space, mapped to d by a
random matrix, plus isotropic noise of 0.5 per dimension), unit-normalised; scores as in
benchmarks/synthetic_graph.make_scores. A later round re-embeds rho = 0.3 of N: each chosen
vector v becomes v + s g / sqrt(d), g standard normal, s uniform in [0.2, 0.6], so its cosine
distance to v is about s^2 / 2, 0.02-0.17 (median ~0.08); with tau = 0.1 about 40% of the
re-embedded rows drift beyond tau, 12% of N, past the old keeper's 6% rebuild share as in
the issue's 30k run. recall_at_10: against exact search over the current embeddings for 1000
random rows. Parts: graph upkeep; estimation, selection and planning timed by wrapping the
functions `compute_round` calls (the product's code runs unchanged); publish.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import types
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

if __package__ in (None, ""):  # run as a script: make `benchmarks` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np
import numpy.typing as npt

from benchmarks.round_peers import PEERS
from benchmarks.round_report import save_results, write_markdown
from grace_selection.adapters.local_store import LocalScoreStore
from grace_selection.adapters.store_records import StoredRound
from grace_selection.api.app import make_index_factory
from grace_selection.core import rounds as core_rounds
from grace_selection.core.config import SelectionConfig
from grace_selection.service.batches import EmbeddingBatch, ScoreBatch
from grace_selection.service.graph_keeper import GraphKeeper
from grace_selection.service.keeper_types import IndexFactory
from grace_selection.service.resources import release_free_memory
from grace_selection.service.round_step import step_round
from grace_selection.service.state import JobArrays

DIM, K, RHO, SEED = 384, 10, 0.3, 0
BASE_COMMIT = "a1b045a"  # the keeper before incremental refresh
F32 = npt.NDArray[np.float32]
I64 = npt.NDArray[np.int64]


def log(message: str) -> None:
    print(f"[round-bench] {message}", file=sys.stderr, flush=True)


def make_vectors(n: int, rng: np.random.Generator) -> F32:
    centres = 2.0 * rng.standard_normal((200, 32)).astype(np.float32)
    mixing = rng.standard_normal((32, DIM)).astype(np.float32)
    out = np.empty((n, DIM), np.float32)
    for lo in range(0, n, 65536):
        hi = min(n, lo + 65536)
        latent = centres[rng.integers(0, 200, hi - lo)] + rng.standard_normal((hi - lo, 32))
        out[lo:hi] = latent.astype(np.float32) @ mixing
        out[lo:hi] += 0.5 * rng.standard_normal((hi - lo, DIM)).astype(np.float32)
        out[lo:hi] /= np.linalg.norm(out[lo:hi], axis=1, keepdims=True)
    return out


# --drift: "modelled" is the harsh drift above; "finetune" reproduces what
# docs/results/embedding_drift.md measured on the fine-tuning task once the keeper has taken
# out the move all re-embedded rows share: cosine distance median ~0.017, p90 ~0.04 (s^2 / 2
# with s lognormal around 0.184, sigma 0.336). The shared move itself is left out here: exact
# search over the raw stored vectors, the recall check's reference, would not take it out.
def drift(old: F32, rng: np.random.Generator, mode: str) -> F32:
    if mode == "finetune":
        scale = (0.184 * np.exp(0.336 * rng.standard_normal((old.shape[0], 1)))).astype(np.float32)
    else:
        scale = rng.uniform(0.2, 0.6, size=(old.shape[0], 1)).astype(np.float32)
    new = old + scale * rng.standard_normal(old.shape).astype(np.float32) / np.sqrt(DIM)
    out: F32 = new / np.linalg.norm(new, axis=1, keepdims=True)
    return out


def recall_at_10(
    neighbors: npt.NDArray[Any], vectors: npt.NDArray[np.floating] | None, sample: I64
) -> float:
    assert vectors is not None
    truth = np.empty((sample.size, K), np.int64)
    for lo in range(0, sample.size, 100):
        rows = sample[lo : lo + 100]
        sims = vectors[rows].astype(np.float32) @ vectors.T  # (100, N)
        sims[np.arange(rows.size), rows] = -np.inf
        truth[lo : lo + rows.size] = np.argpartition(-sims, K - 1, axis=1)[:, :K]
    hits = [np.intersect1d(truth[i], neighbors[s][:K]).size for i, s in enumerate(sample)]
    return float(np.sum(hits)) / (K * sample.size)


def peak_rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def reset_peak() -> None:
    with contextlib.suppress(OSError):  # not Linux: the peak then spans the whole process
        Path("/proc/self/clear_refs").write_text("5")


def load_before() -> IndexFactory:
    """The GraphKeeper-compatible factory of BASE_COMMIT's HNSW index, and its keeper class."""
    root = Path(__file__).resolve().parents[1]
    path = "services/selection/grace_selection/{}.py"
    modules = {}
    for name in ("adapters/hnsw_index", "service/graph_keeper"):
        source = subprocess.run(
            ["git", "-C", str(root), "show", f"{BASE_COMMIT}:{path.format(name)}"],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
        module = types.ModuleType(f"before_{name.replace('/', '_')}")
        sys.modules[module.__name__] = module  # dataclasses look their module up there
        exec(compile(source, f"{BASE_COMMIT}:{name}", "exec"), module.__dict__)
        modules[name] = module
    index_cls = modules["adapters/hnsw_index"].HnswNeighborIndex
    globals()["BeforeKeeper"] = modules["service/graph_keeper"].GraphKeeper
    return IndexFactory("hnsw", index_cls, index_cls.load)


class PartTimer:
    """Times the functions compute_round calls by wrapping them in core.rounds' namespace."""

    NAMES: ClassVar[dict[str, str]] = {
        "estimate_stale_scores": "estimation",
        "select_coreset": "selection",
        "plan_rescore": "planning",
    }

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        for name, part in self.NAMES.items():
            setattr(core_rounds, name, self._wrap(getattr(core_rounds, name), part))

    def _wrap(self, fn: Callable[..., Any], part: str) -> Callable[..., Any]:
        def timed(*args: Any, **kwargs: Any) -> Any:
            start = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                self.seconds[part] = self.seconds.get(part, 0.0) + time.perf_counter() - start

        return timed


def run_one(keeper_name: str, n: int, rounds: int, drift_mode: str) -> list[dict[str, Any]]:
    rng = np.random.default_rng(SEED)
    # The product's keepers hold the job's matrix as their vectors, as in the service.
    shared = keeper_name.startswith("product")
    half = keeper_name in ("product-f16", "product-f16-pass")
    matrix_dtype = "float16" if half else "float32"
    arrays = JobArrays(n, DIM, shared=shared, matrix_dtype=matrix_dtype)
    ids = np.arange(n, dtype=np.int64)
    arrays.apply(EmbeddingBatch("e0", 0, ids, make_vectors(n, rng), b""), 1)
    importance = rng.gamma(2.0, size=n).astype(np.float32)
    loss = rng.lognormal(size=n).astype(np.float32)
    arrays.apply(ScoreBatch("s0", "worker", 0, 0, ids, loss, importance, b""), 2)
    raw_mb = n * DIM * 4 / 2**20  # the raw float32 vectors, whatever the job stores
    sample = np.sort(rng.choice(n, size=min(n, 1000), replace=False))
    config = SelectionConfig(k=K, rescore_fraction=RHO)
    folder = tempfile.TemporaryDirectory(prefix="grace-round-bench-")
    store = LocalScoreStore(Path(folder.name) / "store")
    store.create_job("bench", b"{}")
    keeper: Any = None
    peer: Any = None
    if keeper_name in PEERS:
        warm_up = getattr(PEERS[keeper_name], "warm_up", None)
        if warm_up is not None:
            warm_up()  # numba compiles on first use: not part of any round
        reset_peak()
        load, cpu = os.getloadavg()[0], time.process_time()
        start = time.perf_counter()
        peer = PEERS[keeper_name](arrays.embeddings, K)
        seconds = time.perf_counter() - start
        cpu = time.process_time() - cpu
        results = [_peer_row(keeper_name, n, 0, seconds, peer.nb, arrays, sample, raw_mb)]
        results[0]["parts"].update(cpu=round(cpu, 3), load=round(load, 2))
    else:
        timer = PartTimer()
        if keeper_name == "before":
            factory = load_before()
            keeper = globals()["BeforeKeeper"](n, DIM, factory, Path(folder.name) / "g")
        else:
            factory = make_index_factory(
                "hnsw",
                vector_dtype=matrix_dtype,
                keep_index=keeper_name == "product-index",
                build_parts=1 if keeper_name == "product-parts1" else 0,
                # Every later round runs the passes over every row (their peak).
                recall_target=1.0 if keeper_name.endswith("-pass") else 0.92,
            )
            keeper = GraphKeeper(n, DIM, factory, Path(folder.name) / "g")
        previous = np.full(n, np.nan, np.float32)
        results = []
    seq = 2
    for r in range(rounds + 1):
        if r > 0:
            changed = np.sort(rng.choice(n, size=int(RHO * n), replace=False))
            assert arrays.embeddings is not None
            new = drift(arrays.embeddings[changed].astype(np.float32), rng, drift_mode)
            fresh = rng.gamma(2.0, size=changed.size).astype(np.float32)
            seq += 1
            arrays.apply(EmbeddingBatch(f"e{r}", r, changed, new, b""), seq)
            # The benchmark's own scratch: the service drops a batch once it is applied.
            del new
            seq += 1
            arrays.apply(ScoreBatch(f"s{r}", "worker", r, 0, changed, None, fresh, b""), seq)
            if peer is not None:
                reset_peak()
                load, cpu = os.getloadavg()[0], time.process_time()
                start = time.perf_counter()
                nb = peer.update(changed, arrays.embeddings)
                seconds = time.perf_counter() - start
                cpu = time.process_time() - cpu
                row = _peer_row(keeper_name, n, r, seconds, nb, arrays, sample, raw_mb)
                row["parts"].update(cpu=round(cpu, 3), load=round(load, 2))
                results.append(row)
        if peer is None:
            # The service trims the allocator after each round; the benchmark's own scratch
            # (the drifted rows it made) is not the product's.
            release_free_memory()
            rest = rss_mb()
            reset_peak()
            timer.seconds.clear()
            load, cpu = os.getloadavg()[0], time.process_time()
            start = time.perf_counter()
            outcome = step_round(arrays, keeper, config, previous, round_=r, seed=SEED)
            publish_start = time.perf_counter()
            _publish(store, r, outcome)
            seconds = time.perf_counter() - start
            cpu = time.process_time() - cpu
            previous = outcome.result.importance
            update = outcome.update
            parts = {
                "graph": outcome.graph_seconds,
                **timer.seconds,
                "publish": time.perf_counter() - publish_start,
                "graph_rebuilt": bool(update is not None and update.rebuilt),
                "graph_requeried": 0 if update is None else update.requeried,
                "graph_joined": getattr(update, "joined", 0),
                # The keeper's own sampled recall check (None on a build, or before it existed).
                "graph_recall_sampled": getattr(update, "recall", None),
                # CPU seconds of the round (all threads) and the 1-minute load average when it
                # began: the machine is shared, so wall time alone overstates a loaded run.
                "cpu": cpu,
                "load": load,
            }
            peak = peak_rss_mb()  # before the recall check's own scratch
            recall = recall_at_10(outcome.graph.neighbors, arrays.embeddings, sample)
            # Resident: before the round (the job at rest, with the rows that wait for it)
            # and after it, once the round's copies are dropped and the allocator trimmed, as
            # the service does after publishing.
            del outcome, update
            release_free_memory()
            parts.update(rss_before_mb=rest, rss_after_mb=rss_mb())
            results.append(_row(keeper_name, n, r, seconds, recall, parts, raw_mb, peak))
        log(f"{keeper_name} n={n} round {r}: {results[-1]}")
    folder.cleanup()
    return [{**row, "drift": drift_mode} for row in results]


def _publish(store: LocalScoreStore, r: int, outcome: Any) -> None:
    result = outcome.result
    arrays = {
        "indices": result.coreset.indices,
        "rescore": result.rescore_plan,
        "importance": result.importance,
        "estimated": result.estimated.astype(np.uint8),
        "loss": outcome.inputs.scores.loss,
    }
    if result.coreset.weights is not None:
        arrays["weights"] = result.coreset.weights
    store.publish_round("bench", StoredRound(r, json.dumps({"round": r}).encode(), arrays))


def _peer_row(
    name: str, n: int, r: int, seconds: float, nb: Any, arrays: JobArrays, sample: I64, raw: float
) -> dict[str, Any]:
    assert arrays.embeddings is not None
    peak = peak_rss_mb()  # before the recall check's own scratch
    recall = recall_at_10(nb, arrays.embeddings, sample)
    return _row(name, n, r, seconds, recall, {"graph": seconds}, raw, peak)


def _row(
    name: str,
    n: int,
    r: int,
    seconds: float,
    recall: float,
    parts: dict[str, Any],
    raw: float,
    peak: float,
) -> dict[str, Any]:
    return {
        "keeper": name,
        "n": n,
        "round": r,
        "seconds": round(seconds, 3),
        "recall_at_10": round(recall, 4),
        "parts": {k: round(v, 3) if isinstance(v, float) else v for k, v in parts.items()},
        "peak_rss_mb": round(peak, 1),
        "raw_vectors_mb": round(raw, 1),
    }


def summarise(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per (keeper, n): the round-0 row, and a 'later' row with medians over rounds >= 1."""
    out: list[dict[str, Any]] = []
    for key in dict.fromkeys(_key(row) for row in rows):
        mine = [row for row in rows if _key(row) == key]
        for label, group in (("0", mine[:1]), ("later", mine[1:])):
            if not group:
                continue
            parts = {
                part: round(statistics.median(float(row["parts"][part]) for row in group), 3)
                for part in group[0]["parts"]
                if all(row["parts"].get(part) is not None for row in group)
            }
            out.append(
                {
                    "keeper": key[0],
                    "n": key[1],
                    "drift": key[2],
                    "round": 0 if label == "0" else "later",
                    "rounds": [row["round"] for row in group],
                    "seconds_median": round(statistics.median(r["seconds"] for r in group), 3),
                    "recall_at_10": min(r["recall_at_10"] for r in group),
                    "recall_by_round": [r["recall_at_10"] for r in group],
                    "parts": parts,
                    "peak_rss_mb": max(r["peak_rss_mb"] for r in group),
                    "raw_vectors_mb": group[0]["raw_vectors_mb"],
                }
            )
    return out


def _key(row: dict[str, Any]) -> tuple[str, int, str]:
    """Rows made before --drift existed had the modelled drift."""
    return row["keeper"], row["n"], row.get("drift", "modelled")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="100000")
    parser.add_argument(
        "--keepers",
        default="product,product-index,product-f16,product-parts1,before," + ",".join(PEERS),
    )
    parser.add_argument("--rounds", type=int, default=3, help="later rounds after round 0")
    parser.add_argument("--json", type=Path, default=Path("docs/results/round.json"))
    parser.add_argument("--markdown", type=Path, default=Path("docs/results/round.md"))
    parser.add_argument("--merge", action="store_true", help="keep other rows already there")
    parser.add_argument(
        "--drift",
        choices=("modelled", "finetune"),
        default="modelled",
        help="how re-embedded rows move: the harsh modelled drift, or the fine-tuning task's",
    )
    parser.add_argument("--one", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        keeper_name, n = args.one.split(":")
        print(json.dumps(run_one(keeper_name, int(n), args.rounds, args.drift)))
        return
    rows: list[dict[str, Any]] = []
    for n in (int(size) for size in args.sizes.split(",")):
        for name in args.keepers.split(","):
            command = [sys.executable, __file__, "--one", f"{name}:{n}"]
            command += ["--rounds", str(args.rounds), "--drift", args.drift]
            done = subprocess.run(command, capture_output=True, text=True)
            sys.stderr.write(done.stderr)
            done.check_returncode()
            rows += json.loads(done.stdout.strip().splitlines()[-1])
    summary = summarise(rows)
    if args.merge and args.json.exists():
        mine = {_key(row) for row in summary}
        old = json.loads(args.json.read_text())
        summary = [r for r in old["rows"] if _key(r) not in mine] + summary
        rows = [r for r in old["rounds"] if _key(r) not in mine] + rows
    commands = [f"nice -n {os.nice(0)} python benchmarks/round.py " + " ".join(sys.argv[1:])]
    if args.merge and args.json.exists():
        old_commands = json.loads(args.json.read_text())["command"]
        commands = ([old_commands] if isinstance(old_commands, str) else old_commands) + commands
    document = {
        "command": commands,
        "machine": f"{os.cpu_count()} cores",
        "rows": summary,
        "rounds": rows,
    }
    save_results(document, args.json, args.markdown, write_markdown)


if __name__ == "__main__":
    main()
