"""The score-inspection dashboard: an HTML page, its static assets, and the 2D embedding map.

`grace_selection.dashboard.router.create_dashboard_router` is what the service mounts; the
projection math lives in `projection` and imports numpy only.
"""
