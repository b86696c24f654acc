"""Invariants of CoresetSampler, checked with hypothesis over coreset sizes, world sizes and seeds.

The slices come from an in-memory SliceSource that slices by the rule of proto/API.md
(`grace_client.order.slice_coreset`), so that hundreds of cases run in seconds; the same
sampler against the real service is in tests/integration/test_client_service.py.
"""

from __future__ import annotations

import dataclasses
import math
from collections import Counter
from datetime import UTC, datetime

import numpy as np
import numpy.typing as npt
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from grace_client import IndexSlice, ServiceUnavailable
from grace_client.order import pass_order, slice_coreset
from grace_client.payloads import sha256_of_sorted
from grace_client.sampler import CoresetSampler
from grace_client.schedule import RoundSchedule
from grace_proto.models import RoundManifest, RoundStatus, SelectionConfigModel


class MemorySource:
    """A SliceSource holding coresets per round; `up` switches the "service" on and off.

    Fetched slices go to `cache`, like the client's disk cache; `latest` is the newest
    published round.
    """

    def __init__(
        self,
        coresets: dict[int, npt.NDArray[np.int64]],
        *,
        job_seed: int = 11,
        weighted: bool = False,
    ) -> None:
        self.weighted = weighted  # if so, each id weighs 10 * id
        self.coresets = {r: np.sort(np.asarray(c, dtype=np.int64)) for r, c in coresets.items()}
        self.latest: int | None = max(coresets) if coresets else None
        self.job_seed = job_seed
        self.up = True
        self.cache: dict[tuple[int, int, int], IndexSlice] = {}
        self.fetches: list[tuple[int, int, int]] = []

    def publish(self, round_: int, coreset: npt.NDArray[np.int64]) -> None:
        self.coresets[round_] = np.sort(np.asarray(coreset, dtype=np.int64))
        self.latest = round_

    def make_slice(self, round_: int, rank: int, world: int) -> IndexSlice:
        coreset = self.coresets[round_]
        rng = np.random.default_rng([self.job_seed, round_])
        ids = slice_coreset(rng.permutation(coreset), rank, world)
        return IndexSlice(
            job_id="job",
            round=round_,
            rank=rank,
            world=world,
            indices=ids,
            weights=(ids * 10).astype(np.float32) if self.weighted else None,
            total=int(coreset.shape[0]),
            indices_sha256=sha256_of_sorted(coreset),
        )

    def latest_published(self) -> int | None:
        if not self.up:
            raise ServiceUnavailable("memory source is down", attempts=1)
        return self.latest

    def fetch_slice(self, round_: int, rank: int, world: int) -> IndexSlice:
        if not self.up:
            raise ServiceUnavailable("memory source is down", attempts=1)
        self.fetches.append((round_, rank, world))
        piece = self.make_slice(round_, rank, world)
        self.cache[(round_, rank, world)] = piece
        return piece

    def cached_slice(self, round_: int, rank: int, world: int) -> IndexSlice | None:
        return self.cache.get((round_, rank, world))

    def latest_cached(self, rank: int, world: int) -> IndexSlice | None:
        mine = [key for key in self.cache if key[1:] == (rank, world)]
        return self.cache[max(mine)] if mine else None

    def fetch_manifest(self, round_: int) -> RoundManifest:
        """The round's manifest as the service states it: churn against the previous round,
        and as rescored share, round / 10 (a value each round has its own of)."""
        if not self.up:
            raise ServiceUnavailable("memory source is down", attempts=1)
        coreset = self.coresets[round_]
        before = [r for r in self.coresets if r < round_]
        churn = None
        if before:
            previous = self.coresets[max(before)]
            churn = float(np.setdiff1d(coreset, previous).shape[0] / coreset.shape[0])
        return RoundManifest(
            job_id="job",
            round=round_,
            status=RoundStatus.PUBLISHED,
            count=int(coreset.shape[0]),
            indices_sha256=sha256_of_sorted(coreset),
            config=SelectionConfigModel(weighted=self.weighted),
            seed=self.job_seed,
            created_at=datetime.now(UTC),
            weighted=self.weighted,
            rescored_fraction=round_ / 10,
            churn=churn,
        )


def make_sampler(
    source: MemorySource, *, rank: int = 0, world: int = 1, **options: object
) -> CoresetSampler:
    options.setdefault("prefetch", False)
    options.setdefault("consensus", False)
    return CoresetSampler(source, "job", rank=rank, world=world, **options)  # type: ignore[arg-type]


def take(sampler: CoresetSampler, n: int) -> list[int]:
    """The next n samples of the sampler's stream, across as many epochs as it takes."""
    out: list[int] = []
    while len(out) < n:
        before = len(out)
        for sample in sampler:
            out.append(sample)
            if len(out) == n:
                break
        if len(out) == before:
            raise AssertionError("an epoch yielded nothing")
    return out


coresets = st.lists(st.integers(0, 10_000), min_size=1, max_size=300, unique=True)


@settings(max_examples=60, deadline=None)
@given(ids=coresets, world=st.integers(1, 8), seed=st.integers(0, 2**31))
def test_ranks_cover_the_coreset_with_equal_lengths_and_no_repeats(
    ids: list[int], world: int, seed: int
) -> None:
    source = MemorySource({0: np.array(ids)})
    epochs = []
    for rank in range(world):
        sampler = make_sampler(source, rank=rank, world=world, seed=seed)
        epochs.append(list(sampler))
        assert len(sampler) == len(epochs[-1])
    k = len(ids)
    # Every rank yields ceil(K / world) samples, none twice within its round.
    assert {len(e) for e in epochs} == {math.ceil(k / world)}
    for epoch in epochs:
        assert len(set(epoch)) == len(epoch)
    # The union is the coreset; the documented padding repeats at most world - 1 ids.
    everything = [i for epoch in epochs for i in epoch]
    assert set(everything) == set(ids)
    assert len(everything) - k == math.ceil(k / world) * world - k <= world - 1
    if k >= world:
        assert max(Counter(everything).values()) <= 2


@settings(max_examples=30, deadline=None)
@given(n=st.integers(1, 200), seed=st.integers(0, 2**31), round_=st.integers(0, 50))
def test_each_pass_is_a_seeded_permutation(n: int, seed: int, round_: int) -> None:
    first = pass_order(seed, round_, 0, n)
    assert sorted(first.tolist()) == list(range(n))
    np.testing.assert_array_equal(first, pass_order(seed, round_, 0, n))  # deterministic
    if n >= 8:  # another pass or round gets another order (equal by chance: < 1/8!)
        assert not np.array_equal(first, pass_order(seed, round_, 1, n))
        assert not np.array_equal(first, pass_order(seed, round_ + 1, 0, n))


def test_a_new_pass_over_the_same_round_is_reshuffled() -> None:
    source = MemorySource({0: np.arange(40)})
    sampler = make_sampler(source, seed=5)
    first, second = list(sampler), list(sampler)
    assert sorted(first) == sorted(second) == list(range(40))
    assert first != second
    assert sampler.state_dict() == {"job": "job", "round": 0, "offset": 80, "seed": 5, "world": 1}


@settings(max_examples=40, deadline=None)
@given(
    ids=coresets,
    world=st.integers(1, 4),
    seed=st.integers(0, 1000),
    cut_fraction=st.floats(0, 1),
    every_steps=st.one_of(st.none(), st.integers(1, 20)),
)
def test_resume_at_any_offset_yields_exactly_the_remaining_sequence(
    ids: list[int], world: int, seed: int, cut_fraction: float, every_steps: int | None
) -> None:
    later = np.array(ids[: max(1, len(ids) // 2)]) + 20_000  # round 1 differs from round 0
    schedule = RoundSchedule.steps(every_steps, 2) if every_steps else RoundSchedule()
    rank = world - 1
    reference_source = MemorySource({0: np.array(ids), 1: later})
    reference = make_sampler(
        reference_source, rank=rank, world=world, seed=seed, start_round=0, schedule=schedule
    )
    reference.poll()  # round 1 is ready: the sampler switches at its first switch point
    period = 2 * every_steps if every_steps else len(reference)
    horizon = period + 2 * len(reference) + 2 * math.ceil(len(later) / world) + 5
    states: list[dict[str, object]] = []
    stream: list[int] = []
    while len(stream) < horizon:
        for sample in reference:
            states.append(reference.state_dict())
            stream.append(sample)
            if len(stream) == horizon:
                break
    assert {s["round"] for s in states} == {0, 1}
    cut = int(cut_fraction * (horizon - 1))

    resumed = make_sampler(
        MemorySource({0: np.array(ids), 1: later}),
        rank=rank,
        world=world,
        seed=999,
        schedule=schedule,
    )
    resumed.poll()
    resumed.load_state_dict(states[cut])
    assert take(resumed, horizon - cut - 1) == stream[cut + 1 :]


def test_rounds_advance_on_the_epoch_schedule_only_when_ready() -> None:
    source = MemorySource({0: np.arange(10)})
    sampler = make_sampler(source, schedule=RoundSchedule.epochs(2))
    assert sorted(sampler) == list(range(10))
    source.publish(1, np.arange(100, 106))
    assert sampler.round == 0
    assert sorted(sampler) == list(range(10))  # not prefetched yet: keep training on round 0
    sampler.poll()
    assert sorted(sampler) == list(range(100, 106))  # offset 20 = 2 epochs: switch
    assert len(sampler) == 6
    source.publish(2, np.arange(200, 203))
    sampler.poll()
    assert sorted(sampler) == list(range(100, 106))  # 1 epoch into round 1: not yet
    assert sorted(sampler) == list(range(200, 203))


def test_step_schedule_switches_mid_pass_and_ends_that_epoch() -> None:
    source = MemorySource({0: np.arange(50)})
    sampler = make_sampler(source, schedule=RoundSchedule.steps(every=3, batch_size=4))
    source.publish(1, np.arange(500, 540))
    sampler.poll()
    epoch = list(sampler)
    assert len(epoch) == 12  # 3 steps of 4, then the switch
    assert set(epoch) <= set(range(50))
    assert sampler.round == 1
    assert sampler.state_dict()["offset"] == 0
    assert sorted(sampler) == list(range(500, 540))


def test_state_dict_refuses_another_job_or_world_by_name() -> None:
    source = MemorySource({0: np.arange(10)})
    sampler = make_sampler(source, rank=0, world=2)
    state = sampler.state_dict()
    with pytest.raises(ValueError, match=r"state_dict\.world"):
        sampler.load_state_dict({**state, "world": 4})
    with pytest.raises(ValueError, match=r"state_dict\.job"):
        sampler.load_state_dict({**state, "job": "other"})
    with pytest.raises(ValueError, match="missing"):
        sampler.load_state_dict({"job": "job"})


def test_weights_follow_the_ids() -> None:
    assert make_sampler(MemorySource({0: np.arange(5)})).weights_for([1, 2]) is None  # unweighted
    source = MemorySource({0: np.arange(5)}, weighted=True)
    sampler = make_sampler(source)
    got = sampler.weights_for([3, 0, 99])
    assert got is not None
    assert got.tolist() == [30.0, 0.0, 1.0]  # an id outside the round weighs 1
    source.publish(1, np.arange(7, 9))
    sampler.poll()
    list(sampler)
    assert sampler.round == 0
    list(sampler)
    assert sampler.round == 1
    again = sampler.weights_for([8, 3])
    assert again is not None
    assert again.tolist() == [80.0, 30.0]  # the previous round still answers for batches in flight


@settings(max_examples=50, deadline=None)
@given(
    picked=st.lists(st.integers(1, 19), min_size=1, max_size=12),
    losses=st.lists(st.floats(0.0, 50.0), min_size=12, max_size=12),
)
def test_the_weighted_mean_is_the_weighted_loss_of_the_batch(
    picked: list[int], losses: list[float]
) -> None:
    sampler = make_sampler(MemorySource({0: np.arange(1, 20)}, weighted=True))
    per_sample = torch.tensor(losses[: len(picked)], dtype=torch.float64, requires_grad=True)
    loss = sampler.weighted_mean(torch.tensor(picked), per_sample)  # ids as a DataLoader gives
    w = np.asarray(picked, dtype=np.float64) * 10  # MemorySource: id i weighs 10 * i
    expected = float((w * np.asarray(losses[: len(picked)])).sum() / w.sum())
    assert loss.item() == pytest.approx(expected, rel=1e-6, abs=1e-9)
    loss.backward()  # type: ignore[no-untyped-call]
    assert per_sample.grad is not None
    assert per_sample.grad.numpy() == pytest.approx(w / w.sum(), rel=1e-6)


def test_the_weighted_mean_of_an_unweighted_round_is_the_mean() -> None:
    sampler = make_sampler(MemorySource({0: np.arange(10)}))
    per_sample = torch.tensor([1.0, 2.0, 6.0])
    assert sampler.weighted_mean([4, 5, 6], per_sample).item() == pytest.approx(3.0)
    with pytest.raises(ValueError, match="3 per-sample losses for 2 ids"):
        sampler.weighted_mean([4, 5], per_sample)


class RoundWeighted(MemorySource):
    """Weights that differ by round: id i weighs 10 * i + round."""

    def make_slice(self, round_: int, rank: int, world: int) -> IndexSlice:
        piece = super().make_slice(round_, rank, world)
        weights = (piece.indices * 10 + round_).astype(np.float32)
        return dataclasses.replace(piece, weights=weights)


def test_a_batch_from_the_previous_round_gets_that_rounds_weights() -> None:
    source = RoundWeighted({0: np.arange(10)})
    sampler = make_sampler(source)
    list(sampler)
    source.publish(1, np.arange(5, 15))
    sampler.poll()
    list(sampler)
    assert sampler.round == 1
    for ids, round_, expected in (
        ([6, 12], None, [61.0, 121.0]),  # the current round answers first
        ([6, 2], 0, [60.0, 20.0]),  # a batch drawn before the switch: round 0's weights
        ([6, 12], 1, [61.0, 121.0]),
    ):
        got = sampler.weights_for(ids, round_)
        assert got is not None
        assert got.tolist() == expected
