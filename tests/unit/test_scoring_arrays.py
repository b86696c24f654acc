"""What a worker sends per batch: shapes, dtypes, unit embeddings, and the exact-gradient option."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from grace_workers.projection import make_projection
from grace_workers.tiny_gpt import TinyGPT, TinyGPTConfig
from grace_workers.worker import score_arrays

VOCAB, WIDTH, DIM = 40, 16, 8


def make_inputs(lengths: list[int], seed: int = 0) -> tuple[TinyGPT, torch.Tensor, torch.Tensor]:
    torch.manual_seed(seed)
    config = TinyGPTConfig(vocab_size=VOCAB, block_size=16, n_layer=1, n_head=2, n_embd=WIDTH)
    model = TinyGPT(config).eval()
    T = max(lengths)
    ids = torch.randint(1, VOCAB, (len(lengths), T))
    mask = (torch.arange(T)[None] < torch.tensor(lengths)[:, None]).long()
    return model, ids * mask, mask


def test_arrays_have_the_wire_shapes_and_unit_embeddings() -> None:
    model, ids, mask = make_inputs([7, 3, 12, 2])
    projection = torch.from_numpy(make_projection(WIDTH, DIM, 5))
    arrays = score_arrays(model, ids, mask, projection)
    assert {k: (v.dtype, v.shape) for k, v in arrays.items()} == {
        "embeddings": (np.dtype(np.float32), (4, DIM)),
        "loss": (np.dtype(np.float32), (4,)),
        "importance": (np.dtype(np.float32), (4,)),
    }
    np.testing.assert_allclose(np.linalg.norm(arrays["embeddings"], axis=1), 1.0, atol=1e-6)
    assert np.isfinite(arrays["loss"]).all()
    assert (arrays["importance"] > 0).all()


def test_exact_importance_agrees_with_the_closed_form_where_it_must() -> None:
    projection = torch.from_numpy(make_projection(WIDTH, DIM, 0))
    model, ids, mask = make_inputs([2, 2, 2], seed=1)  # one predicted token: the two coincide
    closed = score_arrays(model, ids, mask, projection)["importance"]
    exact = score_arrays(model, ids, mask, projection, exact_params=["head.weight"])
    np.testing.assert_allclose(exact["importance"], closed, rtol=1e-5)
    model, ids, mask = make_inputs([9, 5, 14], seed=2)  # more tokens: the mean of norms bounds it
    closed = score_arrays(model, ids, mask, projection)["importance"]
    exact = score_arrays(model, ids, mask, projection, exact_params=["head.weight"])
    assert (exact["importance"] <= closed * (1 + 1e-5)).all()
    # Loss and embeddings do not depend on how importance is computed.
    base = score_arrays(model, ids, mask, projection)
    np.testing.assert_array_equal(exact["loss"], base["loss"])
    np.testing.assert_array_equal(exact["embeddings"], base["embeddings"])


def test_unknown_exact_parameters_are_named() -> None:
    model, ids, mask = make_inputs([4])
    with pytest.raises(ValueError, match="lora"):
        score_arrays(
            model, ids, mask, torch.from_numpy(make_projection(WIDTH, DIM, 0)),
            exact_params=["lora.A"],
        )  # fmt: skip
