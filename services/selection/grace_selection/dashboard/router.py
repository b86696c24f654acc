"""The routes that serve the dashboard page and its static files.

The page holds no data: it is a shell that reads the inspection endpoints of the API with the
same bearer token as any other client (see docs/dashboard.md), so it needs no auth of its own
and cannot widen what a reader may see.
"""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse

from grace_proto.models import ErrorResponse
from grace_selection.dashboard.assets import CONTENT_SECURITY_POLICY, load_assets

_SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}


def create_dashboard_router(
    *,
    api_prefix: str = "/v1",
    path: str = "/dashboard",
    poll_seconds: float = 3.0,
    reads_require_token: bool = False,
    map_max_points: int = 200_000,
    title: str = "GRACE coresets",
) -> APIRouter:
    """Routes for `GET {path}` (the page) and `GET {path}/static/{name}` (its files).

    api_prefix: where the page finds the v1 API on the same origin.
    poll_seconds: how often the page asks for updates while a job runs.
    reads_require_token: show the token box before the first request instead of after a 401.
    map_max_points: the `max_points` the page asks the projection endpoint for.
    """
    if poll_seconds <= 0:
        raise ValueError(f"poll_seconds must be > 0, got {poll_seconds}")
    if map_max_points < 1:
        raise ValueError(f"map_max_points must be >= 1, got {map_max_points}")
    if not path.startswith("/") or path.endswith("/"):
        raise ValueError(f"path must start with '/' and not end with one, got {path!r}")
    assets = load_assets()
    static_url = f"{path}/static"
    page = assets.render_page(
        title=title,
        static_url=static_url,
        config={
            "apiPrefix": api_prefix.rstrip("/"),
            "pollMs": round(poll_seconds * 1000),
            "readsRequireToken": reads_require_token,
            "mapMaxPoints": map_max_points,
        },
    )
    router = APIRouter()

    @router.get(path, include_in_schema=False)
    def get_dashboard_page() -> HTMLResponse:
        headers = {**_SECURITY_HEADERS, "Cache-Control": "no-cache"}
        return HTMLResponse(page, headers=headers)

    @router.get(f"{path}/", include_in_schema=False)
    def redirect_to_dashboard_page() -> RedirectResponse:
        return RedirectResponse(path, status_code=308)

    @router.get(f"{static_url}/{{name:path}}", include_in_schema=False)
    def get_dashboard_asset(name: str, request: Request) -> Response:
        asset = assets.files.get(name)
        if asset is None:
            error = ErrorResponse(
                error="not_found",
                detail=f"no dashboard asset {name!r}; the page only loads its own files",
                field="name",
            )
            return JSONResponse(error.model_dump(exclude_none=True), status_code=404)
        headers = {
            **_SECURITY_HEADERS,
            "ETag": asset.etag,
            # Revalidate every time: ETags make that a 304 with no body.
            "Cache-Control": "no-cache",
        }
        if request.headers.get("if-none-match") == asset.etag:
            return Response(status_code=304, headers=headers)
        return Response(content=asset.body, media_type=asset.media_type, headers=headers)

    return router
