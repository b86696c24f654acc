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

from grace_proto.usage import UsageError
from grace_workers.sources import FORMATS  # standard library only

DEFAULT_URL = "http://127.0.0.1:8765"
BPE_MIN_VOCAB = 257  # dataset_builder.BPE_MIN_VOCAB (a test keeps them equal): numpy stays unloaded


def register(subparsers: Any) -> None:
    """Add the `score` and `build-dataset` subcommands to an argparse subparsers object."""
    score = subparsers.add_parser(
        "score",
        help="score a round's rescore plan with Ray actors and send it to the service",
        description="Score every sample of round R's rescore plan (embedding, loss, gradient "
        "importance) with N Ray actors and post the results to a running GRACE service. The "
        "dataset, the service, the token, the job and the round are checked before Ray starts.",
        epilog=_example(
            "grace score --job my-job --round 0 --data data/tokens --model ckpt.pt --workers 2"
        ),
    )
    score.add_argument("--job", required=True, help="job id")
    score.add_argument("--round", type=int, required=True, help="round whose rescore plan to score")
    score.add_argument("--data", required=True, help="tokenized dataset directory (build-dataset)")
    score.add_argument(
        "--model",
        help="TinyGPT checkpoint file or local Hugging Face model directory, used when the "
        "service has no published checkpoint (a published one wins)",
    )
    score.add_argument("--workers", type=_at_least(1), default=1, help="Ray actors")
    score.add_argument(
        "--address", help="existing Ray cluster (e.g. auto or ray://host:10001); default: local"
    )
    score.add_argument("--url", help=f"service URL (default: $GRACE_URL, else {DEFAULT_URL})")
    score.add_argument(
        "--token",
        help="the service's bearer token (default: $GRACE_TOKEN; the variable keeps it out of "
        "the process list)",
    )
    score.add_argument(
        "--batch-size", type=_at_least(1), default=32, help="samples per forward pass"
    )
    score.add_argument(
        "--shards", type=_at_least(1), help="pieces of the plan (default: ~4 per actor)"
    )
    score.add_argument("--cpus-per-worker", type=float, default=1.0, help="CPUs per actor")
    score.add_argument(
        "--gpus-per-worker",
        type=float,
        help="GPUs per actor, fractions allowed (default: the cluster's GPUs shared, 0 if none)",
    )
    score.add_argument("--device", default="auto", help="cpu, cuda, ... (default: from GPUs)")
    score.add_argument("--max-tokens", type=_at_least(2), help="cut samples to this many tokens")
    score.add_argument(
        "--max-restarts", type=_at_least(0), default=2, help="Ray restarts per actor"
    )
    score.add_argument(
        "--exact-grad",
        action="append",
        default=[],
        metavar="PARAM",
        help="use the exact per-sample gradient norm of this parameter as importance "
        "(repeatable, e.g. head.weight); default: the closed-form output-layer norm",
    )
    score.add_argument(
        "--embedding",
        choices=("hidden", "input"),
        default="hidden",
        help="hidden: score every sample (a forward pass each); input: post only the mean of "
        "its input token embeddings, no forward pass (scores then come from the trainer)",
    )
    score.add_argument("--no-progress", action="store_true", help="no progress bar")
    score.add_argument("--json", action="store_true", help="print the round report as JSON")
    score.set_defaults(func=run_score, extra="worker")

    build = subparsers.add_parser(
        "build-dataset",
        help="tokenize JSONL, Parquet or a Hugging Face dataset folder into a dataset directory",
        description="Tokenize the text of every row into a dataset directory that scoring "
        "workers memory-map (docs/dataset-format.md). Sample ids are the rows' order, or with "
        "--id-column the sorted order of each row's key, which no reordering or edit of the "
        "text changes.",
        epilog=_example(
            "grace build-dataset --input data/hf-train --id-column id --stratum-field source "
            "--tokenizer path/to/tokenizer-dir --out data/tokens",
            "grace build-dataset --jsonl corpus.jsonl --vocab-size 4096 --out data/tokens",
        ),
    )
    given = build.add_mutually_exclusive_group(required=True)
    given.add_argument(
        "--input",
        help="a .jsonl file, a .parquet file or folder of them, or a Hugging Face "
        "Dataset.save_to_disk folder",
    )
    given.add_argument("--jsonl", help="a JSONL file: one JSON object per line (as --input)")
    build.add_argument(
        "--format", choices=FORMATS, help="of --input (default: from the file name or folder)"
    )
    build.add_argument("--out", required=True, help="dataset directory to write")
    source = build.add_mutually_exclusive_group(required=True)
    source.add_argument(
        "--tokenizer",
        help="a tokenizer.json, or a local directory as AutoTokenizer loads it "
        "(save_pretrained; needs transformers)",
    )
    source.add_argument(
        "--vocab-size",
        type=int,
        help=f"train a byte-level BPE of this size on the input (at least {BPE_MIN_VOCAB})",
    )
    build.add_argument("--text-field", default="text", help="the column or field of the text")
    build.add_argument(
        "--stratum-field",
        help="column of each row's stratum: integers >= 0, or names such as kjv, code "
        "(default: 'stratum' where the input has it)",
    )
    build.add_argument(
        "--stratum-order",
        help="comma-separated stratum names in id order, e.g. web,code,books "
        "(default: the names sorted)",
    )
    build.add_argument(
        "--id-column",
        help="column of each row's stable key (unique integers or strings); sample ids are the "
        "keys in sorted order (default: none, ids are the row order)",
    )
    build.add_argument("--min-tokens", type=int, default=2, help="tokens a sample needs")
    build.add_argument(
        "--skip-short",
        action="store_true",
        help="leave out rows below --min-tokens and count them, instead of stopping",
    )
    build.add_argument("--max-tokens", type=int, help="cut samples to this many tokens")
    build.add_argument(
        "--no-text",
        action="store_true",
        help="do not write text.jsonl (each sample's text, the dashboard's text_source)",
    )
    build.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    build.set_defaults(func=run_build_dataset)


def _at_least(low: int) -> Any:
    """An argparse type: an integer >= low (a bad value is argparse's one-line error)."""

    def parse(text: str) -> int:
        value = int(text)
        if value < low:
            raise argparse.ArgumentTypeError(f"must be >= {low}, got {value}")
        return value

    parse.__name__ = f"integer >= {low}"  # argparse names the type in its message
    return parse


def _example(*lines: str) -> str:
    return "example:\n" + "\n".join(f"  {line}" for line in lines)


def run_score(args: argparse.Namespace) -> int:
    from grace_workers.preflight import check_score_inputs

    url = args.url or os.environ.get("GRACE_URL") or DEFAULT_URL
    token = args.token or os.environ.get("GRACE_TOKEN") or None
    check_score_inputs(
        url=url,
        token=token,
        job=args.job,
        round_=args.round,
        data=args.data,
        model=args.model,
        local_ray=args.address is None,
    )
    import ray

    from grace_workers.pool import PoolSettings, ScoringPool
    from grace_workers.worker import WorkerSettings

    try:
        worker = WorkerSettings(
            service_url=url,
            job=args.job,
            data_path=os.path.abspath(args.data),
            model_path=os.path.abspath(args.model) if args.model else None,
            token=token,
            batch_size=args.batch_size,
            device=args.device,
            max_tokens=args.max_tokens,
            exact_params=tuple(args.exact_grad),
            embedding=args.embedding,
        )
        pool = PoolSettings(
            workers=args.workers,
            shards=args.shards,
            num_cpus=args.cpus_per_worker,
            num_gpus=args.gpus_per_worker,
            max_restarts=args.max_restarts,
            progress=not args.no_progress,
        )
    except ValueError as exc:  # a flag out of range: the message names the setting
        raise UsageError(_flag_message(str(exc))) from exc
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


_FLAG_OF_SETTING = {"num_gpus": "gpus-per-worker", "num_cpus": "cpus-per-worker"}


def _flag_message(message: str) -> str:
    """ "batch_size: must be >= 1" as the flag says it: "--batch-size: must be >= 1"."""
    name, sep, rest = message.partition(":")
    flag = _FLAG_OF_SETTING.get(name, name.replace("_", "-"))
    return f"--{flag}{sep}{rest}" if sep else message


def run_build_dataset(args: argparse.Namespace) -> int:
    _show_notes("grace build-dataset")
    from grace_workers.dataset_builder import build_dataset, load_tokenizer, train_bpe_tokenizer
    from grace_workers.sources import Source

    source = Source.open(args.input or args.jsonl, "jsonl" if args.jsonl else args.format)
    stratum_field = args.stratum_field or "stratum"
    if args.tokenizer:
        tokenizer = load_tokenizer(args.tokenizer)
    else:
        rows = source.rows(text_field=args.text_field, stratum_field=None, id_column=args.id_column)
        tokenizer = train_bpe_tokenizer((r.text for r in rows), vocab_size=args.vocab_size)
    ds = build_dataset(
        source.path,
        args.out,
        tokenizer,
        format=source.format,
        text_field=args.text_field,
        stratum_field=stratum_field,
        require_strata=args.stratum_field is not None,
        stratum_order=[n.strip() for n in args.stratum_order.split(",")]
        if args.stratum_order
        else None,
        id_column=args.id_column,
        min_tokens=args.min_tokens,
        max_tokens=args.max_tokens,
        skip_short=args.skip_short,
        write_text=not args.no_text,
        overwrite=args.overwrite,
    )
    parts = [f"{len(ds)} samples", f"{int(ds.lengths.sum())} tokens", f"vocab {ds.vocab_size}"]
    if ds.strata is not None:
        names = ds.stratum_names
        parts.append(
            "strata " + ", ".join(f"{i}={n}" for i, n in names.items()) if names else "with strata"
        )
    if ds.meta.get("skipped_short"):
        parts.append(f"{ds.meta['skipped_short']} short rows skipped")
    parts.append(f"ids by {args.id_column!r}" if args.id_column else "ids by row order")
    print(f"{ds.path}: " + ", ".join(parts))
    return 0


def _show_notes(command: str) -> None:
    """Let the builder's warnings (a raised vocab size, skipped rows) reach the terminal, where
    nobody configured logging (the `grace` command); once per process."""
    logger = logging.getLogger("grace_workers")
    if logging.getLogger().handlers or any(
        getattr(h, "grace_notes", False) for h in logger.handlers
    ):
        return
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(f"{command}: note: %(message)s"))
    handler.grace_notes = True  # type: ignore[attr-defined]
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m grace_workers.cli COMMAND`: the same commands without the `grace` entry
    point; a UsageError is one line and exit 2 here too (`grace` adds --debug and more)."""
    parser = argparse.ArgumentParser(prog="grace-workers")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        return int(args.func(args))
    except UsageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
