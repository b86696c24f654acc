"""What changed between two consecutive published rounds, and what can truthfully be said why.

A round stores the importance vector its selection used (fresh scores and estimates), which of
those values were estimates, and the loss it saw. From two consecutive rounds we can recompute
the utility the selector maximised in each (`combine_scores`, the same function it called), so
for every sample that entered or left the coreset we know how its utility moved, whether its
importance was re-scored or estimated for the new round, and whether the noise guard now keeps
it out. What we cannot recover is the selector's trade-off against coverage of the k-NN graph
(the graph of that moment is not stored): a sample whose utility did not move the way its
membership did is said to have moved "with the selection around it", nothing more precise.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from grace_selection.core.config import SelectionConfig
from grace_selection.core.importance import combine_scores, guard_noise
from grace_selection.core.scores import NEVER_SCORED, ScoreTable

UNCHANGED_UTILITY = 0.01
"""A utility move smaller than this (one percentile point of rank) counts as no move."""

ENTERED = 1
LEFT = -1

# Reason codes: the index into REASONS is what `RoundDiff.reason` holds.
REASONS: tuple[str, ...] = (
    "first_scored",  # entered: no importance in the previous round, one now
    "rescored_up",  # entered: re-scored for this round, utility rose
    "estimate_up",  # entered: not re-scored, its estimate rose
    "score_up",  # entered: utility rose; the round did not record estimates
    "coverage",  # entered: utility did not rise; the selection around it changed
    "noise_guard",  # left: now in the top share of importance the noise guard excludes
    "rescored_down",  # left: re-scored for this round, utility fell
    "estimate_down",  # left: not re-scored, its estimate fell
    "score_down",  # left: utility fell; the round did not record estimates
    "displaced",  # left: utility did not fall; the selection around it changed
)
REASON_CODE = {name: code for code, name in enumerate(REASONS)}
REASON_CHANGE: tuple[int, ...] = (ENTERED,) * 5 + (LEFT,) * 5
"""The membership change each reason explains, by reason code."""


@dataclass(frozen=True, slots=True, eq=False)
class RoundArrays:
    """What one published round stored, as the diff reads it.

    indices: (K,) int64 sorted coreset ids. importance: (N,) float32, the vector the selection
    used (NaN: unknown). loss: (N,) float32 or None (a round that stored none). estimated:
    (N,) bool or None: True where importance was not a fresh score.
    """

    indices: npt.NDArray[np.int64]
    importance: npt.NDArray[np.float32]
    loss: npt.NDArray[np.float32] | None
    estimated: npt.NDArray[np.bool_] | None


@dataclass(frozen=True, slots=True, eq=False)
class RoundDiff:
    """The samples whose membership changed from `previous` to `current`.

    ids: (C,) int64 sorted, every sample that entered or left. change: (C,) int8, ENTERED or
    LEFT. reason: (C,) uint8, an index into REASONS. utility_before / utility_after: (N,)
    float32, the selector's utility in each round (in (0, 1]). stayed: members of both.
    """

    ids: npt.NDArray[np.int64]
    change: npt.NDArray[np.int8]
    reason: npt.NDArray[np.uint8]
    utility_before: npt.NDArray[np.float32]
    utility_after: npt.NDArray[np.float32]
    stayed: int

    @property
    def entered(self) -> npt.NDArray[np.int64]:
        ids: npt.NDArray[np.int64] = self.ids[self.change == ENTERED]
        return ids

    @property
    def left(self) -> npt.NDArray[np.int64]:
        ids: npt.NDArray[np.int64] = self.ids[self.change == LEFT]
        return ids

    def reason_counts(self) -> dict[str, int]:
        """Samples per reason, every reason listed (0 where none)."""
        counts = np.bincount(self.reason, minlength=len(REASONS))
        return {name: int(counts[code]) for code, name in enumerate(REASONS)}


def compute_utility(round_: RoundArrays, config: SelectionConfig) -> npt.NDArray[np.float32]:
    """The utility the round's selector maximised, recomputed from what the round stored."""
    n = round_.importance.shape[0]
    loss = round_.loss if round_.loss is not None else np.full(n, np.nan, np.float32)
    # combine_scores reads neither scored_round nor stratum; they only complete the table.
    table = ScoreTable.from_arrays(loss, round_.importance, np.full(n, NEVER_SCORED))
    utility, _ = combine_scores(table, config)
    return utility


def diff_rounds(previous: RoundArrays, current: RoundArrays, config: SelectionConfig) -> RoundDiff:
    """Who entered and left the coreset between two consecutive rounds, with a reason each.

    config: the current round's selection config (its noise guard and importance weight).
    Reasons, first match wins; `up`/`down` means the utility moved by more than
    UNCHANGED_UTILITY in the direction of the membership change:
      entered: first_scored (no importance before, one now); rescored_up / estimate_up /
        score_up (re-scored, estimated, or not recorded which); coverage (no such move);
      left: noise_guard (now excluded by the guard); rescored_down / estimate_down /
        score_down; displaced (no such move).
    """
    n = current.importance.shape[0]
    if previous.importance.shape != (n,):
        raise ValueError(
            f"previous.importance has shape {previous.importance.shape}, current has ({n},): "
            "both rounds must belong to the same job"
        )
    before = compute_utility(previous, config)
    after = compute_utility(current, config)
    entered = np.setdiff1d(current.indices, previous.indices, assume_unique=True)
    left = np.setdiff1d(previous.indices, current.indices, assume_unique=True)
    stayed = int(current.indices.size - entered.size)

    moved = after.astype(np.float64) - before.astype(np.float64)
    reason_in = _entered_reasons(entered, previous, current, moved)
    reason_out = _left_reasons(left, current, config, moved)
    ids = np.concatenate([entered, left])
    change = np.concatenate(
        [np.full(entered.size, ENTERED, np.int8), np.full(left.size, LEFT, np.int8)]
    )
    reason = np.concatenate([reason_in, reason_out])
    order = np.argsort(ids, kind="stable")
    return RoundDiff(ids[order], change[order], reason[order], before, after, stayed)


def _entered_reasons(
    ids: npt.NDArray[np.int64],
    previous: RoundArrays,
    current: RoundArrays,
    moved: npt.NDArray[np.float64],
) -> npt.NDArray[np.uint8]:
    reason = np.full(ids.size, REASON_CODE["coverage"], np.uint8)
    up = moved[ids] > UNCHANGED_UTILITY
    if current.estimated is None:
        reason[up] = REASON_CODE["score_up"]
    else:
        estimated = current.estimated[ids]
        reason[up & ~estimated] = REASON_CODE["rescored_up"]
        reason[up & estimated] = REASON_CODE["estimate_up"]
    first = ~np.isfinite(previous.importance[ids]) & np.isfinite(current.importance[ids])
    reason[first] = REASON_CODE["first_scored"]
    return reason


def _left_reasons(
    ids: npt.NDArray[np.int64],
    current: RoundArrays,
    config: SelectionConfig,
    moved: npt.NDArray[np.float64],
) -> npt.NDArray[np.uint8]:
    reason = np.full(ids.size, REASON_CODE["displaced"], np.uint8)
    down = moved[ids] < -UNCHANGED_UTILITY
    if current.estimated is None:
        reason[down] = REASON_CODE["score_down"]
    else:
        estimated = current.estimated[ids]
        reason[down & ~estimated] = REASON_CODE["rescored_down"]
        reason[down & estimated] = REASON_CODE["estimate_down"]
    if config.noise_guard_fraction > 0:
        guarded = ~guard_noise(current.importance, config.noise_guard_fraction)
        reason[guarded[ids]] = REASON_CODE["noise_guard"]
    return reason
