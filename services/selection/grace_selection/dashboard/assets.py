"""The dashboard's files: the page template and its static assets, loaded once from the package.

Assets are served from an allow-list built here (never a path taken from the request), each
with an ETag, so the browser revalidates cheaply and nothing outside `static/` can be read.
"""

from __future__ import annotations

import hashlib
import html
import json
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import resources
from string import Template
from typing import Any

_MEDIA_TYPES = {
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".md": "text/markdown; charset=utf-8",
    ".LICENSE": "text/plain; charset=utf-8",
}

# The page itself loads nothing but its own files; this header makes the browser enforce it,
# so a stray CDN reference fails loudly in the browser tests instead of working online only.
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data: blob:; connect-src 'self'; object-src 'none'; base-uri 'none'; "
    "frame-ancestors 'none'; form-action 'none'"
)


@dataclass(frozen=True, slots=True)
class Asset:
    body: bytes
    media_type: str
    etag: str


@dataclass(frozen=True, slots=True)
class DashboardAssets:
    """The template text and every servable static file, keyed by its path under static/."""

    template: str
    files: Mapping[str, Asset]

    def render_page(self, *, title: str, static_url: str, config: Mapping[str, Any]) -> str:
        """The page's HTML; `config` reaches the script as JSON in a non-executable tag."""
        # "<" is escaped so that no value can close the <script type="application/json"> tag.
        config_json = json.dumps(dict(config), separators=(",", ":")).replace("<", "\\u003c")
        return Template(self.template).substitute(
            title=html.escape(title),
            static=html.escape(static_url),
            config_json=config_json,
            v_app=self._version("dashboard.js"),
            v_css=self._version("dashboard.css"),
            v_uplot_js=self._version("vendor/uPlot.iife.min.js"),
            v_uplot_css=self._version("vendor/uPlot.min.css"),
        )

    def _version(self, name: str) -> str:
        # The ETag doubles as a cache-busting query string for the files the page names.
        return self.files[name].etag.strip('"')[:12]


def load_assets() -> DashboardAssets:
    """Read the template and every file under static/ from the installed package."""
    package = resources.files("grace_selection.dashboard")
    template = package.joinpath("templates", "dashboard.html").read_text(encoding="utf-8")
    files: dict[str, Asset] = {}
    _collect(package.joinpath("static"), "", files)
    for required in ("dashboard.js", "dashboard.css", "vendor/uPlot.iife.min.js"):
        if required not in files:
            raise RuntimeError(
                f"dashboard asset static/{required} is missing from the installed package; "
                "reinstall grace-coresets (pip install -e '.[dashboard]')"
            )
    return DashboardAssets(template=template, files=files)


def _collect(folder: Any, prefix: str, into: dict[str, Asset]) -> None:
    for entry in sorted(folder.iterdir(), key=lambda e: e.name):
        name = f"{prefix}{entry.name}"
        if entry.is_dir():
            _collect(entry, f"{name}/", into)
            continue
        suffix = next((s for s in _MEDIA_TYPES if entry.name.endswith(s)), None)
        if suffix is None:
            continue  # only the kinds of file the page uses are served
        body = entry.read_bytes()
        etag = '"' + hashlib.sha256(body).hexdigest()[:32] + '"'
        into[name] = Asset(body=body, media_type=_MEDIA_TYPES[suffix], etag=etag)
