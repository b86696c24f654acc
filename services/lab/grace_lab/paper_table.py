"""The paper's experiment on real text: GRACE against the methods people would otherwise use.

    python -m grace_lab.paper_table --seeds 0,1,2 --json docs/results/paper_table.json

Every method trains the same small GPT for the same number of optimiser steps from the same
warm start (per seed) on the same Debian-text corpus, at each budget; held-out perplexity is
measured overall and per source. GRACE rows run through the real selection service (a child
process), Ray scoring actors and the HTTP client. Writes the JSON rows, a markdown table with
mean +- sd over seeds (docs/results/paper_table.md) and a loss-curve plot.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

log = logging.getLogger("paper_table")

GRACE_VARIANTS: tuple[tuple[str, float, str], ...] = (
    ("GRACE full re-scoring", 1.0, "delta"),
    ("GRACE rho=0.3 keep", 0.3, "keep"),
    ("GRACE rho=0.3 delta", 0.3, "delta"),
    ("GRACE rho=0.3 smooth", 0.3, "smooth"),
    ("GRACE rho=0.1 keep", 0.1, "keep"),
    ("GRACE rho=0.1 delta", 0.1, "delta"),
    ("GRACE rho=0.1 smooth", 0.1, "smooth"),
)
BASELINES: tuple[str, ...] = (
    "full data",
    "random static",
    "random per round",
    "top-loss static",
    "facility location static",
    "message passing static",
    "InfoBatch-style",
    "random per round by length",
)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--budgets", default="0.1,0.3")
    parser.add_argument("--json", type=Path, default=Path("docs/results/paper_table.json"))
    parser.add_argument("--markdown", type=Path, default=None, help="default: --json with .md")
    parser.add_argument("--work-dir", type=Path, default=Path("var/paper"))
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument("--round-steps", type=int, default=50)
    parser.add_argument("--methods", default="all", help="comma-separated row names, or all")
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch threads for training; on a shared 2-core machine 1 is ~10x faster than 2",
    )
    parser.add_argument(
        "--batch-by",
        choices=("tokens", "documents"),
        default="tokens",
        help="tokens: each step holds the predicted tokens of 32 mean-length documents, equal "
        "for every method; documents: 32 documents a step, whatever their length",
    )
    parser.add_argument(
        "--loss",
        choices=("token-mean", "document-mean"),
        default="token-mean",
        help="average the loss over the batch's tokens (the usual causal-LM loss) or over its "
        "documents",
    )
    parser.add_argument(
        "--ray-address",
        default=None,
        help="use this running Ray cluster (e.g. one `ray start --head` shared by several "
        "table processes) instead of starting a local one",
    )
    parser.add_argument(
        "--merge",
        type=Path,
        nargs="+",
        default=None,
        help="only merge these JSON files (runs split over processes) into --json and report",
    )
    parser.add_argument(
        "--documents", type=int, default=20_000, help="training documents (60/25/15 split)"
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    logging.getLogger("httpx").setLevel(logging.WARNING)
    if args.merge is not None:
        from grace_lab.paper_report import merge_results, write_outputs

        merge_results(args.merge, args.json)
        write_outputs(args.json, args.markdown or args.json.with_suffix(".md"), _command(argv))
        return 0
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    import ray
    import torch

    from grace_lab.coreset_training import TrainSchedule, tokens_per_step_for, warm_up
    from grace_lab.paper_report import write_outputs
    from grace_lab.text_experiment import TextRecipe, mixture_counts, prepare_text_data
    from grace_selection.local_service import start_local_service
    from grace_workers.tiny_gpt import TinyGPTConfig

    seeds = [int(s) for s in args.seeds.split(",")]
    budgets = [float(b) for b in args.budgets.split(",")]
    wanted = None if args.methods == "all" else set(args.methods.split(","))
    recipe = TextRecipe(train_counts=mixture_counts(args.documents))
    data = prepare_text_data(args.work_dir / "data", recipe)
    model_config = TinyGPTConfig(
        vocab_size=data.train.vocab_size, block_size=recipe.max_tokens, n_layer=2, n_embd=128
    )
    tokens = tokens_per_step_for(data.train.lengths, 32, recipe.max_tokens)
    schedule = TrainSchedule(
        total_steps=args.steps,
        warmup_steps=args.steps // 4,
        round_steps=args.round_steps,
        tokens_per_step=tokens if args.batch_by == "tokens" else None,
        token_mean_loss=args.loss == "token-mean",
    )
    torch.set_num_threads(args.threads)
    rows: list[dict[str, Any]] = []
    curves: dict[str, list[tuple[int, float]]] = {}
    service = start_local_service(args.work_dir / f"service-{os.getpid()}-{int(time.time())}")
    if args.ray_address is not None:
        ray.init(address=args.ray_address, log_to_driver=False)
    else:
        ray.init(
            address="local", num_cpus=2, num_gpus=0, include_dashboard=False, log_to_driver=False
        )
    started = time.perf_counter()
    try:
        for seed in seeds:
            warm = warm_up(data, model_config, schedule, seed)
            for budget in budgets:
                for name, make in _methods(args, data, budget, seed, service.url):
                    if wanted is not None and name not in wanted:
                        continue
                    log.info("seed %d budget %.0f%%: %s", seed, 100 * budget, name)
                    result = _run_one(data, model_config, schedule, make, seed, warm)
                    rows.append(_row(name, seed, budget, result))
                    if seed == seeds[0]:
                        curves[f"{name} @ {budget:.0%}"] = [
                            (r.step, r.perplexity.overall) for r in result.records
                        ]
                    log.info(
                        "  -> ppl %.2f worst %.2f passes/N %.2f (%.0f s)",
                        result.final.overall,
                        result.final.worst,
                        result.scoring_passes_per_n,
                        result.wall_seconds,
                    )
                    _save(args.json, rows, curves, args, schedule, time.perf_counter() - started)
    finally:
        ray.shutdown()
        service.stop()
    write_outputs(args.json, args.markdown or args.json.with_suffix(".md"), _command(argv))
    return 0


def _methods(
    args: argparse.Namespace, data: Any, budget: float, seed: int, url: str
) -> list[tuple[str, Callable[[], Any]]]:
    from grace_lab.paper_methods import InfoBatchStyle, SelectorStatic, TopLossStatic
    from grace_lab.providers import (
        FullDataProvider,
        LengthWeightedRandomPerRound,
        RandomPerRoundProvider,
        RandomStaticProvider,
    )
    from grace_selection.core.config import SelectionConfig

    n = len(data.train)
    size = max(1, round(budget * n))
    dim = 64
    strata = data.train_strata

    def selector(name: str) -> SelectionConfig:
        return SelectionConfig(budget_fraction=budget, selector=name)  # type: ignore[arg-type]

    makers: list[tuple[str, Callable[[], Any]]] = [
        ("full data", lambda: FullDataProvider(n)),
        ("random static", lambda: RandomStaticProvider(n, size, seed)),
        ("random per round", lambda: RandomPerRoundProvider(n, size, seed)),
        ("top-loss static", lambda: TopLossStatic(data.train, size, dim, seed)),
        (
            "facility location static",
            lambda: SelectorStatic(
                "facility location static",
                data.train,
                selector("facility_location"),
                dim,
                seed,
                strata,
            ),
        ),
        (
            "message passing static",
            lambda: SelectorStatic(
                "message passing static",
                data.train,
                selector("graph_message_passing"),
                dim,
                seed,
                strata,
            ),
        ),
        ("InfoBatch-style", lambda: InfoBatchStyle(n, size, seed)),
        (
            "random per round by length",
            lambda: LengthWeightedRandomPerRound(data.train.lengths, size, seed),
        ),
    ]
    for name, rho, rule in GRACE_VARIANTS:
        makers.append((name, _grace_maker(args, data, budget, seed, url, name, rho, rule, dim)))
    return makers


def _grace_maker(
    args: argparse.Namespace,
    data: Any,
    budget: float,
    seed: int,
    url: str,
    name: str,
    rho: float,
    rule: str,
    dim: int,
) -> Callable[[], Any]:
    def make() -> Any:
        from grace_client import CoresetClient
        from grace_lab.service_provider import GraceServiceProvider
        from grace_proto.models import SelectionConfigModel
        from grace_workers.pool import PoolSettings, ScoringPool
        from grace_workers.worker import WorkerSettings

        slug = name.lower().replace(" ", "-").replace("=", "").replace(".", "")
        job_id = f"paper-{slug}-b{int(budget * 100)}-s{seed}-{int(time.time())}"
        config = SelectionConfigModel(
            budget_fraction=budget,
            rescore_fraction=rho,
            estimation_rule=rule,  # type: ignore[arg-type]
        )
        request = GraceServiceProvider.job_request(
            job_id, len(data.train), dim, config, data.train_strata, data.stratum_names, seed
        )
        worker = WorkerSettings(url, job_id, str(data.train.path), batch_size=64, device="cpu")
        pool = ScoringPool(worker, PoolSettings(workers=args.workers, progress=False))
        client = CoresetClient(url, cache_dir=args.work_dir / "client-cache")
        return _OwningProvider(
            GraceServiceProvider(name, client, pool, request, args.work_dir / "ckpt" / job_id),
            pool,
            client,
        )

    return make


class _OwningProvider:
    """Closes the pool and client the GRACE provider was given, when the run ends."""

    def __init__(self, inner: Any, pool: Any, client: Any) -> None:
        self.inner, self.pool, self.client = inner, pool, client
        self.name = inner.name

    def begin(self, model: Any, step: int) -> None:
        self.pool.start()
        self.inner.begin(model, step)

    def next_round(self, round_: int, model: Any, step: int) -> Any:
        return self.inner.next_round(round_, model, step)

    def observe(self, round_: int, step: int, ids: Any, losses: Any) -> None:
        self.inner.observe(round_, step, ids, losses)

    def close(self) -> None:
        try:
            self.inner.close()
        finally:
            self.pool.shutdown()
            self.client.close()


def _run_one(
    data: Any, model_config: Any, schedule: Any, make: Callable[[], Any], seed: int, warm: Any
) -> Any:
    from grace_lab.coreset_training import run_training

    return run_training(data, model_config, schedule, make(), seed, warm)


def _row(name: str, seed: int, budget: float, result: Any) -> dict[str, Any]:
    from grace_lab.paper_report import final_metrics

    return {
        "method": name,
        "seed": seed,
        "budget": budget,
        **final_metrics(result),
        "wall_seconds": result.wall_seconds,
        "curve": [(r.step, r.perplexity.overall) for r in result.records],
    }


def _save(
    path: Path,
    rows: list[dict[str, Any]],
    curves: dict[str, list[tuple[int, float]]],
    args: argparse.Namespace,
    schedule: Any,
    seconds: float,
) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "settings": {
            "seeds": args.seeds,
            "budgets": args.budgets,
            "steps": schedule.total_steps,
            "warmup_steps": schedule.warmup_steps,
            "round_steps": schedule.round_steps,
            "batch_size": schedule.batch_size,
            "tokens_per_step": schedule.tokens_per_step,
            "token_mean_loss": schedule.token_mean_loss,
            "documents": args.documents,
            "seconds": seconds,
        },
        "rows": rows,
        "curves": curves,
    }
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(payload, indent=1))
    tmp.replace(path)


def _command(argv: list[str] | None) -> str:
    return "python -m grace_lab.paper_table " + " ".join(sys.argv[1:] if argv is None else argv)


if __name__ == "__main__":
    sys.exit(main())
