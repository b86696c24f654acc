"""The k-NN graph over sample embeddings, as two dense (N, k) arrays."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

NO_NEIGHBOR = -1


@dataclass(frozen=True, slots=True, eq=False)
class KnnGraph:
    """neighbors[i, j] is the j-th nearest other sample of i (NO_NEIGHBOR = -1 pads a short row);
    similarities[i, j] is its cosine similarity in [-1, 1]. Self-loops are never stored.

    neighbors: (N, k) int32, similarities: (N, k) float32.
    """

    neighbors: npt.NDArray[np.int32]
    similarities: npt.NDArray[np.float32]

    def __post_init__(self) -> None:
        nb, sim = self.neighbors, self.similarities
        if nb.ndim != 2 or nb.dtype != np.int32:
            raise ValueError(f"neighbors must be an (N, k) int32 array, got {nb.dtype} {nb.shape}")
        if sim.shape != nb.shape or sim.dtype != np.float32:
            raise ValueError(
                f"similarities must be float32 of shape {nb.shape}, got {sim.dtype} {sim.shape}"
            )
        n = nb.shape[0]
        if nb.size and (nb.min() < NO_NEIGHBOR or nb.max() >= n):
            raise ValueError(f"neighbor ids must be in [-1, {n - 1}]")

    @property
    def n(self) -> int:
        return int(self.neighbors.shape[0])

    @property
    def k(self) -> int:
        return int(self.neighbors.shape[1])

    @property
    def distances(self) -> npt.NDArray[np.float32]:
        """Cosine distance 1 - similarity, (N, k) float32; padding gets +inf."""
        dist = (1.0 - self.similarities).astype(np.float32)
        dist[self.neighbors == NO_NEIGHBOR] = np.inf
        return dist

    @property
    def valid(self) -> npt.NDArray[np.bool_]:
        """(N, k) mask of real edges."""
        valid: npt.NDArray[np.bool_] = self.neighbors != NO_NEIGHBOR
        return valid

    @classmethod
    def from_arrays(cls, neighbors: npt.ArrayLike, similarities: npt.ArrayLike) -> KnnGraph:
        return cls(
            np.ascontiguousarray(neighbors, dtype=np.int32),
            np.ascontiguousarray(similarities, dtype=np.float32),
        )
