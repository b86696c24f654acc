"""`grace`: one command, subcommands by role. `main()` only dispatches.

    grace serve     the selection service (uvicorn), settings from GRACE_* or flags
    grace openapi   print (or write) the OpenAPI document of the v1 API

Other roles add subcommands through a `register(subparsers)` function that they name in the
`grace.commands` entry-point group (pyproject.toml): the workers add `score` and `build-dataset`,
the lab adds `demo`. This module names none of them, and a role that is not installed is left
out. Each is imported only to build the parser and must stay cheap to import (torch, Ray and
the like load when their command runs).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

COMMAND_GROUP = "grace.commands"  # entry points naming a `register(subparsers)` function


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not hasattr(args, "func"):
        parser.print_help()
        return 2
    return int(args.func(args))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="grace", description="GRACE dynamic coreset selection for training."
    )
    subparsers = parser.add_subparsers(title="commands", metavar="COMMAND")
    _add_serve(subparsers)
    _add_openapi(subparsers)
    for plugin in sorted(entry_points(group=COMMAND_GROUP), key=lambda e: e.name):
        try:
            register = plugin.load()
        except ImportError:
            continue  # that role is not installed here
        register(subparsers)
    return parser


def _add_serve(subparsers: Any) -> None:
    serve = subparsers.add_parser(
        "serve",
        help="run the selection service",
        description="Run the selection service. Every flag has a GRACE_* environment variable "
        "(flags win). The token is read from GRACE_TOKEN or --token-file only, never a flag, "
        "so that it does not show in the process list.",
    )
    serve.add_argument("--host", help="bind address (GRACE_HOST, default 127.0.0.1)")
    serve.add_argument("--port", type=int, help="port (GRACE_PORT, default 8765)")
    serve.add_argument(
        "--store", help='"" or "local": files in --data-dir; or redis://host:port/db (GRACE_STORE)'
    )
    serve.add_argument("--data-dir", help="local store and index snapshots (GRACE_DATA_DIR)")
    serve.add_argument("--token-file", type=Path, help="file holding the bearer token")
    serve.add_argument(
        "--reads-require-token",
        action="store_true",
        default=None,
        help="require the token for reads too (GRACE_READS_REQUIRE_TOKEN)",
    )
    serve.add_argument("--max-body-bytes", type=int, help="largest body (GRACE_MAX_BODY_BYTES)")
    serve.add_argument("--index", choices=["hnsw", "brute"], help="k-NN index (GRACE_INDEX)")
    serve.add_argument(
        "--max-job-bytes", type=int, help="most memory one job may need (GRACE_MAX_JOB_BYTES)"
    )
    serve.add_argument(
        "--round-nice", type=int, help="lower CPU priority of rounds, 0..19 (GRACE_ROUND_NICE)"
    )
    serve.add_argument(
        "--log-level",
        choices=["critical", "error", "warning", "info", "debug"],
        help="GRACE_LOG_LEVEL",
    )
    serve.set_defaults(func=run_serve)


def _add_openapi(subparsers: Any) -> None:
    openapi = subparsers.add_parser(
        "openapi", help="print the OpenAPI document (proto/openapi.json is this output)"
    )
    openapi.add_argument("--output", type=Path, help="write to this file instead of stdout")
    openapi.set_defaults(func=run_openapi)


def run_serve(args: argparse.Namespace) -> int:
    from pydantic import ValidationError

    from grace_selection.settings import InsecureBindError, ServiceSettings

    overrides = {
        name: value
        for name, value in (
            ("host", args.host),
            ("port", args.port),
            ("store", args.store),
            ("data_dir", args.data_dir),
            ("reads_require_token", args.reads_require_token),
            ("max_body_bytes", args.max_body_bytes),
            ("index", args.index),
            ("max_job_bytes", args.max_job_bytes),
            ("round_nice", args.round_nice),
            ("log_level", args.log_level),
        )
        if value is not None
    }
    if args.token_file is not None:
        try:
            overrides["token"] = args.token_file.read_text().strip()
        except OSError as exc:
            print(f"grace serve: cannot read --token-file: {exc}", file=sys.stderr)
            return 2
    try:
        settings = ServiceSettings(**overrides)
        settings.check_bind_safety()
    except (ValidationError, InsecureBindError) as exc:
        print(f"grace serve: {exc}", file=sys.stderr)
        return 2
    return serve(settings)


def serve(settings: Any) -> int:
    """Run uvicorn in this process until it is told to stop."""
    import uvicorn

    from grace_selection.api.app import create_app

    level = settings.log_level.upper()
    logging.basicConfig(
        level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", force=True
    )
    app = create_app(settings)
    store = "redis" if settings.uses_redis else f"local ({settings.data_dir})"
    logging.getLogger("grace_selection").info(
        "serving on http://%s:%d, store %s, index %s, token %s",
        settings.host,
        settings.port,
        store,
        settings.index,
        "required for writes" if settings.token is not None else "off (loopback only)",
    )
    uvicorn.run(
        app,
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level,
        access_log=settings.log_level == "debug",
        timeout_graceful_shutdown=10,
    )
    return 0


def run_openapi(args: argparse.Namespace) -> int:
    text = export_openapi()
    if args.output is None:
        sys.stdout.write(text)
    else:
        args.output.write_text(text)
    return 0


def export_openapi() -> str:
    """The OpenAPI document as committed in proto/openapi.json (stable key order)."""
    from grace_selection.api.app import create_app
    from grace_selection.settings import ServiceSettings

    # Defaults, not the environment: the document must not depend on where it is exported.
    app = create_app(ServiceSettings.model_construct())
    return json.dumps(app.openapi(), indent=2, sort_keys=True) + "\n"


if __name__ == "__main__":
    raise SystemExit(main())
