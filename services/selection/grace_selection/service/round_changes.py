"""A round against the one before it: who entered and left the coreset and why (the dashboard's
round diff), and every sample's row of a round for export (CSV, Parquet).

Both read only what the two published rounds stored (see core/round_diff.py for what that
allows us to say), so the answer for a round never changes.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from grace_proto.models import DiffEntry, DiffReason, RoundDiffResponse, StratumChange
from grace_selection.adapters.ports import ScoreStore
from grace_selection.adapters.table_formats import (
    CSV_MEDIA_TYPE,
    PARQUET_MEDIA_TYPE,
    Categorical,
    Column,
    MissingDependencyError,
    write_csv,
    write_parquet,
)
from grace_selection.core.config import SelectionConfig
from grace_selection.core.round_diff import (
    ENTERED,
    REASON_CHANGE,
    REASONS,
    RoundDiff,
    compute_utility,
    diff_rounds,
)
from grace_selection.service.errors import InvalidInputError, MissingExtraError
from grace_selection.service.jobs import Job
from grace_selection.service.rounds import RoundData

TableRows = Literal["all", "coreset", "changed"]
TableFormat = Literal["csv", "parquet"]
MAX_DIFF_LIMIT = 1000


def describe_reason(reason: str, config: SelectionConfig) -> str:
    """The sentence the dashboard and the API show for a reason code."""
    texts = {
        "first_scored": "had no importance in the previous round; it has one now",
        "rescored_up": "re-scored for this round, and its utility rose",
        "estimate_up": "not re-scored: its importance estimated from its neighbours rose",
        "score_up": "its utility rose (this round did not record which scores were estimates)",
        "coverage": "its utility did not rise: it entered as the selection around it changed "
        "(the selector trades utility against coverage of the k-NN graph)",
        "noise_guard": f"its importance is now in the top {config.noise_guard_fraction:.1%} "
        "that the noise guard keeps out",
        "rescored_down": "re-scored for this round, and its utility fell",
        "estimate_down": "not re-scored: its importance estimated from its neighbours fell",
        "score_down": "its utility fell (this round did not record which scores were estimates)",
        "displaced": "its utility did not fall: it lost its place as the selection around it "
        "changed (the selector trades utility against coverage of the k-NN graph)",
    }
    return texts[reason]


@dataclass(frozen=True, slots=True, eq=False)
class _Pair:
    previous: RoundData
    current: RoundData
    diff: RoundDiff


def _pair(job: Job, store: ScoreStore, round_: int, what: str) -> _Pair:
    job.rounds.published(round_)  # 404 / 202 for a round that is not published
    if round_ == 0:
        raise InvalidInputError(
            f"round 0 is the first round: there is no previous round to compare it with; "
            f"ask for {what} of round 1 or later",
            field="round",
        )
    current = job.rounds.data(round_, store)
    previous = job.rounds.data(round_ - 1, store)
    n = job.spec.n
    diff = diff_rounds(previous.as_arrays(n), current.as_arrays(n), job.spec.config)
    return _Pair(previous, current, diff)


def describe_diff(job: Job, store: ScoreStore, round_: int, limit: int) -> RoundDiffResponse:
    if not 0 <= limit <= MAX_DIFF_LIMIT:
        raise InvalidInputError(f"must be in 0..{MAX_DIFF_LIMIT}, got {limit}", field="limit")
    pair = _pair(job, store, round_, "the diff")
    diff, current, previous = pair.diff, pair.current, pair.previous
    config = job.spec.config
    counts = diff.reason_counts()
    reasons = [
        DiffReason(
            reason=name,
            change="entered" if REASON_CHANGE[code] == ENTERED else "left",
            count=counts[name],
            text=describe_reason(name, config),
        )
        for code, name in enumerate(REASONS)
        if counts[name]
    ]
    moved = np.abs(diff.utility_after[diff.ids] - diff.utility_before[diff.ids])
    shown: list[int] = []
    for direction in (ENTERED, -ENTERED):
        positions = np.flatnonzero(diff.change == direction)
        # Largest utility move first; ties by id, so the list is stable.
        order = np.lexsort((diff.ids[positions], -moved[positions]))
        shown.extend(positions[order[:limit]].tolist())
    strata = job.arrays.strata
    planned = np.zeros(job.spec.n, dtype=np.bool_)
    planned[previous.rescore] = True
    samples = [_diff_entry(diff, p, strata, previous, current, planned, config) for p in shown]
    return RoundDiffResponse(
        job_id=job.job_id,
        round=round_,
        previous=round_ - 1,
        entered=int(diff.entered.size),
        left=int(diff.left.size),
        stayed=diff.stayed,
        reasons=reasons,
        strata=_strata_changes(job, diff),
        samples=samples,
        limit=limit,
    )


def _diff_entry(
    diff: RoundDiff,
    position: int,
    strata: npt.NDArray[np.int32] | None,
    previous: RoundData,
    current: RoundData,
    planned: npt.NDArray[np.bool_],
    config: SelectionConfig,
) -> DiffEntry:
    i = int(diff.ids[position])
    return DiffEntry(
        sample_id=i,
        change="entered" if diff.change[position] == ENTERED else "left",
        reason=REASONS[int(diff.reason[position])],
        stratum=None if strata is None else int(strata[i]),
        utility_before=float(diff.utility_before[i]),
        utility_after=float(diff.utility_after[i]),
        importance_before=_value(previous.importance, i),
        importance_after=_value(current.importance, i),
        estimated=None if current.estimated is None else bool(current.estimated[i]),
        planned=bool(planned[i]),
    )


def _strata_changes(job: Job, diff: RoundDiff) -> dict[str, StratumChange]:
    strata = job.arrays.strata
    if strata is None:
        return {}
    names = job.spec.request.stratum_names or {}
    tags = np.unique(strata)
    size = int(tags.max()) + 1 if tags.size else 0
    entered = np.bincount(strata[diff.entered], minlength=size)
    left = np.bincount(strata[diff.left], minlength=size)
    return {
        str(t): StratumChange(name=names.get(t, str(t)), entered=int(entered[t]), left=int(left[t]))
        for t in tags.tolist()
    }


def _value(values: npt.NDArray[np.float32] | None, i: int) -> float | None:
    if values is None or not np.isfinite(values[i]):
        return None
    return float(values[i])


# -- the per-sample table --------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TableExport:
    """An export ready to stream: its chunks, media type and a file name for the download."""

    chunks: Iterator[bytes]
    media_type: str
    filename: str


def export_round_table(
    job: Job, store: ScoreStore, round_: int, rows: TableRows, fmt: TableFormat
) -> TableExport:
    """Every sample's row of round `round_` (or only the coreset, or only the changes)."""
    if rows not in ("all", "coreset", "changed"):
        raise InvalidInputError(f"must be all, coreset or changed, got {rows!r}", field="rows")
    if fmt not in ("csv", "parquet"):
        raise InvalidInputError(f"must be csv or parquet, got {fmt!r}", field="format")
    columns = build_round_table(job, store, round_, rows)
    name = f"{job.job_id}-round-{round_}" + ("" if rows == "all" else f"-{rows}")
    if fmt == "csv":
        return TableExport(write_csv(columns), CSV_MEDIA_TYPE, f"{name}.csv")
    try:
        chunks = write_parquet(columns)
    except MissingDependencyError as exc:
        raise MissingExtraError(
            f"Parquet export needs {exc.package}, which this service does not have: "
            f"pip install 'grace-coresets[{exc.extra}]' and restart it, or ask for format=csv",
            field="format",
            extra={"package": exc.package, "install": f"grace-coresets[{exc.extra}]"},
        ) from exc
    return TableExport(chunks, PARQUET_MEDIA_TYPE, f"{name}.parquet")


def build_round_table(
    job: Job, store: ScoreStore, round_: int, rows: TableRows
) -> dict[str, Column]:
    """The columns of the export, in order (docs/dashboard.md lists them)."""
    job.rounds.published(round_)
    n = job.spec.n
    current = job.rounds.data(round_, store)
    pair = None
    if round_ > 0 or rows == "changed":
        pair = _pair(job, store, round_, "the changes")  # round 0: an error naming the fix
    member = _mask(n, current.indices)
    weight = np.full(n, np.nan, dtype=np.float32)
    if current.weights is not None:
        weight[current.indices] = current.weights
    columns: dict[str, Column] = {"sample_id": np.arange(n, dtype=np.int64)}
    strata = job.arrays.strata
    if strata is not None:
        columns["stratum"] = strata.astype(np.int32)
        columns["stratum_name"] = _stratum_names(job, strata)
    columns["in_coreset"] = member
    columns["weight"] = weight
    columns["importance"] = current.as_arrays(n).importance
    if current.estimated is not None:
        columns["estimated"] = current.estimated
    utility = compute_utility(current.as_arrays(n), job.spec.config)
    columns["utility"] = utility
    if current.loss is not None:
        columns["loss"] = current.loss
    columns["rescore_next"] = _mask(n, current.rescore)
    if pair is not None:
        columns |= _change_columns(n, pair)
    keep = _rows(rows, member, pair)
    if keep is None:
        return columns
    return {name: _take(column, keep) for name, column in columns.items()}


def _change_columns(n: int, pair: _Pair) -> dict[str, Column]:
    diff, previous = pair.diff, pair.previous
    was_member = _mask(n, previous.indices)
    status = np.where(was_member, 2, 3).astype(np.int32)  # 2 stayed, 3 out (if unchanged)
    status[diff.ids] = np.where(diff.change == ENTERED, 0, 1)
    reason = np.full(n, -1, dtype=np.int32)
    reason[diff.ids] = diff.reason
    return {
        "in_previous": was_member,
        "change": Categorical(status, ("entered", "left", "stayed", "out")),
        "reason": Categorical(reason, REASONS),
        "previous_importance": previous.as_arrays(n).importance,
        "previous_utility": diff.utility_before,
        "rescored_planned": _mask(n, previous.rescore),
    }


def _rows(
    rows: TableRows, member: npt.NDArray[np.bool_], pair: _Pair | None
) -> npt.NDArray[np.int64] | None:
    if rows == "coreset":
        return np.flatnonzero(member)
    if rows == "changed" and pair is not None:
        return pair.diff.ids
    return None


def _take(column: Column, keep: npt.NDArray[np.int64]) -> Column:
    if isinstance(column, Categorical):
        return Categorical(column.codes[keep], column.labels)
    taken: npt.NDArray[Any] = column[keep]
    return taken


def _mask(n: int, ids: npt.NDArray[np.int64]) -> npt.NDArray[np.bool_]:
    mask = np.zeros(n, dtype=np.bool_)
    mask[ids] = True
    return mask


def _stratum_names(job: Job, strata: npt.NDArray[np.int32]) -> Categorical:
    names = job.spec.request.stratum_names or {}
    tags = np.unique(strata)
    labels = tuple(names.get(int(t), str(int(t))) for t in tags)
    return Categorical(np.searchsorted(tags, strata).astype(np.int32), labels)
