"""The selection service's settings: one pydantic-settings class, environment prefix GRACE_.

Every field can also be set by a `grace serve` flag; flags win over the environment.
docker-compose and `.env.example` are written from these names, so keep them stable.
"""

from __future__ import annotations

import importlib.util
import ipaddress
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

MIB = 1024 * 1024
LOOPBACK_NAMES = frozenset({"localhost", "localhost.localdomain", "ip6-localhost"})


class InsecureBindError(ValueError):
    """Binding to a non-loopback address without a token: the service refuses to start."""


class ServiceSettings(BaseSettings):
    """How one selection-service process runs; read once at start."""

    model_config = SettingsConfigDict(env_prefix="GRACE_", extra="ignore", frozen=True)

    host: str = Field("127.0.0.1", description="address to bind; non-loopback needs a token")
    port: int = Field(8765, ge=0, le=65535)
    store: str = Field(
        "",
        description='"" or "local": files in data_dir; "redis://host:port/db": a Redis server',
    )
    data_dir: Path = Field(Path("./var/grace"), description="local store and index snapshots")
    token: SecretStr | None = Field(None, description="bearer token for writes (and reads)")
    reads_require_token: bool = Field(False, description="also require the token for reads")
    max_body_bytes: int = Field(512 * MIB, gt=0, description="largest request body accepted")
    index: Literal["hnsw", "brute", "torch", "faiss"] = Field(
        "hnsw",
        description="k-NN index: hnsw (approximate, CPU), brute (exact, numpy), or the GPU "
        "path: torch (exact blocked search; the gpu extra) or faiss (exact flat index)",
    )
    index_device: str = Field(
        "cuda",
        description='where GRACE_INDEX=torch or faiss searches: "cuda", "cuda:1", or "cpu"',
    )
    graph_vectors: Literal["float32", "float16"] = Field(
        "float32",
        description="how the graph keeper stores each sample's unit vector (float16 halves it; "
        "cosines move by ~1e-3)",
    )
    graph_recall_floor: float = Field(
        0.8,
        ge=0.0,
        le=1.0,
        description="after each incremental graph refresh the keeper checks recall@k on 64 "
        "random rows against exact search; below this floor it rebuilds the graph (0: never)",
    )
    graph_recall_target: float = Field(
        0.92,
        ge=0.0,
        le=1.0,
        description="below this sampled recall@k (and above the floor) a refresh joins every "
        "row once more instead of rebuilding (0: never); above 0.9 because 64 rows measure "
        "recall to about +-0.02, and a round loses up to 0.03 of it",
    )
    graph_keep_index: bool = Field(
        False,
        description="keep the index a graph build used (hnswlib holds its own copy of every "
        "vector, 1.16x the raw ones at d = 384) and re-query it for new and far-moved samples; "
        "by default it is dropped and the graph searches itself",
    )
    graph_build_parts: int = Field(
        0,
        ge=0,
        le=64,
        description="a graph build inserts the samples into this many indexes, one after the "
        "other, each queried by every sample and then dropped: the index held at once is 1/n "
        "of the samples (at 1M x 384, 2 parts keep round 0 under 2x the raw vectors, 8% "
        "slower than one index and 19% at 100k); 0: 2, or 1 with GRACE_GRAPH_KEEP_INDEX",
    )
    shards: int = Field(
        0,
        ge=0,
        le=4096,
        description="0: each job's graph and selection run in this process; n > 0: on n "
        "shards (a random part of the samples each, RandGreeDi selection, rebuilt every round)",
    )
    shard_backend: Literal["ray", "local"] = Field(
        "ray",
        description="where the shards run: ray (one actor each; joins RAY_ADDRESS, else starts "
        "a local Ray; the `scale` extra) or local (one after another in this process)",
    )
    max_job_bytes: int | None = Field(
        None,
        gt=0,
        description="most memory one job may need (estimated at creation); unset: half of "
        "the machine's (or the container's) memory",
    )
    round_nice: int = Field(
        10,
        ge=0,
        le=19,
        description="how much lower the CPU priority of round computation is than serving's "
        "(a nice increment; 0: the same)",
    )
    log_level: Literal["critical", "error", "warning", "info", "debug"] = "info"

    @field_validator("store")
    @classmethod
    def _check_store(cls, value: str) -> str:
        value = value.strip()
        if value in ("", "local") or value.startswith(("redis://", "rediss://", "unix://")):
            return value
        raise ValueError(
            f'GRACE_STORE={value!r} is not understood; use "" or "local" for the embedded '
            'file store, or a URL such as "redis://127.0.0.1:6379/0"'
        )

    @field_validator("index")
    @classmethod
    def _check_index_installed(cls, value: str) -> str:
        # Checked at start, without importing it: the service extra has no torch.
        needs = {"torch": ("torch", "pip install 'grace-coresets[gpu]'"), "faiss": ("faiss", "")}
        if value in needs and importlib.util.find_spec(needs[value][0]) is None:
            fix = needs[value][1] or "pip install faiss-gpu-cu12 (or faiss-cpu)"
            raise ValueError(
                f"GRACE_INDEX={value} needs {needs[value][0]!r}, which is not installed: {fix}; "
                "or use GRACE_INDEX=hnsw"
            )
        return value

    @model_validator(mode="after")
    def _check_build_parts(self) -> ServiceSettings:
        if self.graph_keep_index and self.graph_build_parts > 1:
            raise ValueError(
                f"GRACE_GRAPH_KEEP_INDEX=true keeps the one index a build makes, but "
                f"GRACE_GRAPH_BUILD_PARTS={self.graph_build_parts} builds several and drops "
                "each: set GRACE_GRAPH_BUILD_PARTS=1, or GRACE_GRAPH_KEEP_INDEX=false"
            )
        return self

    @field_validator("token")
    @classmethod
    def _drop_empty_token(cls, value: SecretStr | None) -> SecretStr | None:
        # An empty GRACE_TOKEN= line in an env file means "no token", not "the empty token".
        if value is None or not value.get_secret_value().strip():
            return None
        return value

    @field_validator("log_level", mode="before")
    @classmethod
    def _lower_log_level(cls, value: object) -> object:
        return value.lower() if isinstance(value, str) else value

    @property
    def uses_redis(self) -> bool:
        return self.store not in ("", "local")

    def check_bind_safety(self) -> None:
        """Refuse a non-loopback bind without a token: the demo may be open on loopback only."""
        if self.token is None and not is_loopback(self.host):
            raise InsecureBindError(
                f"refusing to bind {self.host}:{self.port} without a token: anyone who can reach "
                "this address could write to the service. Set GRACE_TOKEN (and send "
                "'Authorization: Bearer <token>'), or bind to 127.0.0.1 with --host 127.0.0.1."
            )


def is_loopback(host: str) -> bool:
    """True for localhost names and 127.0.0.0/8 or ::1; "0.0.0.0" and "" are not loopback."""
    name = host.strip().strip("[]").lower()
    if name in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False
