"""proto/openapi.json is exactly what the app exports: CI fails when the API changes without
the committed document (regenerate with `grace openapi --output proto/openapi.json`)."""

from __future__ import annotations

import json
from pathlib import Path

from grace_selection.cli import export_openapi

COMMITTED = Path(__file__).resolve().parents[2] / "proto" / "openapi.json"


def test_committed_openapi_document_matches_the_app() -> None:
    exported = export_openapi()
    assert COMMITTED.read_text() == exported, (
        "proto/openapi.json is stale; run `grace openapi --output proto/openapi.json`"
    )


def test_every_operation_has_a_stable_id_and_errors_use_error_response() -> None:
    document = json.loads(export_openapi())
    ids = [op["operationId"] for path in document["paths"].values() for op in path.values()]
    assert len(ids) == len(set(ids))
    assert "ErrorResponse" in document["components"]["schemas"]
    assert "ScoreBatchRequest" in document["components"]["schemas"]
    scores = document["paths"]["/v1/jobs/{job}/scores"]["post"]["requestBody"]["content"]
    assert set(scores) == {"application/octet-stream", "application/json"}
