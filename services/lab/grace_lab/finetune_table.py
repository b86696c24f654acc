"""Does GRACE make fine-tuning cheaper? Every method at the same total compute, every cost counted.

    python -m grace_lab.finetune_table --seeds 0,1,2 --budgets 0.2,0.3,0.5 \
        --json docs/results/finetune_table.json

Per seed: the WordNet definition task (`grace_lab.definitions`; 20% label noise, clean held-out
synsets) or your own pairs (`--jsonl`, `--held-out-jsonl`), a base model pretrained once on
KJV verses and fortunes (cached), and for each budget b every method fine-tuned from it with
exactly b * C FLOPs, C being full data's three epochs (`grace_lab.finetune_training`). Scoring
passes, reference models and their training come out of a method's budget. The `grace` and
`grace_full_rescoring` rows run through the real service, Ray workers and client. Rows are
written after every run, and a rerun with the same --json skips the runs it already has.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from grace_lab.finetune_report import (
    FULL,
    add_compute_to_target,
    check_goal,
    ctt_table,
    markdown_tables,
    plot_curves,
)
from grace_lab.finetune_setup import (
    FinetuneSetup,
    Study,
    make_provider,
    prepare_setup,
    unwind_on_sigterm,
)

log = logging.getLogger("finetune_table")
METHODS = (
    "full_data",
    "random_per_round",
    "random_static",
    "random_by_length",
    "infobatch",
    "rho_loss",
    "facility_location_static",
    "message_passing_static",
    "grace_full_rescoring",
    "grace",
)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=(__doc__ or "").split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--budgets", default="0.2,0.3,0.5", help="shares of C")
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--json", type=Path, default=Path("docs/results/finetune_table.json"))
    parser.add_argument("--markdown", type=Path, help="default: --json with .md")
    parser.add_argument("--plot", type=Path, help="default: --json with .png")
    Study.add_arguments(parser)
    parser.add_argument("--grace-path", choices=("service", "inprocess"), default="service")
    parser.add_argument(
        "--merge",
        nargs="+",
        type=Path,
        help="write --json from these parts' rows (run as separate processes) and run nothing",
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    unwind_on_sigterm()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)
    study = Study.from_args(args)
    methods = [m for m in args.methods.split(",") if m]
    unknown = sorted(set(methods) - set(METHODS))
    if unknown:
        raise SystemExit(f"--methods: unknown {unknown}; choose from {list(METHODS)}")
    seeds = [int(s) for s in args.seeds.split(",")]
    budgets = [float(b) for b in args.budgets.split(",")]
    started = time.perf_counter()
    if args.merge:
        rows, curves, seconds = merge_parts(args.merge)
        _save(args, study, rows, curves, seconds)
        print(markdown_tables(rows, _names(rows)))
        return 0
    saved = _load(args.json)
    rows, curves = saved.get("rows", []), saved.get("curves", [])
    done = {(r["method"], r["budget"], r["seed"]) for r in rows}
    with study.services(
        needs_service="grace" in ",".join(methods) and args.grace_path == "service"
    ):
        for seed in seeds:
            setup = prepare_setup(study, seed)
            for method in methods:
                for budget in [1.0] if method == FULL else budgets:
                    if (method, budget, seed) in done:
                        continue
                    row, curve = run_one(study, setup, method, budget, args.grace_path)
                    rows.append(row)
                    curves.append(curve)
                    _save(args, study, rows, curves, time.perf_counter() - started)
    _save(args, study, rows, curves, time.perf_counter() - started)
    print(markdown_tables(rows, _names(rows)))
    return 0


def run_one(
    study: Study, setup: FinetuneSetup, method: str, budget: float, grace_path: str
) -> tuple[dict[str, Any], dict[str, Any]]:
    """One run of `method` at `budget` x C: its table row and its compute curve."""
    from grace_lab.finetune_training import run_finetune

    provider = make_provider(study, setup, method, budget, grace_path)
    run = run_finetune(
        setup.data,
        setup.model_config,
        setup.base_state,
        provider,
        budget * setup.reference,
        study.schedule,
        setup.seed,
    )
    meter, final = run.meter, run.final
    row: dict[str, Any] = {
        "method": method,
        "budget": budget,
        "seed": setup.seed,
        "heldout_loss": final.loss,
        "heldout_ppl": final.perplexity,
        "per_stratum": final.by_stratum,
        "compute_fraction": meter.total / setup.reference,
        "scoring_fraction": (meter.scoring + meter.reference) / setup.reference,
        "compute_to_target": None,
        "wall_seconds": run.wall_seconds,
    }
    curve = {
        "method": method,
        "budget": budget,
        "seed": setup.seed,
        "points": [[p.compute / setup.reference, p.held_out.loss] for p in run.curve],
        "rounds": run.rounds,
        "spent": {"train": meter.train, "scoring": meter.scoring, "reference": meter.reference},
    }
    log.info(
        "%s b=%g seed=%d: held-out loss %.4f (worst %.4f), scoring %.1f%% of C, %.0f s",
        method,
        budget,
        setup.seed,
        final.loss,
        final.worst,
        100 * row["scoring_fraction"],
        run.wall_seconds,
    )
    return row, curve


def _names(rows: list[dict[str, Any]]) -> list[str]:
    return sorted({s for r in rows for s in r["per_stratum"]})


def merge_parts(
    paths: list[Path],
) -> tuple[list[dict[str, Any]], list[dict[str, Any]], float]:
    """The rows, curves and summed seconds of study parts run as separate processes."""
    parts = [_load(path) for path in paths]
    rows = [row for part in parts for row in part.get("rows", [])]
    curves = [curve for part in parts for curve in part.get("curves", [])]
    return rows, curves, sum(part.get("seconds", 0.0) for part in parts)


def _load(path: Path) -> dict[str, Any]:
    if path.exists():
        saved: dict[str, Any] = json.loads(path.read_text())
        return saved
    return {}


def _save(
    args: argparse.Namespace,
    study: Study,
    rows: list[dict[str, Any]],
    curves: list[dict[str, Any]],
    seconds: float,
) -> None:
    add_compute_to_target(rows, curves)
    goal = check_goal(rows) if any(r["method"] == "grace" for r in rows) else None
    out = {
        "command": "python -m grace_lab.finetune_table " + " ".join(sys.argv[1:]),
        "study": study.describe(),
        "rows": rows,
        "curves": curves,
        "goal": goal,
        "seconds": seconds,
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.json.with_suffix(".tmp")
    tmp.write_text(json.dumps(_finite(out), indent=1, default=_jsonable, allow_nan=False))
    tmp.replace(args.json)
    tables = "\n\n".join(
        [
            markdown_tables(rows, _names(rows)),
            "Compute to reach full data's final held-out loss on the same seed (share of C):",
            ctt_table(rows),
        ]
    )
    write_between_markers(args.markdown or args.json.with_suffix(".md"), tables)
    plot_curves(args.plot or args.json.with_suffix(".png"), curves)


START, END = "<!-- tables: written by grace_lab.finetune_table -->", "<!-- /tables -->"


def write_between_markers(path: Path, tables: str) -> None:
    """Put the tables between the markers of a results page, keeping its hand-written text;
    a page without markers gets them appended."""
    text = path.read_text() if path.exists() else ""
    block = f"{START}\n{tables}\n{END}"
    if START in text and END in text:
        head, rest = text.split(START, 1)
        text = head + block + rest.split(END, 1)[1]
    else:
        text = (text + "\n\n" if text else "") + block + "\n"
    path.write_text(text)


def _finite(value: Any) -> Any:
    """Strict JSON: an infinite or NaN number (a ratio where GRACE never reached the target)
    is written as null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value


def _jsonable(value: Any) -> Any:
    if hasattr(value, "__dataclass_fields__"):
        return asdict(value)
    if hasattr(value, "tolist"):
        return value.tolist()
    return str(value)


os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("RAY_AUTH_MODE", "disabled")

if __name__ == "__main__":
    sys.exit(main())
