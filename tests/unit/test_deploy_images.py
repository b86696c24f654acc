"""deploy/docker: the Dockerfiles lint clean, build what pyproject.toml pins, run unprivileged."""

from __future__ import annotations

import fnmatch
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.unit.test_deploy_compose import checks

SERVICE = checks.DOCKER_DIR / "service.Dockerfile"
WORKER = checks.DOCKER_DIR / "worker.Dockerfile"
DOCKERFILES = [pytest.param(path, id=path.name) for path in checks.dockerfiles()]


def instructions(path: Path) -> list[Any]:
    import dockerfile  # type: ignore[import-not-found]

    return list(dockerfile.parse_file(str(path)))


def runs(path: Path) -> str:
    return "\n".join(" ".join(i.value) for i in instructions(path) if i.cmd.upper() == "RUN")


def last_stage(path: Path) -> list[Any]:
    """The instructions of the final (runtime) stage."""
    found = instructions(path)
    starts = [index for index, i in enumerate(found) if i.cmd.upper() == "FROM"]
    return found[starts[-1] :]


def test_both_images_are_there() -> None:
    assert {path.name for path in checks.dockerfiles()} == {
        "service.Dockerfile",
        "worker.Dockerfile",
    }


def test_hadolint_finds_nothing() -> None:
    result = checks.run_hadolint(checks.dockerfiles())
    assert result.returncode == 0, result.stdout + result.stderr


def test_hadolint_is_really_looking(tmp_path: Path) -> None:
    bad = tmp_path / "bad.Dockerfile"
    bad.write_text("FROM python:latest\nRUN cd /tmp && pip install requests\n")
    result = checks.run_hadolint([bad])
    assert result.returncode != 0
    assert "DL3007" in result.stdout  # the `latest` tag


@pytest.mark.parametrize("path", DOCKERFILES)
def test_every_copied_path_exists_and_passes_the_dockerignore(path: Path) -> None:
    ignore = Path(f"{path}.dockerignore").read_text().splitlines()
    patterns = [line for line in ignore if line and not line.startswith("#")]
    for source in checks.dockerfile_copy_sources(path):
        assert (checks.REPO / source).exists(), source
        included = False
        for pattern in patterns:  # Docker's rule: the last matching pattern wins.
            negated = pattern.startswith("!")
            body = pattern.lstrip("!").rstrip("/")
            if fnmatch.fnmatch(source.rstrip("/"), body):
                included = negated
        assert included, f"{path.name}: {source} is excluded from the build context"


@pytest.mark.parametrize("path", DOCKERFILES)
def test_base_python_satisfies_requires_python(path: Path) -> None:
    image = checks.dockerfile_build_args(path)["PYTHON_IMAGE"]
    match = re.match(r"python:(\d+)\.(\d+)", image)
    assert match, image
    minimum = re.search(r">=\s*(\d+)\.(\d+)", checks.pyproject()["project"]["requires-python"])
    assert minimum
    assert tuple(map(int, match.groups())) >= tuple(map(int, minimum.groups()))


@pytest.mark.parametrize("path", DOCKERFILES)
def test_runtime_runs_as_a_numeric_non_root_user_and_labels_the_version(path: Path) -> None:
    stage = last_stage(path)
    users = [i.value[0] for i in stage if i.cmd.upper() == "USER"]
    assert users, "the runtime stage must drop root"
    uid = users[-1].split(":")[0]
    assert uid.isdigit()
    assert int(uid) > 0
    version = checks.pyproject()["project"]["version"]
    assert checks.dockerfile_build_args(path)["GRACE_VERSION"] == version


def test_service_builds_hnswlib_portable_at_the_pinned_version() -> None:
    pins = checks.pinned_versions()
    env = " ".join(" ".join(i.value) for i in instructions(SERVICE) if i.cmd.upper() == "ENV")
    assert "HNSWLIB_NO_NATIVE 1" in env or "HNSWLIB_NO_NATIVE=1" in env
    text = runs(SERVICE)
    assert f"hnswlib=={pins['hnswlib']}" in text
    assert "--no-binary hnswlib" in text
    assert '".[service,dashboard,fast]"' in text  # fast: numba's greedy loops


def test_service_listens_where_the_settings_say_and_checks_readiness() -> None:
    settings = checks.service_settings()
    stage = last_stage(SERVICE)
    exposed = [i.value[0] for i in stage if i.cmd.upper() == "EXPOSE"]
    assert exposed == [str(settings["GRACE_PORT"])]
    (health,) = [" ".join(i.value) for i in stage if i.cmd.upper() == "HEALTHCHECK"]
    assert "/readyz" in health
    values = [v for i in stage if i.cmd.upper() == "ENV" for v in i.value]
    env = dict(zip(values[::2], values[1::2], strict=True))  # ENV is parsed as name, value, ...
    assert {k for k in env if k.startswith("GRACE_")} <= set(settings)
    assert env["GRACE_HOST"] == "0.0.0.0"


def test_worker_takes_the_pinned_torch_and_installs_the_worker_extra() -> None:
    pins = checks.pinned_versions()
    args = checks.dockerfile_build_args(WORKER)
    assert args["TORCH_VERSION"] == pins["torch"]
    assert args["TORCH_INDEX_URL"].startswith("https://download.pytorch.org/whl/")
    text = runs(WORKER)
    assert '--index-url "${TORCH_INDEX_URL}" "torch==${TORCH_VERSION}"' in text
    assert '".[worker]"' in text
    # Ray itself comes only from the extra, i.e. the pin in pyproject.toml.
    assert not re.search(r"pip install[^\n]*[\s\"']ray\b", text)


def test_worker_image_carries_what_ray_up_and_kuberay_call() -> None:
    text = runs(WORKER)
    for tool in ("rsync", "wget"):
        assert re.search(rf"apt-get install[^\n]*\b{tool}\b", text), tool


def extra_requirements(extra: str) -> set[str]:
    """Distribution names an extra pulls, following grace-coresets[...] self-references."""
    project = checks.pyproject()["project"]
    names: set[str] = set()
    for requirement in project["optional-dependencies"][extra]:
        match = re.match(r"^([A-Za-z0-9_.-]+)(?:\[([^]]*)\])?", requirement)
        assert match, requirement
        if match.group(1) == project["name"]:
            for inner in (match.group(2) or "").split(","):
                names |= extra_requirements(inner.strip())
        else:
            names.add(match.group(1).lower())
    return names


# Runs in a fresh interpreter where the packages named in argv[1] cannot be imported, as in an
# image that does not install them.
_BLOCKER = """
import importlib.abc, sys
BLOCKED = set(sys.argv[1].split(","))
class NotInTheImage(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ImportError(name + " is not in this image")
        return None
sys.meta_path.insert(0, NotInTheImage())
"""
_WORKER_RUNNER = (
    _BLOCKER
    + """
from grace_selection.cli import build_parser
parser = build_parser()
print(sorted(parser._subparsers._group_actions[0].choices))
import grace_workers.pool, grace_workers.worker
"""
)
_SERVICE_RUNNER = (
    _BLOCKER
    + """
from grace_selection.cli import export_openapi
print(len(export_openapi()))
"""
)


def run_without(modules: set[str], program: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", program, ",".join(sorted(modules))],
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )


def test_worker_image_runs_grace_score_without_the_service_extra() -> None:
    """The worker image installs only [worker]; `grace score` must not need service packages."""
    service_only = extra_requirements("service") - extra_requirements("worker")
    modules = {name.replace("-", "_") for name in service_only}
    assert {"fastapi", "hnswlib", "redis"} <= modules
    result = run_without(modules, _WORKER_RUNNER)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "'score'" in result.stdout, result.stdout + result.stderr[-2000:]


def test_service_image_builds_the_whole_app_without_the_worker_extra() -> None:
    """The service image installs [service,dashboard,fast]: no torch, no Ray, no client packages."""
    installed = extra_requirements("service") | extra_requirements("dashboard")
    installed |= extra_requirements("fast")
    worker_only = extra_requirements("worker") - installed
    modules = {name.replace("-", "_") for name in worker_only}
    assert {"torch", "ray", "httpx"} <= modules
    result = run_without(modules, _SERVICE_RUNNER)
    assert result.returncode == 0, result.stderr[-2000:]
    assert int(result.stdout.strip()) > 1000


def test_blocking_a_needed_package_is_noticed() -> None:
    result = run_without({"fastapi"}, _SERVICE_RUNNER)
    assert result.returncode != 0
    assert "fastapi is not in this image" in result.stderr
