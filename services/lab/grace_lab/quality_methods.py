"""The methods the quality benchmark compares, each trained for the same number of steps.

Every method starts from the same warmed-up model (a few steps on uniform batches of all the
data) and the same warm-up scoring pass, then trains `rounds * steps_per_round` more steps on
batches drawn from its coreset, which static methods pick once and dynamic ones re-pick each
round. GRACE runs the service's own round on a `LocalJob`: score the rescore plan with the current
model, apply the scores to the service's job state, then the service's `step_round` (graph
upkeep with its GraphKeeper over an exact index, then `compute_round`).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from typing import Literal

import numpy as np
import numpy.typing as npt

from grace_lab.local_job import LocalJob
from grace_lab.synthetic_task import Mlp, Scores, SyntheticTask, evaluate, score_samples
from grace_selection.core.config import SelectionConfig
from grace_selection.core.graph import KnnGraph
from grace_selection.core.scores import ScoreTable

MethodKind = Literal["random_static", "random_per_round", "top_static", "selector_static", "grace"]
I64 = npt.NDArray[np.int64]
F32 = npt.NDArray[np.float32]


@dataclass(frozen=True, slots=True)
class Schedule:
    """The training budget every method shares."""

    warmup_steps: int = 100
    rounds: int = 8
    steps_per_round: int = 100
    batch: int = 128
    lr: float = 3e-3
    hidden: int = 128
    embed: int = 64

    @property
    def total_steps(self) -> int:
        return self.warmup_steps + self.rounds * self.steps_per_round


@dataclass(frozen=True, slots=True)
class Method:
    """A row of the table. config: the selection config (selector methods and GRACE).
    weighted: train with the coreset's CRAIG weights as per-sample loss weights."""

    name: str
    kind: MethodKind
    config: SelectionConfig = field(default_factory=SelectionConfig)
    weighted: bool = False


@dataclass(frozen=True, slots=True)
class WarmStart:
    """What all methods of one seed share: the warmed-up model, its scores of all N samples,
    the k-NN graph over its embeddings, and the step count so far."""

    task: SyntheticTask
    model: Mlp
    scores: Scores
    graph: KnnGraph
    seed: int


@dataclass(frozen=True, slots=True)
class RunResult:
    method: str
    seed: int
    accuracy: float
    tail_accuracy: float
    balanced_accuracy: float
    extra_scoring_passes: float  # re-scored samples after warm-up, per N
    warmup_scoring_passes: float  # 1 for methods that need the warm-up scores, else 0
    relinked_fraction: float  # mean share of graph rows re-queried per round (GRACE)
    select_seconds: float
    wall_seconds: float


def warm_start(task: SyntheticTask, schedule: Schedule, seed: int, k: int) -> WarmStart:
    """Train the shared warm-up steps, score every sample, build the exact k-NN graph."""
    model = Mlp.create(task.x_train.shape[1], schedule.hidden, schedule.embed, task.n_classes, seed)
    rng = np.random.default_rng([seed, 0xA11])
    n = task.x_train.shape[0]
    trainer = _Trainer(model, task, schedule, rng)
    trainer.train(np.arange(n), None, schedule.warmup_steps, draw_uniform=True)
    scores = score_samples(model, task.x_train, task.y_train)
    rows = np.arange(n, dtype=np.int64)
    neighbours, similarities = query_neighbours(_unit(scores.embedding), rows, k)
    return WarmStart(task, model, scores, KnnGraph.from_arrays(neighbours, similarities), seed)


def run_method(method: Method, start: WarmStart, schedule: Schedule) -> RunResult:
    """Train `method` from the shared warm start for the shared budget and evaluate it."""
    began = time.perf_counter()
    task = start.task
    n = task.x_train.shape[0]
    budget = min(n, max(1, round(method.config.budget_fraction * n)))
    trainer = _Trainer(
        start.model.copy(), task, schedule, np.random.default_rng([start.seed, 0xB0D])
    )
    trainer.step = schedule.warmup_steps
    select_seconds = 0.0
    extra_scored = 0
    relinked: list[float] = []
    warm_passes = 0.0 if method.kind.startswith("random") else 1.0

    if method.kind == "grace":
        select_seconds, extra_scored, relinked = _run_grace(method, start, schedule, trainer)
    else:
        picks, weights = np.empty(0, np.int64), None
        for round_ in range(schedule.rounds):
            if method.kind == "random_per_round" or round_ == 0:
                tick = time.perf_counter()
                picks, weights = _static_picks(method, start, budget, round_)
                select_seconds += time.perf_counter() - tick
            trainer.train(picks, weights if method.weighted else None, schedule.steps_per_round)
    accuracy = evaluate(trainer.model, task)
    return RunResult(
        method=method.name,
        seed=start.seed,
        accuracy=accuracy.overall,
        tail_accuracy=accuracy.tail,
        balanced_accuracy=accuracy.balanced,
        extra_scoring_passes=extra_scored / n,
        warmup_scoring_passes=warm_passes,
        relinked_fraction=float(np.mean(relinked)) if relinked else 0.0,
        select_seconds=select_seconds,
        wall_seconds=time.perf_counter() - began,
    )


def _static_picks(
    method: Method, start: WarmStart, budget: int, round_: int
) -> tuple[I64, npt.NDArray[np.float32] | None]:
    n = start.task.x_train.shape[0]
    if method.kind in ("random_static", "random_per_round"):
        rng = np.random.default_rng([start.seed, 0x5A, round_])
        return np.sort(rng.choice(n, size=budget, replace=False)).astype(np.int64), None
    if method.kind == "top_static":
        top = np.argsort(-start.scores.importance, kind="stable")[:budget]
        return np.sort(top).astype(np.int64), None
    from grace_selection.core.selectors import select_coreset

    table = _warm_table(start)
    coreset = select_coreset(start.graph, table, method.config, round_=0, seed=start.seed)
    return coreset.indices, coreset.weights


def _warm_table(start: WarmStart) -> ScoreTable:
    n = start.task.x_train.shape[0]
    return ScoreTable.from_arrays(
        loss=start.scores.loss, importance=start.scores.importance, scored_round=np.zeros(n)
    )


def _run_grace(
    method: Method, start: WarmStart, schedule: Schedule, trainer: _Trainer
) -> tuple[float, int, list[float]]:
    """The service's round on a LocalJob: score the plan, step the round, train, report."""
    task, config = start.task, method.config
    n = task.x_train.shape[0]
    job = LocalJob(n, start.scores.embedding.shape[1], config, start.seed)
    # The warm-up pass scored everything for round 0.
    scored, plan = start.scores, np.arange(n, dtype=np.int64)
    select_seconds, extra_scored, relinked = 0.0, 0, []
    try:
        for round_ in range(schedule.rounds):
            if round_ > 0:
                scored = score_samples(trainer.model, task.x_train[plan], task.y_train[plan])
                extra_scored += plan.size
            job.apply_worker_scores(
                plan,
                round_,
                embeddings=scored.embedding,
                loss=None,  # the service's loss comes from the trainers' reports
                importance=scored.importance,
            )
            outcome = job.step(round_)
            if round_ > 0:
                update = outcome.update
                relinked.append(0.0 if update is None else update.requeried / n)
            select_seconds += outcome.select_seconds
            result = outcome.result
            plan = result.rescore_plan
            weights = result.coreset.weights if method.weighted else None
            seen = trainer.train(result.coreset.indices, weights, schedule.steps_per_round)
            job.apply_trainer_losses(seen[0], seen[1], round_, trainer.step)
    finally:
        job.close()
    return select_seconds, extra_scored, relinked


def query_neighbours(unit: F32, rows: I64, k: int) -> tuple[I64, F32]:
    """Exact cosine k nearest other rows of `unit` (unit-norm rows) for each id in `rows`.

    Small blocks keep the (block, N) similarity matrix in cache; the top k + 1 come from one
    argpartition, then self is dropped (or the worst match, if self is not among them).
    """
    out_ids = np.empty((rows.size, k), dtype=np.int64)
    out_sims = np.empty((rows.size, k), dtype=np.float32)
    take = min(k + 1, unit.shape[0])
    for start in range(0, rows.size, _QUERY_BLOCK):
        block = rows[start : start + _QUERY_BLOCK]
        sims = unit[block] @ unit.T  # (B, N)
        top = np.argpartition(sims, -take, axis=1)[:, -take:]  # (B, k + 1), unordered
        top_sims = np.take_along_axis(sims, top, axis=1)
        order = np.argsort(-top_sims, axis=1, kind="stable")
        top = np.take_along_axis(top, order, axis=1)
        top_sims = np.take_along_axis(top_sims, order, axis=1)
        is_self = top == block[:, None]
        is_self[~is_self.any(axis=1), -1] = True
        keep = ~is_self
        shape = (block.size, take - 1)
        out_ids[start : start + block.size] = top[keep].reshape(shape)[:, :k]
        out_sims[start : start + block.size] = top_sims[keep].reshape(shape)[:, :k]
    return out_ids, out_sims


_QUERY_BLOCK = 256


def _unit(x: F32) -> F32:
    norm = np.linalg.norm(x, axis=1, keepdims=True)
    out: F32 = (x / np.maximum(norm, 1e-12)).astype(np.float32)
    return out


class _Trainer:
    """Adam with a cosine learning-rate schedule over the shared total step budget."""

    def __init__(
        self, model: Mlp, task: SyntheticTask, schedule: Schedule, rng: np.random.Generator
    ) -> None:
        self.model, self.task, self.schedule, self.rng = model, task, schedule, rng
        self.step = 0

    def train(
        self,
        pool: I64,
        weights: npt.NDArray[np.float32] | None,
        steps: int,
        *,
        draw_uniform: bool = False,
    ) -> tuple[I64, npt.NDArray[np.float32]]:
        """`steps` steps on batches from `pool` (epochs of shuffles, or uniform draws).

        Returns the ids seen and their last training loss, the free signal trainers report.
        """
        batch, total = self.schedule.batch, self.schedule.total_steps
        pool_weights = (
            np.ones(pool.size, dtype=np.float32)
            if weights is None
            else (weights / weights.mean()).astype(np.float32)
        )
        order = self.rng.permutation(pool.size)
        pos = 0
        seen_ids: list[I64] = []
        seen_loss: list[npt.NDArray[np.float32]] = []
        for _ in range(steps):
            if draw_uniform:
                take = self.rng.integers(0, pool.size, size=batch)
            else:
                if pos + batch > order.size:
                    order, pos = self.rng.permutation(pool.size), 0
                take = order[pos : pos + batch]
                pos += batch
            ids = pool[take]
            lr = self.schedule.lr * 0.5 * (1.0 + np.cos(np.pi * self.step / total))
            losses = self.model.train_step(
                self.task.x_train[ids], self.task.y_train[ids], pool_weights[take], float(lr)
            )
            self.step += 1
            seen_ids.append(ids)
            seen_loss.append(losses)
        if not seen_ids:
            return np.empty(0, np.int64), np.empty(0, np.float32)
        return np.concatenate(seen_ids), np.concatenate(seen_loss)


def with_config(method: Method, **changes: object) -> Method:
    """A copy of `method` with some selection config fields changed."""
    return replace(method, config=replace(method.config, **changes))  # type: ignore[arg-type]
