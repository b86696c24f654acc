"""Shell scripts under deploy/ pass ShellCheck as POSIX sh (the redis image runs them in dash)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SCRIPTS = sorted((REPO / "deploy").rglob("*.sh"))


def shellcheck() -> str:
    found = shutil.which("shellcheck")
    if found is None:
        pytest.fail("shellcheck is not installed; run `make system-deps` (Debian's shellcheck)")
    return found


@pytest.mark.parametrize("script", SCRIPTS, ids=[path.name for path in SCRIPTS])
def test_script_passes_shellcheck_as_posix_sh(script: Path) -> None:
    result = subprocess.run(
        [shellcheck(), "--shell=sh", "--severity=info", str(script)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout
    assert script.read_text().startswith("#!/bin/sh\n")


def test_shellcheck_is_really_looking(tmp_path: Path) -> None:
    bad = tmp_path / "bad.sh"
    bad.write_text('#!/bin/sh\nrm -rf $1/*\n[[ -n "$x" ]]\n')
    result = subprocess.run(
        [shellcheck(), "--shell=sh", str(bad)], capture_output=True, text=True, check=False
    )
    assert result.returncode != 0
    assert "SC2086" in result.stdout
    assert SCRIPTS, "no shell scripts found under deploy/"
