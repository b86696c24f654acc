"""The `grace` command's manners: help with defaults and an example, errors mapped to one line.

The processes themselves (one line on stderr, exit 2, no traceback) are checked in
tests/integration/test_cli_errors.py; this checks the parts without starting any.
"""

from __future__ import annotations

import argparse
import io
import re
import tomllib
from importlib.metadata import packages_distributions
from pathlib import Path

import pytest

from grace_proto.usage import _EXTRA_OF_MODULE, UsageError, missing_extra, pip_command_for
from grace_selection.cli import build_parser
from grace_selection.console import describe, run_command
from grace_selection.settings import ServiceSettings

ROOT = Path(__file__).resolve().parents[2]


def subcommands() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


def test_every_command_has_an_example_and_shows_its_defaults() -> None:
    commands = subcommands()
    assert {"serve", "openapi", "score", "build-dataset", "demo"} <= set(commands)
    for name, sub in commands.items():
        text = sub.format_help()
        assert re.search(rf"^example:\n  grace {name}\b", text, re.MULTILINE), name
        formatter = sub._get_formatter()
        for action in sub._actions:
            shown = action.default not in (None, False, argparse.SUPPRESS, [])
            if action.option_strings and shown and action.help is not argparse.SUPPRESS:
                help_text = formatter._get_help_string(action) or ""
                assert "default" in help_text, (name, action.option_strings)


def test_serve_help_states_the_settings_defaults() -> None:
    text = " ".join(subcommands()["serve"].format_help().split())
    defaults = ServiceSettings.model_fields
    for field in ("host", "port", "index", "log_level", "max_body_bytes"):
        assert f"default {defaults[field].default}" in text, field
    assert f"default ./{defaults['data_dir'].default}" in text


def test_known_errors_become_one_line_and_bugs_keep_their_traceback() -> None:
    assert (
        describe(UsageError("--x 3: too big; pass less"), "grace t") == "--x 3: too big; pass less"
    )
    missing = FileNotFoundError(2, "No such file or directory", "/nowhere/x")
    assert describe(missing, "grace t") == (
        "/nowhere/x: No such file or directory; check the path and its permissions"
    )
    assert describe(RuntimeError("boom"), "grace t") is None
    assert describe(OSError("no filename"), "grace t") is None
    assert describe(ModuleNotFoundError("x", name="somebody_elses"), "grace t") is None
    line = describe(ModuleNotFoundError("x", name="ray.util"), "grace score")
    assert (
        line
        == "grace score needs 'ray', which is not installed: pip install 'grace-coresets[worker]'"
    )

    def fails(exc: Exception) -> tuple[int, list[str]]:
        def func(_: argparse.Namespace) -> int:
            raise exc

        err = io.StringIO()
        code = run_command(func, argparse.Namespace(debug=False), command="grace t", stderr=err)
        return code, err.getvalue().splitlines()

    assert fails(UsageError("one line")) == (2, ["grace t: error: one line"])
    code, lines = fails(RuntimeError("a bug"))
    assert code == 1
    assert lines[0] == "Traceback (most recent call last):"
    assert lines[-1].startswith("grace t: internal error, a bug: RuntimeError: a bug.")


def test_each_named_extra_really_installs_the_module() -> None:
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"][
        "optional-dependencies"
    ]
    distributions = packages_distributions()
    for module, extra in _EXTRA_OF_MODULE.items():
        names = {_normal(re.split(r"[\[<>=;! ]", req, maxsplit=1)[0]) for req in extras[extra]}
        provided = {_normal(d) for d in distributions.get(module, [])}
        assert provided & names, (module, extra, provided)
        assert pip_command_for(module) == f"pip install 'grace-coresets[{extra}]'"
    exc = ModuleNotFoundError("No module named 'pyarrow'", name="pyarrow")
    assert str(missing_extra(exc, "reading parquet")) == (
        "reading parquet needs 'pyarrow', which is not installed: "
        "pip install 'grace-coresets[data]'"
    )


def _normal(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()  # PEP 503


@pytest.mark.parametrize("argv", [["--version"], ["score", "--help"]])
def test_version_and_help_exit_zero(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as stop:
        build_parser().parse_args(argv)
    assert stop.value.code == 0
    assert capsys.readouterr().out.startswith("grace " if argv == ["--version"] else "usage:")
