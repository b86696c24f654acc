"""The seeded projection: a pure function of (seed, dims), orthonormal, rows unit length."""

from __future__ import annotations

import numpy as np
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from grace_workers.projection import make_projection, project_embeddings

dims = st.integers(1, 48)


@settings(max_examples=40, deadline=None)
@given(in_dim=dims, out_dim=dims, seed=st.integers(0, 2**63 - 1))
def test_projection_is_deterministic_and_orthonormal(in_dim: int, out_dim: int, seed: int) -> None:
    a = make_projection(in_dim, out_dim, seed)
    b = make_projection(in_dim, out_dim, seed)
    assert a.shape == (in_dim, out_dim)
    assert a.dtype == np.float32
    np.testing.assert_array_equal(a, b)
    # Orthonormal columns when reducing, orthonormal rows when widening.
    gram = a.T @ a if in_dim >= out_dim else a @ a.T
    np.testing.assert_allclose(gram, np.eye(min(in_dim, out_dim)), atol=1e-5)


@settings(max_examples=20, deadline=None)
@given(in_dim=st.integers(2, 32), out_dim=st.integers(2, 32), seed=st.integers(0, 2**31))
def test_different_seeds_give_different_projections(in_dim: int, out_dim: int, seed: int) -> None:
    assert not np.array_equal(
        make_projection(in_dim, out_dim, seed), make_projection(in_dim, out_dim, seed + 1)
    )


@settings(max_examples=30, deadline=None)
@given(
    rows=st.integers(1, 8),
    in_dim=st.integers(1, 24),
    out_dim=st.integers(1, 24),
    seed=st.integers(0, 1000),
)
def test_projected_rows_are_unit_length(rows: int, in_dim: int, out_dim: int, seed: int) -> None:
    gen = torch.Generator().manual_seed(seed)
    pooled = torch.randn(rows, in_dim, generator=gen) + 0.1
    out = project_embeddings(pooled, torch.from_numpy(make_projection(in_dim, out_dim, seed)))
    assert out.shape == (rows, out_dim)
    norms = out.norm(dim=1)
    # A row can only vanish when it is orthogonal to the whole subspace (not for random data).
    torch.testing.assert_close(norms, torch.ones(rows), rtol=0, atol=1e-5)


def test_widening_preserves_cosine_similarity() -> None:
    gen = torch.Generator().manual_seed(0)
    pooled = torch.randn(6, 8, generator=gen)
    out = project_embeddings(pooled, torch.from_numpy(make_projection(8, 32, 3)))
    unit = torch.nn.functional.normalize(pooled, dim=1)
    torch.testing.assert_close(out @ out.T, unit @ unit.T, rtol=0, atol=1e-5)


def test_zero_row_stays_finite() -> None:
    out = project_embeddings(torch.zeros(2, 4), torch.from_numpy(make_projection(4, 3, 0)))
    assert bool(torch.isfinite(out).all())
