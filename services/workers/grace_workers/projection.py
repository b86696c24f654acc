"""The fixed seeded projection from a model's hidden width to a job's embedding dimension.

Every worker of a job must map hidden states the same way, or their embeddings would not be
comparable; so the projection is a pure function of (seed, in_dim, out_dim): a Gaussian matrix
made orthonormal by QR. With in_dim >= out_dim its columns are an orthonormal basis of a random
subspace (a Johnson-Lindenstrauss map with no rescaling to worry about); with in_dim < out_dim it
is an isometric embedding, so no information is lost.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import torch
from torch import Tensor

# Separates this stream from any other use of the job seed (selection uses the same seed).
_DOMAIN = 0x67524345


def make_projection(in_dim: int, out_dim: int, seed: int) -> npt.NDArray[np.float32]:
    """(in_dim, out_dim) float32 with orthonormal columns (or rows when in_dim < out_dim)."""
    if in_dim < 1 or out_dim < 1:
        raise ValueError(f"in_dim and out_dim must be >= 1, got {in_dim} and {out_dim}")
    rng = np.random.default_rng(np.random.SeedSequence([_DOMAIN, seed, in_dim, out_dim]))
    tall, short = max(in_dim, out_dim), min(in_dim, out_dim)
    gauss = rng.standard_normal((tall, short))  # (tall, short) float64
    q, r = np.linalg.qr(gauss)  # q: (tall, short) orthonormal columns
    # QR is unique only up to column signs; fixing sign(diag(R)) makes the result a function of
    # the Gaussian draw alone, whatever LAPACK picked.
    q = q * np.where(np.diag(r) < 0, -1.0, 1.0)[None, :]
    basis = q if in_dim >= out_dim else q.T  # (in_dim, out_dim)
    return np.ascontiguousarray(basis, dtype=np.float32)


def project_embeddings(pooled: Tensor, projection: Tensor) -> Tensor:
    """(B, C) @ (C, D) -> (B, D), each row L2-normalised (a zero row stays zero)."""
    reduced = pooled.to(projection.dtype) @ projection  # (B, D)
    return torch.nn.functional.normalize(reduced, p=2.0, dim=1, eps=1e-12)
