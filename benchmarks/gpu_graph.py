"""The k-NN graph build on a GPU: DeviceExactIndex (torch, and faiss where installed) at 1M.

    python benchmarks/gpu_graph.py --n 1000000 --dim 64 --device cuda --json /tmp/gpu.json

Times `knn_graph(10)` over clustered unit vectors (`synthetic_graph.make_clustered_vectors`)
for each backend installed, twice (the first includes CUDA start-up), and checks recall@10 of a
sample of rows against numpy. On a machine without a GPU, `--device cpu --n 20000` checks the
script itself. Prints JSON; writes it too with --json.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make `benchmarks` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np

from benchmarks.synthetic_graph import make_clustered_vectors
from grace_selection.adapters.device_index import Backend, DeviceExactIndex


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1_000_000)
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    vectors = make_clustered_vectors(args.n, args.dim, seed=0)
    rows = np.random.default_rng(1).choice(args.n, size=200, replace=False)
    exact = vectors[rows] @ vectors.T  # (200, N)
    exact[np.arange(rows.size), rows] = -np.inf
    truth = np.argpartition(-exact, 9, axis=1)[:, :10]
    results = []
    backends: list[Backend] = ["torch", "faiss"]
    for backend in backends:
        if importlib.util.find_spec(backend) is None:
            continue
        index = DeviceExactIndex(args.dim, backend, args.device)
        index.upsert(np.arange(args.n, dtype=np.int64), vectors)
        seconds = []
        for _ in range(2):
            started = time.perf_counter()
            graph = index.knn_graph(10)
            seconds.append(time.perf_counter() - started)
        found = (graph.neighbors[rows][:, :, None] == truth[:, None, :]).any(axis=2)
        results.append(
            {
                "backend": backend,
                "n": args.n,
                "dim": args.dim,
                "device": args.device,
                "seconds": seconds,
                "recall_at_10": float(found.mean()),
            }
        )
        print(json.dumps(results[-1]), file=sys.stderr, flush=True)
    text = json.dumps(results, indent=1)
    if args.json is not None:
        args.json.write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
