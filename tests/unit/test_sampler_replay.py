"""Fixed-length epochs and the replayed switch decisions of a resumed epoch.

With a step schedule a round may change mid-epoch. A loop that counts steps per epoch (the
Hugging Face Trainer) needs every epoch to be len(sampler) samples long, and a resume that
fast-forwards through the epoch must switch exactly where the first run switched, even when
the service has published more since.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from grace_client.replay import Replay
from grace_client.sampler import CoresetSampler
from grace_client.schedule import RoundSchedule
from tests.unit.test_sampler_properties import MemorySource, make_sampler, take

STEPS = RoundSchedule.steps(every=2, batch_size=4)  # a switch point every 8 samples


def _source() -> MemorySource:
    return MemorySource({0: np.arange(0, 24)})


def _publish(source: MemorySource, sampler: CoresetSampler, round_: int) -> None:
    source.publish(round_, np.arange(100 * round_, 100 * round_ + 24))
    sampler.poll()


@settings(max_examples=40, deadline=None)
@given(
    size=st.integers(5, 60),
    every=st.integers(1, 6),
    publish_at=st.lists(st.integers(1, 150), min_size=1, max_size=3, unique=True),
)
def test_fixed_epochs_are_len_long_and_the_stream_is_the_same(
    size: int, every: int, publish_at: list[int]
) -> None:
    schedule = RoundSchedule.steps(every=every, batch_size=3)
    streams, epoch_lengths = [], []
    for fixed in (False, True):
        source = MemorySource({0: np.arange(size)})
        sampler = make_sampler(source, schedule=schedule, fixed_epochs=fixed)
        stream: list[int] = []
        lengths: list[int] = []
        published = 0
        while len(stream) < 200:
            epoch = []
            for sample in sampler:
                epoch.append(sample)
                if len(stream) + len(epoch) in publish_at:  # rounds appear mid-epoch
                    published += 1
                    source.publish(published, np.arange(1000 * published, 1000 * published + size))
                    sampler.poll()
            stream += epoch
            lengths.append(len(epoch))
        streams.append(stream[:200])
        epoch_lengths.append(lengths)
    assert streams[0] == streams[1]  # the same samples; only where epochs end differs
    assert set(epoch_lengths[1]) == {size}  # every fixed epoch is len(sampler) long


def test_a_fast_forward_repeats_the_switches_the_first_run_made() -> None:
    source = _source()
    first = make_sampler(source, schedule=STEPS, fixed_epochs=True)
    iterator = iter(first)
    drawn = [next(iterator) for _ in range(6)]
    _publish(source, first, 1)  # ready before position 8: the switch there is taken
    drawn += [next(iterator) for _ in range(14)]  # to position 20: 16 was decided (stay)
    state = first.epoch_state_dict()
    assert state["round"] == 0
    assert state["offset"] == 0
    assert state["replay"] == {"decided_until": 17, "switches": [[8, 1]]}
    assert set(drawn[:8]) <= set(range(24))
    assert set(drawn[8:]) <= set(range(100, 124))
    uninterrupted = drawn + [next(iterator) for _ in range(4)]

    _publish(source, first, 2)  # by the resume, round 2 is out: position 16 could switch
    resumed = make_sampler(source, schedule=STEPS, fixed_epochs=True)
    resumed.poll()
    resumed.load_state_dict(state)
    assert list(resumed) == uninterrupted  # the whole epoch, exactly as first trained it
    assert resumed.round == 1

    careless = make_sampler(source, schedule=STEPS, fixed_epochs=True)
    careless.poll()
    careless.load_state_dict({k: v for k, v in state.items() if k != "replay"})
    assert list(careless)[:8] == uninterrupted[:8]
    assert careless.round == 2  # deciding again at 8 takes the newest round: not the same run


def test_the_end_of_a_fixed_epoch_is_known_before_the_loader_asks_past_it() -> None:
    source = _source()
    sampler = make_sampler(source, schedule=STEPS, fixed_epochs=True)
    iterator = iter(sampler)
    head = [next(iterator) for _ in range(7)]
    _publish(source, sampler, 1)
    head += [next(iterator) for _ in range(17)]  # all 24 drawn, the generator not yet done
    end = sampler.epoch_state_dict(completed=True)
    assert (end["round"], end["offset"]) == (1, 16)
    with pytest.raises(StopIteration):
        next(iterator)
    assert sampler.epoch_state_dict(completed=True) == sampler.state_dict() == end
    following = make_sampler(source, schedule=STEPS, fixed_epochs=True, start_round=1)
    following.load_state_dict(end)
    assert take(following, 10) == take(sampler, 10)


@pytest.mark.parametrize(
    "raw",
    [
        [1, 2],
        {"decided_until": -1, "switches": []},
        {"decided_until": 9, "switches": [[9, 1]]},  # a switch not below decided_until
        {"decided_until": 9, "switches": [[4, 0]]},  # not a newer round than the start
        {"decided_until": 20, "switches": [[8, 2], [16, 1]]},  # rounds going back
    ],
)
def test_a_broken_replay_is_refused_by_name(raw: object) -> None:
    sampler = make_sampler(_source(), schedule=STEPS, fixed_epochs=True)
    with pytest.raises(ValueError, match=r"state_dict\.replay"):
        sampler.load_state_dict({**sampler.state_dict(), "replay": raw})
    assert Replay.from_dict({"decided_until": 9, "switches": [[8, 3]]}, after=0).switches == {8: 3}
