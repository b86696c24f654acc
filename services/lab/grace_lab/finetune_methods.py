"""The fine-tuning benchmark's methods, each a provider that charges what it spends.

Score-free baselines wrap the pretraining study's providers. Methods that score do it with the
workers' math (`grace_lab.inprocess.score_samples`: loss and closed-form importance over the
response tokens, the pooled embedding through the job's projection) and charge 2PT per scored
token to the meter, P being the scoring model's. GRACE through the real service lives in
`grace_lab.finetune_service`; `FinetuneGrace` here runs the service's own round in-process
(`LocalJob`) for the tuning study, with the same charges.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
import torch

from grace_lab.compute import ComputeMeter, matmul_params
from grace_lab.coreset_training import RoundPlan
from grace_lab.finetune_data import FinetuneData
from grace_lab.finetune_training import StepSignals, train_pairs_step
from grace_lab.inprocess import ScoredSamples, score_samples
from grace_lab.lm_training import make_optimizer
from grace_lab.local_job import LocalJob
from grace_lab.paper_methods import SelectorStatic
from grace_selection.adapters.vectors import normalize_rows
from grace_selection.core.config import SelectionConfig
from grace_selection.core.scores import ScoreTable
from grace_selection.core.selectors import select_coreset
from grace_selection.service.round_step import RoundOutcome
from grace_workers.projection import make_projection
from grace_workers.tiny_gpt import TinyGPT, TinyGPTConfig

F32 = npt.NDArray[np.float32]
I64 = npt.NDArray[np.int64]
DIM = 64  # the job's embedding dimension, as the service path uses


def charged_scores(
    model: TinyGPT,
    data: FinetuneData,
    ids: I64,
    meter: ComputeMeter,
    seed: int,
    label: str = "main",
) -> ScoredSamples:
    """Score `ids` as a worker does and charge the forward pass (every token read)."""
    tokens = int(np.minimum(data.train.lengths[ids], model.max_positions).sum())
    meter.charge_scoring(matmul_params(model), tokens, label)
    return score_samples(model, data.train, ids, DIM, seed)


def can_afford(model: TinyGPT, data: FinetuneData, ids: I64, meter: ComputeMeter) -> bool:
    tokens = int(np.minimum(data.train.lengths[ids], model.max_positions).sum())
    return meter.can_score(matmul_params(model), tokens)


class Legacy:
    """A score-free provider of the pretraining study (random, length, InfoBatch) adapted."""

    def __init__(self, name: str, inner: Any) -> None:
        self.name, self.inner = name, inner

    def begin(self, model: TinyGPT, meter: ComputeMeter) -> None:
        self.inner.begin(model, 0)

    def next_round(self, round_: int, model: TinyGPT, meter: ComputeMeter) -> RoundPlan:
        plan: RoundPlan = self.inner.next_round(round_, model, 0)
        return plan

    def observe(self, round_: int, step: int, signals: StepSignals) -> None:
        self.inner.observe(round_, step, signals.ids, signals.loss)

    def close(self) -> None:
        self.inner.close()


class StaticSelection:
    """Score every sample once with the base model (charged), select once, keep it."""

    def __init__(self, name: str, data: FinetuneData, config: SelectionConfig, seed: int) -> None:
        self.name, self.data, self.seed = name, data, seed
        self._select = SelectorStatic(name, data.train, config, DIM, seed, data.train_strata)
        self.plan = RoundPlan(np.zeros(0, np.int64))

    def begin(self, model: TinyGPT, meter: ComputeMeter) -> None:
        ids = np.arange(len(self.data.train), dtype=np.int64)
        ids_, weights = self._select.choose(charged_scores(model, self.data, ids, meter, self.seed))
        self.plan = RoundPlan(ids_, weights, scored_samples=ids.size)

    def next_round(self, round_: int, model: TinyGPT, meter: ComputeMeter) -> RoundPlan:
        return self.plan

    def observe(self, round_: int, step: int, signals: StepSignals) -> None:
        return None

    def close(self) -> None:
        return None


class RhoLoss:
    """RHO-LOSS (Mindermann et al., 2022): train on the points with the highest reducible loss,
    the current model's loss minus an irreducible-loss model's.

    The irreducible-loss model is the base model fine-tuned on a held-out split of the training
    pairs (`holdout_share`, never trained on by the run) for `reference_epochs`; its training
    and its one scoring pass over the rest are charged. Each round a random candidate pool of
    `pool_factor` times the budget is scored with the current model (charged) and the budget's
    highest reducible losses are kept.
    """

    name = "rho_loss"

    def __init__(
        self,
        data: FinetuneData,
        budget: int,
        model_config: TinyGPTConfig,
        base_state: dict[str, Any],
        seed: int,
        *,
        holdout_share: float = 0.1,
        reference_epochs: int = 2,
        pool_factor: float = 2.0,
        tokens_per_step: int = 1024,
        lr: float = 1e-3,
    ) -> None:
        self.data, self.budget, self.seed = data, budget, seed
        self.model_config, self.base_state = model_config, base_state
        self.reference_epochs, self.pool_factor = reference_epochs, pool_factor
        self.tokens_per_step, self.lr = tokens_per_step, lr
        n = len(data.train)
        order = np.random.default_rng([seed, 0x4F]).permutation(n)
        cut = max(1, round(holdout_share * n))
        self.holdout = np.sort(order[:cut]).astype(np.int64)
        self.candidates = np.sort(order[cut:]).astype(np.int64)
        self.irreducible = np.zeros(n, np.float32)

    def begin(self, model: TinyGPT, meter: ComputeMeter) -> None:
        reference = TinyGPT(self.model_config)
        reference.load_state_dict(self.base_state)
        optimizer = make_optimizer(reference, self.lr)
        params = matmul_params(reference)
        lengths = np.minimum(self.data.train.lengths, self.model_config.block_size)
        rng = np.random.default_rng([self.seed, 0x50])
        per_step = max(1, round(self.tokens_per_step / float(lengths[self.holdout].mean())))
        for _ in range(self.reference_epochs):
            order = self.holdout[rng.permutation(self.holdout.size)]
            for start in range(0, order.size, per_step):
                _, tokens = train_pairs_step(
                    reference,
                    optimizer,
                    self.data.train,
                    order[start : start + per_step],
                    self.model_config.block_size,
                )
                meter.charge_reference(6.0 * params * tokens)
        scored = charged_scores(
            reference, self.data, self.candidates, meter, self.seed, "reference"
        )
        self.irreducible[self.candidates] = scored.loss

    def next_round(self, round_: int, model: TinyGPT, meter: ComputeMeter) -> RoundPlan:
        rng = np.random.default_rng([self.seed, 0x51, round_])
        size = min(self.candidates.size, round(self.pool_factor * self.budget))
        pool = np.sort(rng.choice(self.candidates, size=size, replace=False)).astype(np.int64)
        if not can_afford(model, self.data, pool, meter):
            # The pool's pass would overrun the budget: train on a random part of it instead.
            return RoundPlan(pool[: min(self.budget, pool.size)], info={"scoring_skipped": True})
        current = charged_scores(model, self.data, pool, meter, self.seed)
        reducible = current.loss - self.irreducible[pool]
        top = pool[np.argsort(-reducible, kind="stable")[: min(self.budget, pool.size)]]
        return RoundPlan(np.sort(top).astype(np.int64), scored_samples=pool.size)

    def observe(self, round_: int, step: int, signals: StepSignals) -> None:
        return None

    def close(self) -> None:
        return None


Signals = Literal["workers", "trainer", "both"]
EmbeddingSource = Literal["model", "input"]


@dataclass(frozen=True, slots=True)
class GraceRecipe:
    """How a GRACE run gets its scores. config: the service's SelectionConfig.

    signals: "workers" scores the rescore plan each round with the current model (charged;
        round 0 scores every sample); "trainer" uses only what training computes anyway (the
        trained samples' loss, closed-form importance and pooled state, free), reported for
        the next round; "both" does both.
    embedding: the round-0 embedding of every sample, which the graph starts from: "model"
        (the base model's pooled hidden states, one charged forward pass over N, which also
        gives round-0 scores) or "input" (the mean of the base model's input token embeddings,
        no forward pass, no charge).
    importance: what the trainer reports as importance: the closed-form "gradient" norm, or
        the "loss" itself.
    scorer: which model makes the charged passes: the "main" model being fine-tuned, or a
        "proxy", a smaller base model pretrained on the same corpus (a public small
        checkpoint, like the base model charged to no one) that is never fine-tuned: its
        round-0 pass gives the scores and the graph at a fraction of the main model's cost.
    centre: subtract the mean of round 0's embeddings over all N before they reach the graph
        (pooled states share one direction; centring leaves what tells samples apart).
    rescore_schedule: the share re-scored by the workers at round r (index r, the last entry
        holding for later rounds); empty keeps config.rescore_fraction every round.
    """

    config: SelectionConfig
    signals: Signals = "workers"
    embedding: EmbeddingSource = "model"
    importance: Literal["gradient", "loss"] = "gradient"
    trainer_embeddings: bool = False
    demote_trained: bool = False
    scorer: Literal["main", "proxy"] = "main"
    centre: bool = False
    rescore_schedule: tuple[float, ...] = ()


class FinetuneGrace:
    """GRACE through the service's own round, in this process (the tuning study's GRACE)."""

    def __init__(
        self,
        name: str,
        data: FinetuneData,
        recipe: GraceRecipe,
        seed: int,
        proxy: TinyGPT | None = None,
    ) -> None:
        if recipe.scorer == "proxy" and proxy is None:
            raise ValueError(f"{name}: a proxy scorer needs the proxy model")
        self.name, self.data, self.recipe, self.seed = name, data, recipe, seed
        self.proxy = proxy
        n = len(data.train)
        self.job = LocalJob(n, DIM, recipe.config, seed, data.train_strata)
        self.plan: I64 = np.arange(n, dtype=np.int64)
        self.trained = np.zeros(n, dtype=np.bool_)
        self.last_outcome: RoundOutcome | None = None
        self._projection: torch.Tensor | None = None

    def begin(self, model: TinyGPT, meter: ComputeMeter) -> None:
        ids = np.arange(len(self.data.train), dtype=np.int64)
        if self.recipe.embedding == "model":
            scorer = self._scorer(model)
            scored = charged_scores(scorer, self.data, ids, meter, self.seed, self.recipe.scorer)
            vectors = _centred(scored.embeddings) if self.recipe.centre else scored.embeddings
            self.job.apply_worker_scores(
                ids, 0, embeddings=vectors, loss=scored.loss, importance=scored.importance
            )
        else:
            vectors = input_embeddings(model, self.data, ids, self.seed)
            self.job.apply_worker_scores(ids, 0, embeddings=vectors, loss=None, importance=None)

    def next_round(self, round_: int, model: TinyGPT, meter: ComputeMeter) -> RoundPlan:
        scored_count, skipped = 0, False
        wants = round_ > 0 and self.recipe.signals in ("workers", "both") and self.plan.size > 0
        scorer = self._scorer(model)
        if wants and not can_afford(scorer, self.data, self.plan, meter):
            wants, skipped = False, True  # the plan's pass would overrun the budget: estimate
        if wants:
            scored = charged_scores(
                scorer, self.data, self.plan, meter, self.seed, self.recipe.scorer
            )
            # An input-embedding graph stays in its own space: re-scored samples keep their
            # vectors (the service path's workers post input-embedding means every round).
            self.job.apply_worker_scores(
                self.plan,
                round_,
                embeddings=scored.embeddings if self.recipe.embedding == "model" else None,
                loss=scored.loss,
                importance=scored.importance,
            )
            scored_count = self.plan.size
        schedule = self.recipe.rescore_schedule
        if schedule:  # this round's step plans the next round's re-scoring
            share = schedule[min(round_ + 1, len(schedule) - 1)]
            self.job.config = replace(self.job.config, rescore_fraction=share)
        outcome = self.job.step(round_)
        self.last_outcome = outcome
        self.plan = outcome.result.rescore_plan
        update = outcome.update
        info = {
            "graph_seconds": outcome.graph_seconds,
            "select_seconds": outcome.select_seconds,
            "graph_rebuilt": bool(update is not None and update.rebuilt),
            "scoring_skipped": skipped,
        }
        coreset = outcome.result.coreset
        if self.recipe.demote_trained and self.trained.any():
            demoted = outcome.result.importance.copy()
            known = np.isfinite(demoted)
            floor = float(np.nanmin(demoted)) if known.any() else 0.0
            demoted[~known] = floor  # unknown: as good as the least important known
            demoted[self.trained] = floor - abs(floor) - 1.0
            table = outcome.inputs.scores
            chosen = ScoreTable(
                table.loss, demoted.astype(np.float32), table.scored_round, table.stratum
            )
            coreset = select_coreset(
                outcome.graph, chosen, self.recipe.config, round_=round_, seed=self.seed
            )
        self.trained[coreset.indices] = True
        return RoundPlan(coreset.indices, coreset.weights, scored_count, info)

    def observe(self, round_: int, step: int, signals: StepSignals) -> None:
        if self.recipe.signals not in ("trainer", "both"):
            return
        importance = signals.loss if self.recipe.importance == "loss" else signals.importance
        embeddings = None
        if self.recipe.trainer_embeddings:
            embeddings = self._project(signals.pooled)
        # Measured now, while round r trains: the newest values for round r + 1.
        self.job.apply_trainer_scores(
            signals.ids,
            round_ + 1,
            step,
            loss=signals.loss,
            importance=importance,
            embeddings=embeddings,
        )

    def close(self) -> None:
        self.job.close()

    def _scorer(self, model: TinyGPT) -> TinyGPT:
        return self.proxy if self.recipe.scorer == "proxy" and self.proxy is not None else model

    def _project(self, pooled: F32) -> F32:
        if self._projection is None:
            self._projection = torch.from_numpy(make_projection(pooled.shape[1], DIM, self.seed))
        reduced = torch.from_numpy(pooled) @ self._projection
        unit = torch.nn.functional.normalize(reduced, dim=1)
        out: F32 = unit.numpy().astype(np.float32)
        return out


def input_embeddings(model: TinyGPT, data: FinetuneData, ids: I64, seed: int) -> F32:
    """The mean of the model's input token embeddings over each sample's tokens, centred on
    the mean over all samples and projected as the job's embeddings are: no forward pass."""
    table = model.wte.weight.detach()
    rows = np.zeros((ids.size, table.shape[1]), np.float32)
    with torch.no_grad():
        for k, i in enumerate(ids.tolist()):
            tokens = torch.from_numpy(np.asarray(data.train.tokens(i), dtype=np.int64))
            rows[k] = table[tokens].mean(dim=0).numpy()
    rows -= rows.mean(axis=0, keepdims=True)
    reduced = rows @ make_projection(rows.shape[1], DIM, seed)
    norms = np.linalg.norm(reduced, axis=1, keepdims=True)
    unit: F32 = (reduced / np.maximum(norms, 1e-12)).astype(np.float32)
    return unit


def _centred(unit: F32) -> F32:
    return normalize_rows((unit - unit.mean(axis=0, keepdims=True)).astype(np.float32))


def with_config(recipe: GraceRecipe, **changes: Any) -> GraceRecipe:
    return replace(recipe, config=replace(recipe.config, **changes))
