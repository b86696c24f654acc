"""The result of a round: which samples to train on, and how much each one stands for."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt


@dataclass(frozen=True, slots=True, eq=False)
class Coreset:
    """indices: sorted unique (K,) int64 sample ids.
    weights: (K,) float32 or None; CRAIG-style, how many samples each pick stands for
        (they sum to N over the selected strata).
    round: the round this coreset belongs to.
    seed: the seed it was drawn with.
    digest: sha256 hex of the config and inputs that produced it (same inputs, same digest).
    """

    indices: npt.NDArray[np.int64]
    weights: npt.NDArray[np.float32] | None
    round: int
    seed: int
    digest: str

    def __post_init__(self) -> None:
        idx = self.indices
        if idx.ndim != 1 or idx.dtype != np.int64:
            raise ValueError(f"indices must be a 1-D int64 array, got {idx.dtype} {idx.shape}")
        if idx.size > 1 and not bool(np.all(idx[1:] > idx[:-1])):
            raise ValueError("indices must be sorted and unique")
        if self.weights is not None and self.weights.shape != idx.shape:
            raise ValueError(f"weights must have shape {idx.shape}, got {self.weights.shape}")

    @property
    def size(self) -> int:
        return int(self.indices.shape[0])

    def indices_sha256(self) -> str:
        """sha256 of the little-endian int64 index bytes: what trainers verify."""
        return sha256_of_indices(self.indices)


def sha256_of_indices(indices: npt.NDArray[np.int64]) -> str:
    return hashlib.sha256(np.ascontiguousarray(indices, dtype="<i8").tobytes()).hexdigest()


def digest_inputs(
    config_json: str, seed: int, round_: int, *arrays: npt.NDArray[np.generic]
) -> str:
    """sha256 over the config, seed, round and the raw bytes of every input array."""
    h = hashlib.sha256()
    h.update(config_json.encode())
    h.update(f"|seed={seed}|round={round_}|".encode())
    for arr in arrays:
        contiguous = np.ascontiguousarray(arr)
        h.update(f"{contiguous.dtype.str}{contiguous.shape}".encode())
        h.update(contiguous.tobytes())
    return h.hexdigest()
