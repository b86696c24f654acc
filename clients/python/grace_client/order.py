"""The order in which samples are visited: the service's slicing rule and each pass's shuffle.

Both are pure functions of integers, so that every rank, every restart and every test
computes the same sequence.
"""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt


def pass_order(seed: int, round_: int, pass_: int, n: int) -> npt.NDArray[np.int64]:
    """A permutation of range(n) seeded by (seed, round, pass).

    Pass p of a round visits the rank's slice in this order; a new pass (the same round
    trained on again) gets a fresh permutation, and no global RNG is touched.
    """
    if n < 0 or seed < 0 or round_ < 0 or pass_ < 0:
        raise ValueError(f"need non-negative seed/round/pass/n, got {seed}/{round_}/{pass_}/{n}")
    rng = np.random.default_rng(np.random.SeedSequence([seed, round_, pass_]))
    return rng.permutation(n).astype(np.int64, copy=False)


def slice_coreset(permuted: npt.NDArray[np.int64], rank: int, world: int) -> npt.NDArray[np.int64]:
    """Rank `rank`'s share of an already permuted coreset, by the rule of proto/API.md.

    The K ids are padded by wrapping around to a multiple of `world` and rank r takes every
    world-th element from r: every rank gets ceil(K / world) ids, at most world - 1 ids
    appear on two ranks, and none appears twice on one rank. The service slices this way;
    this function is the executable statement of the rule.
    """
    if world < 1 or not 0 <= rank < world:
        raise ValueError(
            f"rank must be in [0, world) and world >= 1, got rank={rank}, world={world}"
        )
    k = int(permuted.shape[0])
    if k == 0:
        return np.empty(0, dtype=np.int64)
    per_rank = math.ceil(k / world)
    positions = rank + world * np.arange(per_rank, dtype=np.int64)
    return np.asarray(permuted, dtype=np.int64)[positions % k]
