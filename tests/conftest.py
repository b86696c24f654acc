"""Shared fixtures: tier markers by folder, one real redis-server and one local Ray per session."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from grace_selection.local_redis import RedisServerError, start_local_redis
from grace_selection.local_service import free_loopback_port

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

_TIERS = ("unit", "integration", "e2e", "browser")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Each test gets the marker of the tier folder it lives in, so `-m unit` runs a tier alone."""
    for item in items:
        parts = Path(str(item.fspath)).parts
        for tier in _TIERS:
            if tier in parts:
                item.add_marker(getattr(pytest.mark, tier))


def free_port() -> int:
    """A free loopback TCP port, never Redis' usual ones."""
    return free_loopback_port()


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real redis-server on a free loopback port for the whole session; yields its URL."""
    try:
        with start_local_redis(tmp_path_factory.mktemp("redis")) as url:
            yield url
    except RedisServerError as exc:
        pytest.fail(str(exc))


@pytest.fixture
def redis_url(redis_server: str) -> str:
    """The session's Redis, flushed before each test so that tests do not see each other."""
    import redis

    client = redis.Redis.from_url(redis_server)
    client.flushall()
    client.close()
    return redis_server


@pytest.fixture(scope="session")
def ray_cluster() -> Iterator[Any]:
    """One local Ray for the whole session (ray.init costs 5-15 s here).

    address="local": a fresh cluster of our own, even when someone's `ray start` runs on this
    machine (a plain ray.init() would attach to that one and refuse num_cpus).
    """
    import ray

    ray.init(
        address="local",
        num_cpus=2,
        num_gpus=0,
        include_dashboard=False,
        log_to_driver=True,
        configure_logging=False,
    )
    try:
        yield ray
    finally:
        ray.shutdown()
