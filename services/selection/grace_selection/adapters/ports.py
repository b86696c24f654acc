"""The ports the service wires adapters into, named by role."""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

import numpy as np
import numpy.typing as npt

from grace_selection.core.graph import KnnGraph


class NeighborIndex(Protocol):
    """A cosine k-NN index over vectors keyed by sample id. One writer at a time."""

    @property
    def dim(self) -> int: ...

    def __len__(self) -> int: ...

    def upsert(self, ids: npt.NDArray[np.int64], vectors: npt.NDArray[np.float32]) -> None:
        """Add vectors, or replace the vectors of ids already present."""
        ...

    def query(
        self, vectors: npt.NDArray[np.float32], k: int
    ) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float32]]:
        """(ids, cosine similarities), each (n, k), nearest first; -1 / -inf pad missing."""
        ...

    def knn_graph(self, k: int) -> KnnGraph:
        """The k-NN graph of every stored point over ids 0..max_id (self dropped)."""
        ...

    def save(self, path: Path) -> None: ...
