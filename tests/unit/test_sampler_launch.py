"""Rank and world from the launcher: RANK and WORLD_SIZE as torchrun and accelerate set them.

A sampler made before the process group exists must never act as rank 0 of 1: it either
takes its slice from the environment (each rank deciding alone, when told it may) or
refuses, naming the variables and the fix.
"""

from __future__ import annotations

import numpy as np
import pytest

from grace_client.order import slice_coreset
from grace_client.ranks import LaunchError, ranks_from_environment, resolve_ranks
from grace_client.sampler import CoresetSampler
from tests.unit.test_sampler_properties import MemorySource


def _sampler(**options: object) -> CoresetSampler:
    source = MemorySource({0: np.arange(100, 130)})
    return CoresetSampler(source, "job", prefetch=False, **options)  # type: ignore[arg-type]


def test_a_launched_process_without_a_process_group_refuses_with_the_fix(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(LaunchError) as caught:
        _sampler()
    message = str(caught.value)
    assert "RANK=1 and WORLD_SIZE=2 are set" in message
    assert "init_process_group()" in message
    assert "consensus=False" in message


def test_each_rank_deciding_alone_takes_its_slice_from_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    source = MemorySource({0: np.arange(100, 130)})
    seen = []
    for rank in range(3):
        monkeypatch.setenv("RANK", str(rank))
        monkeypatch.setenv("WORLD_SIZE", "3")
        sampler = CoresetSampler(source, "job", prefetch=False, consensus=False)  # type: ignore[arg-type]
        assert (sampler.rank, sampler.world) == (rank, 3)
        epoch = list(sampler)
        expected = source.make_slice(0, rank, 3).indices
        assert sorted(epoch) == sorted(expected.tolist())
        seen += epoch
    assert sorted(seen) == list(range(100, 130))  # 30 ids over 3 ranks, none missing
    assert len(seen) == 30


def test_a_single_process_launch_and_no_launch_are_rank_zero_of_one(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("RANK", raising=False)
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    plain = _sampler()
    assert (plain.rank, plain.world) == (0, 1)
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "1")
    launched = _sampler()
    assert (launched.rank, launched.world) == (0, 1)
    assert sorted(launched) == list(range(100, 130))


def test_explicit_ranks_without_a_group_need_consensus_off(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("RANK", raising=False)
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    with pytest.raises(LaunchError, match=r"world=4, but torch\.distributed has no process group"):
        _sampler(rank=1, world=4)
    alone = _sampler(rank=1, world=4, consensus=False)
    coreset = np.random.default_rng([11, 0]).permutation(np.arange(100, 130))
    assert list(alone.current_slice.indices) == list(slice_coreset(coreset, 1, 4))


@pytest.mark.parametrize(
    ("env", "names"),
    [
        ({"RANK": "1"}, "RANK is set but WORLD_SIZE is not"),
        ({"WORLD_SIZE": "2"}, "WORLD_SIZE is set but RANK is not"),
        ({"RANK": "one", "WORLD_SIZE": "2"}, "RANK='one' is not an integer"),
        ({"RANK": "2", "WORLD_SIZE": "2"}, "RANK=2, WORLD_SIZE=2: need 0 <= RANK < WORLD_SIZE"),
        ({"RANK": "0", "WORLD_SIZE": "0"}, "RANK=0, WORLD_SIZE=0"),
    ],
)
def test_a_broken_launch_environment_is_named(env: dict[str, str], names: str) -> None:
    with pytest.raises(LaunchError) as caught:
        ranks_from_environment(env)
    assert names in str(caught.value)


def test_the_sources_rank_in_order_arguments_process_group_environment() -> None:
    env = {"RANK": "3", "WORLD_SIZE": "4"}
    group = (2, 4)
    assert resolve_ranks(1, 4, distributed=group, consensus=True, env=env).source == "argument"
    found = resolve_ranks(None, None, distributed=group, consensus=True, env=env)
    assert (found.rank, found.world, found.source) == (2, 4, "torch.distributed")
    found = resolve_ranks(None, None, distributed=None, consensus=False, env=env)
    assert (found.rank, found.world, found.source) == (3, 4, "environment")
    with pytest.raises(ValueError, match="pass both or neither"):
        resolve_ranks(1, None, distributed=None, consensus=False, env={})
