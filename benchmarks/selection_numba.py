"""A whole `compute_round` at 100k and 1M samples, numba kernels against the numpy fallback.

    python benchmarks/selection_numba.py --sizes 100000,1000000 \
        --json docs/results/selection_numba.json

writes the JSON and, next to it, the markdown page (docs/results/selection_numba.md); with
`--update` the rows of the sizes run now replace those of an existing JSON, so that sizes can be
measured by separate commands.

The input is the synthetic clustered k-NN graph of `benchmarks/synthetic_graph.py` (k = 10) and a
later round (round 3): 5% of samples never scored, 30% re-scored since the last round, the
rest estimated (the default `delta` rule), defaults everywhere else (10% budget, weights on).
Each (size, selector, path) runs in a fresh process so that no run warms another's caches:

- `numba`: the kernels, with GRACE_NUMBA=1. The JIT is timed apart: `compile_seconds` is the
  first round on a tiny graph with an empty numba cache (what a new install pays once);
  `cache_load_seconds` the same in a second process that finds the cache (what every later
  process pays); both include importing numba.
- `numpy`: the fallback, GRACE_NUMBA=0 (same picks as `numba`, checked here by digest).
- `stochastic`: facility location only, GRACE_NUMBA=0 with the previous product's selector,
  the batched stochastic greedy (`maximize_facility_location`), for its time and objective.

`seconds` is the wall time of `compute_round`; `selector_seconds` of the selector call alone
(graph and utility in, ids out). CPU seconds are given too: the machine is shared, and CPU time
is the steadier of the two. Progress goes to stderr.
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

from benchmarks.selection import timed
from benchmarks.synthetic_graph import make_clustered_graph, make_scores

SEED = 0
ROUND = 3
SELECTORS = ("graph_message_passing", "facility_location")
# The goals for a whole round at 1M on this machine.
GOAL_SECONDS_AT_1M = {"graph_message_passing": 1.0, "facility_location": 3.0}
NAMES = {"graph_message_passing": "message passing", "facility_location": "facility location"}


def log(message: str) -> None:
    print(f"[numba-bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def round_inputs(n: int) -> tuple[Any, Any, Any]:
    """A later round's scores, previous importance and fresh mask for N samples."""
    from grace_selection.core import ScoreTable

    rng = np.random.default_rng(SEED + 7)
    base = make_scores(n, SEED)
    fresh = rng.random(n) < 0.3
    previous = (base.importance * rng.uniform(0.5, 2.0, n)).astype(np.float32)
    scored = np.where(fresh, ROUND - 1, rng.integers(0, ROUND - 1, n))
    scored[~np.isfinite(base.importance)] = -1
    scores = ScoreTable.from_arrays(base.loss, base.importance, scored)
    return scores, previous, fresh


def stochastic_selector(
    graph: Any, utility: Any, eligible: Any, budget: int, config: Any, rng: Any
) -> Any:
    """The facility-location selector before the lazy exact greedy: batched stochastic greedy."""
    from grace_selection.core.facility_location import maximize_facility_location
    from grace_selection.core.similarity import build_sparse_similarity

    return maximize_facility_location(
        build_sparse_similarity(graph),
        utility,
        eligible,
        budget,
        importance_weight=config.diversity_weight,
        epsilon=config.stochastic_epsilon,
        rng=rng,
    )


def measure(spec: dict[str, Any]) -> dict[str, Any]:
    """In a fresh process (GRACE_NUMBA set by the parent): time one selector's rounds."""
    from grace_selection.core import KnnGraph, ScoreTable, SelectionConfig, selectors
    from grace_selection.core.budget import budget_size
    from grace_selection.core.facility_location import facility_location_objective
    from grace_selection.core.importance import combine_scores
    from grace_selection.core.rounds import compute_round
    from grace_selection.core.similarity import build_sparse_similarity

    config = SelectionConfig(selector=spec["selector"])
    if spec["path"] == "stochastic":
        # The previous product's facility location, for its time and objective.
        selectors.SELECTORS = {**selectors.SELECTORS, "facility_location": stochastic_selector}

    out: dict[str, Any] = {}
    if spec.get("warm_up_n"):
        tiny = make_clustered_graph(spec["warm_up_n"], 10, SEED)
        inputs = round_inputs(tiny.n)
        wall = time.perf_counter()
        compute_round(tiny, *inputs, config, round_=ROUND, seed=SEED)
        out["warm_up_seconds"] = time.perf_counter() - wall
        if spec.get("warm_up_only"):
            return out
    folder = Path(spec["folder"])
    graph = KnnGraph(np.load(folder / "neighbors.npy"), np.load(folder / "similarities.npy"))
    scores, previous, fresh = round_inputs(graph.n)

    def one_round() -> Any:
        return compute_round(graph, scores, previous, fresh, config, round_=ROUND, seed=SEED)

    walls, cpus, result = timed(one_round, spec["repeats"])
    out |= {"seconds": walls, "cpu_seconds": cpus, "digest": result.coreset.digest}
    out["indices_sha256"] = result.coreset.indices_sha256()
    # The selector alone, on the utility this round selected with.
    table = ScoreTable(
        loss=scores.loss, importance=result.importance, scored_round=scores.scored_round
    )
    utility, eligible = combine_scores(table, config)
    budget = budget_size(graph.n, config.budget_fraction)
    select = selectors.SELECTORS[spec["selector"]]
    walls, cpus, picks = timed(
        lambda: select(graph, utility, eligible, budget, config, np.random.default_rng(SEED)),
        spec["repeats"],
    )
    out |= {"selector_seconds": walls, "selector_cpu_seconds": cpus}
    if spec["selector"] == "facility_location":
        similarity = build_sparse_similarity(graph)
        out["objective"] = facility_location_objective(
            similarity, utility, picks, config.diversity_weight
        )
    return out


def in_fresh_process(spec: dict[str, Any], env: dict[str, str]) -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, __file__, "--measure", json.dumps(spec)],
        check=True,
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, **env},
    )
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def measure_jit(work: Path) -> dict[str, Any]:
    """Compile time with an empty cache, then the cache load of a later process."""
    env = {"GRACE_NUMBA": "1", "NUMBA_CACHE_DIR": str(work / "numba-cache")}
    out: dict[str, Any] = {}
    for selector in SELECTORS:
        spec = {"selector": selector, "path": "numba", "warm_up_n": 2000, "warm_up_only": True}
        compile_ = in_fresh_process(spec, env)["warm_up_seconds"]
        load = in_fresh_process(spec, env)["warm_up_seconds"]
        out[selector] = {"compile_seconds": compile_, "cache_load_seconds": load}
        log(f"JIT {selector}: compile {compile_:.2f} s, cache load {load:.2f} s")
    return out


def bench_size(n: int, repeats: int, slow_repeats: int, work: Path) -> list[dict[str, Any]]:
    log(f"n={n}: building the synthetic k-NN graph")
    graph = make_clustered_graph(n, 10, SEED)
    folder = work / f"n{n}"
    folder.mkdir()
    np.save(folder / "neighbors.npy", graph.neighbors)
    np.save(folder / "similarities.npy", graph.similarities)
    # The numba runs share one warm cache: their JIT is measured apart (measure_jit).
    cache = {"NUMBA_CACHE_DIR": str(work / "numba-cache")}
    rows = []
    for selector in SELECTORS:
        paths = ["numba", "numpy"] + (["stochastic"] if selector == "facility_location" else [])
        for path in paths:
            count = repeats if path == "numba" else slow_repeats
            spec = {"folder": str(folder), "selector": selector, "path": path, "repeats": count}
            if path == "numba":
                spec["warm_up_n"] = 2000  # load the kernels before the timed rounds
            env = cache | {"GRACE_NUMBA": "1" if path == "numba" else "0"}
            log(f"n={n}: {selector}, {path}, {count} repeats")
            got = in_fresh_process(spec, env)
            row = {"n": n, "selector": selector, "path": path} | got
            for key in ("seconds", "cpu_seconds", "selector_seconds", "selector_cpu_seconds"):
                row[f"{key}_median"] = statistics.median(got[key])
            log(f"n={n}: {selector}, {path}: round {row['seconds_median']:.3f} s")
            rows.append(row)
    return rows


def write_markdown(result: dict[str, Any], path: Path) -> None:
    machine = result["machine"]
    lines = [
        "# A whole round with the numba kernels",
        "",
        "Made by:",
        "",
        *(f"    {command}" for command in result["commands"]),
        "",
        f"Machine: {machine['cpus']} CPUs shared with other work, Python {machine['python']}, "
        f"numpy {machine['numpy']}, numba {machine['numba']}; load average at the end "
        f"{', '.join(f'{x:.1f}' for x in machine['load_average_at_end'])} (of the last run). "
        "Where the load was above the CPU count a run's wall time is mostly waiting for a CPU; "
        "CPU seconds are then the figures to compare (the load each command ran at is noted beside "
        "it, where known).",
        "",
        "`compute_round` on a later round (round 3: estimation, selection with CRAIG weights, the "
        "rescore plan) of the synthetic clustered k-NN graph (k = 10), 10% budget, defaults. "
        "Medians of the repeats (the count is in the JSON), each path in a fresh process, side "
        "by side in one run. "
        "*numba*: the kernels (`pip install grace-coresets[fast]`); *numpy*: the fallback "
        "(GRACE_NUMBA=0), the same picks; *stochastic*: the previous product's facility location "
        "(batched stochastic greedy, numpy).",
        "",
        "| N | selector | path | round s | round CPU s | selector s | selector CPU s "
        "| objective | same coreset as numba | goal |",
        "|---:|---|---|---:|---:|---:|---:|---:|---|---|",
    ]
    rows = sorted(result["rows"], key=lambda r: (r["n"], SELECTORS.index(r["selector"])))
    for row in rows:
        numba_row = next(
            r
            for r in rows
            if r["n"] == row["n"] and r["selector"] == row["selector"] and r["path"] == "numba"
        )
        same = "yes" if row["indices_sha256"] == numba_row["indices_sha256"] else "no"
        goal = ""
        if row["n"] == 1_000_000 and row["path"] == "numba":
            limit = GOAL_SECONDS_AT_1M[row["selector"]]
            wall = "met" if row["seconds_median"] <= limit else "MISSED"
            cpu = "met" if row["cpu_seconds_median"] <= limit else "MISSED"
            goal = f"<= {limit:g} s: wall {wall}, CPU {cpu}"
        objective = f"{row['objective']:.1f}" if "objective" in row else ""
        lines.append(
            f"| {row['n']:,} | {NAMES[row['selector']]} | {row['path']} "
            f"| {row['seconds_median']:.3f} | {row['cpu_seconds_median']:.3f} "
            f"| {row['selector_seconds_median']:.3f} | {row['selector_cpu_seconds_median']:.3f} "
            f"| {objective} | {same} | {goal} |"
        )
    lines += ["", "Speed-up of numba over each other path (round wall / CPU, medians):", ""]
    for row in rows:
        if row["path"] == "numba":
            continue
        base = next(
            r
            for r in rows
            if r["n"] == row["n"] and r["selector"] == row["selector"] and r["path"] == "numba"
        )
        starved = ""
        if row["seconds_median"] > 10 * row["cpu_seconds_median"]:
            starved = (
                f" (the wall ratio means little: that run waited for a CPU, "
                f"{row['cpu_seconds_median']:.1f} s of CPU in {row['seconds_median']:.0f} s)"
            )
        lines.append(
            f"- N = {row['n']:,}, {NAMES[row['selector']]}, over {row['path']}: "
            f"{row['seconds_median'] / base['seconds_median']:.1f}x wall, "
            f"{row['cpu_seconds_median'] / base['cpu_seconds_median']:.1f}x CPU{starved}"
        )
    lines += [
        "",
        "JIT, paid apart from the rounds above (a round on a 2,000-sample graph in a fresh "
        "process, importing numba included): *compile* with an empty cache, once per install; "
        "*cache load* in every later process (cache=True).",
        "",
        "| selector | compile s | cache load s |",
        "|---|---:|---:|",
    ]
    for selector, jit in result["jit"].items():
        lines.append(
            f"| {NAMES[selector]} | {jit['compile_seconds']:.2f} "
            f"| {jit['cache_load_seconds']:.2f} |"
        )
    path.write_text("\n".join(lines) + "\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="100000,1000000", help="comma-separated N values")
    parser.add_argument("--json", type=Path, help="write all results here (and the .md beside)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--slow-repeats", type=int, help="repeats of the numpy and stochastic paths (default: same)"
    )
    parser.add_argument("--update", action="store_true", help="keep other sizes' rows")
    parser.add_argument(
        "--render", action="store_true", help="only rewrite the markdown from the JSON"
    )
    parser.add_argument("--measure", help=argparse.SUPPRESS)  # internal: one fresh process
    args = parser.parse_args(argv)
    if args.measure:
        print(json.dumps(measure(json.loads(args.measure))))
        return 0
    if args.json is None:
        parser.error("--json PATH is required")
    if args.render:
        write_markdown(json.loads(args.json.read_text()), args.json.with_suffix(".md"))
        return 0
    sizes = sorted(int(s) for s in args.sizes.split(","))
    command = "python benchmarks/selection_numba.py " + " ".join(
        sys.argv[1:] if argv is None else argv
    )
    with tempfile.TemporaryDirectory(prefix="grace-numba-bench-") as tmp:
        jit = measure_jit(Path(tmp))
        slow = args.slow_repeats or args.repeats
        rows = [row for n in sizes for row in bench_size(n, args.repeats, slow, Path(tmp))]
    import numba

    result: dict[str, Any] = {"commands": [command], "jit": jit, "rows": rows}
    if args.update and args.json.exists():
        old = json.loads(args.json.read_text())
        result["rows"] = [r for r in old["rows"] if r["n"] not in sizes] + rows
        result["commands"] = [c for c in old["commands"] if c != command] + [command]
    result["machine"] = {
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "numba": numba.__version__,
        "load_average_at_end": os.getloadavg(),
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=2) + "\n")
    write_markdown(result, args.json.with_suffix(".md"))
    log(f"wrote {args.json} and {args.json.with_suffix('.md')}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
