"""Exact mid-round resume through DataLoaders: torch's own and torchdata's StatefulDataLoader."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, Dataset
from torchdata.stateful_dataloader import StatefulDataLoader

from grace_client.sampler import CoresetSampler
from grace_client.schedule import RoundSchedule
from tests.unit.test_sampler_properties import MemorySource, make_sampler


class IdDataset(Dataset[int]):
    """Item i is i, so a batch shows exactly which samples the sampler chose."""

    def __len__(self) -> int:
        return 10_000

    def __getitem__(self, index: int) -> int:
        return index


def _source() -> MemorySource:
    return MemorySource({0: np.arange(0, 2000, 7), 1: np.arange(5000, 5100)})


def _batches(loader: Any, epochs: int) -> list[list[int]]:
    out: list[list[int]] = []
    for _ in range(epochs):
        out.extend(batch.tolist() for batch in loader)
    return out


def _sampler(schedule: RoundSchedule | None = None) -> CoresetSampler:
    sampler = make_sampler(_source(), rank=1, world=3, seed=4, start_round=0, schedule=schedule)
    sampler.poll()  # round 1 is ready from the start: it is taken at the first switch point
    return sampler


@pytest.mark.filterwarnings("ignore:'set_vital' is deprecated:UserWarning")
@pytest.mark.parametrize(
    ("num_workers", "cut"), [(0, 1), (0, 7), (0, 10), (0, 23), (2, 7), (2, 23)]
)
def test_stateful_dataloader_resumes_with_the_remaining_batches(num_workers: int, cut: int) -> None:
    # Cuts 10 and 23 fall after the mid-pass switch to round 1 at step 9.
    schedule = RoundSchedule.steps(every=9, batch_size=5)
    reference = StatefulDataLoader(
        IdDataset(), batch_size=5, sampler=_sampler(schedule), num_workers=num_workers
    )
    expected = _batches(reference, epochs=4)

    first = StatefulDataLoader(
        IdDataset(), batch_size=5, sampler=_sampler(schedule), num_workers=num_workers
    )
    seen: list[list[int]] = []
    state: dict[str, Any] = {}
    for _ in range(4):
        for batch in first:
            seen.append(batch.tolist())
            if len(seen) == cut:
                state = first.state_dict()
                break
        if state:
            break
    assert seen == expected[:cut]

    resumed_sampler = _sampler(schedule)
    resumed = StatefulDataLoader(
        IdDataset(), batch_size=5, sampler=resumed_sampler, num_workers=num_workers
    )
    resumed.load_state_dict(state)
    rest = _batches(resumed, epochs=4)
    assert rest[: len(expected) - cut] == expected[cut:]


def test_plain_dataloader_resumes_from_the_sampler_state() -> None:
    reference = DataLoader(IdDataset(), batch_size=4, sampler=_sampler())
    expected = _batches(reference, epochs=3)
    sampler = _sampler()
    loader = DataLoader(IdDataset(), batch_size=4, sampler=sampler)  # num_workers=0: no read-ahead
    iterator = iter(loader)
    head = [next(iterator).tolist() for _ in range(5)]
    state = sampler.state_dict()
    assert state["offset"] == 20
    resumed = _sampler()
    resumed.load_state_dict(state)
    rest = _batches(DataLoader(IdDataset(), batch_size=4, sampler=resumed), epochs=3)
    assert head + rest[: len(expected) - 5] == expected


def test_every_rank_yields_the_same_number_of_batches() -> None:
    lengths = set()
    for rank in range(3):
        sampler = make_sampler(_source(), rank=rank, world=3, start_round=0)
        lengths.add(len(list(DataLoader(IdDataset(), batch_size=8, sampler=sampler))))
    assert len(lengths) == 1


def test_samples_are_plain_ints_for_any_dataset() -> None:
    sampler = make_sampler(_source(), start_round=1)
    first = next(iter(sampler))
    assert type(first) is int
    assert torch.tensor([first]).dtype == torch.int64
