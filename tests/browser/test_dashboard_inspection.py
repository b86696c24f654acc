"""Score inspection in headless Chromium: each panel checked by its pixels and its numbers.

A real service (its own process) holds a 20k-sample job whose rounds re-score their plans with
much smaller importance, so many estimates fall below 0, and whose strata are their own
clusters. The page is opened once; each test reads what a person would see: the colours drawn
on a canvas or an element's screenshot, the text, and the files the export buttons save.
"""

from __future__ import annotations

import base64
import csv
import io
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pyarrow.parquet as pq
import pytest
from PIL import Image
from selenium.webdriver.common.by import By
from selenium.webdriver.support.select import Select

from grace_proto.frames import decode_frame
from tests.browser.conftest import console_errors, save_screenshot, wait_for
from tests.browser.seed import SeededJob, ServiceProcess, seed_inspection_job
from tests.conftest import free_port

pytestmark = pytest.mark.timeout(600)

N, DIM, ROUNDS = 20_000, 16, 3
JOB = "inspect"
RGB = npt.NDArray[np.int16]

# The canvas composited over white (what a person sees), as a PNG data URL.
CANVAS_PNG_JS = """
const canvas = arguments[0];
const copy = document.createElement("canvas");
copy.width = canvas.width;
copy.height = canvas.height;
const ctx = copy.getContext("2d");
ctx.fillStyle = "#fff";
ctx.fillRect(0, 0, copy.width, copy.height);
ctx.drawImage(canvas, 0, 0);
return copy.toDataURL("image/png");
"""

# Pixel classes by colour (r, g, b as int16 arrays): the page's fills blended over white.
CLASSES: dict[str, Callable[[RGB, RGB, RGB], npt.NDArray[np.bool_]]] = {
    "coreset": lambda r, g, b: (r > 180) & (g > 60) & (g < 150) & (b < 110),
    "rest": lambda r, g, b: (b > r + 10) & (b > 150) & (abs(r - g) < 20) & (r < 232),
    "estimated": lambda r, g, b: (r > 110) & (g < 130) & (b > 130) & (b > g + 40),
    "measured": lambda r, g, b: (b > 170) & (r < 110) & (g < 150),
    "negative zone": lambda r, g, b: (r > 240) & (g > 212) & (g < 236) & (abs(g - b) < 6),
    "negative line": lambda r, g, b: (r > 170) & (g < 90) & (b < 90),
}
STRATA_RGB = np.array([[78, 121, 167], [242, 142, 43], [89, 161, 79]], dtype=np.float64)


def decode_png(data_url: str) -> RGB:
    raw = base64.b64decode(data_url.split(",", 1)[1])
    return np.asarray(Image.open(io.BytesIO(raw)).convert("RGB"), dtype=np.int16)


def canvas_pixels(page: Any, selector: str) -> RGB:
    element = page.find_element(By.CSS_SELECTOR, selector)
    return decode_png(page.execute_script(CANVAS_PNG_JS, element))


def element_pixels(page: Any, element_id: str) -> RGB:
    element = page.find_element(By.ID, element_id)
    page.execute_script("arguments[0].scrollIntoView({block: 'center'})", element)
    raw = element.screenshot_as_png
    return np.asarray(Image.open(io.BytesIO(raw)).convert("RGB"), dtype=np.int16)


def count(pixels: RGB, name: str) -> int:
    r, g, b = pixels[..., 0], pixels[..., 1], pixels[..., 2]
    return int(np.count_nonzero(CLASSES[name](r, g, b)))


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ServiceProcess, SeededJob]]:
    folder = tmp_path_factory.mktemp("grace-inspection")
    process = ServiceProcess(free_port(), folder)
    try:
        yield process, seed_inspection_job(process, JOB, N, DIM, ROUNDS)
    finally:
        process.close()


@pytest.fixture(scope="module")
def downloads(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("downloads")


@pytest.fixture(scope="module")
def page(browser: Any, service: tuple[ServiceProcess, SeededJob], downloads: Path) -> Any:
    process, _ = service
    console_errors(browser)
    browser.execute_cdp_cmd(
        "Browser.setDownloadBehavior", {"behavior": "allow", "downloadPath": str(downloads)}
    )
    browser.get(f"{process.url}/dashboard#job={JOB}")
    wait_for(
        lambda: browser.execute_script("return window.graceDashboard.map.count") == N,
        90,
        "the map of the inspection job",
    )
    wait_for(lambda: browser.find_elements(By.CSS_SELECTOR, "#diff-table tbody tr"), 30, "diff")
    return browser


def api(service: tuple[ServiceProcess, SeededJob], path: str) -> Any:
    answer = service[0].http.get(f"/v1/jobs/{JOB}{path}")
    assert answer.status_code == 200, answer.text
    return answer


def test_histograms_split_the_coreset_from_the_rest_and_mark_impossible_estimates(
    page: Any, service: tuple[ServiceProcess, SeededJob]
) -> None:
    for chart in ("hist-loss", "hist-importance", "hist-combined"):
        pixels = canvas_pixels(page, f"#{chart} canvas")
        assert count(pixels, "coreset") > 150, f"{chart}: no coreset bars"
        assert count(pixels, "rest") > 150, f"{chart}: no bars for the rest"
        keys = page.find_element(By.ID, chart.replace("hist", "keys")).text
        assert f"coreset {N // 10:,}" in keys
        assert f"rest {N - N // 10:,}" in keys
    estimates = canvas_pixels(page, "#hist-estimates canvas")
    assert count(estimates, "estimated") > 150
    assert count(estimates, "measured") > 50
    assert count(estimates, "negative zone") > 500, "the part below 0 is not shaded"
    assert count(estimates, "negative line") > 40, "no zero line"
    assert count(canvas_pixels(page, "#hist-importance canvas"), "negative zone") > 500
    stats = api(service, "/rounds/2/stats").json()
    negative = stats["estimates"]["negative_estimates"]
    assert negative > 0
    warning = page.find_element(By.ID, "negative-estimates")
    assert f"{negative:,} estimates below 0" in warning.text
    keys = page.find_element(By.ID, "keys-estimates").text
    assert f"measured {stats['estimates']['measured']:,}" in keys
    save_screenshot(page, "dashboard-inspection.png")
    assert console_errors(page) == []


def test_each_stratum_has_its_distribution_over_rounds(page: Any) -> None:
    def stratum_pixels() -> list[int]:
        pixels = canvas_pixels(page, "#chart-strata canvas").astype(np.float64)
        distance = np.linalg.norm(pixels[..., None, :] - STRATA_RGB, axis=-1)
        return [int(np.count_nonzero(distance[..., s] < 30)) for s in range(3)]

    keys = page.find_elements(By.CSS_SELECTOR, "#keys-strata .key")
    assert [k.text for k in keys] == ["web", "code", "books"]
    assert min(stratum_pixels()) > 40, stratum_pixels()
    Select(page.find_element(By.ID, "strata-score")).select_by_value("loss")
    # Loss levels differ by stratum (1, 2, 3) in every round: three lines apart.
    wait_for(lambda: min(stratum_pixels()) > 100, 10, "the loss medians of every stratum")
    Select(page.find_element(By.ID, "strata-score")).select_by_value("importance")
    assert console_errors(page) == []


def test_the_round_diff_says_who_entered_and_left_and_why(
    page: Any, service: tuple[ServiceProcess, SeededJob]
) -> None:
    diff = api(service, "/rounds/2/diff?limit=10").json()
    summary = page.find_element(By.ID, "diff-summary").text
    assert summary == (
        f"{diff['entered']:,} entered · {diff['left']:,} left · {diff['stayed']:,} stayed"
    )
    assert page.find_element(By.ID, "diff-title").text == "Round 2 against round 1"
    rows = page.find_elements(By.CSS_SELECTOR, "#diff-reasons tbody tr")
    assert [r.get_attribute("data-reason") for r in rows] == [r["reason"] for r in diff["reasons"]]
    for row, reason in zip(rows, diff["reasons"], strict=True):
        assert reason["text"] in row.text
        assert f"{reason['count']:,}" in row.text
    bars = element_pixels(page, "diff-reasons")
    assert count(bars, "coreset") > 200, "no bars for the samples that entered"
    assert count(bars, "rest") > 200, "no bars for the samples that left"
    listed = page.find_elements(By.CSS_SELECTOR, "#diff-table tbody tr")
    assert [int(r.get_attribute("data-sample")) for r in listed] == [
        s["sample_id"] for s in diff["samples"]
    ]
    first = diff["samples"][0]
    listed[0].find_element(By.TAG_NAME, "button").click()
    wait_for(
        lambda: page.find_element(By.ID, "drill-title").text == f"sample {first['sample_id']}",
        15,
        "the drill-down of the first change",
    )
    assert console_errors(page) == []


def test_the_map_is_coloured_by_stratum_loss_membership_and_estimates(
    page: Any, service: tuple[ServiceProcess, SeededJob]
) -> None:
    frame = decode_frame(api(service, "/projection?round=2&max_points=200000").content)
    ids = frame.array("ids", "<i8", 1)
    canvas = page.find_element(By.ID, "map")
    page.execute_script("arguments[0].scrollIntoView({block: 'center'})", canvas)
    page.find_element(By.ID, "map-reset").click()
    rng = np.random.default_rng(0)

    def colours_at(positions: npt.NDArray[np.int64], mode: str) -> tuple[RGB, npt.NDArray[Any]]:
        """The drawn colour at each point's position in mode `mode`, for the points on the
        canvas (reset view fits the 0.5..99.5th percentile box), and which those are."""
        Select(page.find_element(By.ID, "map-colour")).select_by_value(mode)
        time.sleep(0.4)  # two animation frames
        where = page.execute_script(
            "const m = window.graceDashboard.map; const dpr = window.devicePixelRatio || 1;"
            "return arguments[0].map((i) => { const p = m.screenPositionOf(i);"
            " return [Math.round(p.x * dpr), Math.round(p.y * dpr)]; });",
            positions.tolist(),
        )
        pixels = canvas_pixels(page, "#map")
        h, w = pixels.shape[:2]
        xy = np.array(where)
        inside = (xy[:, 0] >= 0) & (xy[:, 0] < w) & (xy[:, 1] >= 0) & (xy[:, 1] < h)
        assert inside.mean() > 0.9
        colours: RGB = pixels[xy[inside, 1], xy[inside, 0]]
        return colours, positions[inside]

    # Stratum: a sampled point's pixel is nearest its own stratum's colour.
    sample = rng.choice(ids.size, 400, replace=False)
    got, shown = colours_at(sample, "stratum")
    distance = np.linalg.norm(got.astype(np.float64)[:, None, :] - STRATA_RGB, axis=-1)
    nearest = np.argmin(distance, axis=1)
    strata = frame.arrays["stratum"][shown]
    assert np.mean(nearest == strata) > 0.8
    legend = page.find_element(By.ID, "map-legend").text
    assert all(name in legend for name in ("web", "code", "books"))
    # Loss: the highest losses are drawn on top, at the bright end of the ramp.
    top_loss = np.argsort(frame.arrays["loss"])[-200:]
    bright, _ = colours_at(top_loss, "loss")
    assert np.mean(bright[:, 1] > 170) > 0.8  # viridis' top is green-yellow
    assert "loss" in page.find_element(By.ID, "map-legend").text
    # Membership: coreset members, drawn on top, in orange.
    members = np.flatnonzero(frame.arrays["in_coreset"] == 1)[:300]
    orange, _ = colours_at(members, "membership")
    assert np.mean(CLASSES["coreset"](orange[:, 0], orange[:, 1], orange[:, 2])) > 0.8
    # Estimates below 0, drawn on top, in red.
    negative = np.flatnonzero((frame.arrays["estimated"] == 1) & (frame.arrays["importance"] < 0))
    red, _ = colours_at(negative[:300], "estimated")
    assert np.mean(CLASSES["negative line"](red[:, 0], red[:, 1], red[:, 2])) > 0.8
    assert "estimated below 0" in page.find_element(By.ID, "map-legend").text
    Select(page.find_element(By.ID, "map-colour")).select_by_value("importance")
    assert console_errors(page) == []


def wait_for_file(path: Path) -> bytes:
    def ready() -> bool:
        partial = list(path.parent.glob("*.crdownload"))
        return path.is_file() and not partial and path.stat().st_size > 0

    wait_for(ready, 30, f"the download {path.name}")
    return path.read_bytes()


def test_the_export_buttons_save_the_rounds_table(
    page: Any, service: tuple[ServiceProcess, SeededJob], downloads: Path
) -> None:
    page.find_element(By.ID, "export-csv").click()
    saved = wait_for_file(downloads / f"{JOB}-round-2.csv")
    assert saved == api(service, "/rounds/2/table").content
    rows = list(csv.DictReader(io.StringIO(saved.decode())))
    assert len(rows) == N
    assert sum(r["in_coreset"] == "true" for r in rows) == N // 10

    page.find_element(By.ID, "export-parquet").click()
    parquet = wait_for_file(downloads / f"{JOB}-round-2.parquet")
    table = pq.read_table(io.BytesIO(parquet))
    expected = pq.read_table(io.BytesIO(api(service, "/rounds/2/table?format=parquet").content))
    assert table.equals(expected)

    page.find_element(By.ID, "export-changes").click()
    changes = wait_for_file(downloads / f"{JOB}-round-2-changed.csv")
    diff = api(service, "/rounds/2/diff?limit=0").json()
    assert len(changes.decode().splitlines()) == 1 + diff["entered"] + diff["left"]
    assert console_errors(page) == []


def test_a_negative_estimate_is_marked_in_the_drill_down(
    page: Any, service: tuple[ServiceProcess, SeededJob]
) -> None:
    rows = csv.DictReader(io.StringIO(api(service, "/rounds/2/table").text))
    target = next(
        int(r["sample_id"])
        for r in rows
        if r["estimated"] == "true" and float(r["importance"]) < -0.1
    )
    box = page.find_element(By.ID, "sample-input")
    box.clear()
    box.send_keys(f"{target}\n")
    wait_for(lambda: page.find_element(By.ID, "drill-title").text == f"sample {target}", 15, "it")
    facts = page.find_element(By.ID, "drill-facts").text
    assert "importance in round 2" in facts
    assert "(estimated, below 0" in facts
    assert count(canvas_pixels(page, "#chart-sample canvas"), "estimated") > 20
    assert console_errors(page) == []


def test_an_empty_job_shows_its_first_steps_until_its_first_round(
    page: Any, service: tuple[ServiceProcess, SeededJob]
) -> None:
    process, _ = service
    n = 200
    process._ok(process.http.post("/v1/jobs", json={"job_id": "fresh", "n_samples": n, "dim": 4}))
    page.execute_script("location.hash = 'job=fresh'")
    wait_for(lambda: page.find_element(By.ID, "job-hint").is_displayed(), 15, "the first steps")
    assert not page.find_element(By.ID, "job-panels").is_displayed()
    step = page.find_element(By.CSS_SELECTOR, "#hint-steps li.next")
    assert step.text.startswith(f"Score the warm-up: embeddings 0 / {n}, scores 0 / {n}")
    assert f"grace score --url {process.url} --job fresh" in step.text
    hint = element_pixels(page, "job-hint")
    accent = (abs(hint[..., 0] - 31) < 12) & (abs(hint[..., 1] - 95) < 12) & (hint[..., 2] > 175)
    assert np.count_nonzero(accent) > 100, "the hint's accent bar is not drawn"
    save_screenshot(page, "dashboard-first-steps.png")

    rng = np.random.default_rng(3)
    ids = np.arange(n, dtype=np.int64)
    vectors = rng.normal(size=(n, 4)).astype(np.float32)
    process.post_frame(
        "/v1/jobs/fresh/embeddings", {"batch_id": "e"}, {"ids": ids, "embeddings": vectors}
    )
    process.post_frame(
        "/v1/jobs/fresh/scores",
        {"batch_id": "s", "source": "worker", "round": 0},
        {"ids": ids, "importance": rng.random(n).astype(np.float32)},
    )
    wait_for(
        lambda: "Publish round 0" in page.find_element(By.CSS_SELECTOR, "#hint-steps li.next").text,
        15,
        "the next step to be the first round",
    )
    assert "curl -X POST" in page.find_element(By.CSS_SELECTOR, "#hint-steps li.next").text
    process._ok(process.http.post("/v1/jobs/fresh/rounds", json={}))
    wait_for(lambda: page.find_element(By.ID, "job-panels").is_displayed(), 30, "the panels")
    assert not page.find_element(By.ID, "job-hint").is_displayed()
    wait_for(
        lambda: count(canvas_pixels(page, "#hist-importance canvas"), "coreset") > 50, 15, "bars"
    )
    assert console_errors(page) == []


def test_a_service_without_jobs_says_how_to_create_one(browser: Any, tmp_path: Path) -> None:
    process = ServiceProcess(free_port(), tmp_path)
    try:
        console_errors(browser)
        browser.get(f"{process.url}/dashboard")
        cell = wait_for(
            lambda: browser.find_elements(By.CSS_SELECTOR, "#jobs-table tr.empty code"),
            15,
            "the first step of an empty service",
        )[0]
        assert cell.text.startswith(f"curl -X POST {process.url}/v1/jobs")
        assert '"job_id": "my-job"' in cell.text
        assert not browser.find_element(By.ID, "job").is_displayed()
        assert console_errors(browser) == []
    finally:
        process.close()
