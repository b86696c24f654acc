"""Compute, counted in FLOPs, the way the fine-tuning benchmark charges every method.

A training step on T tokens of a model with P parameters costs 6PT (forward and backward); a
scoring forward pass costs 2PT, every token it reads counted, prompt included. P is the number
of parameters that take part in matrix products: every weight but the token and position
embedding tables, which are lookups (the output layer is a product, and counts). A smaller
proxy model therefore scores more cheaply, and a reference model's training and scoring are
charged like any other work. What a training step computes anyway (its per-sample losses,
their closed-form gradient norms, its pooled hidden states) costs nothing extra: the softmax
it needs is a few operations per vocabulary entry against the 6P of the step.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from torch import nn

_LOOKUP_PREFIXES = ("wte.", "wpe.")


def matmul_params(model: nn.Module) -> int:
    """P: parameters that take part in matrix products (everything but embedding lookups)."""
    return sum(
        p.numel() for name, p in model.named_parameters() if not name.startswith(_LOOKUP_PREFIXES)
    )


def train_flops(params: int, tokens: int) -> float:
    return 6.0 * params * tokens


def forward_flops(params: int, tokens: int) -> float:
    return 2.0 * params * tokens


@dataclass(slots=True)
class ComputeMeter:
    """What a run has spent so far, by kind. `budget` is its total compute (FLOPs)."""

    budget: float
    train: float = 0.0
    scoring: float = 0.0  # forward passes that choose data (any model)
    reference: float = 0.0  # training of a reference or proxy model
    by_model: dict[str, float] = field(default_factory=dict)

    @property
    def total(self) -> float:
        return self.train + self.scoring + self.reference

    @property
    def remaining(self) -> float:
        return max(0.0, self.budget - self.total)

    @property
    def spent_fraction(self) -> float:
        return self.total / self.budget if self.budget > 0 else 1.0

    def charge_training(self, params: int, tokens: int) -> None:
        self.train += train_flops(params, tokens)

    def charge_scoring(self, params: int, tokens: int, model: str = "main") -> None:
        flops = forward_flops(params, tokens)
        self.scoring += flops
        self.by_model[model] = self.by_model.get(model, 0.0) + flops

    def charge_reference(self, flops: float) -> None:
        self.reference += flops

    def can_score(self, params: int, tokens: int) -> bool:
        """Whether a forward pass over `tokens` still fits in what is left of the budget."""
        return forward_flops(params, tokens) <= self.remaining
