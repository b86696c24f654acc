"""The dashboard routes: the page, its files, their headers; nothing comes from elsewhere."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from grace_selection.dashboard.assets import load_assets
from grace_selection.dashboard.router import create_dashboard_router

STATIC = Path(__file__).parents[2] / "services/selection/grace_selection/dashboard/static"


def client(**options: object) -> TestClient:
    app = FastAPI()
    app.include_router(create_dashboard_router(**options))  # type: ignore[arg-type]
    return TestClient(app)


def page_config(html: str) -> dict[str, object]:
    match = re.search(r'<script type="application/json" id="grace-config">(.*?)</script>', html)
    assert match is not None, "the page carries its config in a JSON script tag"
    config: dict[str, object] = json.loads(match.group(1))
    return config


def test_page_is_served_with_its_config_and_a_strict_policy() -> None:
    response = client(poll_seconds=1.5, reads_require_token=True, map_max_points=1234).get(
        "/dashboard"
    )
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    policy = response.headers["content-security-policy"]
    assert "default-src 'self'" in policy
    assert "connect-src 'self'" in policy
    assert response.headers["x-content-type-options"] == "nosniff"
    assert page_config(response.text) == {
        "apiPrefix": "/v1",
        "pollMs": 1500,
        "readsRequireToken": True,
        "mapMaxPoints": 1234,
    }


def test_every_file_the_page_names_is_served() -> None:
    http = client()
    html = http.get("/dashboard").text
    urls = re.findall(r'(?:src|href)="(/dashboard/static/[^"?]+)', html)
    assert len(urls) >= 4
    for url in urls:
        response = http.get(url)
        assert response.status_code == 200, url
        assert response.content
    # Every module the app imports, transitively, resolves to a served file too.
    seen, queue = set(), ["dashboard.js"]
    while queue:
        name = queue.pop()
        if name in seen:
            continue
        seen.add(name)
        response = http.get(f"/dashboard/static/{name}")
        assert response.status_code == 200, name
        queue.extend(re.findall(r'from "\./([^"]+)"', response.text))
    assert {"map.js", "diff.js", "round_view.js", "map_colours.js", "export.js"} <= seen


def test_assets_revalidate_with_etags() -> None:
    http = client()
    first = http.get("/dashboard/static/dashboard.js")
    assert first.headers["content-type"].startswith("text/javascript")
    etag = first.headers["etag"]
    again = http.get("/dashboard/static/dashboard.js", headers={"If-None-Match": etag})
    assert again.status_code == 304
    assert again.content == b""


@pytest.mark.parametrize(
    "name",
    ["nope.js", "../router.py", "..%2Frouter.py", "%2e%2e/assets.py", "vendor/../../router.py"],
)
def test_unknown_or_escaping_asset_names_are_404_with_a_reason(name: str) -> None:
    response = client().get(f"/dashboard/static/{name}")
    assert response.status_code == 404
    body = response.json()
    if "error" in body:  # our route answered (some paths are normalised away before it)
        assert body["error"] == "not_found"
        assert body["field"] == "name"


def test_trailing_slash_redirects_and_options_are_checked() -> None:
    response = client().get("/dashboard/", follow_redirects=False)
    assert response.status_code == 308
    assert response.headers["location"] == "/dashboard"
    with pytest.raises(ValueError, match="poll_seconds"):
        create_dashboard_router(poll_seconds=0)
    with pytest.raises(ValueError, match="map_max_points"):
        create_dashboard_router(map_max_points=0)
    with pytest.raises(ValueError, match="path"):
        create_dashboard_router(path="dashboard/")


def test_config_values_cannot_break_out_of_the_script_tag() -> None:
    html = load_assets().render_page(
        title="<script>x</script>", static_url="/s", config={"apiPrefix": "</script><b>"}
    )
    assert "<script>x</script>" not in html
    assert "</script><b>" not in html
    assert page_config(html)["apiPrefix"] == "</script><b>"


def test_vendored_files_match_their_recorded_sums() -> None:
    text = (STATIC / "VENDORED.md").read_text()
    recorded = {path: digest for digest, path in re.findall(r"^([0-9a-f]{64})  (\S+)$", text, re.M)}
    assert recorded, "VENDORED.md lists sha256 sums"
    for path, digest in recorded.items():
        assert hashlib.sha256((STATIC / path).read_bytes()).hexdigest() == digest, path
    vendored = {p.relative_to(STATIC).as_posix() for p in (STATIC / "vendor").iterdir()}
    assert vendored == set(recorded), "every vendored file is recorded, and only those"


def test_nothing_is_loaded_from_another_origin() -> None:
    # The policy blocks it at run time; this catches it before a browser is involved.
    template = Path(STATIC.parent / "templates/dashboard.html").read_text()
    external = re.compile(r"""(?:src|href)\s*=\s*["'](?:https?:)?//""", re.I)
    assert not external.search(template)
    for path in STATIC.rglob("*"):
        if path.suffix not in {".js", ".css"}:
            continue
        text = path.read_text()
        assert not external.search(text), path
        assert not re.search(r"""(?:import|fetch)\s*\(?\s*["'](?:https?:)?//""", text), path
        assert not re.search(r"""@import\s+(?:url\()?["']?(?:https?:)?//""", text), path
