"""`grace`: one command, subcommands by role. `main()` only dispatches.

    grace serve     the selection service (uvicorn), settings from GRACE_* or flags
    grace openapi   print (or write) the OpenAPI document of the v1 API

Other roles add subcommands through a `register(subparsers)` function that they name in the
`grace.commands` entry-point group (pyproject.toml): the workers add `score` and `build-dataset`,
the lab adds `demo`. This module names none of them, and a role that is not installed is left
out. Each is imported only to build the parser and must stay cheap to import (torch, Ray and
the like load when their command runs).

Every subcommand runs through `grace_selection.console.run_command`: a mistake the user can
fix is one line on stderr and exit status 2 (`--debug` adds the traceback), a bug keeps its
traceback. A subcommand may name the extra it needs (`set_defaults(extra="lab")`), which the
line for a missing module then names. `grace --version` names the installed version; `--help`
shows defaults and an example.
"""

from __future__ import annotations

import argparse
import errno
import json
import logging
import socket
import sys
import tempfile
from collections.abc import Sequence
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

from grace_proto.usage import UsageError
from grace_selection.console import (
    ArgumentParser,
    HelpFormatter,
    example,
    run_command,
    version_line,
)

COMMAND_GROUP = "grace.commands"  # entry points naming a `register(subparsers)` function


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not hasattr(args, "func"):
        parser.print_help()
        return 2
    return run_command(args.func, args, command=f"grace {args.command}")


def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(
        prog="grace",
        description="GRACE dynamic coreset selection for training.",
        formatter_class=HelpFormatter,
        epilog=example("grace serve", "grace COMMAND --help"),
    )
    parser.add_argument("--version", action="version", version=version_line())
    parser.add_argument(
        "--debug", action="store_true", help="show the traceback of an error (GRACE_DEBUG=1)"
    )
    subparsers = parser.add_subparsers(title="commands", metavar="COMMAND", dest="command")
    _add_serve(subparsers)
    _add_openapi(subparsers)
    for plugin in sorted(entry_points(group=COMMAND_GROUP), key=lambda e: e.name):
        try:
            register = plugin.load()
        except ImportError:
            continue  # that role is not installed here
        register(subparsers)
    for sub in subparsers.choices.values():
        # Every command shows its defaults, and takes --debug after its own flags too (SUPPRESS:
        # absent, it leaves the value of `grace --debug COMMAND` alone).
        sub.formatter_class = HelpFormatter
        if "--debug" not in sub._option_string_actions:
            sub.add_argument(
                "--debug", action="store_true", default=argparse.SUPPRESS, help=argparse.SUPPRESS
            )
    return parser


def _add_serve(subparsers: Any) -> None:
    serve = subparsers.add_parser(
        "serve",
        help="run the selection service",
        description="Run the selection service. Every flag has a GRACE_* environment variable "
        "(flags win). The token is read from GRACE_TOKEN or --token-file only, never a flag, "
        "so that it does not show in the process list.",
        epilog=example(
            "grace serve --data-dir var/grace --store redis://127.0.0.1:6379/0",
            "GRACE_TOKEN=$(cat token) grace serve --host 0.0.0.0",
        ),
    )
    # The defaults are ServiceSettings' (a unit test keeps these lines true); the flags default
    # to None so that an unset flag leaves the environment's value alone.
    serve.add_argument("--host", help="bind address (GRACE_HOST, default 127.0.0.1)")
    serve.add_argument("--port", type=int, help="port (GRACE_PORT, default 8765)")
    serve.add_argument(
        "--store",
        help='"" or "local": files in --data-dir; or redis://host:port/db (GRACE_STORE, '
        'default "": local)',
    )
    serve.add_argument(
        "--data-dir",
        help="local store and index snapshots (GRACE_DATA_DIR, default ./var/grace)",
    )
    serve.add_argument("--token-file", type=Path, help="file holding the bearer token")
    serve.add_argument(
        "--reads-require-token",
        action="store_true",
        default=None,
        help="require the token for reads too (GRACE_READS_REQUIRE_TOKEN, default off)",
    )
    serve.add_argument(
        "--max-body-bytes",
        type=int,
        help="largest body (GRACE_MAX_BODY_BYTES, default 536870912: 512 MiB)",
    )
    serve.add_argument(
        "--index",
        choices=["hnsw", "brute", "torch", "faiss"],
        help="k-NN index (GRACE_INDEX, default hnsw; torch and faiss: exact, on a GPU)",
    )
    serve.add_argument(
        "--index-device", help="device of --index torch or faiss (GRACE_INDEX_DEVICE, cuda)"
    )
    serve.add_argument(
        "--max-job-bytes", type=int, help="most memory one job may need (GRACE_MAX_JOB_BYTES)"
    )
    serve.add_argument(
        "--round-nice", type=int, help="lower CPU priority of rounds, 0..19 (GRACE_ROUND_NICE)"
    )
    serve.add_argument(
        "--log-level",
        choices=["critical", "error", "warning", "info", "debug"],
        help="GRACE_LOG_LEVEL, default info",
    )
    serve.set_defaults(func=run_serve, extra="service")


def _add_openapi(subparsers: Any) -> None:
    openapi = subparsers.add_parser(
        "openapi",
        help="print the OpenAPI document (proto/openapi.json is this output)",
        epilog=example("grace openapi --output proto/openapi.json"),
    )
    openapi.add_argument("--output", type=Path, help="write to this file instead of stdout")
    openapi.set_defaults(func=run_openapi, extra="service")


def run_serve(args: argparse.Namespace) -> int:
    from grace_selection.settings import ServiceSettings

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
            ("index_device", args.index_device),
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
            raise UsageError(
                f"--token-file {args.token_file}: cannot read it ({exc.strerror or exc}); "
                "pass a file holding the token, or set GRACE_TOKEN"
            ) from exc
    settings = read_settings(ServiceSettings, overrides)
    check_serve_settings(settings)
    return serve(settings)


def read_settings(settings_class: Any, overrides: dict[str, Any]) -> Any:
    """ServiceSettings from the environment and the flags; a bad value is one UsageError line
    naming the flag, its GRACE_* variable and the rule, instead of pydantic's report."""
    from pydantic import ValidationError

    from grace_selection.settings import InsecureBindError

    try:
        settings = settings_class(**overrides)
        settings.check_bind_safety()
    except InsecureBindError as exc:
        raise UsageError(str(exc)) from exc
    except ValidationError as exc:
        problems = []
        for error in exc.errors():
            name = str(error["loc"][0]) if error["loc"] else "?"
            message = str(error["msg"]).removeprefix("Value error, ")
            problems.append(
                f"--{name.replace('_', '-')} / GRACE_{name.upper()} = {error.get('input')!r}: "
                f"{message}"
            )
        raise UsageError("; ".join(problems)) from exc
    return settings


def check_serve_settings(settings: Any) -> None:
    """What would otherwise fail deep in the start-up: the data folder and the port."""
    data_dir = Path(settings.data_dir)
    try:
        data_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=data_dir):
            pass
    except OSError as exc:
        raise UsageError(
            f"--data-dir {data_dir}: cannot write there ({exc.strerror or exc}); pass a folder "
            "this user can write with --data-dir or GRACE_DATA_DIR"
        ) from exc
    if settings.port:
        try:
            family = socket.getaddrinfo(settings.host, settings.port, type=socket.SOCK_STREAM)[0][0]
            with socket.create_server((settings.host, settings.port), family=family):
                pass
        except OSError as exc:
            what = "is in use" if exc.errno == errno.EADDRINUSE else "cannot be bound"
            raise UsageError(
                f"{settings.host}:{settings.port} {what} ({exc.strerror or exc}); pass another "
                "--port (GRACE_PORT) or --host, or stop what holds it"
            ) from exc


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
