"""GRACE in one process: what the service, the workers and the client do, without HTTP or Ray.

`paper_table.py` runs every GRACE row through the real service, Ray pool and client; that is
the claim, and it is slow to iterate on. A tuning study needs dozens of configs, so this
provider does the same algorithm in-process, step for step:

1. score the round's rescore plan (round 0: every sample) with the current model, using the
   workers' math (`score_batch` + the job's seeded projection): loss, closed-form gradient
   importance, pooled-hidden-state embedding; the scores are stamped with the round;
2. bring the k-NN graph up to date with the service's own `GraphKeeper` over an exact
   `BruteForceIndex` (repair where embeddings drifted beyond tau, rebuild when too many moved);
3. call `core.rounds.compute_round` with the config, the score table, last round's importance
   and the fresh mask, exactly as `service.round_runner.run_round` does;
4. train on the coreset; the losses training computes are recorded as the trainer's reports are.

The only knob the service does not have is `invert_importance` (prefer the lowest gradient
norms), which exists to test whether selecting *easy* text is what helps. Helpers for the
study live here too: the cached shared start of a seed, a stratified random baseline and a
wrapper that records each round's ids.
"""

from __future__ import annotations

import hashlib
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import torch

from grace_selection.adapters.brute_force_index import BruteForceIndex
from grace_selection.core.budget import split_budget
from grace_selection.core.config import SelectionConfig
from grace_selection.core.graph import KnnGraph
from grace_selection.core.rounds import RoundResult, compute_round
from grace_selection.core.scores import NEVER_SCORED, ScoreTable
from grace_selection.core.selectors import select_coreset
from grace_selection.service.graph_keeper import GraphKeeper, IndexFactory
from grace_workers.batching import collate, plan_batches
from grace_workers.coreset_training import (
    CoresetProvider,
    RoundPlan,
    TrainSchedule,
    WarmStart,
    warm_up,
)
from grace_workers.dataset import TokenDataset
from grace_workers.projection import make_projection, project_embeddings
from grace_workers.scoring import score_batch
from grace_workers.text_experiment import TextData
from grace_workers.tiny_gpt import TinyGPT, TinyGPTConfig

F32 = npt.NDArray[np.float32]
I64 = npt.NDArray[np.int64]


@dataclass(frozen=True, slots=True, eq=False)
class ScoredSamples:
    """The workers' output for `ids`: loss (m,), importance (m,), unit embeddings (m, dim)."""

    ids: I64
    loss: F32
    importance: F32
    embeddings: F32


def score_samples(
    model: TinyGPT, dataset: TokenDataset, ids: I64, dim: int, seed: int, batch_size: int = 64
) -> ScoredSamples:
    """Score `ids` as a scoring worker does (length-sorted batches, the job's projection)."""
    m = ids.shape[0]
    loss, importance = np.zeros(m, np.float32), np.zeros(m, np.float32)
    embeddings = np.zeros((m, dim), np.float32)
    position = np.empty(len(dataset), dtype=np.int64)
    position[ids] = np.arange(m)
    projection = torch.from_numpy(make_projection(model.output_layer.in_features, dim, seed))
    was_training = model.training
    model.eval()
    try:
        for batch in plan_batches(ids, dataset.lengths, batch_size):
            input_ids, mask = collate(dataset, batch, model.max_positions)
            scores = score_batch(model, input_ids, mask)
            rows = position[batch]
            loss[rows] = scores.loss.numpy()
            importance[rows] = scores.importance.numpy()
            embeddings[rows] = project_embeddings(scores.pooled, projection).numpy()
    finally:
        model.train(was_training)
    return ScoredSamples(ids, loss, importance, embeddings)


def load_shared_start(
    cache: Path, data: TextData, model_config: TinyGPTConfig, schedule: TrainSchedule, seed: int
) -> tuple[WarmStart, ScoredSamples]:
    """The warm start and the round-0 scores of all N for a seed, computed once and cached on
    disk: every variant of a study (and every process sharing the cache) starts identically."""
    key = hashlib.sha256(
        f"{model_config}|{schedule.warmup_steps}|{schedule.total_steps}|{schedule.lr}|"
        f"{schedule.batch_size}|{schedule.lr_warmup}|{seed}|{data.train.path}"
        f"{'|token-mean' if schedule.token_mean_loss else ''}".encode()
    ).hexdigest()[:12]
    cache.mkdir(parents=True, exist_ok=True)
    warm_path, scores_path = cache / f"warm-{key}.pt", cache / f"scores-{key}.npz"
    if warm_path.exists():
        saved = torch.load(warm_path, weights_only=False)
        warm = WarmStart(saved["model"], saved["optimizer"], saved["step"], saved["seconds"])
    else:
        warm = warm_up(data, model_config, schedule, seed)
        state = {"model": warm.model_state, "optimizer": warm.optimizer_state}
        tmp = warm_path.with_suffix(".tmp")  # written whole, then renamed: readers never see half
        torch.save({**state, "step": warm.step, "seconds": warm.seconds}, tmp)
        tmp.replace(warm_path)
    if scores_path.exists():
        with np.load(scores_path) as z:
            return warm, ScoredSamples(z["ids"], z["loss"], z["importance"], z["embeddings"])
    model = TinyGPT(model_config)
    model.load_state_dict(warm.model_state)
    ids = np.arange(len(data.train), dtype=np.int64)
    initial = score_samples(model, data.train, ids, 64, seed)
    tmp_npz = scores_path.with_suffix(".tmp.npz")
    np.savez(
        tmp_npz,
        ids=ids,
        loss=initial.loss,
        importance=initial.importance,
        embeddings=initial.embeddings,
    )
    tmp_npz.replace(scores_path)
    return warm, initial


class InProcessGrace:
    """A CoresetProvider running the service's round algorithm in this process.

    initial: the round-0 scores of every sample under the warm-up model, when the caller has
        them already (they are the same for every config of a seed, so a study scores once).
    report_losses: record the per-sample losses of training, as the client's reporter does.
    invert_importance: hand the core -importance, so that the lowest gradient norms rank first.
    """

    def __init__(
        self,
        name: str,
        dataset: TokenDataset,
        strata: npt.NDArray[np.int32] | None,
        config: SelectionConfig,
        *,
        seed: int,
        dim: int = 64,
        initial: ScoredSamples | None = None,
        report_losses: bool = True,
        invert_importance: bool = False,
        centre_embeddings: bool = False,
        importance_per_document: bool = False,
        demote_previous: bool = False,
        fixed_embeddings: F32 | None = None,
    ) -> None:
        n = len(dataset)
        self.name, self.dataset, self.config = name, dataset, config
        self.seed, self.dim, self.n = seed, dim, n
        self.strata = None if strata is None else np.asarray(strata, dtype=np.int32)
        self.initial = initial
        self.report_losses = report_losses
        self.invert_importance = invert_importance
        self.centre_embeddings = centre_embeddings
        self.importance_per_document = importance_per_document
        self.demote_previous = demote_previous
        # (N, dim) unit rows from a fixed encoder: they replace the model's pooled states, so
        # the graph is built once and never drifts.
        self.fixed_embeddings = fixed_embeddings
        self.previous_coreset: I64 = np.zeros(0, dtype=np.int64)
        # Predicted tokens per document (datasets are cut to the model's context when built):
        # what a per-token mean is multiplied by to give the document's summed gradient norm.
        self.n_targets = np.maximum(np.asarray(dataset.lengths) - 1, 1).astype(np.float32)
        self.loss = np.full(n, np.nan, np.float32)
        self.importance = np.full(n, np.nan, np.float32)
        self.scored_round = np.full(n, NEVER_SCORED, np.int32)
        self.embeddings = np.zeros((n, dim), np.float32)
        self.embedded = np.zeros(n, dtype=np.bool_)
        self.previous_importance = np.full(n, np.nan, np.float32)
        self.plan: I64 = np.arange(n, dtype=np.int64)  # round 0 scores every sample
        self._folder = tempfile.TemporaryDirectory(prefix="grace-inprocess-")
        # The service's graph keeper over an exact index: the folder only matters for
        # snapshots, which an in-process run never takes.
        factory = IndexFactory("brute", BruteForceIndex, BruteForceIndex.load)
        self.keeper = GraphKeeper(n, dim, factory, Path(self._folder.name))
        self._seq = 0

    def begin(self, model: TinyGPT, step: int) -> None:
        return None

    def next_round(self, round_: int, model: TinyGPT, step: int) -> RoundPlan:
        started = time.perf_counter()
        if round_ == 0 and self.initial is not None:
            scored = self.initial
        else:
            scored = score_samples(model, self.dataset, self.plan, self.dim, self.seed)
        scoring_seconds = time.perf_counter() - started
        self._apply(scored, round_)

        graph_started = time.perf_counter()
        update = self.keeper.update(
            scored.ids,
            self._centred(self.embeddings[scored.ids]),
            self._seq,
            self.config.k,
            self.config.drift_threshold,
            self._fetch_all,
        )
        graph_seconds = time.perf_counter() - graph_started

        select_started = time.perf_counter()
        table = ScoreTable(
            self.loss.copy(), self.importance.copy(), self.scored_round.copy(), self.strata
        )
        compute = self._compute_demoted if self.demote_previous else compute_round
        result = compute(
            update.graph,
            table,
            self.previous_importance,
            self.scored_round >= round_,
            self.config,
            round_=round_,
            seed=self.seed,
        )
        self.previous_importance = result.importance
        self.previous_coreset = result.coreset.indices
        self.plan = result.rescore_plan
        info: dict[str, Any] = {
            "scoring_seconds": scoring_seconds,
            "graph_seconds": graph_seconds,
            "select_seconds": time.perf_counter() - select_started,
            "graph_rebuilt": update.rebuilt,
            "graph_requeried": update.requeried,
        }
        # Shared round-0 scores still count: the service path scores every sample at round 0.
        return RoundPlan(result.coreset.indices, result.coreset.weights, scored.ids.size, info)

    def _compute_demoted(
        self,
        graph: KnnGraph,
        table: ScoreTable,
        previous: F32,
        fresh: npt.NDArray[np.bool_],
        config: SelectionConfig,
        *,
        round_: int,
        seed: int,
    ) -> RoundResult:
        """`compute_round`, except that the selection ranks last round's coreset below every
        other sample: a sub-epoch run then keeps meeting new documents (the study's novelty
        experiment). The estimates, the rescore plan and the returned importance are
        compute_round's own; only the coreset is chosen again from the demoted importance."""
        result = compute_round(graph, table, previous, fresh, config, round_=round_, seed=seed)
        demoted = result.importance.copy()
        if self.previous_coreset.size and np.isfinite(demoted).any():
            floor = float(np.nanmin(demoted))
            demoted[self.previous_coreset] = floor - abs(floor) - 1.0
        chosen = ScoreTable(table.loss, demoted, table.scored_round, table.stratum)
        coreset = select_coreset(graph, chosen, config, round_=round_, seed=seed)
        return replace(result, coreset=coreset)

    def observe(self, round_: int, step: int, ids: I64, losses: F32) -> None:
        if self.report_losses:
            self.loss[ids] = losses

    def close(self) -> None:
        self._folder.cleanup()

    def _apply(self, scored: ScoredSamples, round_: int) -> None:
        """Record fresh scores as the service's JobArrays.apply does (the last write wins)."""
        ids = scored.ids
        if self.fixed_embeddings is not None:
            scored = ScoredSamples(ids, scored.loss, scored.importance, self.fixed_embeddings[ids])
        self.loss[ids] = scored.loss
        value = scored.importance
        if self.importance_per_document:
            value = value * self.n_targets[ids]
        value = -value if self.invert_importance else value
        self.importance[ids] = value
        self.scored_round[ids] = round_
        self.embeddings[ids] = scored.embeddings
        self.embedded[ids] = True
        self._seq += 1

    def _fetch_all(self) -> tuple[I64, F32, int]:
        ids = np.flatnonzero(self.embedded).astype(np.int64)
        return ids, self._centred(self.embeddings[ids]), self._seq

    def _centred(self, vectors: F32) -> F32:
        """Rows minus the mean of every stored embedding, re-normalised (when enabled)."""
        if not self.centre_embeddings:
            return vectors
        centre: F32 = self.embeddings[self.embedded].mean(axis=0)
        moved: F32 = vectors - centre[None, :]
        norms: F32 = np.linalg.norm(moved, axis=1, keepdims=True)
        centred: F32 = (moved / np.maximum(norms, 1e-12)).astype(np.float32)
        return centred


class StratifiedRandomPerRound:
    """Random per round, but with GRACE's per-stratum budget split (`split_budget`): the
    baseline that gets the same source balance as a GRACE run with `stratum_budgets`."""

    name = "random per round (strata)"

    def __init__(
        self,
        n: int,
        budget: int,
        seed: int,
        strata: npt.NDArray[np.int32],
        shares: Mapping[int, float] | None,
    ) -> None:
        self.seed, self.strata = seed, strata
        self.quota = split_budget(budget, np.bincount(strata).astype(np.int64), shares)

    def begin(self, model: TinyGPT, step: int) -> None:
        return None

    def next_round(self, round_: int, model: TinyGPT, step: int) -> RoundPlan:
        rng = np.random.default_rng([self.seed, 4, round_])
        parts = [
            rng.choice(np.flatnonzero(self.strata == s), size=int(q), replace=False)
            for s, q in enumerate(self.quota)
        ]
        return RoundPlan(np.sort(np.concatenate(parts)).astype(np.int64))

    def observe(self, round_: int, step: int, ids: I64, losses: F32) -> None:
        return None

    def close(self) -> None:
        return None


class RecordingProvider:
    """Wraps a provider and keeps each round's ids, to describe what the coresets held."""

    def __init__(self, inner: CoresetProvider) -> None:
        self.inner, self.name = inner, inner.name
        self.ids: list[I64] = []

    def begin(self, model: TinyGPT, step: int) -> None:
        self.inner.begin(model, step)

    def next_round(self, round_: int, model: TinyGPT, step: int) -> RoundPlan:
        plan = self.inner.next_round(round_, model, step)
        self.ids.append(plan.ids)
        return plan

    def observe(self, round_: int, step: int, ids: I64, losses: F32) -> None:
        self.inner.observe(round_, step, ids, losses)

    def close(self) -> None:
        self.inner.close()
