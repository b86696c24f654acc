"""Score inspection through the real app: split histograms, estimates, per-stratum quantiles,
the round diff, the per-sample table as CSV and Parquet, and rounds stored without estimates."""

from __future__ import annotations

import csv
import io
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq
import pytest
from fastapi.testclient import TestClient

from grace_proto.frames import decode_frame
from tests.unit.api_support import (
    api_client,
    create_job,
    frame,
    post_frame,
    scores_frame,
    wait_published,
    warm_up,
)

N, DIM, ROUNDS = 600, 8, 3
NAMES = {"0": "web", "1": "=code"}


def seed(client: TestClient) -> None:
    """Three rounds; each later round re-scores its plan with much smaller importance, so the
    `delta` rule drives many estimates below 0."""
    create_job(
        client, "job", n=N, dim=DIM, stratum_names=NAMES, config={"noise_guard_fraction": 0.02}
    )
    strata = (np.arange(N) % 3 == 0).astype(np.int32)
    answer = post_frame(
        client, "/v1/jobs/job/strata", frame({"batch_id": "s"}, strata=strata), "PUT"
    )
    assert answer.status_code == 200, answer.text
    warm_up(client, "job", N, DIM)
    client.post("/v1/jobs/job/rounds")
    wait_published(client, "job", 0)
    rng = np.random.default_rng(1)
    for r in range(1, ROUNDS):
        plan = decode_frame(client.get(f"/v1/jobs/job/rounds/{r}/rescore").content)
        ids = plan.array("ids", "<i8", 1)
        body = scores_frame(
            ids,
            f"s{r}",
            round_=r,
            importance=rng.random(ids.size) * 0.05,
            loss=rng.random(ids.size),
        )
        assert post_frame(client, "/v1/jobs/job/scores", body).status_code == 200
        client.post("/v1/jobs/job/rounds")
        assert wait_published(client, "job", r)["status"] == "published"


@pytest.fixture(scope="module")
def seeded(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("inspection")
    with api_client(folder) as client:
        seed(client)
    return folder


@pytest.fixture(scope="module")
def client(seeded: Path) -> Iterator[TestClient]:
    with api_client(seeded) as c:
        yield c


def read_csv(client: TestClient, r: int, rows: str = "all") -> list[dict[str, str]]:
    answer = client.get(f"/v1/jobs/job/rounds/{r}/table", params={"rows": rows})
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"].startswith("text/csv")
    suffix = "" if rows == "all" else f"-{rows}"
    assert f'filename="job-round-{r}{suffix}.csv"' in answer.headers["content-disposition"]
    return list(csv.DictReader(io.StringIO(answer.text)))


def indices(client: TestClient, r: int) -> dict[str, Any]:
    body: dict[str, Any] = client.get(
        f"/v1/jobs/job/rounds/{r}/indices", params={"format": "json"}
    ).json()
    return body


def test_every_histogram_splits_the_coreset_from_the_rest(client: TestClient) -> None:
    stats = client.get("/v1/jobs/job/rounds/2/stats", params={"bins": 12}).json()
    members = set(indices(client, 2)["indices"])
    for name in ("loss", "importance", "combined"):
        h = stats["histograms"][name]
        coreset, rest = np.array(h["groups"]["coreset"]), np.array(h["groups"]["rest"])
        np.testing.assert_array_equal(coreset + rest, h["counts"])
        assert coreset.sum() == len(members) == stats["count"]  # every member has a value
    combined = stats["histograms"]["combined"]
    assert (combined["edges"][0], combined["edges"][-1]) == (0.0, 1.0)  # a rank
    importance = stats["histograms"]["importance"]
    measured = np.array(importance["groups"]["measured"])
    estimated = np.array(importance["groups"]["estimated"])
    np.testing.assert_array_equal(measured + estimated, importance["counts"])


def test_estimates_are_counted_and_the_impossible_ones_marked(client: TestClient) -> None:
    stats = client.get("/v1/jobs/job/rounds/2/stats").json()
    rows = read_csv(client, 2)
    est = [r for r in rows if r["estimated"] == "true" and r["importance"] != ""]
    measured = [r for r in rows if r["estimated"] == "false"]
    e = stats["estimates"]
    assert (e["measured"], e["estimated"], e["unknown"]) == (len(measured), len(est), 0)
    negative = [r for r in est if float(r["importance"]) < 0]
    assert e["negative_estimates"] == len(negative) > 0
    assert e["min_estimate"] == pytest.approx(min(float(r["importance"]) for r in est), rel=1e-6)
    assert e["min_measured"] >= 0  # worker scores are gradient norms
    # Round 2 re-scored exactly the plan round 1 published.
    plan = decode_frame(client.get("/v1/jobs/job/rounds/2/rescore").content)
    assert {int(r["sample_id"]) for r in measured} == set(plan.array("ids", "<i8", 1).tolist())


def test_each_stratum_has_its_score_quantiles_in_every_round(client: TestClient) -> None:
    for r in range(ROUNDS):
        stats = client.get(f"/v1/jobs/job/rounds/{r}/stats").json()
        rows = read_csv(client, r)
        for key, share in stats["strata"].items():
            values = [float(x["importance"]) for x in rows if x["stratum"] == key]
            q = share["importance"]
            assert q["count"] == len(values)
            expected = np.quantile(values, [0.1, 0.25, 0.5, 0.75, 0.9])
            got = [q["p10"], q["p25"], q["p50"], q["p75"], q["p90"]]
            np.testing.assert_allclose(got, expected, rtol=1e-5)
            assert share["loss"]["count"] == len(values)
        assert stats["strata"]["1"]["name"] == "=code"


def test_the_diff_lists_who_entered_and_left_and_why(client: TestClient) -> None:
    diff = client.get("/v1/jobs/job/rounds/2/diff", params={"limit": 5}).json()
    before, after = set(indices(client, 1)["indices"]), set(indices(client, 2)["indices"])
    assert (diff["round"], diff["previous"]) == (2, 1)
    assert (diff["entered"], diff["left"], diff["stayed"]) == (
        len(after - before),
        len(before - after),
        len(after & before),
    )
    assert sum(r["count"] for r in diff["reasons"]) == diff["entered"] + diff["left"]
    assert all(r["count"] > 0 and r["text"] for r in diff["reasons"])
    assert sum(s["entered"] for s in diff["strata"].values()) == diff["entered"]
    entered = [s for s in diff["samples"] if s["change"] == "entered"]
    left = [s for s in diff["samples"] if s["change"] == "left"]
    assert len(entered) == min(5, diff["entered"])
    assert len(left) == min(5, diff["left"])
    assert {s["sample_id"] for s in entered} <= after - before
    assert {s["sample_id"] for s in left} <= before - after
    moves = [abs(s["utility_after"] - s["utility_before"]) for s in entered]
    assert moves == sorted(moves, reverse=True)
    # The table's change rows carry the same reasons, for every sample.
    changed = read_csv(client, 2, "changed")
    assert len(changed) == diff["entered"] + diff["left"]
    counts: dict[str, int] = {}
    for row in changed:
        counts[row["reason"]] = counts.get(row["reason"], 0) + 1
    assert counts == {r["reason"]: r["count"] for r in diff["reasons"]}
    for s in diff["samples"]:
        row = next(x for x in changed if int(x["sample_id"]) == s["sample_id"])
        assert (row["change"], row["reason"]) == (s["change"], s["reason"])
        assert (row["rescored_planned"] == "true") == s["planned"]
    latest = client.get("/v1/jobs/job/rounds/latest/diff", params={"limit": 5}).json()
    assert latest == diff


@pytest.mark.parametrize(
    ("path", "field"),
    [
        ("/v1/jobs/job/rounds/0/diff", "round"),
        ("/v1/jobs/job/rounds/1/diff?limit=1001", "limit"),
        ("/v1/jobs/job/rounds/9/diff", "round"),
        ("/v1/jobs/job/rounds/0/table?rows=changed", "round"),
        ("/v1/jobs/job/rounds/1/table?format=xlsx", "format"),
        ("/v1/jobs/job/rounds/1/table?rows=some", "rows"),
    ],
)
def test_bad_requests_name_the_field(client: TestClient, path: str, field: str) -> None:
    answer = client.get(path)
    assert answer.status_code in (404, 422), answer.text
    assert answer.json()["field"].endswith(field), answer.json()


def test_the_table_is_the_round_and_parquet_matches_csv(client: TestClient) -> None:
    rows = read_csv(client, 2)
    assert len(rows) == N
    assert list(rows[0]) == [
        "sample_id", "stratum", "stratum_name", "in_coreset", "weight", "importance",
        "estimated", "utility", "loss", "rescore_next", "in_previous", "change", "reason",
        "previous_importance", "previous_utility", "rescored_planned",
    ]  # fmt: skip
    manifest = indices(client, 2)
    member = {int(r["sample_id"]) for r in rows if r["in_coreset"] == "true"}
    assert member == set(manifest["indices"])
    weights = {int(r["sample_id"]): float(r["weight"]) for r in rows if r["weight"]}
    expected = dict(zip(manifest["indices"], manifest["weights"], strict=True))
    assert weights.keys() == expected.keys()
    assert all(weights[i] == pytest.approx(w, rel=1e-6) for i, w in expected.items())
    assert rows[3]["stratum_name"] == "'=code"  # a spreadsheet formula, disarmed
    assert len(read_csv(client, 2, "coreset")) == len(member)

    answer = client.get("/v1/jobs/job/rounds/2/table", params={"format": "parquet"})
    assert answer.headers["content-type"] == "application/vnd.apache.parquet"
    records = pq.read_table(io.BytesIO(answer.content)).to_pylist()
    assert len(records) == N
    for row, record in zip(rows, records, strict=True):
        assert record["sample_id"] == int(row["sample_id"])
        assert record["in_coreset"] == (row["in_coreset"] == "true")
        assert (record["weight"] is None) == (row["weight"] == "")
        assert record["importance"] == pytest.approx(float(row["importance"]), rel=1e-6)
        assert (record["change"], record["reason"] or "") == (row["change"], row["reason"])
        assert record["stratum_name"] in ("web", "=code")
    round0 = read_csv(client, 0)
    assert "change" not in round0[0]
    assert len(round0) == N


def test_parquet_without_pyarrow_is_a_501_naming_the_extra(
    client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "pyarrow", None)
    monkeypatch.setitem(sys.modules, "pyarrow.parquet", None)
    answer = client.get("/v1/jobs/job/rounds/1/table", params={"format": "parquet"})
    assert answer.status_code == 501
    body = answer.json()
    assert (body["error"], body["field"]) == ("missing_extra", "format")
    assert "pip install 'grace-coresets[dashboard]'" in body["detail"]
    assert body["extra"]["package"] == "pyarrow"
    assert client.get("/v1/jobs/job/rounds/1/table").status_code == 200  # CSV needs nothing


def test_the_map_frame_and_the_drill_down_carry_loss_strata_and_estimates(
    client: TestClient,
) -> None:
    projection = decode_frame(client.get("/v1/jobs/job/projection", params={"round": 2}).content)
    rows = {int(r["sample_id"]): r for r in read_csv(client, 2)}
    ids = projection.array("ids", "<i8", 1)
    for name in ("loss", "estimated", "stratum"):
        values = projection.arrays[name]
        assert values.shape == ids.shape, name
    i = int(ids[0])
    assert int(projection.arrays["stratum"][0]) == int(rows[i]["stratum"])
    assert bool(projection.arrays["estimated"][0]) == (rows[i]["estimated"] == "true")
    assert float(projection.arrays["loss"][0]) == pytest.approx(float(rows[i]["loss"]), rel=1e-6)
    sample = client.get(f"/v1/jobs/job/samples/{i}").json()
    assert sample["history"][-1]["estimated"] == (rows[i]["estimated"] == "true")
    assert all(n["estimated"] in (True, False) for n in sample["neighbors"])


def test_rounds_stored_without_estimates_or_loss_stay_readable(
    seeded: Path, tmp_path: Path
) -> None:
    """A round written before it stored `estimated` and `loss` (simulated by removing them)."""
    copy = tmp_path / "old"
    shutil.copytree(seeded, copy)
    for name in ("estimated.npy", "loss.npy"):
        for path in (copy / "store" / "jobs" / "job" / "rounds").glob(f"*/{name}"):
            path.unlink()
    with api_client(copy) as old:
        stats = old.get("/v1/jobs/job/rounds/2/stats").json()
        assert stats["estimates"] is None
        assert set(stats["histograms"]["importance"]["groups"]) == {"coreset", "rest"}
        diff = old.get("/v1/jobs/job/rounds/2/diff").json()
        assert {r["reason"] for r in diff["reasons"]} <= {
            "first_scored", "score_up", "coverage", "noise_guard", "score_down", "displaced",
        }  # fmt: skip
        assert all(s["estimated"] is None for s in diff["samples"])
        rows = list(csv.DictReader(io.StringIO(old.get("/v1/jobs/job/rounds/2/table").text)))
        assert len(rows) == N
        assert "estimated" not in rows[0]
        assert "loss" not in rows[0]
        sample = old.get("/v1/jobs/job/samples/3").json()
        assert {h["estimated"] for h in sample["history"]} == {None}
        frame_ = decode_frame(old.get("/v1/jobs/job/projection").content)
        assert "estimated" not in frame_.arrays
