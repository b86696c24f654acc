"""`grace score` and `grace build-dataset`: the workers' command-line entry points.

`register(subparsers)` adds both to the `grace` command (grace_selection.cli); `main()` runs
them alone (`python -m grace_workers.cli score ...`). Importing this module is cheap: torch,
Ray and tokenizers load only when a command runs.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import sys
from collections.abc import Sequence
from typing import Any

DEFAULT_URL = "http://127.0.0.1:8765"


def register(subparsers: Any) -> None:
    """Add the `score` and `build-dataset` subcommands to an argparse subparsers object."""
    score = subparsers.add_parser(
        "score",
        help="score a round's rescore plan with Ray actors and send it to the service",
        description="Score every sample of round R's rescore plan (embedding, loss, gradient "
        "importance) with N Ray actors and post the results to a running GRACE service.",
    )
    score.add_argument("--job", required=True, help="job id")
    score.add_argument("--round", type=int, required=True, help="round whose rescore plan to score")
    score.add_argument("--data", required=True, help="tokenized dataset directory (build-dataset)")
    score.add_argument(
        "--model",
        help="TinyGPT checkpoint file or local Hugging Face model directory, used when the "
        "service has no published checkpoint (a published one wins)",
    )
    score.add_argument("--workers", type=int, default=1, help="Ray actors (default 1)")
    score.add_argument(
        "--address", help="existing Ray cluster (e.g. auto or ray://host:10001); default: local"
    )
    score.add_argument(
        "--url", default=os.environ.get("GRACE_URL", DEFAULT_URL), help="service URL ($GRACE_URL)"
    )
    score.add_argument("--token", default=os.environ.get("GRACE_TOKEN"), help="($GRACE_TOKEN)")
    score.add_argument("--batch-size", type=int, default=32)
    score.add_argument("--shards", type=int, help="pieces of the plan (default: ~4 per actor)")
    score.add_argument("--cpus-per-worker", type=float, default=1.0)
    score.add_argument(
        "--gpus-per-worker",
        type=float,
        help="GPUs per actor, fractions allowed (default: the cluster's GPUs shared, 0 if none)",
    )
    score.add_argument("--device", default="auto", help="cpu, cuda, ... (default: from GPUs)")
    score.add_argument("--max-tokens", type=int, help="cut samples to this many tokens")
    score.add_argument("--max-restarts", type=int, default=2, help="Ray restarts per actor")
    score.add_argument(
        "--exact-grad",
        action="append",
        default=[],
        metavar="PARAM",
        help="use the exact per-sample gradient norm of this parameter as importance "
        "(repeatable, e.g. head.weight); default: the closed-form output-layer norm",
    )
    score.add_argument("--no-progress", action="store_true", help="no progress bar")
    score.add_argument("--json", action="store_true", help="print the round report as JSON")
    score.set_defaults(func=run_score)

    build = subparsers.add_parser(
        "build-dataset",
        help="tokenize a JSONL file into a dataset directory (docs/dataset-format.md)",
    )
    build.add_argument("--jsonl", required=True, help="input, one JSON object per line")
    build.add_argument("--out", required=True, help="dataset directory to write")
    source = build.add_mutually_exclusive_group(required=True)
    source.add_argument("--tokenizer", help="tokenizer.json or a local HF tokenizer directory")
    source.add_argument("--vocab-size", type=int, help="train a byte-level BPE of this size")
    build.add_argument("--text-field", default="text")
    build.add_argument("--stratum-field", default="stratum")
    build.add_argument("--min-tokens", type=int, default=2)
    build.add_argument("--max-tokens", type=int)
    build.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    build.set_defaults(func=run_build_dataset)


def run_score(args: argparse.Namespace) -> int:
    import ray

    from grace_workers.pool import PoolSettings, ScoringPool
    from grace_workers.worker import WorkerSettings

    worker = WorkerSettings(
        service_url=args.url,
        job=args.job,
        data_path=os.path.abspath(args.data),
        model_path=os.path.abspath(args.model) if args.model else None,
        token=args.token,
        batch_size=args.batch_size,
        device=args.device,
        max_tokens=args.max_tokens,
        exact_params=tuple(args.exact_grad),
    )
    pool = PoolSettings(
        workers=args.workers,
        shards=args.shards,
        num_cpus=args.cpus_per_worker,
        num_gpus=args.gpus_per_worker,
        max_restarts=args.max_restarts,
        progress=not args.no_progress,
    )
    started_here = not ray.is_initialized()
    if started_here:
        ray.init(address=args.address, include_dashboard=False, configure_logging=False)
    try:
        with ScoringPool(worker, pool) as scoring:
            report = scoring.score_round(args.round)
    finally:
        if started_here:
            ray.shutdown()
    summary = {
        "job": report.job,
        "round": report.round,
        "samples": report.samples,
        "seconds": round(report.seconds, 3),
        "samples_per_second": round(report.samples_per_second, 1),
        "duplicates": report.duplicates,
        "failed_attempts": report.failed_attempts,
    }
    if args.json:
        summary["shards"] = [dataclasses.asdict(s) for s in report.shards]
        print(json.dumps(summary, indent=2))
    else:
        print(
            f"round {report.round} of {report.job}: {report.samples} samples in "
            f"{report.seconds:.1f} s ({report.samples_per_second:.0f} samples/s)"
        )
    return 0


def run_build_dataset(args: argparse.Namespace) -> int:
    from grace_workers.dataset_builder import (
        build_dataset,
        load_tokenizer,
        read_jsonl_rows,
        train_bpe_tokenizer,
    )

    if args.tokenizer:
        tokenizer = load_tokenizer(args.tokenizer)
    else:
        texts = (r.text for r in read_jsonl_rows(args.jsonl, text_field=args.text_field))
        tokenizer = train_bpe_tokenizer(texts, vocab_size=args.vocab_size)
    ds = build_dataset(
        args.jsonl,
        args.out,
        tokenizer,
        text_field=args.text_field,
        stratum_field=args.stratum_field,
        min_tokens=args.min_tokens,
        max_tokens=args.max_tokens,
        overwrite=args.overwrite,
    )
    print(
        f"{ds.path}: {len(ds)} samples, {int(ds.lengths.sum())} tokens, vocab {ds.vocab_size}"
        + (", with strata" if ds.strata is not None else "")
    )
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="grace-workers")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        return int(args.func(args))
    except (ValueError, RuntimeError, FileExistsError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
