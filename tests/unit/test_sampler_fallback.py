"""The service goes away and comes back: the sampler keeps training and says so loudly."""

from __future__ import annotations

import logging
import threading
import time

import numpy as np
import pytest

from grace_client import RoundNotReadyError
from grace_client.sampler import CoresetSampler
from tests.unit.test_sampler_properties import MemorySource, make_sampler


def test_training_goes_on_during_an_outage_and_picks_up_fresh_rounds_after(
    caplog: pytest.LogCaptureFixture,
) -> None:
    source = MemorySource({0: np.arange(20)})
    sampler = make_sampler(source)
    source.up = False
    source.publish(1, np.arange(100, 110))  # published while this trainer cannot see it
    with caplog.at_level(logging.WARNING, logger="grace_client"):
        sampler.poll()
        assert not sampler.service_reachable
        for _ in range(3):
            assert sorted(sampler) == list(range(20))  # never blocks, never changes round
    assert "SERVICE UNREACHABLE" in caplog.text
    assert "round 0" in caplog.text

    source.up = True
    with caplog.at_level(logging.WARNING, logger="grace_client"):
        sampler.poll()
    assert sampler.service_reachable
    assert "reachable again" in caplog.text
    assert sorted(sampler) == list(range(100, 110))


def test_a_restart_during_an_outage_trains_on_the_newest_cached_round(
    caplog: pytest.LogCaptureFixture,
) -> None:
    source = MemorySource({0: np.arange(20), 1: np.arange(30, 40)})
    make_sampler(source, start_round=0)  # fetched (and cached) round 0 only
    make_sampler(source, start_round=1)
    source.up = False
    source.publish(2, np.arange(50, 55))
    with caplog.at_level(logging.WARNING, logger="grace_client"):
        restarted = make_sampler(source)
    assert restarted.round == 1
    assert sorted(restarted) == list(range(30, 40))
    assert "SERVICE UNREACHABLE" in caplog.text


def test_no_round_anywhere_fails_after_the_startup_timeout_with_the_fix() -> None:
    source = MemorySource({})
    source.up = False
    started = time.monotonic()
    with pytest.raises(RoundNotReadyError, match="startup_timeout"):
        make_sampler(source, startup_timeout=0.3)
    assert time.monotonic() - started < 5


def test_a_service_that_has_not_published_yet_is_waited_for_and_says_so(
    caplog: pytest.LogCaptureFixture,
) -> None:
    source = MemorySource({})
    source.latest = None
    threading.Timer(0.3, source.publish, args=(0, np.arange(6))).start()
    with caplog.at_level(logging.WARNING, logger="grace_client"):
        sampler = make_sampler(source, startup_timeout=10)
    assert sorted(sampler) == list(range(6))
    waiting = [r for r in caplog.records if "waiting for a round to train on" in r.message]
    assert len(waiting) == 1  # at once, then every 30 s: this wait was shorter
    assert waiting[0].levelno == logging.WARNING  # seen without any logging configured
    assert "no round is published yet" in waiting[0].message
    assert "of up to 10s" in waiting[0].message
    assert "POST /v1/jobs/job/rounds" in waiting[0].message
    assert "round 0 is published; training starts after" in caplog.text


def test_waiting_on_an_unreachable_service_says_why_every_interval(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("grace_client.feed.WAIT_LOG_INTERVAL", 0.2)
    source = MemorySource({})
    source.up = False
    with (
        caplog.at_level(logging.WARNING, logger="grace_client"),
        pytest.raises(RoundNotReadyError),
    ):
        make_sampler(source, startup_timeout=1.0)
    waiting = [r.message for r in caplog.records if "waiting for a round" in r.message]
    assert 2 <= len(waiting) <= 7  # at once, then about every 0.2 s of the 1 s
    assert all("the service cannot be reached" in line for line in waiting)
    assert all("nothing is cached" in line for line in waiting)


def test_the_background_thread_prefetches_without_being_asked() -> None:
    source = MemorySource({0: np.arange(8)})
    sampler = CoresetSampler(source, "job", rank=0, world=1, poll_interval=0.05, consensus=False)  # type: ignore[arg-type]
    try:
        source.publish(3, np.arange(40, 44))
        deadline = time.monotonic() + 5
        while sampler._feed.newest_ready() != 3 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert sorted(sampler) == list(range(8))  # the first epoch was on round 0
        assert sorted(sampler) == list(range(40, 44))
        assert (3, 0, 1) in source.fetches
    finally:
        sampler.close()
