"""Per-job gauges on /metrics: the newest round of each job, as its manifest and data say."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.unit.api_support import (
    api_client,
    create_job,
    post_frame,
    scores_frame,
    wait_published,
    warm_up,
)

N, DIM = 300, 8


def gauges(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        if family.type == "gauge"
        for sample in family.samples
    }


def test_job_gauges_follow_the_newest_round(tmp_path: Path) -> None:
    strata = [i % 3 for i in range(N)]
    with api_client(tmp_path) as client:
        create_job(client, "g", n=N, dim=DIM, strata=strata, stratum_names={0: "kjv", 2: "code"})
        create_job(client, "idle", n=10, dim=2)  # no round yet: no per-job gauges
        warm_up(client, "g", N, DIM)
        client.post("/v1/jobs/g/rounds")
        wait_published(client, "g", 0)
        rng = np.random.default_rng(1)
        fresh = rng.choice(N, size=60, replace=False)
        body = scores_frame(fresh, "r1", round_=1, importance=rng.random(60))
        assert post_frame(client, "/v1/jobs/g/scores", body).status_code == 200
        client.post("/v1/jobs/g/rounds")
        manifest = wait_published(client, "g", 1)
        coreset = client.get("/v1/jobs/g/rounds/1/indices", params={"format": "json"}).json()
        values = gauges(client.get("/metrics").text)

    job = (("job", "g"),)
    assert values[("grace_job_round", job)] == 1
    assert values[("grace_job_coreset_size", job)] == manifest["count"]
    assert values[("grace_job_churn", job)] == pytest.approx(manifest["churn"])
    assert values[("grace_job_fresh_share", job)] == pytest.approx(60 / N)
    assert values[("grace_job_estimated_share", job)] == pytest.approx(
        manifest["estimated_fraction"]
    )
    assert 0 < manifest["estimated_fraction"] <= 1 - 60 / N
    total = values[("grace_job_round_seconds", (("job", "g"), ("phase", "total")))]
    assert total == pytest.approx(manifest["timings"]["total_seconds"])
    members = np.asarray(coreset["indices"])
    for stratum, name in ((0, "kjv"), (1, "1"), (2, "code")):
        labels = (("job", "g"), ("name", name), ("stratum", str(stratum)))
        expected = np.count_nonzero(np.asarray(strata)[members] == stratum) / members.size
        assert values[("grace_job_stratum_coreset_share", labels)] == pytest.approx(expected)
        assert values[("grace_job_stratum_data_share", labels)] == pytest.approx(1 / 3)
    assert not any(dict(labels).get("job") == "idle" for _, labels in values)
    assert values[("grace_jobs_failed", ())] == 0
