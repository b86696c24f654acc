"""GRACE in one process: what the service, the workers and the client do, without HTTP or Ray.

`grace_lab.paper_table` runs every GRACE row through the real service, Ray pool and client;
that is the claim, and it is slow to iterate on. A tuning study needs dozens of configs, so this
provider runs the service's own round in-process:

1. score the round's rescore plan (round 0: every sample) with the current model, using the
   workers' math (`score_batch` + the job's seeded projection): loss, closed-form gradient
   importance, pooled-hidden-state embedding, stamped with the round;
2. apply them to the service's `JobArrays` as ingested batches are applied;
3. call the service's `step_round` (graph upkeep with its `GraphKeeper` over an exact
   `BruteForceIndex`, then `core.rounds.compute_round`), as its round runner does;
4. train on the coreset; the losses training computes are applied as the trainer's reports are.

With every study knob off it publishes the coreset the service publishes for the same scores
and seed (tests/unit/test_inprocess_round.py). Helpers for the study live here too: the cached
shared start of a seed, a stratified random baseline and a wrapper that records each round's ids.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import torch

from grace_lab.coreset_training import (
    CoresetProvider,
    RoundPlan,
    TrainSchedule,
    WarmStart,
    warm_up,
)
from grace_lab.local_job import LocalJob
from grace_lab.text_experiment import TextData
from grace_selection.core.budget import split_budget
from grace_selection.core.config import SelectionConfig
from grace_selection.core.coreset import Coreset
from grace_selection.core.scores import ScoreTable
from grace_selection.core.selectors import select_coreset
from grace_selection.service.round_step import RoundOutcome
from grace_workers.batching import collate, plan_batches, response_mask
from grace_workers.dataset import TokenDataset
from grace_workers.projection import make_projection, project_embeddings
from grace_workers.scoring import score_batch
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
            targets = response_mask(dataset, batch, input_ids.shape[1])
            scores = score_batch(model, input_ids, mask, loss_mask=targets)
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
    """A CoresetProvider running the service's round in this process.

    The job is a `LocalJob`: the service's own `JobArrays`, to which the round's scores and
    embeddings are applied as the service applies ingested batches (the last write wins, a late
    score from an older round never replaces a newer one), and the service's `step_round`.

    initial: the round-0 scores of every sample under the warm-up model, when the caller has
        them already (they are the same for every config of a seed, so a study scores once).
    report_losses: record the per-sample losses of training, as the client's reporter does.

    The study's knobs, all off by default, act on what goes into the step and what comes out:
    invert_importance: hand the job -importance, so that the lowest gradient norms rank first.
    centre_embeddings: embeddings minus the mean of every stored one, re-normalised.
    importance_per_document: importance times the document's predicted tokens (a sum, not a
        mean). fixed_embeddings: (N, dim) rows from a fixed encoder replace the model's pooled
        states, so the graph is built once and never drifts.
    demote_previous: choose the coreset again with last round's coreset ranked below every
        other sample (the novelty experiment); estimates and plan stay the step's own.
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
        self.initial = initial
        self.report_losses = report_losses
        self.invert_importance = invert_importance
        self.centre_embeddings = centre_embeddings
        self.importance_per_document = importance_per_document
        self.demote_previous = demote_previous
        self.fixed_embeddings = fixed_embeddings
        self.job = LocalJob(n, dim, config, seed, strata)
        # Predicted tokens per document (datasets are cut to the model's context when built):
        # what a per-token mean is multiplied by to give the document's summed gradient norm.
        self.n_targets = np.maximum(np.asarray(dataset.lengths) - 1, 1).astype(np.float32)
        self._raw_embeddings = np.zeros((n, dim), np.float32)  # before centring
        self._embedded = np.zeros(n, dtype=np.bool_)
        self.previous_coreset: I64 = np.zeros(0, dtype=np.int64)
        self.plan: I64 = np.arange(n, dtype=np.int64)  # round 0 scores every sample

    def begin(self, model: TinyGPT, step: int) -> None:
        return None

    def next_round(self, round_: int, model: TinyGPT, step: int) -> RoundPlan:
        started = time.perf_counter()
        if round_ == 0 and self.initial is not None:
            scored = self.initial
        else:
            scored = score_samples(model, self.dataset, self.plan, self.dim, self.seed)
        scoring_seconds = time.perf_counter() - started
        self._apply_worker_scores(scored, round_)
        outcome = self.job.step(round_)
        result = outcome.result
        coreset = result.coreset
        if self.demote_previous:
            coreset = self._demoted_coreset(outcome, round_)
        self.previous_coreset = coreset.indices
        self.plan = result.rescore_plan
        update = outcome.update
        info: dict[str, Any] = {
            "scoring_seconds": scoring_seconds,
            "graph_seconds": outcome.graph_seconds,
            "select_seconds": outcome.select_seconds,
            "graph_rebuilt": update is not None and update.rebuilt,
            "graph_requeried": 0 if update is None else update.requeried,
        }
        # Shared round-0 scores still count: the service path scores every sample at round 0.
        return RoundPlan(coreset.indices, coreset.weights, scored.ids.size, info)

    def _demoted_coreset(self, outcome: RoundOutcome, round_: int) -> Coreset:
        """The coreset chosen again from the step's importance with last round's coreset
        ranked below every other sample: a sub-epoch run then keeps meeting new documents."""
        demoted = outcome.result.importance.copy()
        if self.previous_coreset.size and np.isfinite(demoted).any():
            floor = float(np.nanmin(demoted))
            demoted[self.previous_coreset] = floor - abs(floor) - 1.0
        table = outcome.inputs.scores
        chosen = ScoreTable(table.loss, demoted, table.scored_round, table.stratum)
        return select_coreset(outcome.graph, chosen, self.config, round_=round_, seed=self.seed)

    def observe(self, round_: int, step: int, ids: I64, losses: F32) -> None:
        if self.report_losses:
            self.job.apply_trainer_losses(ids, losses, round_, step)

    def close(self) -> None:
        self.job.close()

    def _apply_worker_scores(self, scored: ScoredSamples, round_: int) -> None:
        """What a scoring worker posts for the round (embeddings, then scores), through the
        job's own apply; the study's knobs change the values on the way in."""
        ids = scored.ids
        vectors = scored.embeddings if self.fixed_embeddings is None else self.fixed_embeddings[ids]
        self._raw_embeddings[ids] = vectors
        self._embedded[ids] = True
        if self.centre_embeddings:
            vectors = self._centred(vectors)
        importance = scored.importance
        if self.importance_per_document:
            importance = importance * self.n_targets[ids]
        if self.invert_importance:
            importance = -importance
        self.job.apply_worker_scores(
            ids, round_, embeddings=vectors, loss=scored.loss, importance=importance
        )

    def _centred(self, vectors: F32) -> F32:
        """Rows minus the mean of every stored embedding, re-normalised."""
        centre: F32 = self._raw_embeddings[self._embedded].mean(axis=0)
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
