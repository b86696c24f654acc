"""The slicing rules of proto/API.md as properties over sizes, seeds and world sizes."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from grace_selection.service.slicing import slice_for_rank, slice_for_shard


@settings(deadline=None)  # timing on a shared 2-core machine is not what is tested
@given(
    count=st.integers(0, 3000),
    world=st.integers(1, 70),
    seed=st.integers(0, 2**32),
    round_=st.integers(0, 1000),
)
def test_rank_slices_are_equal_length_and_cover_everything(
    count: int, world: int, seed: int, round_: int
) -> None:
    parts = [slice_for_rank(count, seed, round_, rank, world) for rank in range(world)]
    per_rank = -(-count // world)
    assert all(p.size == per_rank for p in parts)
    union = np.concatenate(parts)
    assert set(union.tolist()) == set(range(count))
    for part in parts:
        if count >= world:
            assert np.unique(part).size == part.size  # never twice within a rank
    if count >= world:
        assert union.size - count <= world - 1


@settings(deadline=None)
@given(count=st.integers(1, 500), world=st.integers(1, 9), seed=st.integers(0, 2**32))
def test_rank_slices_follow_the_documented_formula(count: int, world: int, seed: int) -> None:
    perm = np.random.default_rng([seed, 3]).permutation(count)
    padded = np.resize(perm, -(-count // world) * world)
    for rank in range(world):
        np.testing.assert_array_equal(
            slice_for_rank(count, seed, 3, rank, world), padded[rank::world]
        )


@settings(deadline=None)
@given(plan=st.lists(st.integers(0, 10**6), unique=True, max_size=300), of=st.integers(1, 20))
def test_shards_partition_the_plan(plan: list[int], of: int) -> None:
    ids = np.array(sorted(plan), dtype=np.int64)
    shards = [slice_for_shard(ids, s, of) for s in range(of)]
    assert sorted(np.concatenate(shards).tolist()) == ids.tolist()
    sizes = [s.size for s in shards]
    assert max(sizes) - min(sizes) <= 1
