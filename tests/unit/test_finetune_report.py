"""The fine-tuning table's report: compute to target, the goal check, the tables, the results
page's hand-written text, and merging parts run as separate processes."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from grace_lab.finetune_report import (
    BASELINE,
    FULL,
    GRACE,
    add_compute_to_target,
    check_goal,
    compute_to_target,
    ctt_table,
    markdown_tables,
    summarize,
)
from grace_lab.finetune_table import END, START, main, write_between_markers

_loss = st.floats(0.5, 10.0, allow_nan=False)


@st.composite
def curves(draw: st.DrawFn) -> list[list[float]]:
    """A held-out curve: compute shares strictly increasing from 0, any losses."""
    losses = draw(st.lists(_loss, min_size=1, max_size=8))
    steps = draw(st.lists(st.floats(0.01, 1.0), min_size=len(losses), max_size=len(losses)))
    xs = [0.0]
    for step in steps[1:]:
        xs.append(xs[-1] + step)
    return [[x, y] for x, y in zip(xs, losses, strict=True)]


# Compute to target ------------------------------------------------------------------------------


@given(points=curves(), target=_loss)
def test_compute_to_target_is_none_exactly_when_the_curve_never_gets_there(
    points: list[list[float]], target: float
) -> None:
    reached = compute_to_target(points, target)
    assert (reached is None) == all(y > target for _, y in points)


@given(points=curves(), target=_loss)
def test_compute_to_target_lies_between_the_points_around_the_first_crossing(
    points: list[list[float]], target: float
) -> None:
    reached = compute_to_target(points, target)
    assume(reached is not None)
    assert reached is not None
    first = next(k for k, (_, y) in enumerate(points) if y <= target)
    assert reached <= points[first][0] + 1e-9
    if first > 0:
        assert reached >= points[first - 1][0] - 1e-9


@given(points=curves(), a=_loss, b=_loss)
def test_a_lower_target_never_takes_less_compute(
    points: list[list[float]], a: float, b: float
) -> None:
    low, high = sorted((a, b))
    easy, hard = compute_to_target(points, high), compute_to_target(points, low)
    if hard is not None:
        assert easy is not None
        assert hard >= easy - 1e-9


@given(
    start=_loss,
    slope=st.floats(0.1, 5.0),
    width=st.floats(0.1, 2.0),
    share=st.floats(0.0, 1.0),
    shift=st.floats(0.0, 3.0),
)
def test_compute_to_target_interpolates_a_straight_line_exactly(
    start: float, slope: float, width: float, share: float, shift: float
) -> None:
    # y = start - slope * (x - shift) on [shift, shift + width]: the target is hit at share.
    points = [[shift, start], [shift + width, start - slope * width]]
    target = start - slope * width * share
    reached = compute_to_target(points, target)
    assert reached is not None
    assert reached == pytest.approx(shift + width * share, abs=1e-9 * (1 + shift + width))


def test_compute_to_target_examples() -> None:
    points = [[0.0, 4.0], [0.1, 3.0], [0.2, 2.0], [0.3, 1.0]]
    assert compute_to_target(points, 2.5) == pytest.approx(0.15)
    assert compute_to_target(points, 5.0) == 0.0  # already there untrained
    assert compute_to_target(points, 1.0) == pytest.approx(0.3)
    assert compute_to_target(points, 0.9) is None
    assert compute_to_target([], 1.0) is None


def _curve(method: str, budget: float, seed: int, points: list[list[float]]) -> dict[str, Any]:
    return {"method": method, "budget": budget, "seed": seed, "points": points}


def _row(
    method: str,
    budget: float,
    seed: int,
    loss: float,
    ctt: float | None = None,
    strata: dict[str, float] | None = None,
) -> dict[str, Any]:
    return {
        "method": method,
        "budget": budget,
        "seed": seed,
        "heldout_loss": loss,
        "heldout_ppl": math.exp(loss),
        "per_stratum": strata if strata is not None else {"noun": loss, "verb": loss + 1.0},
        "compute_fraction": budget,
        "scoring_fraction": 0.1 * budget,
        "compute_to_target": ctt,
        "wall_seconds": 10.0 + seed,
    }


def test_compute_to_target_is_measured_against_full_datas_final_loss_on_the_same_seed() -> None:
    rows = [
        _row(FULL, 1.0, 0, 2.0),
        _row(FULL, 1.0, 1, 1.0),
        _row(GRACE, 0.5, 0, 1.9),
        _row(GRACE, 0.5, 1, 1.9),
        _row(BASELINE, 0.5, 0, 2.5),
        _row(GRACE, 0.5, 2, 1.0),  # no full-data run on seed 2
        _row(BASELINE, 0.3, 0, 2.6),  # no curve
    ]
    curves = [
        _curve(FULL, 1.0, 0, [[0.0, 4.0], [0.5, 3.0], [1.0, 2.0]]),
        _curve(FULL, 1.0, 1, [[0.0, 4.0], [1.0, 1.0]]),
        _curve(GRACE, 0.5, 0, [[0.0, 4.0], [0.25, 2.2], [0.5, 1.8]]),
        _curve(GRACE, 0.5, 1, [[0.0, 4.0], [0.5, 1.9]]),
        _curve(BASELINE, 0.5, 0, [[0.0, 4.0], [0.5, 2.5]]),
        _curve(GRACE, 0.5, 2, [[0.0, 4.0], [0.5, 1.0]]),
    ]
    add_compute_to_target(rows, curves)
    ctt = [r["compute_to_target"] for r in rows]
    assert ctt[0] == pytest.approx(1.0)  # full data reaches its own final loss at its end
    assert ctt[1] == pytest.approx(1.0)
    assert ctt[2] == pytest.approx(0.25 + 0.25 * 0.2 / 0.4)  # between 2.2 and 1.8
    assert ctt[3] is None  # seed 1's target is 1.0: never reached
    assert ctt[4] is None  # random never reaches 2.0
    assert ctt[5] is None
    assert ctt[6] is None


# The goal ---------------------------------------------------------------------------------------


def _goal_rows(
    grace: dict[float, list[float]],
    random: dict[float, list[float]],
    others: dict[float, list[float]],
    ctt: tuple[list[float | None], list[float | None]],
) -> list[dict[str, Any]]:
    """Rows for seeds 0..k of grace, random and one other method at each budget; ctt gives
    grace's and random's compute to target at the largest budget, seed by seed."""
    largest = max(grace)
    rows = [_row(FULL, 1.0, s, 1.0) for s in range(len(grace[largest]))]
    for method, losses in ((GRACE, grace), (BASELINE, random), ("rho_loss", others)):
        for budget, by_seed in losses.items():
            for seed, loss in enumerate(by_seed):
                which = 0 if method == GRACE else 1
                value = ctt[which][seed] if budget == largest and method != "rho_loss" else None
                rows.append(_row(method, budget, seed, loss, value))
    return rows


def test_the_goal_is_met_when_grace_wins_everywhere_and_reaches_the_target_sooner() -> None:
    rows = _goal_rows(
        grace={0.2: [2.0, 2.1], 0.5: [1.5, 1.6]},
        random={0.2: [2.2, 2.3], 0.5: [1.7, 1.8]},
        others={0.2: [2.5, 2.5], 0.5: [1.9, 1.9]},
        ctt=([0.2, 0.3], [0.4, 0.4]),
    )
    goal = check_goal(rows)
    assert goal["seeds"] == [0, 1]
    assert goal["beats_random_at_every_budget_and_seed"]
    assert goal["best_mean_at_budgets"] == 2
    assert goal["best_mean_at_two_or_more"]
    assert goal["compute_to_target_ratio_by_seed"] == pytest.approx([0.5, 0.75])
    assert goal["compute_to_target_ratio_median"] == pytest.approx(0.625)
    assert goal["compute_to_target_met"]
    assert goal["met"]
    assert set(goal["by_budget"]) == {"0.2", "0.5"}  # full data's budget is not one of them


def test_one_seed_lost_to_random_fails_the_first_criterion_only() -> None:
    rows = _goal_rows(
        grace={0.2: [2.0, 2.4], 0.5: [1.5, 1.6]},  # seed 1 loses at 0.2, the mean still wins
        random={0.2: [2.2, 2.3], 0.5: [1.7, 1.8]},
        others={0.2: [2.5, 2.5], 0.5: [1.9, 1.9]},
        ctt=([0.2, 0.3], [0.4, 0.4]),
    )
    goal = check_goal(rows)
    assert goal["by_budget"]["0.2"]["beats_random_by_seed"] == [True, False]
    assert not goal["beats_random_at_every_budget_and_seed"]
    assert goal["best_mean_at_budgets"] == 2
    assert goal["compute_to_target_met"]
    assert not goal["met"]


def test_another_method_with_a_better_mean_takes_the_best_mean_away() -> None:
    rows = _goal_rows(
        grace={0.2: [2.0, 2.1], 0.3: [1.8, 1.9], 0.5: [1.5, 1.6]},
        random={0.2: [2.2, 2.3], 0.3: [2.0, 2.1], 0.5: [1.7, 1.8]},
        others={0.2: [1.9, 1.9], 0.3: [1.7, 1.7], 0.5: [1.9, 1.9]},  # better at 0.2 and 0.3
        ctt=([0.2, 0.3], [0.4, 0.4]),
    )
    goal = check_goal(rows)
    assert goal["beats_random_at_every_budget_and_seed"]
    assert [goal["by_budget"][b]["best_mean"] for b in ("0.2", "0.3", "0.5")] == [
        False,
        False,
        True,
    ]
    assert goal["best_mean_at_budgets"] == 1
    assert not goal["best_mean_at_two_or_more"]
    assert not goal["met"]


def test_when_random_never_reaches_the_target_its_budget_stands_in_for_it() -> None:
    rows = _goal_rows(
        grace={0.2: [2.0, 2.1, 2.0], 0.5: [1.5, 1.6, 1.5]},
        random={0.2: [2.2, 2.3, 2.2], 0.5: [1.7, 1.8, 1.7]},
        others={0.2: [2.5, 2.5, 2.5], 0.5: [1.9, 1.9, 1.9]},
        ctt=([0.2, 0.45, None], [None, 0.5, 0.4]),
    )
    goal = check_goal(rows)
    ratios = goal["compute_to_target_ratio_by_seed"]
    # Seed 0: random never got there within 0.5, so 0.5 bounds it: 0.2 / 0.5.
    assert ratios[0] == pytest.approx(0.4)
    assert ratios[1] == pytest.approx(0.9)
    assert ratios[2] == math.inf  # grace never got there
    assert goal["compute_to_target_ratio_median"] == pytest.approx(0.9)
    assert not goal["compute_to_target_met"]
    assert not goal["met"]


def test_a_method_run_only_on_other_seeds_does_not_break_the_goal_check() -> None:
    rows = [
        _row(FULL, 1.0, 0, 1.0, 1.0),
        _row(GRACE, 0.5, 0, 1.5, 0.3),
        _row(BASELINE, 0.5, 0, 1.7, 0.4),
        _row("rho_loss", 0.5, 1, 1.6),  # seed 1 only: grace has not run it yet
    ]
    goal = check_goal(rows)
    assert goal["seeds"] == [0]


# Summaries and tables --------------------------------------------------------------------------


def test_summaries_average_over_seeds_per_budget_and_method() -> None:
    rows = [
        _row(GRACE, 0.5, 1, 2.0, strata={"noun": 1.0, "verb": 3.0}),
        _row(GRACE, 0.5, 0, 4.0, strata={"noun": 2.0, "verb": 5.0}),
        _row(BASELINE, 0.5, 0, 3.0, strata={"noun": 3.0}),
    ]
    summary = summarize(rows)
    assert list(summary) == sorted([(0.5, BASELINE), (0.5, GRACE)])
    ours = summary[(0.5, GRACE)]
    assert ours["seeds"] == [0, 1]
    assert ours["loss"] == pytest.approx((3.0, math.sqrt(2.0)))
    assert ours["worst"] == pytest.approx((4.0, math.sqrt(2.0)))
    assert ours["per_stratum"]["verb"] == pytest.approx((4.0, math.sqrt(2.0)))
    assert ours["wall"] == pytest.approx(10.5)
    assert summary[(0.5, BASELINE)]["loss"] == (3.0, 0.0)  # one seed: no spread
    assert set(summary[(0.5, BASELINE)]["per_stratum"]) == {"noun"}


def test_the_markdown_table_has_a_row_per_budget_and_method_and_a_column_per_stratum() -> None:
    methods = [FULL, BASELINE, "rho_loss", GRACE]
    rows = [_row(m, b, 0, 2.0) for m in methods for b in ([1.0] if m == FULL else [0.2, 0.5])]
    table = markdown_tables(rows, ["noun", "verb"])
    lines = table.splitlines()
    header = [c.strip() for c in lines[0].strip("|").split("|")]
    assert header[4:6] == ["noun", "verb"]
    assert len(lines) == 2 + 7
    body = [[c.strip() for c in line.strip("|").split("|")] for line in lines[2:]]
    assert all(len(cells) == len(header) for cells in body)
    assert {(cells[0], cells[1]) for cells in body} == {
        (f"{r['budget']:g}", r["method"]) for r in rows
    }


def test_the_compute_to_target_table_says_never_where_a_run_never_got_there() -> None:
    rows = [
        _row(FULL, 1.0, 0, 1.0, 1.0),
        _row(GRACE, 0.5, 0, 1.5, 0.25),
        _row(BASELINE, 0.5, 0, 1.7, None),
        _row(GRACE, 0.2, 0, 1.9, 0.1),  # not the largest budget: not in this table
    ]
    table = ctt_table(rows)
    assert f"| {GRACE} | 0.250 |" in table
    assert f"| {BASELINE} | never |" in table
    assert f"| {FULL} | 1.000 |" in table
    assert "0.100" not in table


# The results page -------------------------------------------------------------------------------

_hand = st.text(st.characters(codec="utf-8"), max_size=40).filter(
    lambda t: "<!--" not in t and "\r" not in t
)


@pytest.fixture(scope="module")
def scratch(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One folder for every example of a property test (tmp_path is per test, not example)."""
    return tmp_path_factory.mktemp("scratch")


@given(before=_hand, after=_hand, old=_hand, new=_hand)
def test_writing_the_tables_keeps_the_hand_written_text_around_them(
    scratch: Path, before: str, after: str, old: str, new: str
) -> None:
    page = scratch / "results.md"
    page.write_text(f"{before}{START}\n{old}\n{END}{after}")
    write_between_markers(page, new)
    assert page.read_text() == f"{before}{START}\n{new}\n{END}{after}"
    write_between_markers(page, new)  # idempotent
    assert page.read_text() == f"{before}{START}\n{new}\n{END}{after}"


def test_a_page_without_markers_gets_them_appended(tmp_path: Path) -> None:
    page = tmp_path / "results.md"
    write_between_markers(page, "| t |")
    assert page.read_text() == f"{START}\n| t |\n{END}\n"
    page.write_text("# Results\n\nWritten by hand.")
    write_between_markers(page, "| t |")
    assert page.read_text() == f"# Results\n\nWritten by hand.\n\n{START}\n| t |\n{END}\n"


def test_merge_joins_the_parts_fills_compute_to_target_and_runs_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    def part(name: str, seed: int) -> Path:
        rows = [_row(FULL, 1.0, seed, 2.0), _row(GRACE, 0.5, seed, 1.8)]
        curves = [
            _curve(FULL, 1.0, seed, [[0.0, 4.0], [1.0, 2.0]]),
            _curve(GRACE, 0.5, seed, [[0.0, 4.0], [0.5, 1.8]]),
        ]
        path = tmp_path / name
        path.write_text(json.dumps({"rows": rows, "curves": curves, "seconds": 5.0}))
        return path

    out, page = tmp_path / "table.json", tmp_path / "table.md"
    page.write_text(f"# Fine-tuning\n\nHand-written.\n\n{START}\nold\n{END}\nMore by hand.\n")
    code = main(
        [
            "--merge",
            str(part("a.json", 0)),
            str(part("b.json", 1)),
            "--json",
            str(out),
            "--markdown",
            str(page),
            "--plot",
            str(tmp_path / "table.png"),
            "--work-dir",
            str(tmp_path / "never-used"),
        ]
    )
    assert code == 0
    merged = json.loads(out.read_text())
    assert [(r["method"], r["seed"]) for r in merged["rows"]] == [
        (FULL, 0),
        (GRACE, 0),
        (FULL, 1),
        (GRACE, 1),
    ]
    assert len(merged["curves"]) == 4
    assert merged["seconds"] == 10.0
    grace = [r for r in merged["rows"] if r["method"] == GRACE]
    assert [r["compute_to_target"] for r in grace] == pytest.approx([0.5 * 2.0 / 2.2] * 2)
    assert merged["goal"] is not None
    assert merged["goal"]["seeds"] == [0, 1]
    text = page.read_text()
    assert text.startswith("# Fine-tuning\n\nHand-written.\n\n")
    assert text.endswith(f"{END}\nMore by hand.\n")
    assert "old" not in text
    assert f"| 0.5 | {GRACE} |" in text
    assert (tmp_path / "table.png").exists()
    assert not (tmp_path / "never-used").exists()
    assert f"| 0.5 | {GRACE} |" in capsys.readouterr().out
