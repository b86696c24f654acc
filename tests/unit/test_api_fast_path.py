"""The indices fast path answers exactly what the route answers, and only when it may."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr
from starlette.types import Message, Receive, Scope, Send

from grace_selection.api.fast_path import IndicesFastPath
from tests.unit.api_support import api_client, create_job, wait_published, warm_up

N, DIM = 200, 4


class Sentinel:
    """Stands for the FastAPI app behind the middleware: records that it was called."""

    def __init__(self) -> None:
        self.calls = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        self.calls += 1


def call(
    fast: IndicesFastPath, path: str, query: str, headers: list[tuple[bytes, bytes]] | None = None
) -> list[Message]:
    scope: dict[str, Any] = {
        "type": "http",
        "method": "GET",
        "path": path,
        "query_string": query.encode(),
        "headers": headers or [],
    }
    sent: list[Message] = []

    async def receive() -> Message:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: Message) -> None:
        sent.append(message)

    asyncio.run(fast(scope, receive, send))
    return sent


@pytest.mark.parametrize("reads_require_token", [False, True])
def test_fast_path_serves_the_routes_bytes_or_steps_aside(
    tmp_path: Path, reads_require_token: bool
) -> None:
    token = SecretStr("tok")
    bearer = {"Authorization": "Bearer tok"}
    with api_client(tmp_path, token=token, reads_require_token=reads_require_token) as client:
        client.headers.update(bearer)
        create_job(client, "job", n=N, dim=DIM)
        warm_up(client, "job", N, DIM)
        client.post("/v1/jobs/job/rounds")
        wait_published(client, "job", 0)
        sentinel = Sentinel()
        fast = IndicesFastPath(sentinel, client.app.state)  # type: ignore[attr-defined]
        auth = [(b"authorization", b"Bearer tok")]
        for query in (
            "rank=1&world=3",
            "world=3&rank=1&format=bin",
            "rank=0&world=1&format=json",
            "",
        ):
            sent = call(fast, "/v1/jobs/job/rounds/0/indices", query, auth)
            assert sentinel.calls == 0, query
            route = client.get("/v1/jobs/job/rounds/0/indices?" + query)
            assert sent[1]["body"] == route.content
            assert (
                dict(sent[0]["headers"])[b"content-type"].decode() == route.headers["content-type"]
            )
        latest = call(fast, "/v1/jobs/job/rounds/latest/indices", "rank=1&world=3", auth)
        assert (
            latest[1]["body"] == client.get("/v1/jobs/job/rounds/0/indices?rank=1&world=3").content
        )
        # Everything unusual goes to the route, which owns validation, errors and 202s.
        for path, query in [
            ("/v1/jobs/job/rounds/0/indices", "rank=3&world=3"),
            ("/v1/jobs/job/rounds/0/indices", "rank=-1&world=3"),
            ("/v1/jobs/job/rounds/0/indices", "rank=1&rank=2"),
            ("/v1/jobs/job/rounds/0/indices", "format=xml"),
            ("/v1/jobs/job/rounds/0/indices", "extra=1"),
            ("/v1/jobs/job/rounds/9/indices", ""),
            ("/v1/jobs/nobody/rounds/0/indices", ""),
            ("/v1/jobs/job/rounds/0", ""),
        ]:
            before = sentinel.calls
            call(fast, path, query, auth)
            assert sentinel.calls == before + 1, (path, query)
        before = sentinel.calls
        call(fast, "/v1/jobs/job/rounds/0/indices", "", [(b"authorization", b"Bearer wrong")])
        assert sentinel.calls == before + int(reads_require_token)
        assert client.get(
            "/v1/jobs/job/rounds/0/indices", headers={"Authorization": "Bearer wrong"}
        ).status_code == (401 if reads_require_token else 200)
