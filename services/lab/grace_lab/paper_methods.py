"""The paper table's score-based baselines, run in-process on the shared training loop.

Static methods score every sample once with the warm-up model (one extra forward pass per
sample) and keep their pick for the whole run; InfoBatch-style pruning uses only the losses
training computes anyway. GRACE rows do not live here: they run through the real service,
Ray workers and client (`grace_lab.service_provider`).
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from grace_lab.coreset_training import RoundPlan
from grace_lab.inprocess import ScoredSamples, score_samples
from grace_selection.adapters.brute_force_index import BruteForceIndex
from grace_selection.core.config import SelectionConfig
from grace_selection.core.scores import ScoreTable
from grace_selection.core.selectors import select_coreset
from grace_workers.dataset import TokenDataset
from grace_workers.tiny_gpt import TinyGPT

F32 = npt.NDArray[np.float32]
I64 = npt.NDArray[np.int64]


def score_everything(
    model: TinyGPT, dataset: TokenDataset, dim: int, seed: int, batch_size: int = 64
) -> ScoredSamples:
    """The workers' scoring math over all N samples, in this process."""
    ids = np.arange(len(dataset), dtype=np.int64)
    return score_samples(model, dataset, ids, dim, seed, batch_size)


class _StaticScored:
    """Scores every sample once at the start of training, then keeps one coreset."""

    name = "static"

    def __init__(self, dataset: TokenDataset, budget: int, dim: int, seed: int) -> None:
        self.dataset, self.budget, self.dim, self.seed = dataset, budget, dim, seed
        self.ids: I64 = np.zeros(0, dtype=np.int64)
        self.weights: F32 | None = None
        self._scored = 0

    def begin(self, model: TinyGPT, step: int) -> None:
        scores = score_everything(model, self.dataset, self.dim, self.seed)
        self._scored = len(self.dataset)
        self.ids, self.weights = self.choose(scores)

    def choose(self, scores: ScoredSamples) -> tuple[I64, F32 | None]:
        raise NotImplementedError

    def next_round(self, round_: int, model: TinyGPT, step: int) -> RoundPlan:
        scored, self._scored = self._scored, 0
        return RoundPlan(self.ids, self.weights, scored_samples=scored)

    def observe(self, round_: int, step: int, ids: I64, losses: F32) -> None:
        return None

    def close(self) -> None:
        return None


class TopLossStatic(_StaticScored):
    """EL2N/loss-style: the budget's highest-loss samples under the warm-up model."""

    name = "top-loss static"

    def choose(self, scores: ScoredSamples) -> tuple[I64, F32 | None]:
        top = np.argsort(-scores.loss, kind="stable")[: self.budget]
        return np.sort(top).astype(np.int64), None


class SelectorStatic(_StaticScored):
    """One of the core's selectors (facility location or message passing), run once."""

    def __init__(
        self,
        name: str,
        dataset: TokenDataset,
        config: SelectionConfig,
        dim: int,
        seed: int,
        strata: npt.NDArray[np.int32],
    ) -> None:
        super().__init__(dataset, 0, dim, seed)
        self.name, self.config, self.strata = name, config, strata

    def choose(self, scores: ScoredSamples) -> tuple[I64, F32 | None]:
        index = BruteForceIndex(self.dim)
        index.upsert(np.arange(len(self.dataset), dtype=np.int64), scores.embeddings)
        graph = index.knn_graph(self.config.k)
        n = len(self.dataset)
        table = ScoreTable.from_arrays(
            scores.loss, scores.importance, np.zeros(n, np.int32), self.strata
        )
        coreset = select_coreset(graph, table, self.config, round_=0, seed=self.seed)
        return coreset.indices, coreset.weights


class InfoBatchStyle:
    """InfoBatch-style dynamic pruning from free training losses (Qin et al., 2024).

    Each round keeps every sample whose last seen loss is above the mean (never-seen samples
    count as above) and a random share of the rest, sized so that the round holds the budget;
    kept low-loss samples are up-weighted by 1/keep-probability so the expected gradient stays
    unbiased. No extra forward pass.
    """

    name = "InfoBatch-style"

    def __init__(self, n: int, budget: int, seed: int) -> None:
        self.n, self.budget, self.seed = n, budget, seed
        self.loss = np.full(n, np.nan, dtype=np.float32)

    def begin(self, model: TinyGPT, step: int) -> None:
        return None

    def next_round(self, round_: int, model: TinyGPT, step: int) -> RoundPlan:
        rng = np.random.default_rng([self.seed, 5, round_])
        seen = ~np.isnan(self.loss)
        mean = float(self.loss[seen].mean()) if seen.any() else 0.0
        high = np.flatnonzero(~seen | (self.loss > mean))
        low = np.flatnonzero(seen & (self.loss <= mean))
        if high.size >= self.budget:
            ids = rng.choice(high, size=self.budget, replace=False)
            return RoundPlan(np.sort(ids).astype(np.int64))
        take = self.budget - high.size
        keep_low = rng.choice(low, size=take, replace=False)
        ids = np.concatenate([high, keep_low])
        weights = np.concatenate(
            [np.ones(high.size), np.full(take, low.size / max(take, 1))]
        ).astype(np.float32)
        order = np.argsort(ids)
        return RoundPlan(ids[order].astype(np.int64), weights[order])

    def observe(self, round_: int, step: int, ids: I64, losses: F32) -> None:
        self.loss[ids] = losses

    def close(self) -> None:
        return None
