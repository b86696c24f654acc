"""Rounds through the real app: warm-up, publish, slices, rescore plans, immutability, the auto
policy, and reads answered while a round is computing."""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient

from grace_proto.frames import decode_frame
from tests.unit.api_support import (
    api_client,
    create_job,
    embeddings_frame,
    frame,
    make_clustered,
    post_frame,
    scores_frame,
    wait_published,
    warm_up,
)

N, DIM = 400, 8


@pytest.fixture
def client(tmp_path: Path) -> Iterator[TestClient]:
    with api_client(tmp_path) as c:
        yield c


def test_warm_up_plan_is_every_sample_and_round_zero_publishes(client: TestClient) -> None:
    create_job(client, "job", n=N, dim=DIM, seed=7)
    plan = client.get("/v1/jobs/job/rounds/0/rescore", params={"format": "json"}).json()
    assert plan["ids"] == list(range(N))
    assert plan["round"] == 0
    warm_up(client, "job", N, DIM)
    answer = client.post("/v1/jobs/job/rounds")
    assert answer.status_code == 202
    assert answer.headers["Location"] == "/v1/jobs/job/rounds/0"
    assert answer.json()["status"] == "computing"
    manifest = wait_published(client, "job", 0)
    assert manifest["status"] == "published", manifest
    assert manifest["count"] == round(0.1 * N)
    assert manifest["rescore_count"] == round(0.3 * N)
    full = client.get("/v1/jobs/job/rounds/0/indices", params={"format": "json"}).json()
    indices = np.array(full["indices"], dtype=np.int64)
    assert (
        hashlib.sha256(np.sort(indices).astype("<i8").tobytes()).hexdigest()
        == manifest["indices_sha256"]
    )
    job = client.get("/v1/jobs/job").json()
    assert (job["current_round"], job["status"], job["embedded_count"]) == (0, "ready", N)
    assert client.get("/v1/jobs/job/rounds/latest").json() == manifest


@pytest.mark.parametrize("world", [1, 2, 3, 7, 64])
def test_rank_slices_cover_the_coreset_with_equal_lengths(client: TestClient, world: int) -> None:
    create_job(client, "job", n=N, dim=DIM)
    warm_up(client, "job", N, DIM)
    client.post("/v1/jobs/job/rounds")
    manifest = wait_published(client, "job", 0)
    coreset = set(
        client.get("/v1/jobs/job/rounds/0/indices", params={"format": "json"}).json()["indices"]
    )
    slices = []
    for rank in range(world):
        answer = client.get("/v1/jobs/job/rounds/0/indices", params={"rank": rank, "world": world})
        decoded = decode_frame(answer.content)
        assert decoded.meta["indices_sha256"] == manifest["indices_sha256"]
        assert decoded.meta["total"] == len(coreset)
        ids = decoded.arrays["indices"]
        assert len(set(ids.tolist())) == ids.size, "an id twice within one rank"
        weights = decoded.arrays["weights"]
        assert weights.shape == ids.shape
        as_json = client.get(
            "/v1/jobs/job/rounds/0/indices", params={"rank": rank, "world": world, "format": "json"}
        ).json()
        assert as_json["indices"] == ids.tolist()
        slices.append(ids)
    assert len({s.size for s in slices}) == 1
    assert slices[0].size == -(-len(coreset) // world)
    union = np.concatenate(slices)
    assert set(union.tolist()) == coreset
    assert union.size - len(coreset) <= world - 1


def test_published_rounds_never_change_and_rescore_plans_chain(client: TestClient) -> None:
    create_job(client, "job", n=N, dim=DIM)
    warm_up(client, "job", N, DIM)
    client.post("/v1/jobs/job/rounds")
    wait_published(client, "job", 0)
    first = client.get("/v1/jobs/job/rounds/0/indices", params={"rank": 1, "world": 3}).content
    manifest0 = client.get("/v1/jobs/job/rounds/0").content
    plan = client.get("/v1/jobs/job/rounds/1/rescore", params={"format": "json"}).json()["ids"]
    assert len(plan) == round(0.3 * N)
    latest_plan = client.get("/v1/jobs/job/rounds/latest/rescore", params={"format": "json"}).json()
    assert latest_plan["ids"] == plan
    assert latest_plan["round"] == 1
    # Shards partition the plan.
    shards = [
        client.get(
            "/v1/jobs/job/rounds/1/rescore", params={"shard": s, "of": 4, "format": "json"}
        ).json()["ids"]
        for s in range(4)
    ]
    assert sorted(i for shard in shards for i in shard) == plan
    # Score the plan for round 1, with new embeddings for a few samples, and publish round 1.
    rng = np.random.default_rng(3)
    answer = post_frame(
        client,
        "/v1/jobs/job/scores",
        scores_frame(plan, "r1", round_=1, importance=rng.random(len(plan))),
    )
    assert answer.json()["accepted"] == len(plan)
    moved = plan[:20]
    post_frame(
        client,
        "/v1/jobs/job/embeddings",
        embeddings_frame(moved, rng.normal(size=(20, DIM)), "r1e", 1),
    )
    client.post("/v1/jobs/job/rounds")
    manifest1 = wait_published(client, "job", 1)
    assert manifest1["rescored_fraction"] == pytest.approx(len(plan) / N)
    assert 0.0 <= manifest1["churn"] <= 1.0
    assert client.get("/v1/jobs/job/rounds/0").content == manifest0
    assert (
        client.get("/v1/jobs/job/rounds/0/indices", params={"rank": 1, "world": 3}).content == first
    )
    rounds = client.get("/v1/jobs/job/rounds").json()
    assert [m["round"] for m in rounds] == [0, 1]
    service = client.app.state.service  # type: ignore[attr-defined]
    assert service.job("job").keeper.graph is not None


def test_scores_for_the_next_round_only(client: TestClient) -> None:
    create_job(client, "job", n=N, dim=DIM)
    answer = post_frame(client, "/v1/jobs/job/scores", scores_frame([1], "x", round_=1, loss=[1.0]))
    assert answer.status_code == 422
    assert answer.json()["field"] == "meta.round"


def test_a_first_round_from_embeddings_alone_then_from_what_the_trainer_reports(
    client: TestClient,
) -> None:
    """With embeddings and no score, round 0 samples on the graph alone; losses and
    importance a trainer reports for round 1 are fresh there and steer it."""
    config = {"selector": "importance_sampling", "rescore_fraction": 0.0, "weighted": False}
    config["sampling_power"] = 8.0
    create_job(client, "free", n=N, dim=DIM, config={"budget_fraction": 0.25, **config})
    body = embeddings_frame(np.arange(N), make_clustered(N, DIM), "e0")
    assert post_frame(client, "/v1/jobs/free/embeddings", body).status_code == 200
    assert client.post("/v1/jobs/free/rounds").status_code == 202
    first = wait_published(client, "free", 0)
    assert first["status"] == "published"
    assert first["count"] == N // 4
    assert first["rescore_count"] == 0
    shown = decode_frame(client.get("/v1/jobs/free/rounds/0/indices?format=bin").content)
    trained = np.asarray(shown.arrays["indices"], dtype=np.int64)
    # The trainer reports the samples it trained on, for the next round: half of them get a
    # high importance, which a power-8 draw must then prefer over never-seen samples.
    high = trained[: trained.size // 2]
    importance = np.where(np.isin(trained, high), 1.0, 0.001)
    report = scores_frame(
        trained, "t0", round_=1, importance=importance, loss=importance, source="trainer"
    )
    assert post_frame(client, "/v1/jobs/free/scores", report).status_code == 200
    assert client.post("/v1/jobs/free/rounds", json={"seed": 1}).status_code == 202
    second = wait_published(client, "free", 1)
    assert second["status"] == "published"
    assert second["rescored_fraction"] == pytest.approx(trained.size / N)
    picked = decode_frame(client.get("/v1/jobs/free/rounds/1/indices?format=bin").content)
    ids = np.asarray(picked.arrays["indices"], dtype=np.int64)
    share_high = np.isin(high, ids).mean()
    share_low = np.isin(np.setdiff1d(trained, high), ids).mean()
    assert share_high > 0.5 > share_low


def test_reads_are_answered_while_a_round_is_computing(client: TestClient) -> None:
    create_job(client, "job", n=N, dim=DIM)
    warm_up(client, "job", N, DIM)
    client.post("/v1/jobs/job/rounds")
    wait_published(client, "job", 0)
    published = client.get("/v1/jobs/job/rounds/0/indices").content
    # Hold the round thread so that round 1 stays `computing` while we read.
    service = client.app.state.service  # type: ignore[attr-defined]
    gate = threading.Event()
    service._rounds.submit(gate.wait)
    try:
        pending = client.post("/v1/jobs/job/rounds").json()
        assert (pending["round"], pending["status"]) == (1, "computing")
        assert client.post("/v1/jobs/job/rounds").json()["round"] == 1  # no second round
        waiting = client.get("/v1/jobs/job/rounds/1/indices")
        assert waiting.status_code == 202
        assert waiting.headers["Retry-After"] == "1"
        assert waiting.json()["status"] == "computing"
        assert client.get("/v1/jobs/job/rounds/2/rescore").status_code == 202
        assert client.get("/v1/jobs/job/rounds/0/indices").content == published
        assert client.get("/v1/jobs/job/rounds/latest").json()["round"] == 0
        assert client.get("/v1/jobs/job").json()["status"] == "selecting"
    finally:
        gate.set()
    assert wait_published(client, "job", 1)["status"] == "published"


def test_auto_policy_publishes_when_enough_fresh_scores_arrived(client: TestClient) -> None:
    create_job(client, "auto", n=N, dim=DIM, auto_round_fraction=0.5)
    rng = np.random.default_rng(0)
    post_frame(
        client,
        "/v1/jobs/auto/embeddings",
        embeddings_frame(np.arange(N), rng.normal(size=(N, DIM)), "e"),
    )
    first = np.arange(N // 4)
    post_frame(
        client, "/v1/jobs/auto/scores", scores_frame(first, "a", importance=rng.random(first.size))
    )
    assert client.get("/v1/jobs/auto/rounds/0").status_code == 404  # a quarter is not enough
    second = np.arange(N // 4, N // 2 + 1)
    post_frame(
        client,
        "/v1/jobs/auto/scores",
        scores_frame(second, "b", importance=rng.random(second.size)),
    )
    assert wait_published(client, "auto", 0)["status"] == "published"


def test_identical_create_is_idempotent_and_a_different_one_conflicts(client: TestClient) -> None:
    assert (
        client.post("/v1/jobs", json={"job_id": "a", "n_samples": 5, "dim": 2}).status_code == 201
    )
    assert (
        client.post("/v1/jobs", json={"job_id": "a", "n_samples": 5, "dim": 2}).status_code == 200
    )
    answer = client.post("/v1/jobs", json={"job_id": "a", "n_samples": 6, "dim": 2})
    assert (answer.status_code, answer.json()["error"]) == (409, "job_exists")


def test_delete_removes_the_job_and_its_data(client: TestClient, tmp_path: Path) -> None:
    create_job(client, "gone", n=N, dim=DIM)
    warm_up(client, "gone", N, DIM)
    client.post("/v1/jobs/gone/rounds")
    wait_published(client, "gone", 0)
    assert client.delete("/v1/jobs/gone").status_code == 204
    assert client.get("/v1/jobs/gone").status_code == 404
    assert client.get("/v1/jobs").json()["jobs"] == []
    assert not (tmp_path / "indexes" / "gone").exists()
    assert not (tmp_path / "store" / "jobs" / "gone").exists()
    create_job(client, "gone", n=N, dim=DIM)  # the id can be used again, from scratch
    assert client.get("/v1/jobs/gone").json()["embedded_count"] == 0


def test_checkpoint_travels_with_the_rescore_plan(client: TestClient) -> None:
    create_job(client, "job", n=N, dim=DIM)
    assert client.get("/v1/jobs/job/checkpoint").status_code == 404
    info = client.put(
        "/v1/jobs/job/checkpoint", json={"path": "/ckpt/step-10", "step": 10, "round": 0}
    ).json()
    assert info["step"] == 10
    assert client.get("/v1/jobs/job/checkpoint").json() == info
    meta = decode_frame(client.get("/v1/jobs/job/rounds/0/rescore").content).meta
    assert meta["checkpoint"] == info
    assert client.get("/v1/jobs/job").json()["checkpoint"] == info


def test_strata_and_stats_and_samples(client: TestClient) -> None:
    create_job(client, "job", n=N, dim=DIM, stratum_names={"0": "web", "1": "books"})
    strata = (np.arange(N) % 4 == 0).astype(np.int32)
    answer = post_frame(client, "/v1/jobs/job/strata", b"", "PUT")
    assert answer.status_code == 400  # an empty body is not a frame
    answer = post_frame(
        client, "/v1/jobs/job/strata", frame({"batch_id": "s"}, strata=strata), "PUT"
    )
    assert answer.json()["accepted"] == N
    warm_up(client, "job", N, DIM)
    client.post("/v1/jobs/job/rounds")
    wait_published(client, "job", 0)
    stats = client.get("/v1/jobs/job/rounds/0/stats", params={"bins": 5}).json()
    assert sum(stats["histograms"]["importance"]["counts"]) == N
    assert stats["strata"]["1"]["name"] == "books"
    assert stats["strata"]["1"]["data_share"] == pytest.approx(0.25)
    sample = client.get("/v1/jobs/job/samples/4").json()
    assert sample["stratum"] == 1
    assert [h["round"] for h in sample["history"]] == [0]
    assert len(sample["neighbors"]) == 10
    first = client.get("/v1/jobs/job/projection", params={"max_points": 100}).content
    projection = decode_frame(first)
    assert projection.arrays["xy"].shape == (100, 2)
    assert projection.arrays["in_coreset"].dtype == np.uint8
    assert projection.meta["total"] == N
    members = projection.arrays["ids"][projection.arrays["in_coreset"] == 1]
    coreset = client.get("/v1/jobs/job/rounds/0/indices", params={"format": "json"}).json()
    assert set(members.tolist()) <= set(coreset["indices"])
    assert client.get("/v1/jobs/job/projection", params={"max_points": 100}).content == first


def test_metrics_count_ingest_and_rounds(client: TestClient) -> None:
    create_job(client, "job", n=N, dim=DIM)
    warm_up(client, "job", N, DIM)
    client.post("/v1/jobs/job/rounds")
    wait_published(client, "job", 0)
    text = client.get("/metrics").text
    assert f'grace_ingest_samples_total{{kind="embeddings",source="-"}} {float(N)}' in text
    assert 'grace_rounds_total{outcome="published"} 1.0' in text
    assert 'route="/v1/jobs/{job}/rounds/{r}"' in text
    assert "grace_jobs 1.0" in text


def test_sample_text_comes_from_the_jsonl_source_only(client: TestClient, tmp_path: Path) -> None:
    source = tmp_path / "texts.jsonl"
    source.write_text('{"text": "first"}\n["not", "an object"]\n{"text": "third"}')
    create_job(client, "texts", n=5, dim=2, text_source=str(source))
    assert client.get("/v1/jobs/texts/samples/0").json()["text"] == "first"
    assert client.get("/v1/jobs/texts/samples/1").json()["text"] is None
    assert client.get("/v1/jobs/texts/samples/2").json()["text"] == "third"
    assert client.get("/v1/jobs/texts/samples/4").json()["text"] is None  # past the last line
    answer = client.post(
        "/v1/jobs", json={"job_id": "leak", "n_samples": 5, "dim": 2, "text_source": "/etc/passwd"}
    )
    assert (answer.status_code, answer.json()["field"]) == (422, "text_source")
