"""Fine-tuning under a compute budget: one loop for every method, so only the data differs.

A run starts from the pretrained base model and spends exactly its budget (FLOPs): whatever a
method spends choosing data (scoring passes, a reference model) comes out of its training. It
trains in `rounds`; before each, the method's provider hands out the round's ids (and charges
its scoring to the meter); the round then trains on them, shuffled and wrapped, until its share
of the remaining budget is spent. Every step holds about `tokens_per_step` tokens and uses the
token-mean loss over the responses only. The learning rate follows the share of the budget
spent (linear warm-up, cosine to 10%), so every method gets the same schedule whatever its
step count. Held-out loss is measured at fixed shares of the budget.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt
import torch
from torch import Tensor, nn
from torch.nn import functional as F

from grace_lab.compute import ComputeMeter, matmul_params
from grace_lab.coreset_training import RoundPlan
from grace_lab.finetune_data import FinetuneData
from grace_lab.lm_training import collate, make_optimizer
from grace_workers.batching import response_mask
from grace_workers.dataset import TokenDataset
from grace_workers.scoring import masked_mean, next_token_targets
from grace_workers.tiny_gpt import TinyGPT, TinyGPTConfig

F32 = npt.NDArray[np.float32]
I64 = npt.NDArray[np.int64]


@dataclass(frozen=True, slots=True)
class FinetuneSchedule:
    """Equal for every method. epochs: full data's passes (the reference compute C)."""

    epochs: int = 3
    rounds: int = 3
    tokens_per_step: int = 1024
    lr: float = 1e-3
    warmup_share: float = 0.05
    eval_points: int = 6
    block: int = 64

    def __post_init__(self) -> None:
        if self.epochs < 1 or self.rounds < 1 or self.tokens_per_step < 1:
            raise ValueError("epochs, rounds, tokens_per_step: must be >= 1")

    def lr_at(self, spent: float) -> float:
        """Learning rate at a share `spent` of the run's budget."""
        if spent < self.warmup_share:
            return self.lr * max(spent, 1e-3) / self.warmup_share
        progress = min(1.0, (spent - self.warmup_share) / max(1e-9, 1.0 - self.warmup_share))
        return self.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)))


@dataclass(frozen=True, slots=True, eq=False)
class StepSignals:
    """What one training step computed anyway, per sample: the free signal a trainer reports.

    loss: mean response-token loss. importance: mean closed-form output-layer gradient norm
    over the response tokens. pooled: (B, C) mean final hidden state over every real token.
    """

    ids: I64
    loss: F32
    importance: F32
    pooled: F32


class FinetuneProvider(Protocol):
    """Where a method's training ids come from, and what it spends choosing them."""

    name: str

    def begin(self, model: TinyGPT, meter: ComputeMeter) -> None: ...

    def next_round(self, round_: int, model: TinyGPT, meter: ComputeMeter) -> RoundPlan: ...

    def observe(self, round_: int, step: int, signals: StepSignals) -> None: ...

    def close(self) -> None: ...


@dataclass(frozen=True, slots=True)
class HeldOut:
    """Held-out response loss: overall (strata weighted by their training share), per stratum."""

    loss: float
    by_stratum: dict[str, float]

    @property
    def perplexity(self) -> float:
        return math.exp(self.loss)

    @property
    def worst(self) -> float:
        return max(self.by_stratum.values()) if self.by_stratum else self.loss


@dataclass(frozen=True, slots=True)
class CurvePoint:
    compute: float  # total FLOPs spent so far (training + scoring + reference)
    held_out: HeldOut


@dataclass(slots=True)
class FinetuneRun:
    method: str
    seed: int
    budget: float  # FLOPs
    curve: list[CurvePoint]
    meter: ComputeMeter
    wall_seconds: float
    rounds: list[dict[str, Any]] = field(default_factory=list)

    @property
    def final(self) -> HeldOut:
        return self.curve[-1].held_out


def reference_compute(data: FinetuneData, params: int, schedule: FinetuneSchedule) -> float:
    """C: full data for `epochs` passes, every token of every pair, 6PT each."""
    return 6.0 * params * float(data.train.lengths.sum()) * schedule.epochs


def run_finetune(
    data: FinetuneData,
    model_config: TinyGPTConfig,
    base_state: dict[str, Any],
    provider: FinetuneProvider,
    budget: float,
    schedule: FinetuneSchedule,
    seed: int,
    on_point: Callable[[CurvePoint], None] | None = None,
) -> FinetuneRun:
    """Fine-tune the base model on the provider's rounds until `budget` FLOPs are spent."""
    started = time.perf_counter()
    torch.manual_seed(seed)
    model = TinyGPT(model_config)
    model.load_state_dict(base_state)
    optimizer = make_optimizer(model, schedule.lr)
    params = matmul_params(model)
    meter = ComputeMeter(budget)
    lengths = np.minimum(np.asarray(data.train.lengths), schedule.block)
    marks = [budget * (k + 1) / schedule.eval_points for k in range(schedule.eval_points)]
    curve = [CurvePoint(0.0, evaluate(model, data, schedule.block))]
    run = FinetuneRun(provider.name, seed, budget, curve, meter, 0.0)
    step = 0
    try:
        provider.begin(model, meter)
        if meter.total > budget * (1 + 1e-9):
            raise ValueError(
                f"{provider.name}: choosing its data cost {meter.total / budget:.2f}x the run's "
                "budget before any training; give it a larger budget"
            )
        for round_ in range(schedule.rounds):
            plan = provider.next_round(round_, model, meter)
            share = meter.remaining / (schedule.rounds - round_)
            round_end = meter.total + share
            order = plan.ids[np.random.default_rng([seed, round_, 7]).permutation(plan.ids.size)]
            weight_of = _weights_by_id(plan, len(data.train))
            trained_tokens, cursor = 0, 0
            while order.size and meter.total < round_end - 1e-6:
                afford = int((round_end - meter.total) / (6.0 * params))
                ids, cursor = _next_batch(
                    order, cursor, lengths, min(schedule.tokens_per_step, afford)
                )
                if ids.size == 0:
                    break
                for group in optimizer.param_groups:
                    group["lr"] = schedule.lr_at(meter.spent_fraction)
                weights = None if weight_of is None else torch.from_numpy(weight_of[ids])
                signals, tokens = train_pairs_step(
                    model, optimizer, data.train, ids, schedule.block, weights
                )
                meter.charge_training(params, tokens)
                trained_tokens += tokens
                provider.observe(round_, step, signals)
                step += 1
                if marks and meter.total >= marks[0] - 1e-6:
                    while marks and meter.total >= marks[0] - 1e-6:
                        marks.pop(0)  # a long step may pass several marks: one point for all
                    point = CurvePoint(meter.total, evaluate(model, data, schedule.block))
                    curve.append(point)
                    if on_point is not None:
                        on_point(point)
            run.rounds.append(
                {
                    "round": round_,
                    "coreset": int(plan.ids.size),
                    "trained_tokens": trained_tokens,
                    "spent": meter.total,
                    "noisy_share": float(data.noisy[plan.ids].mean()) if plan.ids.size else 0.0,
                    **plan.info,
                }
            )
    finally:
        provider.close()
    if not curve or curve[-1].compute < meter.total - 1e-6 or len(curve) == 1:
        curve.append(CurvePoint(meter.total, evaluate(model, data, schedule.block)))
        if on_point is not None:
            on_point(curve[-1])
    run.wall_seconds = time.perf_counter() - started
    return run


def _next_batch(order: I64, cursor: int, lengths: I64, tokens: int) -> tuple[I64, int]:
    """Ids from `order` (wrapping) until `tokens` tokens are filled; none if not one fits."""
    taken, start = 0, cursor
    while True:
        length = int(lengths[order[cursor % order.size]])
        if taken + length > tokens and cursor > start:
            break
        if taken + length > tokens:  # not even one sample fits in what is left
            return np.empty(0, np.int64), cursor
        taken += length
        cursor += 1
        if cursor - start >= 4 * order.size:
            break
    return order[np.arange(start, cursor) % order.size], cursor


def _weights_by_id(plan: RoundPlan, n: int) -> F32 | None:
    if plan.weights is None:
        return None
    by_id = np.zeros(n, dtype=np.float32)
    by_id[plan.ids] = plan.weights / plan.weights.mean()
    return by_id


def train_pairs_step(
    model: TinyGPT,
    optimizer: torch.optim.Optimizer,
    dataset: TokenDataset,
    ids: I64,
    block: int,
    weights: Tensor | None = None,
    clip: float = 1.0,
) -> tuple[StepSignals, int]:
    """One optimiser step on the token-mean response loss; (its free signals, tokens read)."""
    model.train()
    input_ids, mask = collate(dataset, ids, block)
    loss_mask = response_mask(dataset, ids, input_ids.shape[1])
    hidden = model.hidden_states(input_ids, mask)  # (B, T, C)
    logits = model.output_layer(hidden)[:, :-1]  # (B, T-1, V)
    targets, target_mask = next_token_targets(input_ids, mask, loss_mask)  # (B, T-1)
    counted = target_mask.to(logits.dtype)
    token_loss = F.cross_entropy(
        logits.reshape(-1, logits.shape[-1]), targets.reshape(-1), reduction="none"
    ).view_as(targets)  # (B, T-1)
    counts = counted.sum(dim=1)  # (B,)
    per_sample = (token_loss * counted).sum(dim=1) / counts.clamp(min=1)
    w = counts if weights is None else counts * weights.to(counts.dtype)
    loss = (per_sample * w).sum() / w.sum().clamp(min=1e-12)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()  # type: ignore[no-untyped-call]
    if clip > 0:
        nn.utils.clip_grad_norm_(model.parameters(), clip)
    optimizer.step()
    with torch.no_grad():
        # ||p - e_y|| * ||h|| per predicted token: the output layer's gradient norm, exact.
        probs = logits.detach().softmax(dim=-1)
        miss = 1.0 - probs.gather(-1, targets[..., None]).squeeze(-1)
        dz = (
            (probs.square().sum(dim=-1) - (1.0 - miss).square() + miss.square()).clamp(min=0).sqrt()
        )
        norm = dz * hidden.detach()[:, :-1].norm(dim=-1)
        importance = (norm * counted).sum(dim=1) / counts.clamp(min=1)
        pooled = masked_mean(hidden.detach(), mask)
    signals = StepSignals(
        ids=np.asarray(ids, dtype=np.int64),
        loss=per_sample.detach().numpy().astype(np.float32),
        importance=importance.numpy().astype(np.float32),
        pooled=pooled.numpy().astype(np.float32),
    )
    return signals, int(mask.sum())


@torch.no_grad()
def evaluate(model: TinyGPT, data: FinetuneData, block: int, batch_size: int = 256) -> HeldOut:
    """Mean response-token loss per stratum; overall weighs strata by their training share."""
    model.eval()
    held = data.held_out
    strata = data.held_out_strata
    names = data.stratum_names
    loss_sum, token_count = np.zeros(len(names)), np.zeros(len(names))
    for start in range(0, len(held), batch_size):
        ids = np.arange(start, min(start + batch_size, len(held)), dtype=np.int64)
        input_ids, mask = collate(held, ids, block)
        loss_mask = response_mask(held, ids, input_ids.shape[1])
        logits = model.output_layer(model.hidden_states(input_ids, mask))[:, :-1]
        targets, target_mask = next_token_targets(input_ids, mask, loss_mask)
        token_loss = F.cross_entropy(logits.transpose(1, 2), targets, reduction="none")
        counted = target_mask.to(token_loss.dtype)
        np.add.at(loss_sum, strata[ids], (token_loss * counted).sum(dim=1).numpy())
        np.add.at(token_count, strata[ids], counted.sum(dim=1).numpy())
    by_stratum = {
        name: float(loss_sum[s] / token_count[s]) for s, name in enumerate(names) if token_count[s]
    }
    shares = data.stratum_shares
    present = [s for s, name in enumerate(names) if name in by_stratum]
    weights = shares[present] / max(shares[present].sum(), 1e-12)
    overall = float(sum(w * by_stratum[names[s]] for w, s in zip(weights, present, strict=True)))
    return HeldOut(overall, by_stratum)
