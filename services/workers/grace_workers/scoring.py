"""Per-sample scores of a causal LM: mean token loss, gradient importance, pooled hidden state.

Notation (shapes in comments): B samples, T positions, C hidden width, V vocabulary, n the
number of predicted tokens in a batch. Position t predicts token t+1 when both are real
(attention mask 1), so a sample with L real tokens has L-1 targets. Padding may be on the left
or on the right but must be contiguous.

Closed-form importance. For one predicted token with final hidden state h (the output layer's
input), logits z = W h + b, probabilities p = softmax(z) and target y, the cross-entropy
gradient is dL/dz = p - e_y, hence

    dL/dW = (p - e_y) h^T        (rank one)   ->  ||dL/dW||_F = ||p - e_y|| * ||h||
    dL/db = p - e_y                           ->  with a bias: ||p - e_y|| * sqrt(||h||^2 + 1)

exactly, with no backward pass. A sample's importance is the mean of this norm over its target
tokens: a mean (not a sum) so that long samples are not favoured. By the triangle inequality it
is an upper bound of the norm of the gradient of the sample's mean loss, which
`exact_grad_norms` computes with torch.func for users who want that exact value.

||p - e_y||^2 is computed as sum_{v != y} p_v^2 + (sum_{v != y} p_v)^2, sums of positive terms:
the textbook ||p||^2 - 2 p_y + 1 cancels catastrophically when the model is confident.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import torch
from torch import Tensor, nn
from torch.nn import functional as F

# Predicted tokens per chunk when applying the output layer: bounds the (chunk, V) logits.
DEFAULT_CHUNK_TOKENS = 4096


class CausalLM(Protocol):
    """What scoring needs from a model: the output layer's input, and the output layer.

    `output_layer(hidden_states(ids, mask))` must be the model's logits; the loaders in
    `grace_workers.models` check it once when they load a model.
    """

    @property
    def output_layer(self) -> nn.Linear: ...

    def hidden_states(self, input_ids: Tensor, attention_mask: Tensor | None = None) -> Tensor: ...


@dataclass(frozen=True, slots=True, eq=False)
class SampleScores:
    """Per-sample results of one batch, all float32 on the model's device.

    loss: (B,) mean next-token cross-entropy (nats).
    importance: (B,) mean over target tokens of the output layer's gradient norm.
    pooled: (B, C) mean of the final hidden states over real tokens.
    n_targets: (B,) int64, how many tokens were predicted.
    """

    loss: Tensor
    importance: Tensor
    pooled: Tensor
    n_targets: Tensor


def next_token_targets(input_ids: Tensor, attention_mask: Tensor) -> tuple[Tensor, Tensor]:
    """(targets (B, T-1), target_mask (B, T-1) bool): position t predicts token t+1."""
    mask = attention_mask.to(torch.bool)  # (B, T)
    targets = input_ids[:, 1:]  # (B, T-1)
    target_mask = mask[:, :-1] & mask[:, 1:]  # (B, T-1) both the context and the target are real
    return targets, target_mask


def masked_mean(values: Tensor, mask: Tensor) -> Tensor:
    """Mean over dim 1 of `values` (B, T, ...) where `mask` (B, T) is true; (B, ...)."""
    m = mask.to(values.dtype)  # (B, T)
    while m.dim() < values.dim():
        m = m.unsqueeze(-1)  # (B, T, 1...) to broadcast over trailing dims
    total = (values * m).sum(dim=1)  # (B, ...)
    count = m.sum(dim=1).clamp(min=1)  # (B, 1...) clamp: an all-padding row gives 0, not NaN
    return total / count


def output_token_stats(
    hidden: Tensor,
    output_layer: nn.Linear,
    targets: Tensor,
    *,
    chunk_tokens: int = DEFAULT_CHUNK_TOKENS,
) -> tuple[Tensor, Tensor]:
    """Per predicted token: (loss (n,), output-layer gradient norm (n,)).

    hidden: (n, C) final hidden states of the predicting positions; targets: (n,) token ids.
    Works in chunks of `chunk_tokens` rows so that only (chunk, V) logits live at once.
    """
    weight, bias = output_layer.weight, output_layer.bias  # (V, C), (V,) or None
    n = hidden.shape[0]
    # Half-precision models get float32 statistics: softmax tails underflow in bf16.
    stat_dtype = torch.float32 if hidden.dtype in (torch.float16, torch.bfloat16) else hidden.dtype
    losses = torch.empty(n, dtype=stat_dtype, device=hidden.device)  # (n,)
    norms = torch.empty(n, dtype=stat_dtype, device=hidden.device)  # (n,)
    for start in range(0, n, max(1, chunk_tokens)):
        stop = min(n, start + max(1, chunk_tokens))
        h = hidden[start:stop]  # (m, C)
        y = targets[start:stop, None]  # (m, 1)
        logp = torch.log_softmax(F.linear(h, weight, bias).to(stat_dtype), dim=-1)  # (m, V)
        loss = -logp.gather(1, y).squeeze(1)  # (m,)
        p = logp.exp_()  # (m, V) probabilities, in place: no second (m, V) buffer
        p.scatter_(1, y, 0.0)  # (m, V) p with the target zeroed: sum_{v != y} p_v^2 needs no cancel
        # 1 - p_y summed from the other probabilities: from the loss it would round to 0 when
        # p_y is near 1, and that term dominates the norm then.
        miss = p.sum(dim=-1)  # (m,)
        dz_norm = torch.sqrt(torch.linalg.vector_norm(p, dim=-1).square() + miss.square())  # (m,)
        h_sq = h.to(stat_dtype).square().sum(dim=-1)  # (m,) ||h||^2
        if bias is not None:
            h_sq = h_sq + 1.0  # the bias sees a constant input 1
        losses[start:stop] = loss
        norms[start:stop] = dz_norm * h_sq.sqrt()
    return losses, norms


def score_hidden_states(
    hidden: Tensor,
    output_layer: nn.Linear,
    input_ids: Tensor,
    attention_mask: Tensor,
    *,
    chunk_tokens: int = DEFAULT_CHUNK_TOKENS,
) -> SampleScores:
    """Scores of a batch from its final hidden states (B, T, C) and the output layer."""
    targets, target_mask = next_token_targets(input_ids, attention_mask)  # (B, T-1) x 2
    n_targets = target_mask.sum(dim=1)  # (B,)
    if bool((n_targets == 0).any()):
        row = int(torch.nonzero(n_targets == 0)[0, 0])
        raise ValueError(
            f"attention_mask: batch row {row} has fewer than 2 real tokens; a sample needs at "
            "least 2 so that one token is predicted (build datasets with min_tokens >= 2)"
        )
    rows, cols = torch.nonzero(target_mask, as_tuple=True)  # (n,), (n,) predicted positions
    # Only real predictions go through the output layer: padding costs no (V,) logits.
    token_loss, token_norm = output_token_stats(
        hidden[rows, cols], output_layer, targets[rows, cols], chunk_tokens=chunk_tokens
    )  # (n,), (n,)
    B = input_ids.shape[0]
    count = n_targets.to(token_loss.dtype)  # (B,)
    loss = torch.zeros(B, dtype=token_loss.dtype, device=hidden.device).index_add_(
        0, rows, token_loss
    )  # (B,) sums
    importance = torch.zeros_like(loss).index_add_(0, rows, token_norm)  # (B,) sums
    pooled = masked_mean(hidden.to(token_loss.dtype), attention_mask)  # (B, C)
    return SampleScores(
        loss=loss / count, importance=importance / count, pooled=pooled, n_targets=n_targets
    )


def score_batch(
    model: CausalLM,
    input_ids: Tensor,
    attention_mask: Tensor,
    *,
    chunk_tokens: int = DEFAULT_CHUNK_TOKENS,
) -> SampleScores:
    """Scores of a batch (B, T) under `model`, without building any autograd graph."""
    with torch.inference_mode():
        hidden = model.hidden_states(input_ids, attention_mask)  # (B, T, C)
        return score_hidden_states(
            hidden, model.output_layer, input_ids, attention_mask, chunk_tokens=chunk_tokens
        )


def mean_token_loss(logits: Tensor, input_ids: Tensor, attention_mask: Tensor) -> Tensor:
    """(B,) mean next-token cross-entropy from full logits (B, T, V); differentiable."""
    targets, target_mask = next_token_targets(input_ids, attention_mask)  # (B, T-1) x 2
    token_loss = F.cross_entropy(
        logits[:, :-1].transpose(1, 2), targets, reduction="none"
    )  # (B, T-1)
    return masked_mean(token_loss, target_mask)


def exact_grad_norms(
    model: nn.Module,
    input_ids: Tensor,
    attention_mask: Tensor,
    param_names: Sequence[str],
    *,
    chunk_size: int | None = None,
) -> Tensor:
    """(B,) exact norm of each sample's gradient of its mean token loss w.r.t. `param_names`.

    Uses torch.func (vmap of grad over samples), one backward-equivalent per sample: for
    validating the closed-form proxy, or for users who want the exact value of a chosen
    parameter subset (a LoRA adapter, the last block). `model(ids, mask)` must return
    (hidden, logits) as `TinyGPT` and the loaders in `grace_workers.models` do.
    """
    named = dict(model.named_parameters())
    missing = [name for name in param_names if name not in named]
    if missing or not param_names:
        raise ValueError(
            f"param_names: {missing or 'empty'} not among the model's parameters; "
            f"choose from e.g. {sorted(named)[:8]}"
        )
    params = {name: named[name].detach() for name in param_names}

    def sample_loss(p: dict[str, Tensor], ids: Tensor, mask: Tensor) -> Tensor:
        _, logits = torch.func.functional_call(model, p, (ids[None], mask[None]), strict=False)
        return mean_token_loss(logits, ids[None], mask[None])[0]  # () scalar

    per_sample = torch.func.vmap(
        torch.func.grad(sample_loss), in_dims=(None, 0, 0), chunk_size=chunk_size
    )(params, input_ids, attention_mask)  # {name: (B, *shape)}
    squares = [g.flatten(start_dim=1).square().sum(dim=1) for g in per_sample.values()]  # (B,)
    return torch.stack(squares).sum(dim=0).sqrt()
