"""One training loop for every sampling method, so that only the choice of samples differs.

A run is: `warmup_steps` on uniform random batches from all N (identical for every method of a
seed), then rounds of `round_steps` steps each on the ids a `CoresetProvider` hands out. Every
method gets the same number of optimiser steps, the same batch size, learning-rate schedule and
model initialisation; held-out perplexity is measured after every round.
"""

from __future__ import annotations

import copy
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt
import torch

from grace_lab.lm_training import (
    Perplexity,
    collate,
    cosine_lr,
    evaluate_perplexity,
    make_optimizer,
    train_step,
)
from grace_lab.text_experiment import TextData
from grace_workers.tiny_gpt import TinyGPT, TinyGPTConfig

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class TrainSchedule:
    """Equal for every method compared: steps, batch, learning rate, round length.

    tokens_per_step: fill each post-warm-up step with documents until this many predicted
        tokens (None: `batch_size` documents). With it every method trains on the same tokens
        a step, as packed LM training does; without it a method that picks longer documents
        gets more training per step (measured: +29% tokens gave -33 ppl on its own).
    token_mean_loss: average the loss over the batch's tokens, the usual causal-LM loss and
        what token-weighted perplexity measures; False averages per-document means.
    """

    total_steps: int = 400
    warmup_steps: int = 100
    round_steps: int = 50
    batch_size: int = 32
    lr: float = 3e-3
    lr_warmup: int = 30
    block: int = 64
    use_weights: bool = False
    tokens_per_step: int | None = None
    token_mean_loss: bool = True

    def __post_init__(self) -> None:
        if not 0 <= self.warmup_steps < self.total_steps:
            raise ValueError("warmup_steps: must be in [0, total_steps)")
        if self.round_steps < 1 or self.batch_size < 1:
            raise ValueError("round_steps and batch_size: must be >= 1")
        if self.tokens_per_step is not None and self.tokens_per_step < 1:
            raise ValueError("tokens_per_step: must be >= 1, or None for batch_size documents")

    @property
    def rounds(self) -> int:
        return -(-(self.total_steps - self.warmup_steps) // self.round_steps)


@dataclass(frozen=True, slots=True, eq=False)
class RoundPlan:
    """The ids (and optional weights) to train on this round, and what it cost to choose them.

    scored_samples: forward passes spent scoring samples for this round (extra cost).
    """

    ids: npt.NDArray[np.int64]
    weights: npt.NDArray[np.float32] | None = None
    scored_samples: int = 0
    info: dict[str, Any] = field(default_factory=dict)


class CoresetProvider(Protocol):
    """Where a method's samples come from. `observe` sees the losses training computed anyway."""

    name: str

    def begin(self, model: TinyGPT, step: int) -> None: ...

    def next_round(self, round_: int, model: TinyGPT, step: int) -> RoundPlan: ...

    def observe(
        self, round_: int, step: int, ids: npt.NDArray[np.int64], losses: npt.NDArray[np.float32]
    ) -> None: ...

    def close(self) -> None: ...


@dataclass(frozen=True, slots=True)
class RoundRecord:
    round: int
    step: int
    coreset_size: int
    churn: float | None
    scored_fraction: float
    perplexity: Perplexity
    seconds: float
    info: dict[str, Any]


@dataclass(frozen=True, slots=True)
class RunResult:
    method: str
    seed: int
    records: list[RoundRecord]
    scoring_passes_per_n: float
    wall_seconds: float

    @property
    def final(self) -> Perplexity:
        return self.records[-1].perplexity


@dataclass(slots=True)
class WarmStart:
    """The model and optimiser after the shared warm-up, copied into each method's run."""

    model_state: dict[str, Any]
    optimizer_state: dict[str, Any]
    step: int
    seconds: float


def warm_up(
    data: TextData, model_config: TinyGPTConfig, schedule: TrainSchedule, seed: int
) -> WarmStart:
    """Train the shared warm-up steps on uniform random batches from all N."""
    started = time.perf_counter()
    torch.manual_seed(seed)
    model = TinyGPT(model_config)
    optimizer = make_optimizer(model, schedule.lr)
    rng = np.random.default_rng([seed, 1])
    n = len(data.train)
    for step in range(schedule.warmup_steps):
        _set_lr(optimizer, cosine_lr(step, schedule.total_steps, schedule.lr, schedule.lr_warmup))
        ids = rng.integers(0, n, size=schedule.batch_size)
        input_ids, mask = collate(data.train, ids, schedule.block)
        train_step(model, optimizer, input_ids, mask, token_mean=schedule.token_mean_loss)
    return WarmStart(
        copy.deepcopy(model.state_dict()),
        copy.deepcopy(optimizer.state_dict()),
        schedule.warmup_steps,
        time.perf_counter() - started,
    )


def run_training(
    data: TextData,
    model_config: TinyGPTConfig,
    schedule: TrainSchedule,
    provider: CoresetProvider,
    seed: int,
    warm: WarmStart,
    on_round: Callable[[RoundRecord], None] | None = None,
) -> RunResult:
    """Train from the warm start for the remaining steps, round by round, on provider's ids."""
    started = time.perf_counter() - warm.seconds  # the shared warm-up counts for every method
    model = TinyGPT(model_config)
    model.load_state_dict(warm.model_state)
    optimizer = make_optimizer(model, schedule.lr)
    optimizer.load_state_dict(warm.optimizer_state)
    n = len(data.train)
    step, scored, previous = warm.step, 0, None
    records: list[RoundRecord] = []
    provider.begin(model, step)
    try:
        for round_ in range(schedule.rounds):
            round_started = time.perf_counter()
            plan = provider.next_round(round_, model, step)
            scored += plan.scored_samples
            order = np.random.default_rng([seed, round_, 2]).permutation(plan.ids.size)
            weight_of = _weights_by_id(plan, n) if schedule.use_weights else None
            steps = min(schedule.round_steps, schedule.total_steps - step)
            batches = _round_batches(plan.ids[order], steps, schedule, data.train.lengths)
            for ids in batches:
                lr = cosine_lr(step, schedule.total_steps, schedule.lr, schedule.lr_warmup)
                _set_lr(optimizer, lr)
                input_ids, mask = collate(data.train, ids, schedule.block)
                weights = None if weight_of is None else torch.from_numpy(weight_of[ids])
                losses = train_step(
                    model, optimizer, input_ids, mask, weights, token_mean=schedule.token_mean_loss
                )
                provider.observe(round_, step, ids, losses.numpy())
                step += 1
            ppl = evaluate_perplexity(
                model, data.held_out, data.held_out_strata, data.stratum_names, schedule.block
            )
            churn = None if previous is None else _churn(previous, plan.ids)
            previous = plan.ids
            record = RoundRecord(
                round_,
                step,
                int(plan.ids.size),
                churn,
                scored / n,
                ppl,
                time.perf_counter() - round_started,
                plan.info,
            )
            records.append(record)
            if on_round is not None:
                on_round(record)
    finally:
        provider.close()
    return RunResult(provider.name, seed, records, scored / n, time.perf_counter() - started)


def predicted_tokens(lengths: npt.NDArray[np.int64], block: int) -> npt.NDArray[np.int64]:
    """Tokens each document has a prediction for, once cut to the context `block` (>= 1)."""
    predicted: npt.NDArray[np.int64] = np.maximum(np.minimum(np.asarray(lengths), block) - 1, 1)
    return predicted


def tokens_per_step_for(lengths: npt.NDArray[np.int64], batch_size: int, block: int) -> int:
    """The predicted tokens of `batch_size` documents of mean length: a token budget a step
    equal on average to what document batches give."""
    return max(1, round(batch_size * float(predicted_tokens(lengths, block).mean())))


def _round_batches(
    ids: npt.NDArray[np.int64], steps: int, schedule: TrainSchedule, lengths: npt.NDArray[np.int64]
) -> list[npt.NDArray[np.int64]]:
    """The round's batches, in the shuffled order `ids`, wrapping around a small coreset.

    Either `batch_size` documents a step, or with `tokens_per_step` as many documents as fill
    that many predicted tokens: then every method trains on the same number of tokens a step,
    so one that picks longer documents does not get more training per step.
    """
    if ids.size == 0:
        raise ValueError("the round's coreset is empty: a provider must hand out >= 1 id")
    if schedule.tokens_per_step is None:
        positions = np.arange(steps * schedule.batch_size) % ids.size
        return list(ids[positions].reshape(steps, schedule.batch_size))
    tokens = predicted_tokens(np.asarray(lengths)[ids], schedule.block)
    batches: list[npt.NDArray[np.int64]] = []
    cursor = 0
    for _ in range(steps):
        taken, start = 0, cursor
        while taken < schedule.tokens_per_step:
            taken += int(tokens[cursor % ids.size])
            cursor += 1
        batches.append(ids[np.arange(start, cursor) % ids.size])
    return batches


def _weights_by_id(plan: RoundPlan, n: int) -> npt.NDArray[np.float32] | None:
    if plan.weights is None:
        return None
    by_id = np.zeros(n, dtype=np.float32)
    by_id[plan.ids] = plan.weights / plan.weights.mean()
    return by_id


def _churn(previous: npt.NDArray[np.int64], current: npt.NDArray[np.int64]) -> float:
    """Share of this round's ids that were not in the previous round."""
    if current.size == 0:
        return 0.0
    return float(1.0 - np.isin(current, previous, assume_unique=True).sum() / current.size)


def _set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr
