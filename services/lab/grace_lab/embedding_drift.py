"""How far do re-embedded samples move between rounds in the fine-tuning task?

    python -m grace_lab.embedding_drift --seeds 0 --json docs/results/embedding_drift.json

GRACE on the fine-tuning task of `grace_lab.finetune_table` with the workers re-scoring a share
rho of the samples each round and posting the model's pooled hidden states (the default
embedding). Before each round the service's own `GraphKeeper.update` runs; this study records,
for the re-embedded samples the graph already holds, the cosine distance between the old and
the new vector: raw, and after `core.repair.remove_shared_drift` (what the keeper links with).
It also records each row's neighbourhood radius (1 - the similarity of its k-th neighbour) and
the shares beyond tau and beyond that radius, which decide what the keeper does (a local join
inside the radius, a query beyond it and beyond tau). `benchmarks/round.py` reproduces this
drift at scale. Rows: `{task, seed, rho, round, rows, raw_median, raw_p90, aligned_median,
aligned_p90, radius_median, beyond_tau, beyond_radius}`.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from grace_lab.finetune_setup import Study
from grace_lab.propagation_fidelity import run_measured
from grace_selection.adapters.vectors import normalize_rows
from grace_selection.core.config import SelectionConfig
from grace_selection.core.repair import measure_drift, remove_shared_drift
from grace_selection.service.graph_keeper import GraphKeeper

log = logging.getLogger("embedding_drift")


def drift_row(
    keeper: GraphKeeper, ids: npt.NDArray[np.int64], vectors: npt.NDArray[np.float32], tau: float
) -> dict[str, Any] | None:
    """The drift of the re-embedded `ids` against the keeper's current vectors (None before
    the first graph, or when none of `ids` is in it yet)."""
    graph = keeper.graph
    held, old = keeper.held_vectors(ids)
    if graph is None or not held.any():
        return None
    new = normalize_rows(np.asarray(vectors[held], dtype=np.float32))
    raw = measure_drift(old, new)
    aligned = measure_drift(old, remove_shared_drift(old, new, new))
    radius = 1.0 - graph.similarities[ids[held], -1]
    return {
        "rows": int(held.sum()),
        "raw_median": float(np.median(raw)),
        "raw_p90": float(np.quantile(raw, 0.9)),
        "aligned_median": float(np.median(aligned)),
        "aligned_p90": float(np.quantile(aligned, 0.9)),
        "radius_median": float(np.median(radius)),
        "beyond_tau": float(np.mean(aligned > tau)),
        "beyond_radius": float(np.mean(aligned > radius)),
    }


def finetune_drift(study: Study, seed: int, rho: float, budget: float) -> list[dict[str, Any]]:
    from grace_lab.finetune_methods import FinetuneGrace, GraceRecipe
    from grace_lab.finetune_setup import prepare_setup

    setup = prepare_setup(study, seed)
    config = SelectionConfig(budget_fraction=budget, rescore_fraction=rho)
    provider = FinetuneGrace("grace", setup.data, GraceRecipe(config, signals="workers"), seed)
    keeper, rows = provider.job.keeper, []
    update = keeper.update
    round_ = [0]

    def measured_update(ids: Any, rows_source: Any, *args: Any, **kwargs: Any) -> Any:
        vectors = rows_source[0 : len(ids)]  # the round's rows, read as the keeper reads them
        row = drift_row(keeper, ids, vectors, config.drift_threshold)
        if row is not None:
            rows.append({"task": "finetune", "seed": seed, "rho": rho, "round": round_[0], **row})
            log.info("%s", rows[-1])
        round_[0] += 1
        return update(ids, vectors, *args, **kwargs)

    keeper.update = measured_update  # type: ignore[method-assign,assignment]
    run_measured(study, setup, provider, budget)
    return rows


def markdown(rows: list[dict[str, Any]]) -> str:
    head = (
        "| seed | rho | round | re-embedded rows | raw drift median (p90) | after the shared move "
        "is taken out, median (p90) | neighbourhood radius median | beyond tau | beyond radius |"
    )
    lines = [head, "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(
            f"| {r['seed']} | {r['rho']} | {r['round']} | {r['rows']} | "
            f"{r['raw_median']:.3f} ({r['raw_p90']:.3f}) | "
            f"{r['aligned_median']:.4f} ({r['aligned_p90']:.4f}) | {r['radius_median']:.4f} | "
            f"{r['beyond_tau']:.1%} | {r['beyond_radius']:.0%} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--json", type=Path, default=Path("docs/results/embedding_drift.json"))
    parser.add_argument("--seeds", default="0")
    parser.add_argument("--rhos", default="0.3")
    parser.add_argument("--budget", type=float, default=0.5, help="fine-tuning compute / C")
    Study.add_arguments(parser)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    study = Study.from_args(args)
    rows: list[dict[str, Any]] = []
    with study.services(needs_service=False):
        for seed in [int(s) for s in args.seeds.split(",")]:
            for rho in [float(r) for r in args.rhos.split(",")]:
                rows += finetune_drift(study, seed, rho, args.budget)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    command = "python -m grace_lab.embedding_drift " + " ".join(
        sys.argv[1:] if argv is None else argv
    )
    args.json.write_text(json.dumps({"command": command, "rows": rows}, indent=1))
    print(markdown(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
