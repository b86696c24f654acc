"""The paper table's report: merging parts run in several processes, and the goal check."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from grace_lab.paper_report import goal_table, merge_results


def _part(path: Path, seeds: str, rows: list[dict[str, object]], steps: int = 400) -> Path:
    settings = {"seeds": seeds, "budgets": "0.1", "steps": steps, "seconds": 5.0}
    curves = {f"m @ 10% seed {seeds}": [[100, 5.0]]}
    path.write_text(json.dumps({"settings": settings, "rows": rows, "curves": curves}))
    return path


def test_merge_results_joins_parts_and_keeps_the_first_seeds_curves(tmp_path: Path) -> None:
    a = _part(tmp_path / "a.json", "1", [{"seed": 1, "budget": 0.1}])
    b = _part(tmp_path / "b.json", "0", [{"seed": 0, "budget": 0.1}])
    merge_results([a, b], tmp_path / "all.json")
    merged = json.loads((tmp_path / "all.json").read_text())
    assert [r["seed"] for r in merged["rows"]] == [1, 0]
    assert merged["settings"]["seeds"] == "0,1"
    assert merged["settings"]["seconds"] == 10.0
    assert next(iter(merged["curves"])) == "m @ 10% seed 0"


def test_merge_results_refuses_parts_run_with_other_settings(tmp_path: Path) -> None:
    a = _part(tmp_path / "a.json", "0", [{"seed": 0, "budget": 0.1}])
    b = _part(tmp_path / "b.json", "1", [{"seed": 1, "budget": 0.1}], steps=200)
    with pytest.raises(ValueError, match="differ"):
        merge_results([a, b], tmp_path / "all.json")


def _row(method: str, seed: int, ppl: float, worst: float, passes: float) -> dict[str, Any]:
    return {
        "method": method,
        "seed": seed,
        "budget": 0.1,
        "perplexity": ppl,
        "worst_source_perplexity": worst,
        "perplexity_by_source": {},
        "scoring_passes_per_n": passes,
        "wall_seconds": 1.0,
    }


def test_goal_table_needs_a_win_on_every_seed_and_reports_the_cost_share() -> None:
    rows = [
        _row("random per round", 0, 100, 200, 0),
        _row("random per round", 1, 100, 200, 0),
        _row("random static", 0, 150, 250, 0),
        _row("random static", 1, 150, 250, 0),
        _row("GRACE full re-scoring", 0, 90, 180, 6),
        _row("GRACE full re-scoring", 1, 90, 180, 6),
        _row("GRACE rho=0.3 delta", 0, 95, 190, 2.5),
        _row("GRACE rho=0.3 delta", 1, 101, 190, 2.5),  # loses overall on seed 1
    ]
    table = goal_table(rows)
    line = next(x for x in table.splitlines() if "rho=0.3 delta" in x)
    assert "| overall no, worst yes | overall yes, worst yes | 42% |" in line
    assert "full re-scoring" not in table  # only the partial rows are judged
