"""start_local_redis: a real redis-server of our own, on a free port, stopped by pid."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
import redis

from grace_selection.local_redis import RedisServerError, start_local_redis


def _port(url: str) -> int:
    return int(url.rsplit(":", 1)[1].split("/")[0])


def test_a_server_of_our_own_answers_then_is_gone(tmp_path: Path) -> None:
    with start_local_redis(tmp_path, append_only=True) as url:
        port = _port(url)
        assert port not in (6379, 6399)
        client = redis.Redis.from_url(url)
        client.set("k", "v")
        assert client.get("k") == b"v"
        assert client.config_get("appendonly")["appendonly"] == "yes"
        client.close()
    with pytest.raises(ConnectionRefusedError), socket.create_connection(("127.0.0.1", port)):
        pass


def test_a_missing_binary_names_the_install_command(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("grace_selection.local_redis.shutil.which", lambda name: None)
    monkeypatch.setattr("grace_selection.local_redis.Path.exists", lambda self: False)
    with pytest.raises(RedisServerError, match="apt-get install"), start_local_redis(tmp_path):
        pass
