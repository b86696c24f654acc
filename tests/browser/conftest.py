"""Headless Chromium for the dashboard tests: Debian's chromium driven by selenium.

One browser serves the whole session (starting one costs about a second here); every test
opens its own page. Chromium runs with the flags this machine needs: no sandbox (we are root),
no network beyond loopback, a fresh profile in a temp folder.
"""

from __future__ import annotations

import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
WINDOW = (1400, 1800)


def _require(path: str, package: str) -> str:
    found = shutil.which(Path(path).name) or (path if Path(path).exists() else None)
    if found is None:
        pytest.fail(
            f"{path} is missing; run `make install` (scripts/system-deps.sh installs it) or "
            f"`apt-get install -y --no-install-recommends {package}`"
        )
    return found


@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    """A headless Chromium WebDriver with the browser console captured."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    profile = tempfile.mkdtemp(prefix="grace-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = _require(CHROMIUM, "chromium")
    for flag in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        # With no GPU, WebGL runs on SwiftShader; newer Chromium wants this to keep doing so.
        "--enable-unsafe-swiftshader",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--window-size={WINDOW[0]},{WINDOW[1]}",
        f"--user-data-dir={profile}",
    ):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    # An explicit driver path keeps Selenium Manager from trying to download one.
    service = Service(_require(CHROMEDRIVER, "chromium-driver"))
    driver = webdriver.Chrome(service=service, options=options)
    driver.set_script_timeout(60)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def console_errors(driver: Any) -> list[dict[str, Any]]:
    """Browser console entries at level SEVERE since the last call (errors, failed loads)."""
    return [entry for entry in driver.get_log("browser") if entry["level"] == "SEVERE"]


def wait_for(
    condition: Callable[[], Any], timeout: float = 30.0, what: str = "the condition"
) -> Any:
    """Poll `condition` until it returns something truthy; fail naming `what` on timeout."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = condition()
        if last:
            return last
        time.sleep(0.2)
    pytest.fail(f"timed out after {timeout:.0f} s waiting for {what} (last value {last!r})")


def save_screenshot(driver: Any, name: str) -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / name
    driver.save_screenshot(str(path))
    return path


class ThreadedServer:
    """A uvicorn server for an ASGI app on a free loopback port, in a thread (real HTTP)."""

    def __init__(self, app: Any, port: int) -> None:
        import uvicorn

        config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning")
        self.server = uvicorn.Server(config)
        self.url = f"http://127.0.0.1:{port}"
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> ThreadedServer:
        self.thread.start()
        wait_for(lambda: self.server.started, 20, "uvicorn to start")
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)
