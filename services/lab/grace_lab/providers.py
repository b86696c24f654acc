"""Sample providers that need no scores: the baselines people would otherwise use."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from grace_lab.coreset_training import RoundPlan
from grace_workers.tiny_gpt import TinyGPT


class _ScoreFree:
    """Shared no-op hooks of providers that ignore training losses."""

    name = "score-free"

    def begin(self, model: TinyGPT, step: int) -> None:
        return None

    def observe(
        self, round_: int, step: int, ids: npt.NDArray[np.int64], losses: npt.NDArray[np.float32]
    ) -> None:
        return None

    def close(self) -> None:
        return None


class FullDataProvider(_ScoreFree):
    """Every sample, every round: plain training on the full data."""

    name = "full data"

    def __init__(self, n: int) -> None:
        self.ids = np.arange(n, dtype=np.int64)

    def next_round(self, round_: int, model: TinyGPT, step: int) -> RoundPlan:
        return RoundPlan(self.ids)


class RandomStaticProvider(_ScoreFree):
    """One uniform random subset of the budget, drawn once."""

    name = "random static"

    def __init__(self, n: int, budget: int, seed: int) -> None:
        rng = np.random.default_rng([seed, 3])
        self.ids = np.sort(rng.choice(n, size=budget, replace=False)).astype(np.int64)

    def next_round(self, round_: int, model: TinyGPT, step: int) -> RoundPlan:
        return RoundPlan(self.ids)


class RandomPerRoundProvider(_ScoreFree):
    """A fresh uniform random subset of the budget every round."""

    name = "random per round"

    def __init__(self, n: int, budget: int, seed: int) -> None:
        self.n, self.budget, self.seed = n, budget, seed

    def next_round(self, round_: int, model: TinyGPT, step: int) -> RoundPlan:
        rng = np.random.default_rng([self.seed, 4, round_])
        ids = np.sort(rng.choice(self.n, size=self.budget, replace=False)).astype(np.int64)
        return RoundPlan(ids)


class LengthWeightedRandomPerRound(_ScoreFree):
    """Random per round, each document drawn with probability proportional to its predicted
    tokens: the baseline that gets GRACE's longer documents without any scoring, to tell
    "better documents" from "more tokens per step"."""

    name = "random per round by length"

    def __init__(self, lengths: npt.NDArray[np.int64], budget: int, seed: int) -> None:
        self.budget, self.seed = budget, seed
        weight = np.maximum(np.asarray(lengths, dtype=np.float64) - 1.0, 1.0)
        self.p = weight / weight.sum()

    def next_round(self, round_: int, model: TinyGPT, step: int) -> RoundPlan:
        rng = np.random.default_rng([self.seed, 6, round_])
        ids = rng.choice(self.p.size, size=self.budget, replace=False, p=self.p)
        return RoundPlan(np.sort(ids).astype(np.int64))
