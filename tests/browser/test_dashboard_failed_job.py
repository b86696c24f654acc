"""A job that failed to load is listed on the dashboard, with why and how to remove it (issue 14).

A real `grace serve`, restarted after one job's stored spec was made unreadable; the page is
opened in headless Chromium and read as a person would: the row, its status and its message.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
from selenium.webdriver.common.by import By

from tests.browser.conftest import console_errors, save_screenshot, wait_for
from tests.integration.service_process import start_service


def test_a_job_that_failed_to_load_is_listed_with_its_error(browser: Any, tmp_path: Path) -> None:
    data = tmp_path / "data"
    with start_service(data, "") as service, httpx.Client(base_url=service.url) as client:
        for job in ("fine", "broken"):
            spec = {"job_id": job, "n_samples": 20, "dim": 4}
            assert client.post("/v1/jobs", json=spec).status_code == 201
    spec_file = data / "store" / "jobs" / "broken" / "spec.json"
    spec = json.loads(spec_file.read_bytes())
    spec["request"]["dim"] = -1
    spec_file.write_text(json.dumps(spec))
    with start_service(data, "") as service:
        console_errors(browser)
        browser.get(f"{service.url}/dashboard")
        row = wait_for(
            lambda: browser.find_elements(By.CSS_SELECTOR, "tr.load-failed[data-job='broken']"),
            30,
            "the failed job's row",
        )[0]
        assert "failed to load" in row.text
        assert "ValidationError" in row.text
        assert "DELETE /v1/jobs/broken" in row.text
        status = row.find_element(By.CSS_SELECTOR, ".status.failed")
        assert status.value_of_css_property("color") == "rgba(138, 28, 28, 1)"  # the red
        assert browser.find_elements(By.CSS_SELECTOR, "tr[data-job='fine'] button")  # still there
        save_screenshot(browser, "dashboard-failed-job.png")
        assert console_errors(browser) == []
