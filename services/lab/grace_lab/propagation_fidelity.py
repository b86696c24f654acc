"""How good are GRACE's estimates of the importance it did not re-score?

    python -m grace_lab.propagation_fidelity --json docs/results/propagation_fidelity.json

Each round GRACE re-scores about rho * N samples and estimates the rest along the k-NN graph
(`core/estimation.py`). Here every round also scores every sample with the same model (a
measurement, charged to nothing) and compares, over the estimated samples only, the service's
vector with that full re-score: Spearman's rank correlation and the overlap of the top 10%.
Both tasks run the service's own round (`LocalJob`): the synthetic task of
`grace_lab.quality_synthetic`, and the fine-tuning task of `grace_lab.finetune_table`, each
with worker scoring at rho 0.1 and 0.3 and each estimation rule. Rows: `{task, rho, rule,
round, seed, spearman, top10_overlap, estimated}`.
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from grace_lab.finetune_setup import Study
from grace_lab.local_job import LocalJob
from grace_selection.core.config import ESTIMATION_RULES, SelectionConfig
from grace_selection.core.importance import normalize_importance

log = logging.getLogger("propagation_fidelity")
F32 = npt.NDArray[np.float32]


def compare(estimate: F32, truth: F32, estimated: npt.NDArray[np.bool_]) -> tuple[float, float]:
    """(Spearman, top-10% overlap) of `estimate` against `truth` over the `estimated` samples
    whose both values are known."""
    keep = estimated & np.isfinite(estimate) & np.isfinite(truth)
    a, b = estimate[keep], truth[keep]
    if a.size < 10:
        return float("nan"), float("nan")
    ra, rb = normalize_importance(a).astype(np.float64), normalize_importance(b).astype(np.float64)
    spearman = float(np.corrcoef(ra, rb)[0, 1])
    top = max(1, a.size // 10)
    ours = set(np.argsort(-a, kind="stable")[:top].tolist())
    theirs = set(np.argsort(-b, kind="stable")[:top].tolist())
    return spearman, len(ours & theirs) / top


def synthetic_rows(seed: int, rho: float, rule: str) -> list[dict[str, Any]]:
    """GRACE's loop of the synthetic quality benchmark, with a full re-score every round."""
    from grace_lab.quality_methods import Schedule, _Trainer, warm_start
    from grace_lab.synthetic_task import TaskSpec, make_task, score_samples

    schedule = Schedule()
    task = make_task(TaskSpec(), seed)
    start = warm_start(task, schedule, seed, k=10)
    n = task.x_train.shape[0]
    config = SelectionConfig(rescore_fraction=rho, estimation_rule=rule)  # type: ignore[arg-type]
    trainer = _Trainer(start.model.copy(), task, schedule, np.random.default_rng([seed, 0xB0D]))
    trainer.step = schedule.warmup_steps
    job = LocalJob(n, start.scores.embedding.shape[1], config, seed)
    scored, plan = start.scores, np.arange(n, dtype=np.int64)
    rows = []
    try:
        for round_ in range(schedule.rounds):
            if round_ > 0:
                full = score_samples(trainer.model, task.x_train, task.y_train)
                scored = score_samples(trainer.model, task.x_train[plan], task.y_train[plan])
            job.apply_worker_scores(
                plan, round_, embeddings=scored.embedding, loss=None, importance=scored.importance
            )
            outcome = job.step(round_)
            if round_ > 0:
                result = outcome.result
                rows.append(_row("synthetic", rho, rule, round_, seed, result, full.importance))
            plan = outcome.result.rescore_plan
            seen = trainer.train(outcome.result.coreset.indices, None, schedule.steps_per_round)
            job.apply_trainer_losses(seen[0], seen[1], round_, trainer.step)
    finally:
        job.close()
    return rows


def finetune_rows(
    study: Study, seed: int, rho: float, rule: str, budget: float, embedding: str = "model"
) -> list[dict[str, Any]]:
    """GRACE with worker scoring on the fine-tuning task, a full re-score before each round."""
    from grace_lab.finetune_methods import FinetuneGrace, GraceRecipe, charged_scores
    from grace_lab.finetune_setup import prepare_setup
    from grace_lab.inprocess import score_samples

    setup = prepare_setup(study, seed)
    config = SelectionConfig(budget_fraction=budget, rescore_fraction=rho, estimation_rule=rule)  # type: ignore[arg-type]
    rows: list[dict[str, Any]] = []

    class Measured(FinetuneGrace):
        def begin(self, model: Any, meter: Any) -> None:
            super().begin(model, meter)
            if self.recipe.embedding == "input":  # round 0's scores too, on the fixed graph
                ids = np.arange(len(self.data.train), dtype=np.int64)
                scored = charged_scores(model, self.data, ids, meter, self.seed)
                self.job.apply_worker_scores(
                    ids, 0, embeddings=None, loss=scored.loss, importance=scored.importance
                )

        def next_round(self, round_: int, model: Any, meter: Any) -> Any:
            plan = super().next_round(round_, model, meter)
            if round_ > 0:
                ids = np.arange(len(self.data.train), dtype=np.int64)
                full = score_samples(model, self.data.train, ids, 64, self.seed)
                outcome = self.last_outcome
                if outcome is None:
                    raise RuntimeError("no outcome after a round step")
                result = outcome.result
                row = _row("finetune", rho, rule, round_, seed, result, full.importance)
                # Split by whether a stale sample was trained on since it was scored: how much
                # of the re-ranking is training on it, and how much is the model moving on.
                since = last_trained >= outcome.inputs.scores.scored_round
                for name, group in (("trained", since), ("untrained", ~since)):
                    spearman, _ = compare(
                        result.importance, full.importance, result.estimated & group
                    )
                    row[f"spearman_{name}"] = spearman
                rows.append({**row, "embedding": embedding})
            last_trained[plan.ids] = round_
            return plan

    last_trained = np.full(len(setup.data.train), -1, np.int64)  # the last round it was in
    recipe = GraceRecipe(config, signals="workers", embedding=embedding)  # type: ignore[arg-type]
    run_measured(study, setup, Measured("grace", setup.data, recipe, seed), budget)
    return rows


def run_measured(study: Study, setup: Any, provider: Any, budget: float) -> None:
    """Fine-tune with `provider` at `budget` x C over at least four rounds: three later rounds
    to measure in, whatever the study's own schedule says."""
    from grace_lab.finetune_training import run_finetune

    run_finetune(
        setup.data,
        setup.model_config,
        setup.base_state,
        provider,
        budget * setup.reference,
        replace(study.schedule, rounds=max(4, study.schedule.rounds)),
        setup.seed,
    )


def _row(
    task: str, rho: float, rule: str, round_: int, seed: int, result: Any, truth: F32
) -> dict[str, Any]:
    spearman, overlap = compare(result.importance, truth, result.estimated)
    return {
        "task": task,
        "rho": rho,
        "rule": rule,
        "round": round_,
        "seed": seed,
        "spearman": spearman,
        "top10_overlap": overlap,
        "estimated": int(np.count_nonzero(result.estimated)),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--json", type=Path, default=Path("docs/results/propagation_fidelity.json"))
    parser.add_argument("--seeds", default="0")
    parser.add_argument("--rhos", default="0.1,0.3")
    parser.add_argument("--rules", default=",".join(ESTIMATION_RULES))
    parser.add_argument("--tasks", default="synthetic,finetune")
    parser.add_argument("--budget", type=float, default=0.5, help="fine-tuning compute / C")
    parser.add_argument(
        "--embeddings",
        default="model",
        help="fine-tuning graph: model (pooled hidden states, re-embedded when re-scored), "
        "input (input-embedding means, fixed)",
    )
    Study.add_arguments(parser)  # the fine-tuning table's task, model and schedule
    parser.add_argument("--merge", nargs="+", type=Path, help="write --json from these parts")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    study = Study.from_args(args)
    rows: list[dict[str, Any]] = []
    if args.merge:
        for part in args.merge:
            rows += json.loads(part.read_text())["rows"]
        _write(args.json, rows)
        print(markdown(rows))
        return 0
    with study.services(needs_service=False):  # torch threads as --threads says
        _run(args, study, rows)
    _write(args.json, rows)
    print(markdown(rows))
    return 0


def _run(args: argparse.Namespace, study: Study, rows: list[dict[str, Any]]) -> None:
    for task in args.tasks.split(","):
        for seed in [int(s) for s in args.seeds.split(",")]:
            for rho in [float(r) for r in args.rhos.split(",")]:
                for rule in args.rules.split(","):
                    if task == "synthetic":
                        rows += synthetic_rows(seed, rho, rule)
                    else:
                        for embedding in args.embeddings.split(","):
                            rows += finetune_rows(study, seed, rho, rule, args.budget, embedding)
                    log.info("%s rho=%g %s: %s", task, rho, rule, summarize(rows, _key(rows[-1])))
                    _write(args.json, rows)


def _key(row: dict[str, Any]) -> tuple[str, str, float, str]:
    return (row["task"], row.get("embedding", "-"), row["rho"], row["rule"])


def summarize(rows: list[dict[str, Any]], key: tuple[str, str, float, str]) -> dict[str, float]:
    chosen = [r for r in rows if _key(r) == key]
    return {
        "median_spearman": statistics.median(r["spearman"] for r in chosen),
        "median_top10_overlap": statistics.median(r["top10_overlap"] for r in chosen),
        "rounds": len(chosen),
    }


def markdown(rows: list[dict[str, Any]]) -> str:
    head = "| task | graph | rho | rule | median Spearman | median top-10% overlap | rounds |"
    lines = [head, "|---|---|---|---|---|---|---|"]
    for key in sorted({_key(r) for r in rows}):
        s = summarize(rows, key)
        task, embedding, rho, rule = key
        lines.append(
            f"| {task} | {embedding} | {rho:g} | {rule} | {s['median_spearman']:.3f} | "
            f"{s['median_top10_overlap']:.3f} | {s['rounds']:.0f} |"
        )
    return "\n".join(lines)


def _write(path: Path, rows: list[dict[str, Any]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    command = "python -m grace_lab.propagation_fidelity " + " ".join(sys.argv[1:])
    path.write_text(json.dumps({"command": command, "rows": rows}, indent=1))


if __name__ == "__main__":
    sys.exit(main())
