"""The 2D map of a job's embeddings: PCA fitted on a sample, then applied to every point.

The dashboard draws up to a few hundred thousand points, so the projection must be cheap and
stable: fitting principal components on a uniform sample by randomized SVD (Halko, Martinsson
and Tropp, 2011) costs O(sample * dim * (2 + oversample)) per power iteration, and applying
them is one (n, dim) @ (dim, 2) product. Pure numpy, no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

# Rows per matmul chunk when applying: bounds the float32 temporaries at about 100 MB for
# dim 384, so a 1M-point map never needs a second copy of the whole matrix.
_APPLY_CHUNK = 65_536


@dataclass(frozen=True, slots=True, eq=False)
class Projection2D:
    """A fitted linear map to the plane.

    mean: (dim,) float64, the sample mean subtracted before projecting.
    components: (dim, 2) float64, orthonormal columns (a zero column where dim or rank < 2).
    explained_variance: (2,) float64, the sample variance along each component.
    """

    mean: npt.NDArray[np.float64]
    components: npt.NDArray[np.float64]
    explained_variance: npt.NDArray[np.float64]

    @property
    def dim(self) -> int:
        return int(self.mean.shape[0])


def choose_rows(n: int, max_points: int, rng: np.random.Generator) -> npt.NDArray[np.int64]:
    """Sorted row numbers of a uniform sample of min(n, max_points) rows out of n."""
    if n < 0 or max_points < 0:
        raise ValueError(f"n and max_points must be >= 0, got n={n}, max_points={max_points}")
    if n <= max_points:
        return np.arange(n, dtype=np.int64)
    rows = rng.choice(n, size=max_points, replace=False)
    return np.sort(rows).astype(np.int64)


def fit_projection(
    embeddings: npt.NDArray[np.floating],
    rng: np.random.Generator,
    *,
    sample_size: int = 20_000,
    oversample: int = 8,
    power_iterations: int = 3,
) -> Projection2D:
    """Fit the top two principal components of (n, dim) `embeddings` on a sample of rows.

    Signs are fixed (each component's largest loading is positive), so that the same data
    gives the same picture and the map does not mirror itself from one round to the next.
    """
    data = _check_matrix(embeddings)
    n, dim = data.shape
    if sample_size < 1:
        raise ValueError(f"sample_size must be >= 1, got {sample_size}")
    if n == 0:
        raise ValueError("embeddings: no rows to fit a projection on; send embeddings first")
    sample = data[choose_rows(n, sample_size, rng)].astype(np.float64)  # (m, dim)
    if not np.isfinite(sample).all():
        raise ValueError("embeddings: contain NaN or Inf; drop or re-embed those rows first")
    mean = sample.mean(axis=0)
    centred = sample - mean
    basis, singular = _top_right_singular_vectors(centred, 2, oversample, power_iterations, rng)
    components = np.zeros((dim, 2), dtype=np.float64)
    variance = np.zeros(2, dtype=np.float64)
    found = basis.shape[1]
    components[:, :found] = basis
    variance[:found] = singular**2 / max(centred.shape[0] - 1, 1)
    for j in range(found):
        # The first loading within rounding of the largest decides: ties (|0.707| twice)
        # must not be broken by the last bit, or a shifted copy of the data could mirror.
        size = np.abs(components[:, j])
        pivot = int(np.flatnonzero(size >= size.max() * (1 - 1e-6))[0])
        if components[pivot, j] < 0:
            components[:, j] = -components[:, j]
    return Projection2D(mean=mean, components=components, explained_variance=variance)


def apply_projection(
    embeddings: npt.NDArray[np.floating], projection: Projection2D
) -> npt.NDArray[np.float32]:
    """Project (n, dim) `embeddings` with a fitted map; (n, 2) float32, chunked over rows."""
    data = _check_matrix(embeddings)
    if data.shape[1] != projection.dim:
        raise ValueError(
            f"embeddings: dimension {data.shape[1]} does not match the projection's "
            f"{projection.dim}; fit the projection on embeddings of the same job"
        )
    out = np.empty((data.shape[0], 2), dtype=np.float32)
    # (mean @ components) once, instead of centring every chunk: saves an (n, dim) temporary.
    offset = projection.mean @ projection.components  # (2,)
    for start in range(0, data.shape[0], _APPLY_CHUNK):
        block = data[start : start + _APPLY_CHUNK]
        out[start : start + block.shape[0]] = block @ projection.components - offset
    # A NaN or Inf anywhere in a row reaches its output (Inf * 0 is NaN too), so checking the
    # (n, 2) result is as strict as checking the (n, dim) input and far cheaper.
    if not np.isfinite(out).all():
        bad = int(np.flatnonzero(~np.isfinite(out).all(axis=1))[0])
        raise ValueError(
            f"embeddings: row {bad} contains NaN or Inf (or overflows float32); "
            "drop or re-embed it first"
        )
    return out


def project_embeddings(
    embeddings: npt.NDArray[np.floating],
    seed: int,
    *,
    sample_size: int = 20_000,
) -> npt.NDArray[np.float32]:
    """Fit on a seeded sample and project every row: (n, dim) -> (n, 2) float32."""
    data = _check_matrix(embeddings)
    if data.shape[0] == 0:
        return np.zeros((0, 2), dtype=np.float32)
    projection = fit_projection(data, np.random.default_rng(seed), sample_size=sample_size)
    return apply_projection(data, projection)


def project_for_map(
    ids: npt.NDArray[np.int64],
    embeddings: npt.NDArray[np.floating],
    seed: int,
    *,
    max_points: int = 200_000,
    sample_size: int = 20_000,
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float32]]:
    """The map the dashboard draws: (ids (m,), xy (m, 2) float32), m = min(n, max_points).

    ids: (n,) the sample id of each embedding row. The rows shown are a seeded uniform sample
    (sorted by row), and the components are fitted on a smaller sample of those.
    """
    data = _check_matrix(embeddings)
    ids = np.asarray(ids)
    if ids.shape != (data.shape[0],):
        raise ValueError(
            f"ids: expected shape ({data.shape[0]},), one id per embedding row, got {ids.shape}"
        )
    if max_points < 1:
        raise ValueError(f"max_points: must be >= 1, got {max_points}")
    rng = np.random.default_rng(seed)
    rows = choose_rows(data.shape[0], max_points, rng)
    shown = data[rows] if rows.size < data.shape[0] else data
    if shown.shape[0] == 0:
        return ids[rows].astype(np.int64), np.zeros((0, 2), dtype=np.float32)
    projection = fit_projection(shown, rng, sample_size=sample_size)
    return ids[rows].astype(np.int64), apply_projection(shown, projection)


# Up to this many times the sketch's width, the dimensions are few enough for an exact SVD.
_EXACT_MAX_FACTOR = 4


def _top_right_singular_vectors(
    centred: npt.NDArray[np.float64],
    rank: int,
    oversample: int,
    power_iterations: int,
    rng: np.random.Generator,
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """Randomized SVD of (m, dim) `centred` (exact for few dims): the top right singular
    vectors (dim, r), r <= rank.

    Works on the transpose's range so the random test matrix is (m, l), not (dim, l): the
    sketch Y = A^T G spans the top right singular vectors directly.
    """
    m, dim = centred.shape
    width = min(rank + oversample, m, dim)
    if width == 0:
        return np.zeros((dim, 0)), np.zeros(0)
    if dim <= _EXACT_MAX_FACTOR * width:
        # Few dimensions: the exact SVD costs about what the sketch does, and a sketch of a
        # flat spectrum (near-equal singular values) can miss the top two by a little.
        basis = np.eye(dim)
    else:
        sketch = centred.T @ rng.standard_normal((m, width))  # (dim, l)
        basis, _ = np.linalg.qr(sketch)
        # Power iterations sharpen the spectrum; re-orthonormalising each step keeps the
        # small singular directions from being lost to rounding (the paper's Algorithm 4.4).
        for _ in range(power_iterations):
            left, _ = np.linalg.qr(centred @ basis)  # (m, l)
            basis, _ = np.linalg.qr(centred.T @ left)  # (dim, l)
    small = centred @ basis  # (m, l): A restricted to the sketched subspace
    _, singular, vt = np.linalg.svd(small, full_matrices=False)
    keep = min(rank, int(np.count_nonzero(singular > singular[0] * 1e-10)) if singular.size else 0)
    vectors = basis @ vt[:keep].T  # (dim, keep)
    return vectors, singular[:keep]


def _check_matrix(embeddings: npt.NDArray[np.floating]) -> npt.NDArray[np.floating]:
    data = np.asarray(embeddings)
    if data.ndim != 2:
        raise ValueError(f"embeddings: expected an (n, dim) matrix, got shape {data.shape}")
    if not np.issubdtype(data.dtype, np.floating):
        raise ValueError(f"embeddings: expected floats, got {data.dtype}; cast to float32")
    return data
