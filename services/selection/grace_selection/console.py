"""How the `grace` command talks to people: one-line errors, help with defaults, the version.

`run_command` is the one top-level handler. A mistake the user can fix (a `UsageError`, an
import that a missing extra explains, a path the system refuses) prints one line, what is
wrong and how to fix it, and exits 2. Anything else is a bug: it keeps its traceback and
exits 1. `--debug` (or GRACE_DEBUG=1) prints the traceback for every error.

This module imports nothing heavy and nothing of the service: every role's subcommand runs
through it, a client-only install included.
"""

from __future__ import annotations

import argparse
import os
import sys
import traceback
from collections.abc import Callable
from importlib.metadata import PackageNotFoundError, version
from typing import Any, NoReturn, TextIO

from grace_proto.usage import DISTRIBUTION, UsageError, missing_extra

EXIT_USAGE = 2  # what argparse uses for a bad flag, too
EXIT_BUG = 1
EXIT_INTERRUPTED = 130


class ArgumentParser(argparse.ArgumentParser):
    """argparse's parser, but a bad flag is one line too (the usage is one --help away)."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}; see {self.prog} --help\n")


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Keeps descriptions and examples as written, and appends "(default: X)" to each option
    that has a default worth showing (not None, not a flag's False, not one the help names)."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        default = action.default
        if (
            "%(default)" in text
            or "default" in text
            or default in (None, False, argparse.SUPPRESS)
            or not action.option_strings
        ):
            return text
        return f"{text} (default: %(default)s)" if text else "(default: %(default)s)"


def example(*lines: str) -> str:
    """An epilog showing how a command is used, for `epilog=`."""
    return "example:\n" + "\n".join(f"  {line}" for line in lines)


def version_line() -> str:
    """`grace --version`: the distribution's version (the source tree's when not installed)."""
    try:
        number = version(DISTRIBUTION)
    except PackageNotFoundError:
        number = "unknown (not installed)"
    return f"grace {number} ({DISTRIBUTION}, Python {sys.version.split()[0]})"


def debug_requested(args: argparse.Namespace) -> bool:
    return bool(getattr(args, "debug", False)) or os.environ.get("GRACE_DEBUG", "") not in (
        "",
        "0",
    )


def run_command(
    func: Callable[[argparse.Namespace], Any],
    args: argparse.Namespace,
    *,
    command: str,
    stderr: TextIO | None = None,
) -> int:
    """Run a subcommand's function; map what it raises to one line and an exit code."""
    err = stderr or sys.stderr
    debug = debug_requested(args)
    try:
        return int(func(args))
    except KeyboardInterrupt:
        print(f"{command}: interrupted", file=err)
        return EXIT_INTERRUPTED
    except Exception as exc:
        line = describe(exc, command, extra=getattr(args, "extra", None))
        if debug or line is None:
            traceback.print_exc(file=err)
        if line is None:
            print(
                f"{command}: internal error, a bug: {type(exc).__name__}: {exc}. Please report "
                "it with the traceback above.",
                file=err,
            )
            return EXIT_BUG
        print(f"{command}: error: {line}", file=err)
        return EXIT_USAGE


def describe(exc: BaseException, command: str, extra: str | None = None) -> str | None:
    """The one line for an error the user can fix, or None for a bug.

    extra: the extra the command needs (its subparser's `set_defaults(extra=...)`), named
    when one of our optional modules is missing; else the extra of that module.
    """
    if isinstance(exc, UsageError):
        return _one_line(str(exc))
    if isinstance(exc, ImportError):
        missing = missing_extra(exc, what=command, extra=extra)
        return None if missing is None else str(missing)
    if isinstance(exc, OSError) and exc.filename is not None:
        # A path the user gave that the system refuses (missing, a file where a folder should
        # be, no permission): the path and the reason say what to fix.
        reason = exc.strerror or type(exc).__name__
        return f"{exc.filename}: {reason}; check the path and its permissions"
    return None


def _one_line(text: str) -> str:
    """A message as written; a multi-line one (an actor's report) keeps its lines after the
    first, indented, because they are the evidence the fix needs."""
    first, _, rest = text.strip().partition("\n")
    return first if not rest else first + "\n" + "\n".join(f"  {x}" for x in rest.splitlines())
