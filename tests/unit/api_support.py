"""Helpers for the API tests: a real app on a temporary data directory, frames, polling."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx2 as httpx
import numpy as np
import numpy.typing as npt
from fastapi.testclient import TestClient

from grace_proto.frames import MEDIA_TYPE, encode_frame
from grace_selection.api.app import create_app
from grace_selection.settings import ServiceSettings

FRAME_HEADERS = {"content-type": MEDIA_TYPE}


@contextmanager
def api_client(data_dir: Path, **settings: Any) -> Iterator[TestClient]:
    """The real app (embedded store, exact index unless told otherwise), lifespan included."""
    options: dict[str, Any] = {"data_dir": data_dir, "index": "brute", **settings}
    app = create_app(ServiceSettings(**options))
    with TestClient(app, raise_server_exceptions=False) as client:
        client.app.state.service.wait_loaded(10)  # type: ignore[attr-defined]
        yield client


def frame(meta: dict[str, Any], **arrays: npt.ArrayLike) -> bytes:
    return encode_frame(meta, arrays)


def post_frame(
    client: TestClient, path: str, body: bytes, method: str = "POST", **headers: str
) -> httpx.Response:
    return client.request(method, path, content=body, headers={**FRAME_HEADERS, **headers})


def create_job(
    client: TestClient, job_id: str = "job", n: int = 300, dim: int = 8, **extra: Any
) -> dict[str, Any]:
    answer = client.post("/v1/jobs", json={"job_id": job_id, "n_samples": n, "dim": dim, **extra})
    assert answer.status_code in (200, 201), answer.text
    body: dict[str, Any] = answer.json()
    return body


def make_clustered(n: int, dim: int, seed: int = 0) -> npt.NDArray[np.float32]:
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(max(n // 50, 2), dim))
    return (centers[rng.integers(0, centers.shape[0], n)] + 0.3 * rng.normal(size=(n, dim))).astype(
        np.float32
    )


def embeddings_frame(
    ids: npt.ArrayLike, vectors: npt.ArrayLike, batch_id: str, round_: int = 0
) -> bytes:
    return frame(
        {"batch_id": batch_id, "round": round_},
        ids=np.asarray(ids, np.int64),
        embeddings=np.asarray(vectors, np.float32),
    )


def scores_frame(
    ids: npt.ArrayLike,
    batch_id: str,
    *,
    round_: int = 0,
    importance: npt.ArrayLike | None = None,
    loss: npt.ArrayLike | None = None,
    source: str = "worker",
) -> bytes:
    arrays: dict[str, npt.ArrayLike] = {"ids": np.asarray(ids, np.int64)}
    if importance is not None:
        arrays["importance"] = np.asarray(importance, np.float32)
    if loss is not None:
        arrays["loss"] = np.asarray(loss, np.float32)
    return encode_frame(
        {"batch_id": batch_id, "source": source, "round": round_, "step": 0}, arrays
    )


def warm_up(client: TestClient, job: str, n: int, dim: int, seed: int = 0) -> None:
    """Embed and score every sample for round 0."""
    ids = np.arange(n)
    rng = np.random.default_rng(seed)
    answer = post_frame(
        client,
        f"/v1/jobs/{job}/embeddings",
        embeddings_frame(ids, make_clustered(n, dim, seed), "warm-e"),
    )
    assert answer.status_code == 200, answer.text
    body = scores_frame(ids, "warm-s", importance=rng.random(n), loss=rng.random(n))
    answer = post_frame(client, f"/v1/jobs/{job}/scores", body)
    assert answer.status_code == 200, answer.text


def wait_published(client: TestClient, job: str, r: int, timeout: float = 60.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        answer = client.get(f"/v1/jobs/{job}/rounds/{r}")
        if answer.status_code == 200 and answer.json()["status"] in ("published", "failed"):
            body: dict[str, Any] = answer.json()
            return body
        if time.monotonic() > deadline:
            raise TimeoutError(f"round {r} of {job} not published after {timeout}s: {answer.text}")
        time.sleep(0.02)
