"""deploy/docker/redis-data.sh against a real redis-server using deploy/docker/redis.conf.

The servers listen on a unix socket only (`port 0`), so nothing here touches the network.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "deploy" / "docker" / "redis-data.sh"
CONF = REPO / "deploy" / "docker" / "redis.conf"


def binary(name: str) -> str:
    found = shutil.which(name)
    if found is None:
        pytest.fail(f"{name} is not installed; run `make system-deps` (Debian's redis-server)")
    return found


class Redis:
    """redis-server with the deployment's config, its data in `data`, on a unix socket."""

    def __init__(self, data: Path) -> None:
        self.data = data
        self.socket = data.parent / f"{data.name}.sock"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        conf = self.data.parent / f"{self.data.name}.conf"
        conf.write_text(CONF.read_text().replace("dir /data", f"dir {self.data}"))
        self.process = subprocess.Popen(
            [binary("redis-server"), str(conf), "--port", "0", "--unixsocket", str(self.socket)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 15
        while self.cli("PING") != "PONG":
            if self.process.poll() is not None or time.monotonic() > deadline:
                pytest.fail("redis-server did not start with deploy/docker/redis.conf")
            time.sleep(0.05)

    def cli(self, *args: str) -> str:
        result = subprocess.run(
            [binary("redis-cli"), "-s", str(self.socket), *args],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        return result.stdout.strip()

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.cli("SHUTDOWN")
            self.process.wait(timeout=30)


def run_script(redis: Redis, *args: str) -> subprocess.CompletedProcess[str]:
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "REDIS_DATA_DIR": str(redis.data),
        "REDIS_CLI_ARGS": f"-s {redis.socket}",
        "REDIS_WAIT_SECONDS": "60",
    }
    return subprocess.run(
        ["sh", str(SCRIPT), *args], env=env, capture_output=True, text=True, timeout=120
    )


@pytest.fixture
def redis(tmp_path: Path) -> Iterator[Redis]:
    data = tmp_path / "data"
    data.mkdir()
    server = Redis(data)
    server.start()
    try:
        yield server
    finally:
        server.stop()


def test_backup_then_restore_brings_back_exactly_the_backed_up_data(redis: Redis) -> None:
    redis.cli("MSET", *(part for i in range(500) for part in (f"key{i}", f"value{i}")))
    redis.cli("RPUSH", "log", "a", "b", "c")

    backup = run_script(redis, "backup")
    assert backup.returncode == 0, backup.stderr
    snapshot = Path(backup.stdout.strip())
    assert snapshot.parent == redis.data / "backups"
    assert snapshot.is_file()

    redis.cli("SET", "written-after-the-backup", "1")
    redis.cli("DEL", "key0")
    refused = run_script(redis, "restore", str(snapshot))
    assert refused.returncode != 0
    assert "stop it first" in refused.stderr
    redis.stop()

    restored = run_script(redis, "restore", str(snapshot))
    assert restored.returncode == 0, restored.stderr
    assert "restored 501 keys" in restored.stdout
    assert list(redis.data.glob("appendonlydir.before-restore-*"))

    # A normal start with `appendonly yes` must load the restored data from the new AOF.
    redis.start()
    assert redis.cli("DBSIZE") == "501"
    assert redis.cli("GET", "key0") == "value0"
    assert redis.cli("EXISTS", "written-after-the-backup") == "0"
    assert redis.cli("LRANGE", "log", "0", "-1").split() == ["a", "b", "c"]
    assert redis.cli("CONFIG", "GET", "appendonly").split() == ["appendonly", "yes"]


def test_copying_a_dump_into_place_alone_would_lose_it(redis: Redis) -> None:
    """Why the restore command exists: with AOF on, Redis ignores a dump.rdb copied in."""
    redis.cli("SET", "kept", "1")
    backup = run_script(redis, "backup")
    assert backup.returncode == 0, backup.stderr
    redis.stop()
    shutil.rmtree(redis.data / "appendonlydir")
    shutil.copy(backup.stdout.strip(), redis.data / "dump.rdb")
    redis.start()
    assert redis.cli("EXISTS", "kept") == "0"


def test_script_names_its_usage_and_a_missing_file(redis: Redis) -> None:
    usage = run_script(redis, "explode")
    assert usage.returncode != 0
    assert "usage" in usage.stderr
    missing = run_script(redis, "restore", str(redis.data / "nope.rdb"))
    assert missing.returncode != 0
    assert "no backup file" in missing.stderr
