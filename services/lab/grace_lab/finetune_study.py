"""Choosing GRACE's fine-tuning defaults, and checking them where the table does not look.

    python -m grace_lab.finetune_study tune --seeds 10,11,12 \
        --json docs/results/finetune_tuning.json
    python -m grace_lab.finetune_study grid --seeds 1 --json docs/results/finetune_grid.json
    python -m grace_lab.finetune_study prepare --seeds 0,1,2
    python -m grace_lab.finetune_study merge --parts a.json b.json --json merged.json

`tune` runs named GRACE variants (`VARIANTS`) in-process (the service's own round through
`LocalJob`) against the score-free baselines, on seeds the table never uses. `grid` runs the
chosen defaults against random per round and InfoBatch in each robustness cell: the three
budgets at 0%, 20% and 40% label noise, another stratum mix, and twice the data. `prepare`
builds the data and pretrains the base models of some seeds ahead (they are cached). Rows go
to their own JSON files, in the table's row format plus `variant` / `cell`.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from grace_lab.finetune_methods import GraceRecipe
from grace_lab.finetune_report import markdown_tables
from grace_lab.finetune_setup import GRACE_CONFIG, GRACE_RECIPE, Study, prepare_setup
from grace_lab.finetune_table import merge_parts, run_one, write_between_markers

log = logging.getLogger("finetune_study")


def _variant(**config: Any) -> GraceRecipe:
    base = GRACE_RECIPE
    return replace(base, config=replace(base.config, **config))


# Each a GRACE recipe for fine-tuning; "defaults" is the one the table's `grace` row runs.
VARIANTS: dict[str, GraceRecipe] = {
    "defaults": GRACE_RECIPE,
    "power 1": _variant(sampling_power=1.0),
    "power 8": _variant(sampling_power=8.0),
    "guard 0.1": _variant(noise_guard_fraction=0.1),
    "guard 0.2": _variant(noise_guard_fraction=0.2),
    "smooth": _variant(estimation_rule="smooth"),
    "smooth strength 0.3": _variant(estimation_rule="smooth", smooth_strength=0.3),
    "smooth strength 3": _variant(estimation_rule="smooth", smooth_strength=3.0),
    "neutral unseen": _variant(unscored_rank=0.5),
    "gradient importance": replace(GRACE_RECIPE, importance="gradient"),
    "stratum budgets equal": _variant(stratum_budgets={0: 0.25, 1: 0.25, 2: 0.25, 3: 0.25}),
    "message passing": _variant(selector="graph_message_passing"),
    "facility location": _variant(selector="facility_location"),
    # The levers of embeddings and cheaper scoring (one charged round-0 pass each):
    "model graph": replace(GRACE_RECIPE, embedding="model"),
    "model graph centred + message passing": replace(
        GRACE_RECIPE,
        embedding="model",
        centre=True,
        config=replace(GRACE_RECIPE.config, selector="graph_message_passing"),
    ),
    "proxy graph centred": replace(GRACE_RECIPE, embedding="model", scorer="proxy", centre=True),
    # Re-scoring by the workers on top of the trainer's losses (charged each round):
    "rho 0.1": replace(
        GRACE_RECIPE, signals="both", config=replace(GRACE_CONFIG, rescore_fraction=0.1)
    ),
    "rho schedule 0.3 then 0.1": replace(
        GRACE_RECIPE, signals="both", rescore_schedule=(0.0, 0.3, 0.1)
    ),
}
BASELINES = ("random_per_round", "infobatch")
CELLS: dict[str, dict[str, Any]] = {
    "noise 0%": {"label_noise": 0.0},
    "noise 20% (the table)": {},
    "noise 40%": {"label_noise": 0.4},
    "strata balanced": {"pos_weights": (1.0, 1.0, 1.0, 1.0)},
    "twice the data": {"data_scale": 2},
}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=(__doc__ or "").split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("mode", choices=("tune", "grid", "prepare", "merge"))
    parser.add_argument("--parts", nargs="*", type=Path, default=[], help="merge: the JSON parts")
    parser.add_argument("--seeds", default="10,11,12")
    parser.add_argument("--budgets", default="0.2,0.3,0.5")
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--cells", default=",".join(CELLS))
    parser.add_argument(
        "--baselines", default=",".join(BASELINES), help="methods run beside GRACE (may be empty)"
    )
    parser.add_argument("--json", type=Path, default=Path("var/finetune/study.json"))
    Study.add_arguments(parser)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    study = Study.from_args(args)
    seeds = [int(s) for s in args.seeds.split(",")]
    if args.mode == "prepare":
        for seed in seeds:
            prepare_setup(study, seed)
        return 0
    if args.mode == "merge":  # parts run as separate processes, into --json
        _save(args, study, *merge_parts(args.parts))
        return 0
    budgets = [float(b) for b in args.budgets.split(",")]
    saved: dict[str, Any] = json.loads(args.json.read_text()) if args.json.exists() else {}
    rows: list[dict[str, Any]] = saved.get("rows", [])
    curves: list[dict[str, Any]] = saved.get("curves", [])
    done = {(r.get("cell"), r["method"], r["budget"], r["seed"]) for r in rows}
    started = time.perf_counter()
    for cell, cell_study, methods in _plan(args, study):
        with cell_study.services(needs_service=False):
            for seed in seeds:
                setup = prepare_setup(cell_study, seed)
                for method, recipe in methods:
                    for budget in budgets:
                        if (cell, method, budget, seed) in done:
                            continue
                        chosen = cell_study if recipe is None else replace(cell_study, grace=recipe)
                        kind = "grace" if recipe is not None else method
                        row, curve = run_one(chosen, setup, kind, budget, "inprocess")
                        row["method"] = curve["method"] = method
                        row["cell"] = curve["cell"] = cell
                        rows.append(row)
                        curves.append(curve)
                        _save(args, study, rows, curves, time.perf_counter() - started)
    _save(args, study, rows, curves, time.perf_counter() - started)
    return 0


def _plan(
    args: argparse.Namespace, study: Study
) -> list[tuple[str | None, Study, list[tuple[str, GraceRecipe | None]]]]:
    baselines: list[tuple[str, GraceRecipe | None]] = [
        (b, None) for b in args.baselines.split(",") if b
    ]
    if args.mode == "tune":
        names = [v for v in args.variants.split(",") if v]
        unknown = sorted(set(names) - set(VARIANTS))
        if unknown:
            raise SystemExit(f"--variants: unknown {unknown}; choose from {list(VARIANTS)}")
        return [(None, study, baselines + [(f"grace: {v}", VARIANTS[v]) for v in names])]
    plan = []
    for cell in [c for c in args.cells.split(",") if c]:
        if cell not in CELLS:
            raise SystemExit(f"--cells: unknown {cell!r}; choose from {list(CELLS)}")
        changes = dict(CELLS[cell])
        if "data_scale" in changes:  # relative to the study's own size
            changes["train_synsets"] = study.recipe.train_synsets * changes.pop("data_scale")
        cell_study = replace(study, recipe=replace(study.recipe, **changes))
        plan.append((cell, cell_study, [*baselines, ("grace", GRACE_RECIPE)]))
    return plan


def _save(
    args: argparse.Namespace,
    study: Study,
    rows: list[dict[str, Any]],
    curves: list[dict[str, Any]],
    seconds: float,
) -> None:
    out = {
        "command": "python -m grace_lab.finetune_study " + " ".join(sys.argv[1:]),
        "study": study.describe(),
        "variants": {name: str(recipe) for name, recipe in VARIANTS.items()},
        "rows": rows,
        "curves": curves,
        "seconds": seconds,
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.json.with_suffix(".tmp")
    tmp.write_text(json.dumps(out, indent=1, default=str))
    tmp.replace(args.json)
    cells = sorted({r.get("cell") or "" for r in rows})
    tables = []
    for cell in cells:
        chosen = [r for r in rows if (r.get("cell") or "") == cell]
        names = sorted({s for r in chosen for s in r["per_stratum"]})
        tables.append((f"**{cell}**\n\n" if cell else "") + markdown_tables(chosen, names))
    write_between_markers(args.json.with_suffix(".md"), "\n\n".join(tables))


if __name__ == "__main__":
    sys.exit(main())
