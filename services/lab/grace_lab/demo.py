"""`grace demo`: the whole system on one machine, fine-tuning a small GPT cheaper with GRACE.

It builds the fine-tuning task of the lab's benchmark, shrunk (WordNet definitions from
Debian's `wordnet-base`, 20% of the training pairs given a wrong definition, held-out pairs from
unseen synsets) and a base model pretrained on KJV verses and fortunes (both cached), starts the
selection service (embedded store, or Redis when GRACE_STORE / REDIS_URL names one), a local
Ray cluster with a scoring actor, and fine-tunes the base model three times:
- full data for three epochs: the reference compute C, and the quality to reach;
- GRACE through the service, the workers and the client, with `--budget` x C in all;
- random subsets re-drawn each round, with the same `--budget` x C.
Every cost is charged in FLOPs (training 6PT, each scoring pass 2PT) and a method that spends
on choosing data trains less. It stops everything it started and leaves a table, JSON and the
held-out loss against compute in --results.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from pathlib import Path
from typing import Any

from grace_proto.usage import UsageError

log = logging.getLogger("grace.demo")
METHODS = ("grace", "random_per_round", "full_data")


def register(subparsers: Any) -> None:
    demo = subparsers.add_parser(
        "demo",
        help="fine-tune a small GPT with GRACE coresets vs random at equal compute (~3 minutes)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="example:\n  grace demo --budget 0.5 --seed 1",
    )
    demo.add_argument("--results", type=Path, default=Path("results/demo"))
    demo.add_argument("--work-dir", type=Path, default=Path("var/demo"))
    demo.add_argument(
        "--budget", type=float, default=0.3, help="total compute of GRACE and random, share of C"
    )
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument("--train-synsets", type=int, default=1500, help="WordNet synsets to learn")
    demo.add_argument("--held-out-pairs", type=int, default=300)
    demo.add_argument("--pretrain-documents", type=int, default=8000)
    demo.add_argument("--workers", type=int, default=1, help="Ray scoring actors")
    demo.add_argument(
        "--threads", type=int, default=max(1, os.cpu_count() or 1), help="torch threads"
    )
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

    if not 0.0 < args.budget < 1.0:
        raise UsageError(f"--budget must be a share of C in (0, 1), got {args.budget}")
    from grace_lab.finetune_setup import unwind_on_sigterm

    unwind_on_sigterm()
    try:
        return _run(args)
    except CorpusSourceMissingError as exc:
        print(f"grace demo: {exc}", file=sys.stderr)
        return 2


def _run(args: argparse.Namespace) -> int:
    from grace_lab.finetune_data import FinetuneRecipe
    from grace_lab.finetune_report import add_compute_to_target, markdown_tables, plot_curves
    from grace_lab.finetune_setup import Study, prepare_setup
    from grace_lab.finetune_table import run_one
    from grace_lab.finetune_training import FinetuneSchedule

    started = time.perf_counter()
    args.results.mkdir(parents=True, exist_ok=True)
    study = Study(
        FinetuneRecipe(
            train_synsets=args.train_synsets,
            held_out_pairs=args.held_out_pairs,
            held_out_floor=min(100, max(10, args.held_out_pairs // 6)),
            pretrain_documents=args.pretrain_documents,
        ),
        FinetuneSchedule(lr=3e-3),
        args.work_dir,
        threads=args.threads,
        workers=args.workers,
        store=args.store,
    )
    log.info("building the task and pretraining the base model (cached in %s)", args.work_dir)
    setup = prepare_setup(study, args.seed)
    data = setup.data
    counts = {
        name: int((data.train_strata == s).sum()) for s, name in enumerate(data.stratum_names)
    }
    log.info(
        "task: %d training pairs %s (%.0f%% with a wrong definition), %d held out; C = %.3g FLOPs",
        len(data.train),
        counts,
        100 * float(data.noisy.mean()),
        len(data.held_out),
        setup.reference,
    )
    rows: list[dict[str, Any]] = []
    curves: list[dict[str, Any]] = []
    with study.services(needs_service=True):
        log.info(
            "dashboard: %s/dashboard  (API docs: %s/docs)",
            study.service_url[0],
            study.service_url[0],
        )
        for method in METHODS:
            budget = 1.0 if method == "full_data" else args.budget
            log.info("%s: fine-tuning with %g x C", method, budget)
            row, curve = run_one(study, setup, method, budget, "service")
            rows.append(row)
            curves.append(curve)
    add_compute_to_target(rows, curves)
    table = markdown_tables(rows, sorted(data.stratum_names))
    plot_curves(args.results / "heldout_loss_vs_compute.png", curves)
    summary = _summary(rows, args.budget)
    (args.results / "results.json").write_text(
        json.dumps({"settings": _describe(args, study), "rows": rows, "curves": curves}, indent=1)
    )
    (args.results / "results.md").write_text(f"{table}\n\n{summary}\n")
    print(table)
    print(summary)
    log.info(
        "results, plot and JSON in %s (%.0f s in all)", args.results, time.perf_counter() - started
    )
    return 0


def _summary(rows: list[dict[str, Any]], budget: float) -> str:
    by = {r["method"]: r for r in rows}
    grace, random, full = by["grace"], by["random_per_round"], by["full_data"]
    sign = "lower (better)" if grace["heldout_loss"] < random["heldout_loss"] else "higher (worse)"
    reach = {
        m: (
            "never"
            if by[m]["compute_to_target"] is None
            else f"{by[m]['compute_to_target']:.2f} x C"
        )
        for m in ("grace", "random_per_round")
    }
    return (
        f"At {budget:g} x C, GRACE's held-out loss is {grace['heldout_loss']:.4f} against random "
        f"per round's {random['heldout_loss']:.4f}: {sign}; full data ends at "
        f"{full['heldout_loss']:.4f} after 1 x C. GRACE spent {grace['scoring_fraction']:.1%} of "
        f"C choosing data. Full data's final loss reached: GRACE {reach['grace']}, random "
        f"{reach['random_per_round']}. One seed is one draw: the 3-seed table is "
        "docs/results/finetune_table.md."
    )


def _describe(args: argparse.Namespace, study: Any) -> dict[str, Any]:
    return {
        "budget": args.budget,
        "seed": args.seed,
        "workers": args.workers,
        "store": args.store or "embedded",
        "study": study.describe(),
    }
