"""proto/openapi.json documents the 401 and 400 answers the service really sends (issue 14).

Every operation is called against the real app: without the token (reads need it here too),
and with a body that is not JSON (or not a frame). An operation that answers 401 or 400 must
document it, and one that documents it must answer it.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests.unit.api_support import api_client

DOCUMENT: dict[str, Any] = json.loads(
    (Path(__file__).resolve().parents[2] / "proto" / "openapi.json").read_text()
)
OPERATIONS = [
    (method.upper(), path, operation)
    for path, item in DOCUMENT["paths"].items()
    for method, operation in item.items()
]
TOKEN = "s3cret-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def concrete(path: str) -> str:
    return path.replace("{job}", "j").replace("{r}", "0").replace("{sample_id}", "0")


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    with api_client(tmp_path_factory.mktemp("data"), token=TOKEN, reads_require_token=True) as c:
        answer = c.post("/v1/jobs", json={"job_id": "j", "n_samples": 10, "dim": 2}, headers=AUTH)
        assert answer.status_code == 201
        yield c


@pytest.mark.parametrize(
    ("method", "path", "operation"), OPERATIONS, ids=[o["operationId"] for *_, o in OPERATIONS]
)
def test_401_is_documented_exactly_where_it_is_sent(
    client: TestClient, method: str, path: str, operation: dict[str, Any]
) -> None:
    answer = client.request(method, concrete(path))
    documented = "401" in operation["responses"]
    assert (answer.status_code == 401) == documented, (answer.status_code, answer.text)
    if documented:
        assert answer.json()["error"] == "unauthorized"
        assert answer.headers["WWW-Authenticate"] == "Bearer"


BODIED = [(m, p, o) for m, p, o in OPERATIONS if "requestBody" in o]


@pytest.mark.parametrize(
    ("method", "path", "operation"), BODIED, ids=[o["operationId"] for *_, o in BODIED]
)
def test_400_is_documented_for_every_body_that_is_not_json_or_a_frame(
    client: TestClient, method: str, path: str, operation: dict[str, Any]
) -> None:
    assert "400" in operation["responses"], operation["operationId"]
    for media in operation["requestBody"]["content"]:
        answer = client.request(
            method, concrete(path), content=b"{not json", headers={**AUTH, "content-type": media}
        )
        assert answer.status_code == 400, (media, answer.text)
        assert answer.json()["error"] in ("malformed_json", "invalid_frame")


def test_operations_without_a_body_document_no_400() -> None:
    """A 400 is about the body; elsewhere bad values are 422."""
    for _, _, operation in OPERATIONS:
        if "requestBody" not in operation:
            assert "400" not in operation["responses"], operation["operationId"]
