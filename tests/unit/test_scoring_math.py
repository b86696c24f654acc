"""The scoring math against autograd oracles on a tiny real model."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import Tensor

from grace_workers.scoring import (
    exact_grad_norms,
    mean_token_loss,
    output_token_stats,
    pool_input_embeddings,
    score_batch,
)
from grace_workers.tiny_gpt import TinyGPT, TinyGPTConfig

VOCAB = 37


def make_model(
    seed: int, *, dtype: torch.dtype = torch.float64, head_bias: bool = False
) -> TinyGPT:
    torch.manual_seed(seed)
    config = TinyGPTConfig(
        vocab_size=VOCAB, block_size=16, n_layer=2, n_head=2, n_embd=16, head_bias=head_bias
    )
    model = TinyGPT(config).to(dtype).eval()
    # Larger-than-init weights give peaked, varied softmaxes: a harder check than near-uniform.
    with torch.no_grad():
        model.head.weight.mul_(40.0)
        if model.head.bias is not None:
            model.head.bias.normal_(0.0, 1.0)
    return model


def make_batch(seed: int, lengths: list[int], *, left_pad: bool = False) -> tuple[Tensor, Tensor]:
    gen = torch.Generator().manual_seed(seed)
    T = max(lengths)
    ids = torch.zeros(len(lengths), T, dtype=torch.long)
    mask = torch.zeros(len(lengths), T, dtype=torch.long)
    for row, length in enumerate(lengths):
        tokens = torch.randint(1, VOCAB, (length,), generator=gen)
        cols = slice(T - length, T) if left_pad else slice(0, length)
        ids[row, cols] = tokens
        mask[row, cols] = 1
    return ids, mask


def autograd_token_norm_means(model: TinyGPT, ids: Tensor, mask: Tensor) -> Tensor:
    """Oracle: autograd's gradient of each token's loss w.r.t. the head, norm, mean per sample."""
    _, logits = model(ids, mask)
    log_probs = torch.log_softmax(logits, dim=-1)
    params = list(model.head.parameters())
    out = []
    for b in range(ids.shape[0]):
        norms = []
        for t in range(ids.shape[1] - 1):
            if not (mask[b, t] and mask[b, t + 1]):
                continue
            token_loss = -log_probs[b, t, ids[b, t + 1]]
            grads = torch.autograd.grad(token_loss, params, retain_graph=True)
            norms.append(torch.stack([g.square().sum() for g in grads]).sum().sqrt())
        out.append(torch.stack(norms).mean())
    return torch.stack(out)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("head_bias", [False, True])
def test_closed_form_importance_matches_autograd_per_token_gradients(
    dtype: torch.dtype, head_bias: bool
) -> None:
    model = make_model(0, dtype=dtype, head_bias=head_bias)
    ids, mask = make_batch(1, [9, 4, 12, 2])
    expected = autograd_token_norm_means(model, ids, mask)
    got = score_batch(model, ids, mask).importance
    assert got.dtype == dtype
    torch.testing.assert_close(got, expected.detach(), rtol=1e-5, atol=0.0)


def test_mean_loss_matches_cross_entropy_over_real_tokens() -> None:
    model = make_model(3)
    ids, mask = make_batch(4, [7, 3, 11])
    got = score_batch(model, ids, mask).loss
    _, logits = model(ids, mask)
    for b, length in enumerate([7, 3, 11]):
        expected = torch.nn.functional.cross_entropy(logits[b, : length - 1], ids[b, 1:length])
        torch.testing.assert_close(got[b], expected.detach(), rtol=1e-10, atol=0.0)


@settings(max_examples=12, deadline=None)
@given(
    seed=st.integers(0, 2**16),
    lengths=st.lists(st.integers(2, 16), min_size=1, max_size=5),
    left_pad=st.booleans(),
)
def test_padding_changes_no_score(seed: int, lengths: list[int], left_pad: bool) -> None:
    """Each sample scored in a padded mixed-length batch equals it scored alone."""
    model = make_model(seed % 7)
    ids, mask = make_batch(seed, lengths, left_pad=left_pad)
    batch = score_batch(model, ids, mask)
    for b, length in enumerate(lengths):
        cols = slice(ids.shape[1] - length, None) if left_pad else slice(0, length)
        alone = score_batch(model, ids[b : b + 1, cols], mask[b : b + 1, cols])
        torch.testing.assert_close(batch.loss[b : b + 1], alone.loss, rtol=1e-9, atol=1e-12)
        torch.testing.assert_close(
            batch.importance[b : b + 1], alone.importance, rtol=1e-9, atol=1e-12
        )
        torch.testing.assert_close(batch.pooled[b : b + 1], alone.pooled, rtol=1e-9, atol=1e-12)
        assert int(batch.n_targets[b]) == length - 1


@settings(max_examples=10, deadline=None)
@given(seed=st.integers(0, 2**16), n=st.integers(1, 6), perm_seed=st.integers(0, 100))
def test_rows_are_scored_independently(seed: int, n: int, perm_seed: int) -> None:
    model = make_model(seed % 5)
    lengths = [2 + (seed + 3 * i) % 10 for i in range(n)]
    ids, mask = make_batch(seed, lengths)
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(perm_seed))
    base, shuffled = score_batch(model, ids, mask), score_batch(model, ids[perm], mask[perm])
    torch.testing.assert_close(shuffled.importance, base.importance[perm], rtol=1e-9, atol=0.0)
    torch.testing.assert_close(shuffled.loss, base.loss[perm], rtol=1e-9, atol=0.0)
    assert bool((base.importance > 0).all())
    assert bool((base.loss > 0).all())


def test_confident_predictions_keep_relative_precision_in_float32() -> None:
    """p_y close to 1: the closed form must not cancel (||p||^2 - 2 p_y + 1 would)."""
    gen = torch.Generator().manual_seed(5)
    n, V = 64, 50
    logits = torch.randn(n, V, generator=gen, dtype=torch.float64)
    targets = torch.randint(0, V, (n,), generator=gen)
    margin = torch.linspace(8.0, 25.0, n, dtype=torch.float64)  # p_y from 1-2e-2 to 1-1e-9
    rows = torch.arange(n)
    logits[rows, targets] = logits.max(dim=1).values + margin
    logits = logits.float().double()  # the oracle sees exactly the float32 inputs
    # An identity head makes the hidden state the logits: z = h, so ||h|| = ||z||.
    identity = torch.nn.Linear(V, V, bias=False)
    with torch.no_grad():
        identity.weight.copy_(torch.eye(V))
    p = torch.softmax(logits, dim=1)
    onehot = torch.nn.functional.one_hot(targets, V).double()
    expected = torch.linalg.vector_norm(p - onehot, dim=1) * logits.norm(dim=1)
    assert float((1 - p[rows, targets]).min()) < 1e-8  # the check covers the hard regime
    _, norms = output_token_stats(logits.float(), identity, targets)
    torch.testing.assert_close(norms.double(), expected, rtol=1e-5, atol=0.0)


def test_tiling_changes_nothing() -> None:
    model = make_model(2)
    ids, mask = make_batch(8, [10, 5, 16, 3])
    whole = score_batch(model, ids, mask, tile_elements=1 << 20)
    tiled = score_batch(model, ids, mask, tile_elements=16)  # one vocab column per tile
    torch.testing.assert_close(tiled.importance, whole.importance, rtol=1e-12, atol=0.0)
    torch.testing.assert_close(tiled.loss, whole.loss, rtol=1e-12, atol=0.0)


@settings(max_examples=30, deadline=None)
@given(
    seed=st.integers(0, 2**16),
    n=st.integers(1, 40),
    vocab=st.integers(2, 70),
    row_block=st.integers(1, 50),
    tile_elements=st.integers(1, 400),
    spread=st.floats(0.1, 30.0),
    bias=st.booleans(),
)
def test_token_stats_match_the_definition_for_any_tiling(
    seed: int, n: int, vocab: int, row_block: int, tile_elements: int, spread: float, bias: bool
) -> None:
    gen = torch.Generator().manual_seed(seed)
    C = 6
    layer = torch.nn.Linear(C, vocab, bias=bias).double()
    with torch.no_grad():
        layer.weight.copy_(torch.randn(vocab, C, generator=gen, dtype=torch.float64) * spread)
    hidden = torch.randn(n, C, generator=gen, dtype=torch.float64)
    targets = torch.randint(0, vocab, (n,), generator=gen)
    loss, norm = output_token_stats(
        hidden, layer, targets, row_block=row_block, tile_elements=tile_elements
    )
    with torch.no_grad():
        logits = layer(hidden)
    p = torch.softmax(logits, dim=1)
    onehot = torch.nn.functional.one_hot(targets, vocab).double()
    h_norm = (hidden.square().sum(dim=1) + (1.0 if bias else 0.0)).sqrt()
    expected_norm = torch.linalg.vector_norm(p - onehot, dim=1) * h_norm
    expected_loss = torch.nn.functional.cross_entropy(logits, targets, reduction="none")
    # atol: the oracle's own p - onehot cancels to ~1e-16 when p_y is near 1.
    torch.testing.assert_close(norm, expected_norm, rtol=1e-9, atol=1e-14)
    torch.testing.assert_close(loss, expected_loss, rtol=1e-9, atol=1e-12)


def test_sample_without_a_target_is_refused_by_row() -> None:
    model = make_model(0)
    ids, mask = make_batch(0, [5, 1, 4])
    with pytest.raises(ValueError, match="batch row 1 has fewer than 2 real tokens"):
        score_batch(model, ids, mask)


def test_exact_grad_norm_equals_closed_form_for_one_target() -> None:
    """With a single predicted token the sample gradient is that token's: the two must agree."""
    model = make_model(6)
    ids, mask = make_batch(9, [2, 2, 2, 2])
    exact = exact_grad_norms(model, ids, mask, ["head.weight"])
    closed = score_batch(model, ids, mask).importance
    torch.testing.assert_close(exact, closed, rtol=1e-8, atol=0.0)


@settings(max_examples=8, deadline=None)
@given(seed=st.integers(0, 2**16), lengths=st.lists(st.integers(2, 12), min_size=1, max_size=4))
def test_exact_grad_norms_match_a_per_sample_autograd_loop(seed: int, lengths: list[int]) -> None:
    model = make_model(seed % 3)
    ids, mask = make_batch(seed, lengths)
    names = ["head.weight", "blocks.1.mlp.2.weight"]
    got = exact_grad_norms(model, ids, mask, names)
    params = [dict(model.named_parameters())[n] for n in names]
    for b in range(len(lengths)):
        _, logits = model(ids[b : b + 1], mask[b : b + 1])
        loss = mean_token_loss(logits, ids[b : b + 1], mask[b : b + 1])[0]
        grads = torch.autograd.grad(loss, params)
        expected = torch.stack([g.square().sum() for g in grads]).sum().sqrt()
        torch.testing.assert_close(got[b], expected.detach(), rtol=1e-8, atol=1e-14)
    # The closed form averages per-token norms, so it bounds the exact head norm from above.
    head_only = exact_grad_norms(model, ids, mask, ["head.weight"])
    closed = score_batch(model, ids, mask).importance
    assert bool((head_only <= closed * (1 + 1e-9)).all())


def test_exact_grad_norms_name_unknown_parameters() -> None:
    model = make_model(0)
    ids, mask = make_batch(0, [3])
    with pytest.raises(ValueError, match="param_names"):
        exact_grad_norms(model, ids, mask, ["nope.weight"])


def test_a_loss_mask_scores_only_the_response_tokens() -> None:
    """With a loss mask, loss and importance are the means over the masked tokens alone: the
    same numbers as scoring the full sample and averaging the per-token values by hand."""
    torch.manual_seed(3)
    model = TinyGPT(TinyGPTConfig(vocab_size=50, block_size=16, n_layer=1, n_embd=16))
    ids = torch.randint(0, 50, (3, 9))
    mask = torch.ones_like(ids)
    starts = torch.tensor([1, 4, 8])  # the first response token of each row
    loss_mask = (torch.arange(9)[None, :] >= starts[:, None]).long()
    masked = score_batch(model, ids, mask, loss_mask=loss_mask)
    with torch.no_grad():
        hidden = model.hidden_states(ids, mask)
        logits = model.output_layer(hidden)[:, :-1]  # (B, T-1, V), position t predicts t+1
        token_loss = torch.nn.functional.cross_entropy(
            logits.transpose(1, 2), ids[:, 1:], reduction="none"
        )
        probs = logits.softmax(-1)
        residual = probs - torch.nn.functional.one_hot(ids[:, 1:], 50).float()
        token_norm = residual.norm(dim=-1) * hidden[:, :-1].norm(dim=-1)
    for row, start in enumerate(starts.tolist()):
        counted = slice(start - 1, None)  # targets t >= start are predicted from t - 1
        assert masked.n_targets[row] == 9 - start
        assert torch.allclose(masked.loss[row], token_loss[row, counted].mean(), atol=1e-5)
        assert torch.allclose(masked.importance[row], token_norm[row, counted].mean(), atol=1e-4)
    # Without the mask every real token after the first counts.
    plain = score_batch(model, ids, mask)
    assert torch.allclose(plain.loss, token_loss.mean(dim=1), atol=1e-5)


def test_pooled_input_embeddings_are_the_mean_of_the_real_tokens_rows() -> None:
    torch.manual_seed(4)
    model = TinyGPT(TinyGPTConfig(vocab_size=30, block_size=8, n_layer=1, n_embd=8))
    ids = torch.tensor([[3, 5, 7, 0], [9, 9, 0, 0]])
    mask = torch.tensor([[1, 1, 1, 0], [1, 1, 0, 0]])
    pooled = pool_input_embeddings(model.input_embeddings, ids, mask)
    table = model.wte.weight.detach()
    assert torch.allclose(pooled[0], table[[3, 5, 7]].mean(dim=0), atol=1e-6)
    assert torch.allclose(pooled[1], table[9], atol=1e-6)
