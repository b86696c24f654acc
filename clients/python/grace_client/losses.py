"""Per-sample losses from a model's own logits, and the round-weighted batch loss built on them.

The Hugging Face integration reports each sample's loss (free signal for the service) and,
on a weighted round, trains on the weighted loss; both come from the logits of the forward
pass the Trainer already ran. torch only: no transformers here.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

IGNORE_INDEX = -100


def causal_lm_token_sums(
    logits: torch.Tensor, labels: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """(sums, counts), each (B,): each sequence's summed next-token cross-entropy and the
    number of tokens that count.

    logits: (B, T, V); labels: (B, T) with -100 where a token does not count (padding,
    prompt). Token t predicts label t + 1, the shift every causal LM applies.
    """
    shifted_logits = logits[:, :-1, :].float()  # (B, T-1, V)
    targets = labels[:, 1:]  # (B, T-1)
    mask = targets != IGNORE_INDEX
    token_loss = F.cross_entropy(
        shifted_logits.reshape(-1, shifted_logits.shape[-1]),
        targets.reshape(-1).clamp_min(0),  # masked positions are zeroed below anyway
        reduction="none",
    ).view_as(targets)
    return (token_loss * mask).sum(dim=1), mask.sum(dim=1)


def per_sample_causal_lm_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean next-token cross-entropy of each sequence, (B,) float32; NaN if no token counts."""
    sums, counts = causal_lm_token_sums(logits, labels)
    return torch.where(counts > 0, sums / counts.clamp_min(1), torch.nan)


def per_sample_loss_sums(
    logits: torch.Tensor, labels: torch.Tensor | None, *, causal: bool
) -> tuple[torch.Tensor, torch.Tensor] | None:
    """(sums, counts), each (B,), or None when the task shape is not known.

    Causal LM: summed next-token losses and counted tokens; classification: the loss and 1;
    token classification: summed token losses and counted tokens.
    """
    if labels is None:
        return None
    if causal and logits.dim() == 3 and labels.dim() == 2:
        return causal_lm_token_sums(logits, labels)
    if logits.dim() == 2 and labels.dim() == 1 and not labels.is_floating_point():
        losses = F.cross_entropy(logits.float(), labels, reduction="none")  # classification
        return losses, torch.ones_like(labels)
    if logits.dim() == 3 and labels.dim() == 2:  # token classification
        flat = F.cross_entropy(
            logits.float().transpose(1, 2), labels.clamp_min(0), reduction="none"
        )  # (B, T)
        mask = labels != IGNORE_INDEX
        return (flat * mask).sum(dim=1), mask.sum(dim=1)
    return None


def per_sample_loss(
    logits: torch.Tensor, labels: torch.Tensor | None, *, causal: bool
) -> torch.Tensor | None:
    """(B,) mean losses from the model's own logits (NaN where nothing counts), or None."""
    found = per_sample_loss_sums(logits, labels, causal=causal)
    if found is None:
        return None
    sums, counts = found
    return torch.where(counts > 0, sums / counts.clamp_min(1), torch.nan)


def reweight_loss(
    loss: torch.Tensor, sums: torch.Tensor, counts: torch.Tensor, weights: torch.Tensor
) -> torch.Tensor:
    """The model's batch loss with each sample's tokens weighted by its round weight.

    loss: the Trainer's scalar loss for the batch; sums, counts: (B,) per-sample summed
    losses and counted tokens from the same logits (with grad); weights: (B,) raw weights.
    Returns scale * sum_i(v_i * sums_i), where scale is whatever normalisation the Trainer
    applied (the batch's tokens, the accumulated batch's tokens, times the processes when
    it averages tokens across devices) and v_i = w_i * sum(counts) / sum(w_i * counts), so
    that the batch weighs as many tokens as before: the weighted token mean
    sum(w S) / sum(w n) in the Trainer's own units. Written as `loss` plus a correction, so
    every other term of the model's loss (an auxiliary loss) keeps its gradient, and with
    equal weights the result is `loss` itself.
    """
    counts_f = counts.to(sums.dtype)
    w = weights.to(device=sums.device, dtype=sums.dtype)
    total = sums.detach().sum()
    weighted_tokens = (w * counts_f).sum()
    # torch.where rather than an `if` on a value: no device sync in the training step. A batch
    # with nothing to reweight (no counted tokens, a zero loss) keeps `loss` as it is.
    scale = torch.where(total > 0, loss.detach() / total.clamp_min(1e-30), 0.0)
    v = torch.where(
        weighted_tokens > 0, w * (counts_f.sum() / weighted_tokens.clamp_min(1e-30)), 1.0
    )
    return loss + scale.to(sums.dtype) * ((v - 1.0) * sums).sum()
