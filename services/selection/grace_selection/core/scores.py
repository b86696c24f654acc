"""A read-only view of what is known about each sample's score."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

NEVER_SCORED = -1


@dataclass(frozen=True, slots=True, eq=False)
class ScoreTable:
    """Per-sample scores, all arrays of length N.

    loss: (N,) float32, the latest known loss (NaN where never seen).
    importance: (N,) float32, the latest gradient importance (NaN where never scored).
    scored_round: (N,) int32, the round whose model produced `importance` (NEVER_SCORED = -1).
    stratum: (N,) int32 or None, a tag per sample (data source, class, ...).
    """

    loss: npt.NDArray[np.float32]
    importance: npt.NDArray[np.float32]
    scored_round: npt.NDArray[np.int32]
    stratum: npt.NDArray[np.int32] | None = None

    def __post_init__(self) -> None:
        n = self.importance.shape[0]
        for name in ("loss", "importance", "scored_round"):
            arr = getattr(self, name)
            if arr.ndim != 1 or arr.shape[0] != n:
                raise ValueError(f"{name} must have shape ({n},), got {arr.shape}")
        if self.stratum is not None and self.stratum.shape != (n,):
            raise ValueError(f"stratum must have shape ({n},), got {self.stratum.shape}")
        if self.stratum is not None and n and self.stratum.min() < 0:
            raise ValueError("stratum tags must be >= 0")

    @property
    def n(self) -> int:
        return int(self.importance.shape[0])

    def age(self, current_round: int) -> npt.NDArray[np.int32]:
        """Rounds since each importance was computed; never-scored samples get current_round + 1."""
        age = current_round - self.scored_round
        age[self.scored_round == NEVER_SCORED] = current_round + 1
        return age.astype(np.int32)

    @classmethod
    def from_arrays(
        cls,
        loss: npt.ArrayLike,
        importance: npt.ArrayLike,
        scored_round: npt.ArrayLike,
        stratum: npt.ArrayLike | None = None,
    ) -> ScoreTable:
        return cls(
            np.ascontiguousarray(loss, dtype=np.float32),
            np.ascontiguousarray(importance, dtype=np.float32),
            np.ascontiguousarray(scored_round, dtype=np.int32),
            None if stratum is None else np.ascontiguousarray(stratum, dtype=np.int32),
        )
