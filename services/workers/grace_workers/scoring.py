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
the textbook ||p||^2 - 2 p_y + 1 cancels catastrophically when the model is confident. The
loss comes from the same sums, log(1 + sum_{v != y} e_v / e_y), so one exp pass serves both.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import torch
from torch import Tensor, nn
from torch.nn import functional as F

# Output-layer tiling (see `output_token_stats`): predicted tokens per row block, and logits
# per tile (4 MB of float32, a size that stays in cache).
DEFAULT_ROW_BLOCK = 1024
DEFAULT_TILE_ELEMENTS = 1 << 20


class CausalLM(Protocol):
    """What scoring needs from a model: the output layer's input, and the output layer.

    `output_layer(hidden_states(ids, mask))` must be the model's logits; the loaders in
    `grace_workers.checkpoints` check it once when they load a model.
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


def next_token_targets(
    input_ids: Tensor, attention_mask: Tensor, loss_mask: Tensor | None = None
) -> tuple[Tensor, Tensor]:
    """(targets (B, T-1), target_mask (B, T-1) bool): position t predicts token t+1.

    loss_mask: (B, T), optional: token t counts as a target only where it is true (an
    instruction pair's response, not its prompt); None counts every real token after the first.
    """
    mask = attention_mask.to(torch.bool)  # (B, T)
    targets = input_ids[:, 1:]  # (B, T-1)
    target_mask = mask[:, :-1] & mask[:, 1:]  # (B, T-1) both the context and the target are real
    if loss_mask is not None:
        target_mask = target_mask & loss_mask[:, 1:].to(torch.bool)
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
    row_block: int = DEFAULT_ROW_BLOCK,
    tile_elements: int = DEFAULT_TILE_ELEMENTS,
) -> tuple[Tensor, Tensor]:
    """Per predicted token: (loss (n,), output-layer gradient norm (n,)).

    hidden: (n, C) final hidden states of the predicting positions; targets: (n,) token ids.

    The logits are made in tiles of (row_block, vocab tile) holding about `tile_elements`
    values (4 MB): a tile stays in cache between the matmul that writes it and the passes that
    read it, and the output weight is read once per row block, not once per row. Across vocab
    tiles the softmax sums are combined online (a running max, sums rescaled when it grows).
    Measured on CPU: (n, V) logits spilled to memory made these passes cost about 60% of the
    matmul; in cache they cost a few percent.
    """
    weight, bias = output_layer.weight, output_layer.bias  # (V, C), (V,) or None
    n, V = hidden.shape[0], weight.shape[0]
    # Half-precision models get float32 statistics: softmax tails underflow in bf16.
    dtype = torch.float32 if hidden.dtype in (torch.float16, torch.bfloat16) else hidden.dtype
    losses = torch.empty(n, dtype=dtype, device=hidden.device)  # (n,)
    norms = torch.empty(n, dtype=dtype, device=hidden.device)  # (n,)
    rows = max(1, row_block)
    for r0 in range(0, n, rows):
        h = hidden[r0 : r0 + rows]  # (m, C)
        y = targets[r0 : r0 + rows, None]  # (m, 1)
        m = h.shape[0]
        cols = max(1, tile_elements // m)
        run_max = torch.full((m, 1), -torch.inf, dtype=dtype, device=h.device)  # (m, 1)
        rest = torch.zeros((m, 1), dtype=dtype, device=h.device)  # sum_{v != y} exp(z_v - max)
        rest_sq = torch.zeros_like(rest)  # sum_{v != y} exp(z_v - max)^2
        z_y = torch.zeros_like(rest)  # the target's logit
        for v0 in range(0, V, cols):
            v1 = min(V, v0 + cols)
            z = F.linear(h, weight[v0:v1], None if bias is None else bias[v0:v1]).to(dtype)
            in_tile = (y >= v0) & (y < v1)  # (m, 1) whether this tile holds the target
            local = (y - v0).clamp(0, v1 - v0 - 1)  # (m, 1) the target's column, if here
            z_y = torch.where(in_tile, z.gather(1, local), z_y)
            new_max = torch.maximum(run_max, z.amax(dim=1, keepdim=True))  # (m, 1)
            scale = torch.exp(run_max - new_max)  # (m, 1) rescales the earlier tiles' sums
            e = z.sub_(new_max).exp_()  # (m, t) in place: no second tile buffer
            # Remove the target from the sums so that nothing below cancels.
            e.scatter_(1, local, torch.where(in_tile, 0.0, e.gather(1, local)))
            rest = rest * scale + e.sum(dim=1, keepdim=True)
            rest_sq = (
                rest_sq * scale.square() + torch.linalg.vector_norm(e, dim=1, keepdim=True).square()
            )
            run_max = new_max
        e_y = torch.exp(z_y - run_max)  # (m, 1)
        total = e_y + rest  # (m, 1) the softmax denominator, times exp(-max)
        # loss = log(total / e_y); log1p keeps it exact when p_y is near 1; the fallback is
        # for a target so unlikely that e_y underflowed to 0.
        loss = torch.where(e_y > 0, torch.log1p(rest / e_y), torch.log(total) - (z_y - run_max))
        miss = rest / total  # (m, 1) 1 - p_y, summed from the other probabilities
        dz_norm = torch.sqrt(rest_sq / total.square() + miss.square())  # (m, 1) ||p - e_y||
        h_sq = h.to(dtype).square().sum(dim=1, keepdim=True)  # (m, 1) ||h||^2
        if bias is not None:
            h_sq = h_sq + 1.0  # the bias sees a constant input 1
        losses[r0 : r0 + m] = loss.squeeze(1)
        norms[r0 : r0 + m] = (dz_norm * h_sq.sqrt()).squeeze(1)
    return losses, norms


def score_hidden_states(
    hidden: Tensor,
    output_layer: nn.Linear,
    input_ids: Tensor,
    attention_mask: Tensor,
    *,
    loss_mask: Tensor | None = None,
    tile_elements: int = DEFAULT_TILE_ELEMENTS,
) -> SampleScores:
    """Scores of a batch from its final hidden states (B, T, C) and the output layer.

    loss and importance are over the targets `loss_mask` allows (see `next_token_targets`);
    the pooled embedding is over every real token, prompt included.
    """
    targets, target_mask = next_token_targets(input_ids, attention_mask, loss_mask)  # (B, T-1)
    n_targets = target_mask.sum(dim=1)  # (B,)
    if bool((n_targets == 0).any()):
        row = int(torch.nonzero(n_targets == 0)[0, 0])
        if loss_mask is not None and int(attention_mask[row].sum()) >= 2:
            raise ValueError(
                f"loss_mask: batch row {row} has no response token to predict; each sample "
                "needs at least one (a target start before its last token)"
            )
        raise ValueError(
            f"attention_mask: batch row {row} has fewer than 2 real tokens; a sample needs at "
            "least 2 so that one token is predicted (build datasets with min_tokens >= 2)"
        )
    rows, cols = torch.nonzero(target_mask, as_tuple=True)  # (n,), (n,) predicted positions
    # Only real predictions go through the output layer: padding costs no (V,) logits.
    token_loss, token_norm = output_token_stats(
        hidden[rows, cols], output_layer, targets[rows, cols], tile_elements=tile_elements
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
    loss_mask: Tensor | None = None,
    tile_elements: int = DEFAULT_TILE_ELEMENTS,
) -> SampleScores:
    """Scores of a batch (B, T) under `model`, without building any autograd graph."""
    with torch.inference_mode():
        hidden = model.hidden_states(input_ids, attention_mask)  # (B, T, C)
        return score_hidden_states(
            hidden,
            model.output_layer,
            input_ids,
            attention_mask,
            loss_mask=loss_mask,
            tile_elements=tile_elements,
        )


def pool_input_embeddings(table: nn.Embedding, input_ids: Tensor, attention_mask: Tensor) -> Tensor:
    """(B, C): the mean of each sample's input token embeddings over its real tokens.

    No forward pass: a lookup and a mean, a few operations per token against the 2P of a
    scoring pass, so an embedding of every sample costs next to nothing. It places samples by
    the words they use (the graph finds the pairs that share a response, say), not by what the
    model makes of them.
    """
    with torch.inference_mode():
        return masked_mean(table(input_ids).float(), attention_mask)


def mean_token_loss(
    logits: Tensor, input_ids: Tensor, attention_mask: Tensor, loss_mask: Tensor | None = None
) -> Tensor:
    """(B,) mean next-token cross-entropy from full logits (B, T, V); differentiable."""
    targets, target_mask = next_token_targets(input_ids, attention_mask, loss_mask)
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
    loss_mask: Tensor | None = None,
    chunk_size: int | None = None,
) -> Tensor:
    """(B,) exact norm of each sample's gradient of its mean token loss w.r.t. `param_names`.

    Uses torch.func (vmap of grad over samples), one backward-equivalent per sample: for
    validating the closed-form proxy, or for users who want the exact value of a chosen
    parameter subset (a LoRA adapter, the last block). `model(ids, mask)` must return
    (hidden, logits) as `TinyGPT` and the loaders in `grace_workers.checkpoints` do.
    """
    named = dict(model.named_parameters())
    missing = [name for name in param_names if name not in named]
    if missing or not param_names:
        raise ValueError(
            f"param_names: {missing or 'empty'} not among the model's parameters; "
            f"choose from e.g. {sorted(named)[:8]}"
        )
    params = {name: named[name].detach() for name in param_names}

    targets_of = attention_mask if loss_mask is None else loss_mask  # (B, T)

    def sample_loss(p: dict[str, Tensor], ids: Tensor, mask: Tensor, counts: Tensor) -> Tensor:
        _, logits = torch.func.functional_call(model, p, (ids[None], mask[None]), strict=False)
        return mean_token_loss(logits, ids[None], mask[None], counts[None])[0]  # () scalar

    per_sample = torch.func.vmap(
        torch.func.grad(sample_loss), in_dims=(None, 0, 0, 0), chunk_size=chunk_size
    )(params, input_ids, attention_mask, targets_of)  # {name: (B, *shape)}
    squares = [g.flatten(start_dim=1).square().sum(dim=1) for g in per_sample.values()]  # (B,)
    return torch.stack(squares).sum(dim=0).sqrt()
