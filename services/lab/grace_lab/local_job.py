"""One GRACE job run in this process on the service's own parts, for the studies.

The state is the service's `JobArrays`, scores and embeddings enter it as the service applies
ingested batches, and each round is the service's `step_round` with its `GraphKeeper` over an
exact `BruteForceIndex`. What the service adds around that (HTTP, the store, the log,
publishing) changes no coreset, so a study on a `LocalJob` measures the product's round.
No torch here: the synthetic study runs on numpy alone.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import numpy.typing as npt

from grace_selection.adapters.brute_force_index import BruteForceIndex
from grace_selection.core.config import SelectionConfig
from grace_selection.service.batches import EmbeddingBatch, ScoreBatch
from grace_selection.service.graph_keeper import GraphKeeper
from grace_selection.service.keeper_types import IndexFactory
from grace_selection.service.round_step import RoundOutcome, step_round
from grace_selection.service.state import JobArrays

F32 = npt.NDArray[np.float32]
I64 = npt.NDArray[np.int64]


class LocalJob:
    """A job of `n` samples with `dim`-d embeddings and an optional stratum per sample."""

    def __init__(
        self,
        n: int,
        dim: int,
        config: SelectionConfig,
        seed: int,
        strata: npt.NDArray[np.int32] | None = None,
    ) -> None:
        self.n, self.dim, self.config, self.seed = n, dim, config, seed
        self.arrays = JobArrays(
            n, dim, None if strata is None else np.asarray(strata, np.int32), shared=True
        )
        self.previous_importance: F32 = np.full(n, np.nan, np.float32)
        self._folder = tempfile.TemporaryDirectory(prefix="grace-local-job-")
        # The folder only matters for snapshots, which a local job never takes.
        factory = IndexFactory("brute", BruteForceIndex, BruteForceIndex.load)
        self.keeper = GraphKeeper(n, dim, factory, Path(self._folder.name))
        self._seq = 0  # the log position of the last applied batch, as in the service's log

    def apply_worker_scores(
        self,
        ids: I64,
        round_: int,
        *,
        embeddings: F32 | None,
        loss: F32 | None,
        importance: F32 | None,
    ) -> None:
        """What a scoring worker posts for round `round_`: embeddings (unless None: the graph's
        vectors stay as they are), then scores."""
        if embeddings is not None:
            self._apply(EmbeddingBatch(f"emb-{self._seq}", round_, ids, embeddings, b""))
        self._apply(ScoreBatch(f"s-{self._seq}", "worker", round_, 0, ids, loss, importance, b""))

    def apply_trainer_losses(self, ids: I64, losses: F32, round_: int, step: int) -> None:
        """The per-sample losses a trainer reports (the client's ScoreReporter)."""
        self.apply_trainer_scores(ids, round_, step, loss=losses)

    def apply_trainer_scores(
        self,
        ids: I64,
        round_: int,
        step: int,
        *,
        loss: F32 | None = None,
        importance: F32 | None = None,
        embeddings: F32 | None = None,
    ) -> None:
        """What a trainer's ScoreReporter sends for `ids`: losses, and optionally the importance
        and embeddings its forward pass computed anyway (for round `round_`)."""
        if embeddings is not None:
            self._apply(EmbeddingBatch(f"te-{self._seq}", round_, ids, embeddings, b""))
        if loss is not None or importance is not None:
            batch_id = f"t-{self._seq}"
            self._apply(ScoreBatch(batch_id, "trainer", round_, step, ids, loss, importance, b""))

    def step(self, round_: int) -> RoundOutcome:
        """The service's round step; its importance becomes the next round's previous one."""
        outcome = step_round(
            self.arrays,
            self.keeper,
            self.config,
            self.previous_importance,
            round_=round_,
            seed=self.seed,
        )
        self.previous_importance = outcome.result.importance
        return outcome

    def close(self) -> None:
        self._folder.cleanup()

    def _apply(self, batch: EmbeddingBatch | ScoreBatch) -> None:
        self._seq += 1
        self.arrays.apply(batch, self._seq)
