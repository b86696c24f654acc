"""Deterministic slices of a round: which ids each trainer rank and each worker shard gets.

Trainer ranks (`indices?rank&world`), the rule proto/API.md documents:
1. perm = numpy.random.default_rng([seed, round]).permutation(K) over the K sorted coreset ids;
2. pad by repeating perm cyclically to length L = ceil(K / world) * world;
3. rank r takes padded[r::world].
Every rank gets exactly ceil(K / world) ids; when K >= world at most world - 1 ids appear twice
across ranks, and never twice within one rank. The permutation spreads the sorted ids so that
each rank sees every part of the data.

Worker shards (`rescore?shard&of`): shard s takes plan[s::of] of the sorted plan; shards differ
in length by at most one and never overlap.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt


def slice_for_rank(
    count: int, seed: int, round_: int, rank: int, world: int
) -> npt.NDArray[np.int64]:
    """Positions into the sorted coreset (length ceil(count / world)) that `rank` takes."""
    if world < 1 or not 0 <= rank < world:
        raise ValueError(f"rank must be in [0, world) with world >= 1, got {rank}/{world}")
    if count == 0:
        return np.zeros(0, dtype=np.int64)
    perm = np.random.default_rng([seed, round_]).permutation(count)
    per_rank = -(-count // world)
    padded = np.resize(perm, per_rank * world)  # np.resize repeats cyclically
    out: npt.NDArray[np.int64] = padded[rank::world].astype(np.int64)
    return out


def slice_for_shard(plan: npt.NDArray[np.int64], shard: int, of: int) -> npt.NDArray[np.int64]:
    """The ids of the sorted rescore plan that worker shard `shard` of `of` scores."""
    if of < 1 or not 0 <= shard < of:
        raise ValueError(f"shard must be in [0, of) with of >= 1, got {shard}/{of}")
    out: npt.NDArray[np.int64] = np.ascontiguousarray(plan[shard::of], dtype=np.int64)
    return out
