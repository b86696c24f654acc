"""Security: the bearer token guards writes (and reads when configured), is compared in
constant time, never logged; a non-loopback bind without a token refuses to start."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
from pydantic import SecretStr

from grace_selection.cli import main
from grace_selection.settings import InsecureBindError, ServiceSettings, is_loopback
from tests.unit.api_support import api_client, embeddings_frame, post_frame

TOKEN = "s3cret-token-value"
BEARER = {"Authorization": f"Bearer {TOKEN}"}


def test_writes_need_the_token_and_reads_stay_open(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    with api_client(tmp_path, token=SecretStr(TOKEN)) as client:
        job = {"job_id": "job", "n_samples": 10, "dim": 2}
        missing = client.post("/v1/jobs", json=job)
        assert missing.status_code == 401
        assert missing.json()["error"] == "unauthorized"
        assert missing.headers["WWW-Authenticate"] == "Bearer"
        wrong = client.post("/v1/jobs", json=job, headers={"Authorization": "Bearer nope"})
        assert wrong.status_code == 401
        assert client.post("/v1/jobs", json=job, headers=BEARER).status_code == 201
        body = embeddings_frame([0, 1], np.ones((2, 2)), "b")
        assert post_frame(client, "/v1/jobs/job/embeddings", body).status_code == 401
        assert post_frame(client, "/v1/jobs/job/embeddings", body, **BEARER).status_code == 200
        assert client.delete("/v1/jobs/job").status_code == 401
        # Reads are open by default: a trainer fleet needs no secret to read its slices.
        assert client.get("/v1/jobs/job").status_code == 200
        assert client.get("/v1/jobs/job/rounds/0/rescore").status_code == 200
        for probe in ("/healthz", "/readyz", "/metrics"):
            assert client.get(probe).status_code == 200
    assert TOKEN not in caplog.text


def test_reads_can_be_closed(tmp_path: Path) -> None:
    with api_client(tmp_path, token=SecretStr(TOKEN), reads_require_token=True) as client:
        assert (
            client.post(
                "/v1/jobs", json={"job_id": "j", "n_samples": 3, "dim": 2}, headers=BEARER
            ).status_code
            == 201
        )
        assert client.get("/v1/jobs/j").status_code == 401
        assert client.get("/v1/jobs").status_code == 401
        assert client.get("/v1/jobs/j", headers=BEARER).status_code == 200
        assert client.get("/healthz").status_code == 200  # probes stay open


def test_without_a_token_everything_is_open_on_loopback(tmp_path: Path) -> None:
    with api_client(tmp_path) as client:
        assert (
            client.post("/v1/jobs", json={"job_id": "j", "n_samples": 3, "dim": 2}).status_code
            == 201
        )


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "10.1.2.3", "example.org"])
def test_a_public_bind_without_a_token_refuses_to_start(host: str, tmp_path: Path) -> None:
    settings = ServiceSettings(host=host, data_dir=tmp_path)
    with pytest.raises(InsecureBindError, match="GRACE_TOKEN"):
        settings.check_bind_safety()
    ServiceSettings(host=host, data_dir=tmp_path, token=SecretStr("t")).check_bind_safety()


def test_the_cli_says_why_it_refuses(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code = main(["serve", "--host", "0.0.0.0", "--data-dir", str(tmp_path)])
    assert code == 2
    assert "refusing to bind 0.0.0.0" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True),
        ("127.8.0.1", True),
        ("::1", True),
        ("[::1]", True),
        ("localhost", True),
        ("0.0.0.0", False),
        ("", False),
        ("192.168.1.1", False),
    ],
)
def test_loopback_detection(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback


def test_settings_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GRACE_PORT", "9999")
    monkeypatch.setenv("GRACE_STORE", "redis://127.0.0.1:6400/1")
    monkeypatch.setenv("GRACE_TOKEN", "")
    monkeypatch.setenv("GRACE_LOG_LEVEL", "WARNING")
    settings = ServiceSettings()
    assert (settings.port, settings.uses_redis, settings.token, settings.log_level) == (
        9999,
        True,
        None,
        "warning",
    )
    monkeypatch.setenv("GRACE_STORE", "postgres://x")
    with pytest.raises(ValueError, match="GRACE_STORE"):
        ServiceSettings()
