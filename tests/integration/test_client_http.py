"""The client against a real HTTP server whose answers each test scripts.

Retries, backoff, Retry-After, 4xx messages, outages and the frame bodies are checked
through real sockets (http.server on loopback), not by mocking httpx.
"""

from __future__ import annotations

import json
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from grace_client import (
    ConflictError,
    CoresetClient,
    GraceAPIError,
    IntegrityError,
    NotFoundError,
    RoundNotReadyError,
    ServiceUnavailable,
    UnauthorizedError,
)
from grace_client.payloads import sha256_of_sorted
from grace_proto.frames import MEDIA_TYPE, decode_frame, encode_frame
from grace_proto.models import CreateJobRequest
from tests.conftest import free_port


@dataclass
class Recorded:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: bytes


@dataclass
class Reply:
    status: int
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0


def json_reply(status: int, payload: Any, **headers: str) -> Reply:
    return Reply(
        status, json.dumps(payload).encode(), {"Content-Type": "application/json", **headers}
    )


def error_reply(status: int, error: str, detail: str, field_: str | None = None) -> Reply:
    return json_reply(status, {"error": error, "detail": detail, "field": field_})


Route = Callable[[Recorded], Reply]


class ScriptedService:
    """A threaded HTTP server on loopback. `route(method, path, replies or fn)` scripts it:
    a list is served in order (the last one repeats), a function answers each request."""

    def __init__(self, port: int | None = None) -> None:
        self.port = port or free_port()
        self.requests: list[Recorded] = []
        self._routes: dict[tuple[str, str], Route] = {}
        self._server: ThreadingHTTPServer | None = None
        self._lock = threading.Lock()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def route(self, method: str, path: str, replies: list[Reply] | Route) -> None:
        if callable(replies):
            self._routes[(method, path)] = replies
            return
        queue = list(replies)

        def serve(_: Recorded) -> Reply:
            return queue.pop(0) if len(queue) > 1 else queue[0]

        self._routes[(method, path)] = serve

    def calls(self, method: str, path: str) -> list[Recorded]:
        with self._lock:
            return [r for r in self.requests if (r.method, r.path) == (method, path)]

    def start(self) -> ScriptedService:
        service = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                return

            def _handle(self) -> None:
                parsed = urllib.parse.urlsplit(self.path)
                length = int(self.headers.get("Content-Length") or 0)
                recorded = Recorded(
                    self.command,
                    parsed.path,
                    dict(urllib.parse.parse_qsl(parsed.query)),
                    {k.lower(): v for k, v in self.headers.items()},
                    self.rfile.read(length) if length else b"",
                )
                with service._lock:
                    service.requests.append(recorded)
                route = service._routes.get((self.command, parsed.path))
                reply = route(recorded) if route else error_reply(404, "no_route", parsed.path)
                if reply.delay:
                    time.sleep(reply.delay)
                self.send_response(reply.status)
                for key, value in reply.headers.items():
                    self.send_header(key, value)
                self.send_header("Content-Length", str(len(reply.body)))
                self.end_headers()
                self.wfile.write(reply.body)

            do_GET = do_POST = do_PUT = do_DELETE = _handle  # noqa: N815 - http.server names

        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self._server.daemon_threads = True
        threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        ).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None


@pytest.fixture
def service() -> Iterator[ScriptedService]:
    svc = ScriptedService().start()
    try:
        yield svc
    finally:
        svc.stop()


def make_client(url: str, tmp_path: Path, **options: Any) -> CoresetClient:
    options.setdefault("retries", 3)
    options.setdefault("timeout", 5.0)
    return CoresetClient(
        url, cache_dir=tmp_path / "cache", backoff_base=0.01, backoff_cap=0.05, **options
    )


JOB = {
    "job_id": "job-a",
    "incarnation": "inc-a",
    "n_samples": 100,
    "dim": 8,
    "config": {},
    "seed": 0,
    "status": "ready",
    "created_at": "2026-01-01T00:00:00Z",
}


def test_5xx_and_429_are_retried_until_success(service: ScriptedService, tmp_path: Path) -> None:
    service.route(
        "GET",
        "/v1/jobs/job-a",
        [
            error_reply(503, "busy", "try later"),
            Reply(502, b"bad gateway"),
            json_reply(429, {}),
            json_reply(200, JOB),
        ],
    )
    with make_client(service.url, tmp_path) as client:
        assert client.get_job("job-a").job_id == "job-a"
    assert len(service.calls("GET", "/v1/jobs/job-a")) == 4


def test_retry_after_is_honoured(service: ScriptedService, tmp_path: Path) -> None:
    service.route(
        "GET",
        "/v1/jobs/job-a",
        [json_reply(503, {}, **{"Retry-After": "0.4"}), json_reply(200, JOB)],
    )
    with make_client(service.url, tmp_path) as client:
        started = time.monotonic()
        client.get_job("job-a")
        elapsed = time.monotonic() - started
    # backoff alone would be <= 0.01 s; the server asked for 0.4 s.
    assert elapsed >= 0.4


def test_retries_give_up_with_service_unavailable_and_the_server_message(
    service: ScriptedService, tmp_path: Path
) -> None:
    service.route("GET", "/v1/jobs", [error_reply(500, "internal", "the store is down")])
    with (
        make_client(service.url, tmp_path, retries=2) as client,
        pytest.raises(ServiceUnavailable) as info,
    ):
        client.list_jobs()
    assert info.value.attempts == 3
    assert info.value.status == 500
    assert "the store is down" in str(info.value)
    assert len(service.calls("GET", "/v1/jobs")) == 3


def test_4xx_surfaces_the_server_message_without_retrying(
    service: ScriptedService, tmp_path: Path
) -> None:
    service.route(
        "POST",
        "/v1/jobs/job-a/scores",
        [error_reply(422, "ids_out_of_range", "ids must be in [0, 99]; got 250", "arrays.ids")],
    )
    with make_client(service.url, tmp_path) as client, pytest.raises(GraceAPIError) as info:
        client.post_scores("job-a", [250], loss=[1.0], round=0, batch_id="b1")
    err = info.value
    assert (err.status, err.error, err.field) == (422, "ids_out_of_range", "arrays.ids")
    assert err.detail == "ids must be in [0, 99]; got 250"
    assert "ids must be in [0, 99]" in str(err)
    assert len(service.calls("POST", "/v1/jobs/job-a/scores")) == 1


def test_4xx_statuses_map_to_specific_errors(service: ScriptedService, tmp_path: Path) -> None:
    service.route("GET", "/v1/jobs/nope", [error_reply(404, "unknown_job", "no job 'nope'", "job")])
    service.route(
        "POST", "/v1/jobs", [error_reply(409, "job_exists", "job-a exists with another spec")]
    )
    service.route(
        "DELETE", "/v1/jobs/job-a", [error_reply(401, "unauthorized", "missing bearer token")]
    )
    service.route("GET", "/v1/jobs/job-a/rounds/0", [Reply(400, b"<html>bad</html>")])
    request = CreateJobRequest(job_id="job-a", n_samples=10, dim=4)
    with make_client(service.url, tmp_path) as client:
        with pytest.raises(NotFoundError, match="no job 'nope'"):
            client.get_job("nope")
        with pytest.raises(ConflictError, match="another spec"):
            client.create_job(request)
        with pytest.raises(UnauthorizedError, match="bearer"):
            client.delete_job("job-a")
        with pytest.raises(GraceAPIError, match="<html>bad</html>") as info:
            client.get_round("job-a", 0)  # a non-JSON body from a proxy is still shown
        assert info.value.error == "http_400"


def test_bearer_token_is_sent(service: ScriptedService, tmp_path: Path) -> None:
    service.route("GET", "/healthz", [json_reply(200, {"status": "ok"})])
    with make_client(service.url, tmp_path, token="s3cret") as client:
        assert client.healthz().status == "ok"
    assert service.calls("GET", "/healthz")[0].headers["authorization"] == "Bearer s3cret"


def test_readyz_503_is_an_answer_not_an_outage(service: ScriptedService, tmp_path: Path) -> None:
    service.route(
        "GET", "/readyz", [json_reply(503, {"status": "unavailable", "checks": {"store": "down"}})]
    )
    with make_client(service.url, tmp_path) as client:
        ready = client.readyz()
    assert ready.status == "unavailable"
    assert ready.checks == {"store": "down"}
    assert len(service.calls("GET", "/readyz")) == 1


def test_trigger_round_is_not_repeated_after_a_500(
    service: ScriptedService, tmp_path: Path
) -> None:
    # A 500 may come after the round started computing; sending again could start another.
    service.route("POST", "/v1/jobs/job-a/rounds", [error_reply(500, "boom", "selection crashed")])
    with make_client(service.url, tmp_path) as client, pytest.raises(ServiceUnavailable):
        client.trigger_round("job-a")
    assert len(service.calls("POST", "/v1/jobs/job-a/rounds")) == 1


def test_connection_refused_then_service_comes_back(tmp_path: Path) -> None:
    port = free_port()
    with (
        make_client(f"http://127.0.0.1:{port}", tmp_path, retries=1) as client,
        pytest.raises(ServiceUnavailable, match="unreachable"),
    ):
        client.healthz()
    # Down at first, up 0.3 s later: a client with enough retries rides it out (40 jittered
    # waits of up to 0.2 s cover 0.3 s with overwhelming probability).
    svc = ScriptedService(port)
    svc.route("GET", "/healthz", [json_reply(200, {"status": "ok"})])
    timer = threading.Timer(0.3, svc.start)
    timer.start()
    try:
        client = CoresetClient(
            svc.url, retries=40, cache_dir=tmp_path / "c", backoff_base=0.05, backoff_cap=0.2
        )
        with client:
            assert client.healthz().status == "ok"
    finally:
        timer.join()
        svc.stop()


def test_a_read_timeout_is_retried(service: ScriptedService, tmp_path: Path) -> None:
    service.route("GET", "/v1/jobs/job-a", [Reply(200, b"{}", delay=1.0), json_reply(200, JOB)])
    with make_client(service.url, tmp_path, timeout=0.3) as client:
        assert client.get_job("job-a").job_id == "job-a"


def _manifest_reply(
    round_: int, *, sha: str | None = None, status: str = "published", incarnation: str = "inc-a"
) -> Reply:
    manifest = {
        "job_id": "job-a",
        "job_incarnation": incarnation,
        "round": round_,
        "status": status,
        "count": 4,
        "indices_sha256": sha,
        "config": {},
        "seed": 0,
        "created_at": "2026-01-01T00:00:00Z",
    }
    return json_reply(200, manifest)


def _indices_reply(
    ids: np.ndarray,
    *,
    round_: int,
    rank: int,
    world: int,
    total: int,
    sha: str,
    incarnation: str = "inc-a",
) -> Reply:
    meta = {
        "job_id": "job-a",
        "round": round_,
        "rank": rank,
        "world": world,
        "total": total,
        "indices_sha256": sha,
        "job_incarnation": incarnation,
    }
    weights = np.full(ids.shape[0], 2.0, dtype=np.float32)
    return Reply(
        200, encode_frame(meta, {"indices": ids, "weights": weights}), {"Content-Type": MEDIA_TYPE}
    )


def test_indices_arrive_as_frames_and_are_cached_on_disk(
    service: ScriptedService, tmp_path: Path
) -> None:
    ids = np.array([7, 3, 11, 5], dtype=np.int64)
    sha = sha256_of_sorted(ids)
    path = "/v1/jobs/job-a/rounds/2/indices"
    service.route(
        "GET",
        "/v1/jobs/job-a/rounds/2",
        [_manifest_reply(2, status="computing"), _manifest_reply(2, sha=sha)],
    )
    service.route(
        "GET",
        path,
        [
            json_reply(202, {}, **{"Retry-After": "0.2"}),
            _indices_reply(ids, round_=2, rank=0, world=1, total=4, sha=sha),
        ],
    )
    with make_client(service.url, tmp_path) as client:
        piece = client.get_indices("job-a", 2)
        np.testing.assert_array_equal(piece.indices, ids)
        assert piece.weights is not None
        assert piece.weights.tolist() == [2.0] * 4
        assert service.calls("GET", path)[0].query == {"rank": "0", "world": "1", "format": "bin"}
    # A new client (a restarted trainer) reads the published round from disk, once the
    # server's manifest vouches for it (same incarnation, same sha256).
    with make_client(service.url, tmp_path) as again:
        np.testing.assert_array_equal(again.get_indices("job-a", 2).indices, ids)
    assert len(service.calls("GET", path)) == 2  # the 202 and the one real answer


def test_a_cached_slice_of_another_incarnation_is_not_served(
    service: ScriptedService, tmp_path: Path
) -> None:
    """The job was deleted and created again: its round 0 is another coreset."""
    old, new = np.array([1, 2, 3], dtype=np.int64), np.array([4, 5, 6], dtype=np.int64)
    manifest, indices = "/v1/jobs/job-a/rounds/0", "/v1/jobs/job-a/rounds/0/indices"
    old_sha, new_sha = sha256_of_sorted(old), sha256_of_sorted(new)
    service.route("GET", manifest, [_manifest_reply(0, sha=old_sha, incarnation="first")])
    service.route(
        "GET",
        indices,
        [_indices_reply(old, round_=0, rank=0, world=1, total=3, sha=old_sha, incarnation="first")],
    )
    with make_client(service.url, tmp_path) as client:
        np.testing.assert_array_equal(client.get_indices("job-a", 0).indices, old)
    service.route("GET", manifest, [_manifest_reply(0, sha=new_sha, incarnation="second")])
    service.route(
        "GET",
        indices,
        [
            _indices_reply(
                new, round_=0, rank=0, world=1, total=3, sha=new_sha, incarnation="second"
            )
        ],
    )
    with make_client(service.url, tmp_path) as client:
        assert client.wait_for_round("job-a", 0, timeout=5).indices_sha256 == new_sha
        np.testing.assert_array_equal(client.get_indices("job-a", 0).indices, new)
    # Offline, the cache serves the incarnation the server named last, never the old one.
    service.stop()
    with make_client(service.url, tmp_path, retries=0) as client:
        np.testing.assert_array_equal(client.get_indices("job-a", 0).indices, new)
        assert client.get_round("job-a", 0).job_incarnation == "second"


def test_indices_still_computing_raises_round_not_ready(
    service: ScriptedService, tmp_path: Path
) -> None:
    service.route("GET", "/v1/jobs/job-a/rounds/4", [_manifest_reply(4, status="computing")])
    service.route(
        "GET", "/v1/jobs/job-a/rounds/4/indices", [json_reply(202, {}, **{"Retry-After": "0.1"})]
    )
    with make_client(service.url, tmp_path) as client, pytest.raises(RoundNotReadyError) as info:
        client.get_indices("job-a", 4, wait=0.25)
    assert info.value.retry_after == pytest.approx(0.1)


def test_indices_that_do_not_match_their_sha_are_refused(
    service: ScriptedService, tmp_path: Path
) -> None:
    ids = np.array([1, 2, 3], dtype=np.int64)
    service.route("GET", "/v1/jobs/job-a/rounds/1", [_manifest_reply(1, sha="0" * 64)])
    service.route("GET", "/v1/jobs/job-a/rounds/2", [_manifest_reply(2, sha="0" * 64)])
    service.route(
        "GET",
        "/v1/jobs/job-a/rounds/1/indices",
        [_indices_reply(ids, round_=1, rank=0, world=1, total=3, sha="0" * 64)],
    )
    service.route(
        "GET",
        "/v1/jobs/job-a/rounds/2/indices",
        [_indices_reply(ids, round_=2, rank=0, world=2, total=9, sha="0" * 64)],
    )
    with make_client(service.url, tmp_path) as client:
        with pytest.raises(IntegrityError, match="sha256"):
            client.get_indices("job-a", 1)
        with pytest.raises(IntegrityError, match="ceil"):
            client.get_indices("job-a", 2, rank=0, world=2)
        assert client.cache.get_slice("job-a", "inc-a", 1, 0, 1) is None  # nothing bad cached


def test_scores_and_embeddings_travel_as_frames(service: ScriptedService, tmp_path: Path) -> None:
    ingest = json_reply(200, {"batch_id": "b", "accepted": 3, "duplicate": False})
    service.route("POST", "/v1/jobs/job-a/scores", [ingest])
    service.route("POST", "/v1/jobs/job-a/embeddings", [ingest])
    service.route("PUT", "/v1/jobs/job-a/strata", [ingest])
    with make_client(service.url, tmp_path) as client:
        answer = client.post_scores(
            "job-a",
            [4, 5, 6],
            loss=[0.5, 1.5, 2.5],
            source="trainer",
            round=3,
            step=17,
            batch_id="b",
        )
        assert answer.accepted == 3
        assert not answer.duplicate
        client.post_embeddings("job-a", [4, 5, 6], np.eye(3, 8), batch_id="e", round=3)
        client.put_strata("job-a", [0, 1, 1, 0], batch_id="s")
    scores = service.calls("POST", "/v1/jobs/job-a/scores")[0]
    assert scores.headers["content-type"] == MEDIA_TYPE
    frame = decode_frame(scores.body)
    assert dict(frame.meta) == {"batch_id": "b", "source": "trainer", "round": 3, "step": 17}
    assert frame.array("ids", "<i8", 1).tolist() == [4, 5, 6]
    assert frame.array("loss", "<f4", 1).tolist() == [0.5, 1.5, 2.5]
    assert "importance" not in frame.arrays
    emb = decode_frame(service.calls("POST", "/v1/jobs/job-a/embeddings")[0].body)
    assert emb.array("embeddings", "<f4", 2).shape == (3, 8)
    assert emb.meta["round"] == 3
    strata = decode_frame(service.calls("PUT", "/v1/jobs/job-a/strata")[0].body)
    assert strata.array("strata", "<i4", 1).tolist() == [0, 1, 1, 0]


def test_rescore_plan_and_checkpoint(service: ScriptedService, tmp_path: Path) -> None:
    ckpt = {"path": "/ckpt/step-40", "step": 40, "round": 2, "published_at": "2026-01-01T00:00:00Z"}
    plan = encode_frame(
        {"job_id": "job-a", "round": 1, "shard": 1, "of": 2, "checkpoint": ckpt},
        {"ids": np.array([2, 4], dtype=np.int64)},
    )
    service.route(
        "GET", "/v1/jobs/job-a/rounds/1/rescore", [Reply(200, plan, {"Content-Type": MEDIA_TYPE})]
    )
    service.route(
        "GET", "/v1/jobs/job-a/checkpoint", [error_reply(404, "no_checkpoint", "none yet")]
    )
    service.route("GET", "/v1/jobs/job-a", [json_reply(200, JOB)])
    service.route("PUT", "/v1/jobs/job-a/checkpoint", [json_reply(200, ckpt)])
    with make_client(service.url, tmp_path) as client:
        got = client.get_rescore_plan("job-a", 1, shard=1, of=2)
        assert got.ids.tolist() == [2, 4]
        assert got.checkpoint is not None
        assert got.checkpoint.step == 40
        assert client.get_checkpoint("job-a") is None
        assert client.put_checkpoint("job-a", "/ckpt/step-40", 40, round=2).path == "/ckpt/step-40"
    body = json.loads(service.calls("PUT", "/v1/jobs/job-a/checkpoint")[0].body)
    assert body == {"path": "/ckpt/step-40", "step": 40, "round": 2}


def test_reporter_delivers_every_report_once_through_an_outage(
    service: ScriptedService, tmp_path: Path
) -> None:
    applied: dict[str, list[int]] = {}
    lock = threading.Lock()
    outage = {"left": 6}

    def ingest(request: Recorded) -> Reply:
        with lock:
            if outage["left"] > 0:
                outage["left"] -= 1
                return error_reply(503, "unavailable", "restarting")
            frame = decode_frame(request.body)
            batch_id = str(frame.meta["batch_id"])
            duplicate = batch_id in applied
            ids = frame.array("ids", "<i8", 1).tolist()
            applied.setdefault(batch_id, ids)
        # Like the service: the samples of this batch (the backlog may come merged).
        accepted = 0 if duplicate else len(ids)
        answer = {"batch_id": batch_id, "accepted": accepted, "duplicate": duplicate}
        return json_reply(200, answer)

    service.route("POST", "/v1/jobs/job-a/scores", ingest)
    with make_client(service.url, tmp_path, retries=1) as client:
        reporter = client.reporter("job-a", retry_interval=0.02)
        for step in range(5):
            reporter.report([2 * step, 2 * step + 1], [0.5, 0.25], step=step)
        stats = reporter.close(timeout=20)
    assert sorted(i for ids in applied.values() for i in ids) == list(range(10))
    assert stats.sent_samples == 10
    assert stats.dropped_samples == 0
