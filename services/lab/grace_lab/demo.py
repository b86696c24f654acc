"""`grace demo`: the whole system on one machine, GRACE against random sampling on real text.

It builds a small corpus of real English (Debian's WordNet, KJV and fortune texts), starts the
selection service (embedded store, or Redis when GRACE_STORE / REDIS_URL names one), a local
Ray cluster with scoring actors, and trains a small GPT twice from the same warm start: once on
GRACE coresets served by the service, once on a random subset re-drawn each round, with equal
steps and, by default, equal tokens a step (`--batch-by tokens`). It stops everything it
started and leaves a table, a JSON file and a plot in --results.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

log = logging.getLogger("grace.demo")


def register(subparsers: Any) -> None:
    demo = subparsers.add_parser(
        "demo",
        help="train a small GPT on real text with GRACE coresets vs random (about 10 minutes)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="example:\n  grace demo --steps 200 --seed 1",
    )
    demo.add_argument("--results", type=Path, default=Path("results/demo"))
    demo.add_argument("--work-dir", type=Path, default=Path("var/demo"))
    demo.add_argument("--budget", type=float, default=0.1, help="coreset share of the data")
    demo.add_argument("--rho", type=float, default=0.3, help="share re-scored each round")
    demo.add_argument("--steps", type=int, default=400, help="optimiser steps per method")
    demo.add_argument("--round-steps", type=int, default=50)
    demo.add_argument(
        "--warmup-steps",
        type=int,
        default=None,
        help="uniform random steps before the first round (default: a quarter of --steps)",
    )
    demo.add_argument(
        "--batch-by",
        choices=("tokens", "documents"),
        default="tokens",
        help="tokens: every step holds the tokens of 32 mean-length documents, the same for "
        "both methods; documents: 32 documents a step, whatever their length",
    )
    demo.add_argument("--workers", type=int, default=1, help="Ray scoring actors")
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument(
        "--documents",
        type=int,
        default=20_000,
        help="training documents, split 60/25/15 over WordNet, KJV and fortunes",
    )
    demo.add_argument("--held-out", type=int, default=500, help="held-out documents per source")
    demo.add_argument(
        "--store",
        default=os.environ.get("GRACE_STORE") or os.environ.get("REDIS_URL") or "",
        help="service store: empty for the embedded store, or redis://... "
        "(default: $GRACE_STORE or $REDIS_URL)",
    )
    demo.set_defaults(func=run_demo, extra="lab")  # what a missing module points to


def run_demo(args: argparse.Namespace) -> int:
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S"
    )
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per request drowns the rest
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    from grace_lab.debian_corpus import CorpusSourceMissingError

    # SIGTERM (a CI timeout, `kill`) unwinds like Ctrl-C so that the service and Ray we
    # started are stopped by the `finally` blocks instead of being left behind.
    signal.signal(signal.SIGTERM, _exit_on_signal)
    try:
        return _run(args)
    except CorpusSourceMissingError as exc:
        print(f"grace demo: {exc}", file=sys.stderr)
        return 2


def _run(args: argparse.Namespace) -> int:
    import ray
    import torch

    from grace_client import CoresetClient
    from grace_lab.coreset_training import (
        RunResult,
        TrainSchedule,
        run_training,
        tokens_per_step_for,
        warm_up,
    )
    from grace_lab.demo_report import log_round, write_report
    from grace_lab.providers import RandomPerRoundProvider
    from grace_lab.service_provider import GraceServiceProvider
    from grace_lab.text_experiment import TextRecipe, prepare_text_data
    from grace_proto.models import SelectionConfigModel
    from grace_selection.local_service import start_local_service
    from grace_workers.pool import PoolSettings, ScoringPool
    from grace_workers.tiny_gpt import TinyGPTConfig
    from grace_workers.worker import WorkerSettings

    started = time.perf_counter()
    args.results.mkdir(parents=True, exist_ok=True)
    log.info("building the corpus and tokenizer (cached in %s)", args.work_dir / "data")
    recipe = TextRecipe(
        train_counts=_source_counts(args.documents),
        eval_per_source=args.held_out,
        seed=args.seed,
    )
    data = prepare_text_data(args.work_dir / "data", recipe)
    n = len(data.train)
    counts = {
        name: int((data.train_strata == s).sum()) for s, name in enumerate(data.stratum_names)
    }
    log.info("training set: %d documents %s; held out: %d", n, counts, len(data.held_out))
    model_config = TinyGPTConfig(
        vocab_size=data.train.vocab_size, block_size=recipe.max_tokens, n_layer=2, n_embd=128
    )
    warmup = args.steps // 4 if args.warmup_steps is None else args.warmup_steps
    try:
        tokens = tokens_per_step_for(data.train.lengths, 32, recipe.max_tokens)
        schedule = TrainSchedule(
            total_steps=args.steps,
            warmup_steps=warmup,
            round_steps=args.round_steps,
            tokens_per_step=tokens if args.batch_by == "tokens" else None,
        )
    except ValueError as exc:
        raise SystemExit(
            f"grace demo: {exc} (--steps {args.steps}, --warmup-steps {warmup})"
        ) from None
    budget = max(1, round(args.budget * n))
    torch.set_num_threads(max(1, os.cpu_count() or 1))

    store_label = "Redis at " + args.store if args.store else "the embedded store"
    service_dir = args.work_dir / f"service-{int(time.time())}"
    log.info("starting the selection service on %s", store_label)
    service = start_local_service(service_dir, store=args.store)
    results: list[RunResult] = []
    own_ray = False
    try:
        log.info("dashboard: %s/dashboard  (API docs: %s/docs)", service.url, service.url)
        own_ray = not ray.is_initialized()
        if own_ray:  # a caller (a test, a notebook) may already have a cluster: use it
            # "local": our own cluster even when a `ray start` one runs on this machine,
            # which a plain ray.init() would attach to (and reject num_cpus for).
            ray.init(
                address="local",
                num_cpus=max(2, args.workers),
                num_gpus=0,
                include_dashboard=False,
                configure_logging=False,
                log_to_driver=False,
            )
        job_id = f"demo-{int(time.time())}"
        worker = WorkerSettings(
            service_url=service.url,
            job=job_id,
            data_path=str(data.train.path),
            batch_size=64,
            device="cpu",
        )
        with ScoringPool(worker, PoolSettings(workers=args.workers)) as pool:
            log.info("warm-up: %d steps on uniform random batches", schedule.warmup_steps)
            warm = warm_up(data, model_config, schedule, args.seed)
            config = SelectionConfigModel(budget_fraction=args.budget, rescore_fraction=args.rho)
            request = GraceServiceProvider.job_request(
                job_id,
                n,
                64,
                config,
                data.train_strata,
                data.stratum_names,
                args.seed,
                text_source=data.train_jsonl.resolve(),
            )
            with CoresetClient(service.url, cache_dir=args.work_dir / "client-cache") as client:
                grace = GraceServiceProvider(
                    f"GRACE (rho={args.rho:g})", client, pool, request, args.work_dir / "ckpt"
                )
                log.info(
                    "GRACE: %d rounds of %d steps, coreset %d of %d",
                    schedule.rounds,
                    schedule.round_steps,
                    budget,
                    n,
                )
                results.append(
                    run_training(data, model_config, schedule, grace, args.seed, warm, log_round)
                )
        log.info("random re-drawn each round, same steps, same warm start")
        baseline = RandomPerRoundProvider(n, budget, args.seed)
        results.append(
            run_training(data, model_config, schedule, baseline, args.seed, warm, log_round)
        )
    finally:
        if own_ray and ray.is_initialized():
            ray.shutdown()
        service.stop()
    table = write_report(args.results, results, data.stratum_names, _describe(args, n, budget))
    print(table)
    log.info(
        "results, plot and JSON in %s (%.0f s in all)", args.results, time.perf_counter() - started
    )
    (args.results / "settings.json").write_text(json.dumps(_describe(args, n, budget), indent=2))
    return 0


def _exit_on_signal(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)


def _source_counts(documents: int) -> dict[str, int]:
    """60% WordNet, 25% KJV, 15% fortunes: imbalanced on purpose (see debian_corpus)."""
    from grace_lab.text_experiment import mixture_counts

    if documents < 20:
        raise SystemExit(f"grace demo: --documents must be >= 20, got {documents}")
    return mixture_counts(documents)


def _describe(args: argparse.Namespace, n: int, budget: int) -> dict[str, Any]:
    return {
        "documents": n,
        "budget_fraction": args.budget,
        "coreset_size": budget,
        "rescore_fraction": args.rho,
        "steps": args.steps,
        "round_steps": args.round_steps,
        "workers": args.workers,
        "seed": args.seed,
        "store": args.store or "embedded",
    }
