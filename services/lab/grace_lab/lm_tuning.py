"""Why GRACE loses to random-per-round on real text, and which settings make it win.

    python -m grace_lab.lm_tuning --seeds 0,1,2 --budgets 0.1,0.3 \
        --variants "random per round,GRACE default,GRACE guard 0.3" --json var/lm_tuning/a.json
    python -m grace_lab.lm_tuning --report var/lm_tuning/a.json var/lm_tuning/b.json \
        --markdown docs/results/lm_tuning_tables.md

Every variant of a seed starts from the same warm-up model (cached on disk, so that several
processes can split a study and still compare like with like), trains the same TinyGPT for the
same steps on the shared loop (`coreset_training.run_training`), and GRACE variants run the
service's round algorithm in-process (`grace_lab.inprocess`). The round-0 scores of
all N under the warm-up model are computed once per seed and shared (each variant still counts
them as its cost). Rows are written after every run, so a stopped study keeps what it measured.
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import sys
import time
from collections.abc import Mapping
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

from grace_lab.lm_variants import BASELINE, VARIANTS, Variant, make_provider
from grace_lab.paper_report import final_metrics

log = logging.getLogger("lm_tuning")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--budgets", default="0.1,0.3")
    parser.add_argument("--variants", default=f"{BASELINE},GRACE default")
    parser.add_argument("--json", type=Path, default=Path("var/lm_tuning/study.json"))
    parser.add_argument("--work-dir", type=Path, default=Path("var/lm_tuning"))
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument("--warmup-steps", type=int, default=100)
    parser.add_argument("--round-steps", type=int, default=50)
    parser.add_argument("--tokens-per-step", type=int, default=None)
    parser.add_argument(
        "--documents", type=int, default=20_000, help="training documents (60/25/15 split)"
    )
    parser.add_argument(
        "--document-mean-loss",
        action="store_true",
        help="average per-document mean losses (the study's first protocol)",
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch threads; 1 is ~10x faster than 2 on a busy 2-core machine",
    )
    parser.add_argument(
        "--report",
        type=Path,
        nargs="+",
        default=None,
        help="only write the markdown tables of these JSON files",
    )
    parser.add_argument("--markdown", type=Path, default=None)
    parser.add_argument(
        "--synthetic",
        metavar="JSON",
        default=None,
        help="instead: quality_synthetic's table and goal with these overrides "
        'of its GRACE config, e.g. \'{"selector": "facility_location"}\'',
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    if args.report is not None:
        rows = [row for path in args.report for row in json.loads(path.read_text())["rows"]]
        text = write_report(rows, BASELINE)
        if args.markdown is None:
            print(text)
        else:
            args.markdown.write_text(text)
        return 0
    if args.synthetic is not None:
        check_synthetic(json.loads(args.synthetic), args)
        return 0
    variants = VARIANTS
    names = [v.strip() for v in args.variants.split(",") if v.strip()]
    unknown = [v for v in names if v not in variants]
    if unknown:
        raise SystemExit(f"--variants: unknown {unknown}; known: {sorted(variants)}")
    run_study(args, {name: variants[name] for name in names})
    return 0


def check_synthetic(overrides: Mapping[str, Any], args: argparse.Namespace) -> None:
    """Does a config change keep the synthetic benchmark's conclusion (GRACE rho 0.3 beats
    random per round and every static method on every seed)? Its full table, same seeds."""
    from grace_lab import quality_synthetic as qs
    from grace_lab.quality_methods import Schedule
    from grace_lab.synthetic_task import TaskSpec

    limits = qs._limit_blas_threads()  # the benchmark's own BLAS thread limit
    config = replace(qs.GRACE_CONFIG, **overrides)
    seeds = [int(s) for s in args.seeds.split(",")]
    results = qs.run_suite(TaskSpec(), Schedule(), qs.build_methods(config), seeds)
    table = qs.format_table(qs.summarise(results))
    goal = qs.check_goal(results, config)
    print(table)
    print(json.dumps(goal, indent=1))
    args.json.parent.mkdir(parents=True, exist_ok=True)
    payload: dict[str, Any] = {"overrides": dict(overrides), "config": config.to_dict()}
    payload["table"] = table
    payload |= {"goal": goal, "runs": [asdict(r) for r in results]}
    args.json.write_text(json.dumps(payload, indent=1))
    del limits


def run_study(args: argparse.Namespace, variants: Mapping[str, Variant]) -> None:
    import torch

    from grace_lab.coreset_training import TrainSchedule, run_training
    from grace_lab.inprocess import RecordingProvider, load_shared_start
    from grace_lab.text_experiment import TextRecipe, mixture_counts, prepare_text_data
    from grace_workers.tiny_gpt import TinyGPTConfig

    torch.set_num_threads(args.threads)
    recipe = TextRecipe(train_counts=mixture_counts(args.documents))
    data = prepare_text_data(args.work_dir / "data", recipe)
    model_config = TinyGPTConfig(
        vocab_size=data.train.vocab_size, block_size=recipe.max_tokens, n_layer=2, n_embd=128
    )
    base = TrainSchedule(
        total_steps=args.steps,
        warmup_steps=args.warmup_steps,
        round_steps=args.round_steps,
        tokens_per_step=args.tokens_per_step,
        token_mean_loss=not args.document_mean_loss,
    )
    rows: list[dict[str, Any]] = []
    started = time.perf_counter()
    for seed in (int(s) for s in args.seeds.split(",")):
        warm, initial = load_shared_start(args.work_dir / "cache", data, model_config, base, seed)
        for budget in (float(b) for b in args.budgets.split(",")):
            for name, variant in variants.items():
                schedule = replace(base, use_weights=variant.use_weights)
                provider = RecordingProvider(
                    make_provider(name, variant, data, budget, seed, initial)
                )
                log.info("seed %d budget %.0f%%: %s", seed, 100 * budget, name)
                result = run_training(data, model_config, schedule, provider, seed, warm)
                row = summarize(name, variant, seed, budget, result, provider.ids, data, initial)
                rows.append(row)
                log.info(
                    "  -> ppl %.2f worst %.2f (%.0f s)",
                    result.final.overall,
                    result.final.worst,
                    result.wall_seconds - warm.seconds,
                )
                write_rows(args, rows, time.perf_counter() - started)


def summarize(
    name: str,
    variant: Variant,
    seed: int,
    budget: float,
    result: Any,
    recorded: list[Any],
    data: Any,
    initial: Any,
) -> dict[str, Any]:
    """The row: final perplexities, the curve, and what the coresets were made of.

    loss_pct / importance_pct: the mean percentile, under the warm-up model, of the round's
    picks (0.5 is what a uniform draw gets); source_share: the coreset's share per source.
    """
    import numpy as np

    strata = data.train_strata
    loss_pct, importance_pct = _percentiles(initial.loss), _percentiles(initial.importance)
    seen = np.zeros(len(data.train), dtype=bool)
    rounds = []
    for record, ids in zip(result.records, recorded, strict=True):
        seen[ids] = True
        share = np.bincount(strata[ids], minlength=len(data.stratum_names)) / max(ids.size, 1)
        rounds.append(
            {
                "round": record.round,
                "step": record.step,
                "perplexity": record.perplexity.overall,
                "by_source": record.perplexity.by_stratum,
                "churn": record.churn,
                "loss_pct": float(loss_pct[ids].mean()),
                "importance_pct": float(importance_pct[ids].mean()),
                "mean_tokens": float(data.train.lengths[ids].mean()),
                "source_share": dict(zip(data.stratum_names, share.tolist(), strict=True)),
                "info": {k: v for k, v in record.info.items() if isinstance(v, int | float)},
            }
        )
    return {
        "method": name,
        "variant": {**asdict(variant), "config": dict(variant.config)},
        "seed": seed,
        "budget": budget,
        **final_metrics(result),
        "unique_share": float(seen.mean()),
        "seconds": result.wall_seconds,
        "rounds": rounds,
    }


def _percentiles(values: Any) -> Any:
    import numpy as np

    order = np.argsort(values, kind="stable")
    pct = np.empty(values.shape[0], dtype=np.float64)
    pct[order] = (np.arange(values.shape[0]) + 0.5) / values.shape[0]
    return pct


def write_rows(args: argparse.Namespace, rows: list[dict[str, Any]], seconds: float) -> None:
    args.json.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "settings": {
            "seeds": args.seeds,
            "budgets": args.budgets,
            "steps": args.steps,
            "warmup_steps": args.warmup_steps,
            "round_steps": args.round_steps,
            "threads": args.threads,
            "seconds": seconds,
        },
        "command": "python -m grace_lab.lm_tuning " + " ".join(sys.argv[1:]),
        "rows": rows,
    }
    tmp = args.json.with_suffix(".tmp")
    tmp.write_text(json.dumps(payload, indent=1))
    tmp.replace(args.json)


def write_report(rows: list[dict[str, Any]], baseline: str) -> str:
    """Markdown tables per budget: mean +- sd over seeds, and the paired difference against
    `baseline` on the same seeds (negative is better). A later row replaces an earlier one of
    the same method, seed and budget, so that JSON files can be merged."""
    latest = {(r["method"], r["seed"], r["budget"]): r for r in rows}
    out: list[str] = []
    for budget in sorted({b for _, _, b in latest}):
        base = {s: r for (m, s, b), r in latest.items() if m == baseline and b == budget}
        methods = list(dict.fromkeys(m for m, _, b in latest if b == budget))
        names = _source_names(latest.values())
        out.append(f"\n### Budget {budget:.0%}\n")
        out.append(
            "| method | seeds | ppl | worst source | "
            + " | ".join(names)
            + " | d ppl vs random | d worst | wins (both) | pick importance pct | "
            "tokens / doc | churn | unique | passes/N |"
        )
        out.append("|" + "---|" * (12 + len(names)))
        for method in methods:
            runs = sorted(
                (r for (m, _, b), r in latest.items() if m == method and b == budget),
                key=lambda r: r["seed"],
            )
            paired = [(r, base[r["seed"]]) for r in runs if r["seed"] in base]
            d_ppl = [r["perplexity"] - q["perplexity"] for r, q in paired]
            d_worst = [
                r["worst_source_perplexity"] - q["worst_source_perplexity"] for r, q in paired
            ]
            wins = sum(1 for a, b in zip(d_ppl, d_worst, strict=True) if a < 0 and b < 0)
            later = [x for r in runs for x in r["rounds"][1:]]  # round 0 is all-warm-up scores
            cells = [
                method,
                ",".join(str(r["seed"]) for r in runs),
                _fmt(r["perplexity"] for r in runs),
                _fmt(r["worst_source_perplexity"] for r in runs),
                *(_fmt(r["perplexity_by_source"][n] for r in runs) for n in names),
                _fmt(d_ppl) if paired and method != baseline else "",
                _fmt(d_worst) if paired and method != baseline else "",
                f"{wins}/{len(paired)}" if method != baseline else "",
                _fmt_mean([x["importance_pct"] for r in runs for x in r["rounds"]], 2),
                _fmt_mean(
                    [x["mean_tokens"] for r in runs for x in r["rounds"] if "mean_tokens" in x], 1
                ),
                _fmt_mean([x["churn"] for x in later if x["churn"] is not None], 2),
                _fmt_mean([r["unique_share"] for r in runs], 2),
                _fmt_mean([r["scoring_passes_per_n"] for r in runs], 2),
            ]
            out.append("| " + " | ".join(cells) + " |")
    return "\n".join(out) + "\n"


def _source_names(rows: Any) -> list[str]:
    names: dict[str, None] = {}
    for row in rows:
        names.update(dict.fromkeys(row["perplexity_by_source"]))
    return list(names)


def _fmt(values: Any) -> str:
    data = [float(v) for v in values]
    if not data:
        return ""
    mean = statistics.fmean(data)
    sd = statistics.stdev(data) if len(data) > 1 else 0.0
    return f"{mean:.1f} ± {sd:.1f}"


def _fmt_mean(values: list[float], digits: int) -> str:
    return f"{statistics.fmean(values):.{digits}f}" if values else ""


if __name__ == "__main__":
    sys.exit(main())
