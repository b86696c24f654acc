"""The shared training loop's batching and loss, and the length-weighted random baseline."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from grace_lab.coreset_training import TrainSchedule, _round_batches, tokens_per_step_for
from grace_lab.lm_training import token_losses, train_step
from grace_lab.providers import LengthWeightedRandomPerRound
from grace_workers.tiny_gpt import TinyGPT, TinyGPTConfig


def test_document_batches_take_batch_size_ids_in_order_and_wrap() -> None:
    schedule = TrainSchedule(batch_size=4)
    ids = np.arange(10, 20, dtype=np.int64)
    batches = _round_batches(ids, 3, schedule, np.full(30, 9, dtype=np.int64))
    assert [b.tolist() for b in batches] == [
        [10, 11, 12, 13],
        [14, 15, 16, 17],
        [18, 19, 10, 11],  # a coreset smaller than a round's draws wraps around
    ]


def test_token_batches_fill_the_budget_and_never_skip_or_repeat_within_a_pass() -> None:
    rng = np.random.default_rng(0)
    lengths = rng.integers(2, 80, size=500).astype(np.int64)
    ids = rng.permutation(500).astype(np.int64)
    schedule = TrainSchedule(tokens_per_step=200, block=64)
    batches = _round_batches(ids, 12, schedule, lengths)
    predicted = np.maximum(np.minimum(lengths, 64) - 1, 1)
    for batch in batches:
        tokens = int(predicted[batch].sum())
        # At least the budget, and the last document is the one that crossed it.
        assert tokens >= 200
        assert tokens - int(predicted[batch[-1]]) < 200
    taken = np.concatenate(batches)
    assert taken.tolist() == ids[: taken.size].tolist()  # the round's order, contiguous


def test_token_batches_give_fewer_documents_when_they_are_longer() -> None:
    short, long = np.full(100, 9, dtype=np.int64), np.full(100, 33, dtype=np.int64)
    schedule = TrainSchedule(tokens_per_step=256)
    ids = np.arange(100, dtype=np.int64)
    assert len(_round_batches(ids, 1, schedule, short)[0]) == 32  # 8 tokens each
    assert len(_round_batches(ids, 1, schedule, long)[0]) == 8  # 32 tokens each


def test_tokens_per_step_for_is_batch_size_documents_of_mean_length() -> None:
    lengths = np.array([5, 11, 100], dtype=np.int64)  # predicted: 4, 10, 63 (cut at 64)
    assert tokens_per_step_for(lengths, 3, 64) == 4 + 10 + 63


def test_schedule_rejects_a_token_budget_below_one() -> None:
    with pytest.raises(ValueError, match="tokens_per_step"):
        TrainSchedule(tokens_per_step=0)


def _tiny_batch() -> tuple[TinyGPT, torch.Tensor, torch.Tensor]:
    torch.manual_seed(0)
    model = TinyGPT(TinyGPTConfig(vocab_size=50, block_size=16, n_layer=1, n_embd=16, n_head=2))
    ids = torch.randint(0, 50, (3, 12))
    mask = torch.zeros(3, 12, dtype=torch.long)
    for row, length in enumerate((12, 3, 7)):
        mask[row, :length] = 1
    return model, ids, mask


@pytest.mark.parametrize("token_mean", [True, False])
def test_train_step_minimises_the_chosen_mean(token_mean: bool) -> None:
    model, ids, mask = _tiny_batch()
    losses, target_mask = token_losses(model, ids, mask)
    if token_mean:
        expected = losses.sum() / target_mask.sum()
    else:
        expected = (losses.sum(dim=1) / target_mask.sum(dim=1)).mean()
    expected.backward()  # type: ignore[no-untyped-call]
    want = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    model.zero_grad()

    class Capture(torch.optim.SGD):
        """Leaves the parameters and their gradients as train_step computed them."""

        def step(self, closure: object = None) -> None:  # type: ignore[override]
            return None

    optimizer = Capture(model.parameters(), lr=0.0)
    train_step(model, optimizer, ids, mask, clip=0.0, token_mean=token_mean)
    for name, param in model.named_parameters():
        if name in want:
            assert param.grad is not None
            torch.testing.assert_close(param.grad, want[name], rtol=1e-5, atol=1e-7)


def test_length_weighted_random_prefers_long_documents_and_draws_the_budget() -> None:
    lengths = np.array([2] * 900 + [60] * 100, dtype=np.int64)  # 1 vs 59 predicted tokens
    provider = LengthWeightedRandomPerRound(lengths, 200, seed=3)
    first = provider.next_round(0, None, 0).ids  # type: ignore[arg-type]
    second = provider.next_round(1, None, 0).ids  # type: ignore[arg-type]
    assert first.size == np.unique(first).size == 200
    assert (first >= 900).sum() > 80  # long documents hold 87% of the weight
    assert not np.array_equal(first, second)  # re-drawn each round


def test_an_empty_coreset_is_an_error_not_an_endless_loop() -> None:
    schedule = TrainSchedule(tokens_per_step=10)
    with pytest.raises(ValueError, match="empty"):
        _round_batches(np.zeros(0, dtype=np.int64), 1, schedule, np.ones(5, dtype=np.int64))
