"""Bad input: each case answers 4xx with an ErrorResponse naming the field and the fix, and
changes nothing (the job's counts and log are as before)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.unit.api_support import (
    api_client,
    create_job,
    embeddings_frame,
    frame,
    post_frame,
    scores_frame,
)

N, DIM = 50, 4


@pytest.fixture
def client(tmp_path: Path) -> Iterator[TestClient]:
    with api_client(tmp_path, max_body_bytes=64 * 1024) as c:
        create_job(c, "job", n=N, dim=DIM)
        yield c


def footprint(client: TestClient) -> tuple[int, int, int]:
    """(embedded, scored, log entries) of the job."""
    job = client.get("/v1/jobs/job").json()
    service = client.app.state.service  # type: ignore[attr-defined]
    return job["embedded_count"], job["scored_count"], len(list(service.store.read_log("job")))


def unchanged(client: TestClient) -> None:
    """Nothing of a rejected request was applied or logged."""
    assert footprint(client) == (0, 0, 0)


def check_error(answer: Any, status: int, code: str, field: str | None) -> dict[str, Any]:
    assert answer.status_code == status, answer.text
    body: dict[str, Any] = answer.json()
    assert body["error"] == code
    assert body["field"] == field
    assert len(body["detail"]) > 20  # a sentence that says what to do, not a bare code
    return body


def ids(n: int = 3) -> Any:
    return np.arange(n, dtype=np.int64)


EMBEDDING_CASES = [
    pytest.param(
        frame({"batch_id": "b", "round": 0}, ids=ids(), embeddings=np.ones((3, DIM), np.float64)),
        "arrays.embeddings.dtype",
        id="wrong-dtype",
    ),
    pytest.param(
        frame(
            {"batch_id": "b", "round": 0}, ids=ids(), embeddings=np.ones((3, DIM + 1), np.float32)
        ),
        "arrays.embeddings.shape",
        id="wrong-dim",
    ),
    pytest.param(
        frame({"batch_id": "b", "round": 0}, ids=ids(), embeddings=np.ones((2, DIM), np.float32)),
        "arrays.embeddings.shape",
        id="length-mismatch",
    ),
    pytest.param(
        frame({"batch_id": "b", "round": 0}, ids=ids(), embeddings=np.ones(3 * DIM, np.float32)),
        "arrays.embeddings.shape",
        id="wrong-rank",
    ),
    pytest.param(
        embeddings_frame([0, 1, N], np.ones((3, DIM)), "b"), "arrays.ids", id="id-out-of-range"
    ),
    pytest.param(
        embeddings_frame([0, -1, 2], np.ones((3, DIM)), "b"), "arrays.ids", id="negative-id"
    ),
    pytest.param(
        embeddings_frame([0, 1, 0], np.ones((3, DIM)), "b"), "arrays.ids", id="duplicate-id"
    ),
    pytest.param(
        embeddings_frame(ids(), np.array([[1, 1, 1, 1], [1, np.nan, 1, 1], [1, 1, 1, 1]]), "b"),
        "arrays.embeddings",
        id="nan",
    ),
    pytest.param(
        embeddings_frame(ids(), np.array([[1, 1, 1, 1], [1, 1, 1, 1], [np.inf, 1, 1, 1]]), "b"),
        "arrays.embeddings",
        id="inf",
    ),
    pytest.param(
        embeddings_frame(ids(), np.array([[1, 1, 1, 1], [0, 0, 0, 0], [1, 1, 1, 1]]), "b"),
        "arrays.embeddings",
        id="zero-row",
    ),
    pytest.param(
        frame({"round": 0}, ids=ids(), embeddings=np.ones((3, DIM), np.float32)),
        "meta.batch_id",
        id="no-batch-id",
    ),
    pytest.param(
        frame({"batch_id": "b", "rnd": 1}, ids=ids(), embeddings=np.ones((3, DIM), np.float32)),
        "meta.rnd",
        id="unknown-meta-key",
    ),
    pytest.param(
        frame({"batch_id": "b"}, ids=ids(), embeddings=np.ones((3, DIM), np.float32), x=ids()),
        "arrays.x",
        id="unknown-array",
    ),
    pytest.param(
        frame({"batch_id": "b"}, embeddings=np.ones((3, DIM), np.float32)),
        "arrays.ids",
        id="missing-ids",
    ),
]


@pytest.mark.parametrize(("body", "field"), EMBEDDING_CASES)
def test_bad_embedding_batches_are_refused_whole(
    client: TestClient, body: bytes, field: str
) -> None:
    answer = post_frame(client, "/v1/jobs/job/embeddings", body)
    check_error(answer, 422, "invalid_field", field)
    unchanged(client)


SCORE_CASES = [
    pytest.param(scores_frame([0, 1], "b", importance=[1.0]), "arrays.importance.shape", id="len"),
    pytest.param(scores_frame([0, 1], "b", loss=[1.0, np.nan]), "arrays.loss", id="nan-loss"),
    pytest.param(scores_frame([0, 1], "b", importance=[np.inf, 1]), "arrays.importance", id="inf"),
    pytest.param(scores_frame([0, N + 5], "b", loss=[1, 1]), "arrays.ids", id="out-of-range"),
    pytest.param(scores_frame([0, 1], "b"), "arrays", id="no-values"),
    pytest.param(scores_frame([0, 1], "b", loss=[1, 1], source="robot"), "meta.source", id="src"),
    pytest.param(scores_frame([0, 1], "b", loss=[1, 1], round_=3), "meta.round", id="future"),
    pytest.param(
        frame({"batch_id": "b", "source": "worker", "round": 0}, ids=ids(2), loss=np.ones(2)),
        "arrays.loss.dtype",
        id="float64-loss",
    ),
    pytest.param(
        frame({"batch_id": "b", "source": "worker"}, ids=ids(2), loss=np.ones(2, np.float32)),
        "meta.round",
        id="no-round",
    ),
    pytest.param(
        frame(
            {"batch_id": "b", "source": "worker", "round": -1},
            ids=ids(2),
            loss=np.ones(2, np.float32),
        ),
        "meta.round",
        id="negative-round",
    ),
]


@pytest.mark.parametrize(("body", "field"), SCORE_CASES)
def test_bad_score_batches_are_refused_whole(client: TestClient, body: bytes, field: str) -> None:
    check_error(post_frame(client, "/v1/jobs/job/scores", body), 422, "invalid_field", field)
    unchanged(client)


def test_bad_strata_are_refused(client: TestClient) -> None:
    short = frame({"batch_id": "s"}, strata=np.zeros(N - 1, np.int32))
    check_error(
        post_frame(client, "/v1/jobs/job/strata", short, "PUT"),
        422,
        "invalid_field",
        "arrays.strata.shape",
    )
    negative = frame({"batch_id": "s"}, strata=-np.ones(N, np.int32))
    check_error(
        post_frame(client, "/v1/jobs/job/strata", negative, "PUT"),
        422,
        "invalid_field",
        "arrays.strata",
    )
    unchanged(client)


def test_a_body_that_is_not_a_frame_is_400(client: TestClient) -> None:
    answer = post_frame(client, "/v1/jobs/job/embeddings", b"this is not a frame at all")
    body = check_error(answer, 400, "invalid_frame", "magic")
    assert "FRAMES.md" in body["detail"]
    unchanged(client)


def test_wrong_content_type_is_415(client: TestClient) -> None:
    body = embeddings_frame(ids(), np.ones((3, DIM)), "b")
    answer = client.post(
        "/v1/jobs/job/embeddings", content=body, headers={"content-type": "text/plain"}
    )
    check_error(answer, 415, "unsupported_media_type", "Content-Type")
    unchanged(client)


def test_unknown_job_is_404_and_names_the_job(client: TestClient) -> None:
    body = embeddings_frame(ids(), np.ones((3, DIM)), "b")
    answer = post_frame(client, "/v1/jobs/nope/embeddings", body)
    assert "nope" in check_error(answer, 404, "unknown_job", "job_id")["detail"]
    for path in ("/v1/jobs/nope", "/v1/jobs/nope/rounds/0", "/v1/jobs/nope/rounds/0/indices"):
        check_error(client.get(path), 404, "unknown_job", "job_id")


def test_an_oversized_body_is_413_and_names_the_limit(client: TestClient) -> None:
    vectors = np.ones((3000, DIM), np.float32)  # 48 KB of floats + ids: over the 64 KiB limit
    body = embeddings_frame(np.arange(3000) % N, vectors, "big")
    answer = post_frame(client, "/v1/jobs/job/embeddings", body)
    error = check_error(answer, 413, "body_too_large", "body")
    assert str(64 * 1024) in error["detail"]
    assert error["extra"] == {"limit_bytes": 64 * 1024}
    unchanged(client)


def test_an_oversized_chunked_body_is_413_too(client: TestClient) -> None:
    def chunks() -> Iterator[bytes]:
        for _ in range(100):
            yield b"\0" * 1024  # no Content-Length: counted as it arrives

    answer = client.post(
        "/v1/jobs/job/embeddings",
        content=chunks(),
        headers={"content-type": "application/octet-stream"},
    )
    check_error(answer, 413, "body_too_large", "body")
    unchanged(client)


def test_malformed_json_is_400(client: TestClient) -> None:
    headers = {"content-type": "application/json"}
    answer = client.post("/v1/jobs", content=b'{"job_id": "x", ', headers=headers)
    check_error(answer, 400, "malformed_json", "body")
    answer = client.post("/v1/jobs/job/scores", content=b"{not json", headers=headers)
    check_error(answer, 400, "malformed_json", "body")
    unchanged(client)


def test_validation_errors_are_reshaped_into_error_responses(client: TestClient) -> None:
    answer = client.post("/v1/jobs", json={"job_id": "x", "n_samples": -5, "dim": 4})
    assert "greater than 0" in check_error(answer, 422, "invalid_field", "n_samples")["detail"]
    answer = client.post(
        "/v1/jobs", json={"job_id": "x", "n_samples": 5, "dim": 4, "config": {"k": 0}}
    )
    check_error(answer, 422, "invalid_field", "config.k")
    answer = client.post("/v1/jobs", json={"job_id": "Bad Id!", "n_samples": 5, "dim": 4})
    check_error(answer, 422, "invalid_field", "job_id")
    answer = client.get("/v1/jobs/job/rounds/0/indices", params={"world": 0})
    check_error(answer, 422, "invalid_field", "world")
    answer = client.get("/v1/jobs/job/rounds/0/indices", params={"rank": 2, "world": 2})
    check_error(answer, 422, "invalid_field", "rank")
    assert client.get("/v1/jobs").json()["jobs"][0]["job_id"] == "job"


def test_core_config_rules_are_named_under_config(client: TestClient) -> None:
    config = {"stratum_budgets": {"0": 0.5, "1": 0.2}}
    answer = client.post(
        "/v1/jobs", json={"job_id": "x", "n_samples": 5, "dim": 4, "config": config}
    )
    assert (
        "sum to 1" in check_error(answer, 422, "invalid_field", "config.stratum_budgets")["detail"]
    )


def test_json_score_batches_are_checked_like_frames(client: TestClient) -> None:
    base = {"batch_id": "j", "source": "worker", "round": 0, "ids": [0, 1]}
    answer = client.post("/v1/jobs/job/scores", json={**base, "loss": [1.0]})
    check_error(answer, 422, "invalid_field", "loss")
    answer = client.post("/v1/jobs/job/scores", json={**base, "ids": [0, 99], "loss": [1.0, 2.0]})
    check_error(answer, 422, "invalid_field", "arrays.ids")
    answer = client.post("/v1/jobs/job/scores", json={**base, "source": "nobody", "loss": [1, 2]})
    check_error(answer, 422, "invalid_field", "source")
    unchanged(client)


def test_reusing_a_batch_id_for_other_data_is_409(client: TestClient) -> None:
    first = scores_frame([0, 1], "same", loss=[1.0, 2.0])
    assert post_frame(client, "/v1/jobs/job/scores", first).json()["accepted"] == 2
    again = post_frame(client, "/v1/jobs/job/scores", first).json()
    assert (again["duplicate"], again["accepted"]) == (True, 0)
    other = scores_frame([0, 1], "same", loss=[5.0, 6.0])
    check_error(
        post_frame(client, "/v1/jobs/job/scores", other), 409, "batch_id_reused", "meta.batch_id"
    )
    sample = client.get("/v1/jobs/job/samples/0").json()
    assert sample["loss"] == 1.0


def test_unknown_routes_and_methods_answer_in_the_same_format(client: TestClient) -> None:
    check_error(client.get("/v1/nothing-here"), 404, "not_found", None)
    check_error(client.patch("/v1/jobs/job"), 405, "method_not_allowed", None)


def test_round_before_any_score_is_409(client: TestClient) -> None:
    check_error(client.post("/v1/jobs/job/rounds"), 409, "no_scores", "scores")
    check_error(client.get("/v1/jobs/job/rounds/latest"), 404, "unknown_round", "round")
    check_error(client.get("/v1/jobs/job/rounds/1/rescore"), 404, "unknown_round", "round")


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=st.data())
def test_a_damaged_frame_is_a_4xx_and_changes_nothing(
    client: TestClient, data: st.DataObject
) -> None:
    body = bytearray(scores_frame([0, 1, 2], "fuzz", loss=[1, 2, 3], importance=[3, 2, 1]))
    before = footprint(client)
    how = data.draw(st.sampled_from(["flip", "truncate", "extend"]))
    if how == "flip":
        for position in data.draw(st.lists(st.integers(0, len(body) - 1), min_size=1, max_size=4)):
            body[position] ^= data.draw(st.integers(1, 255))
    elif how == "truncate":
        del body[data.draw(st.integers(0, len(body) - 1)) :]
    else:
        body += data.draw(st.binary(min_size=1, max_size=16))
    answer = post_frame(client, "/v1/jobs/job/scores", bytes(body))
    if answer.status_code == 200:
        # A flip inside a value can leave a valid frame (another loss, say): it is applied once.
        return
    assert 400 <= answer.status_code < 500, answer.text
    assert answer.json()["field"]
    assert footprint(client) == before
