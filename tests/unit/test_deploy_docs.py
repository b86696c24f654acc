"""docs/operations.md names only things that exist: metrics, files, variables, secret keys."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from tests.unit.test_deploy_compose import checks

DOC = checks.REPO / "docs" / "operations.md"
TEXT = DOC.read_text(encoding="utf-8")
# A metric row of the table: | `name{label,label}` | meaning | watch for |
_METRIC_ROW = re.compile(r"^\| `(grace_[a-z_]+)(?:\{([a-z_,]+)\})?` \|", re.MULTILINE)
_SUFFIXES = ("_total", "_bucket", "_sum", "_count", "_created")


def service_metric_families() -> dict[str, tuple[str, ...]]:
    """name as exposed (counters with _total) -> label names, from the service's registry."""
    from prometheus_client import Counter, Histogram

    from grace_selection.api.metrics import ServiceMetrics
    from grace_selection.service.gauges import JobGauges, StratumGauge

    one_job = JobGauges(
        job_id="j",
        round=1,
        coreset_size=10,
        churn=0.5,
        fresh_share=0.3,
        estimated_share=0.7,
        seconds={"total": 1.0},
        strata=(StratumGauge(0, "a", 0.5, 0.5),),
        graph_recall=0.9,
    )
    metrics = ServiceMetrics(job_count=lambda: 0, gauges=lambda: ([one_job], 0))
    families: dict[str, tuple[str, ...]] = {}
    for value in vars(metrics).values():
        if isinstance(value, Counter | Histogram):
            name = value._name + ("_total" if isinstance(value, Counter) else "")
            families[name] = tuple(value._labelnames)
    for family in metrics.registry.collect():
        if family.type == "gauge":
            families[family.name] = tuple(family.samples[0].labels) if family.samples else ()
    return families


def documented_metrics() -> dict[str, tuple[str, ...]]:
    return {
        name: tuple(labels.split(",")) if labels else ()
        for name, labels in _METRIC_ROW.findall(TEXT)
    }


def test_every_service_metric_is_documented_with_its_labels() -> None:
    assert documented_metrics() == service_metric_families()


def test_metric_names_in_queries_exist() -> None:
    exposed = set(service_metric_families())
    packages = {path.name for path in checks.REPO.glob("*/**/grace_*") if path.is_dir()}
    for name in set(re.findall(r"\b(grace_[a-z_]+)", TEXT)) - packages:
        base = name
        for suffix in _SUFFIXES:
            if name.endswith(suffix) and name not in exposed:
                base = name.removesuffix(suffix)
        assert name in exposed or base in exposed or f"{base}_total" in exposed, name


def test_every_repository_path_the_guide_names_exists() -> None:
    named = set(re.findall(r"(?<![\w/])((?:deploy|docs|scripts|tests)/[\w.*/-]*[\w*])", TEXT)) | {
        "docker-compose.yml",
        ".env.example",
    }
    assert len(named) > 10
    for path in sorted(named):
        assert list(checks.REPO.glob(path)), f"docs/operations.md names {path}, which is missing"


def known_variables() -> set[str]:
    """Settings, .env.example, and names the code reads (clients and workers included)."""
    code = "\n".join(
        path.read_text(encoding="utf-8")
        for folder in ("services", "clients")
        for path in (checks.REPO / folder).rglob("*.py")
    )
    quoted = set(re.findall(r"[\"']((?:GRACE|RAY)_[A-Z0-9_]+)[\"']", code))
    compose = checks.load_yaml(checks.COMPOSE_FILE)
    in_compose = {
        name
        for service in compose["services"].values()
        for name in (service.get("environment") or {})
    }
    return set(checks.service_settings()) | set(checks.env_example_entries()) | quoted | in_compose


def test_every_variable_the_guide_names_is_read_somewhere() -> None:
    named = set(re.findall(r"\b((?:GRACE|RAY|SCORE)_[A-Z0-9_]+)\b", TEXT))
    unknown = sorted(named - known_variables())
    assert unknown == [], f"docs/operations.md names variables nothing reads: {unknown}"


def secret_key_refs(node: Any) -> set[tuple[str, str]]:
    if isinstance(node, dict):
        found = set()
        if "secretKeyRef" in node:
            ref = node["secretKeyRef"]
            found.add((ref["name"], ref["key"]))
        for value in node.values():
            found |= secret_key_refs(value)
        return found
    if isinstance(node, list):
        return set().union(*(secret_key_refs(item) for item in node)) if node else set()
    return set()


def test_the_secret_the_guide_creates_has_every_key_the_manifests_read() -> None:
    refs: set[tuple[str, str]] = set()
    for path in checks.k8s_manifests():
        for resource in checks.load_yaml_documents(path):
            refs |= secret_key_refs(resource)
    # The command runs from "create secret generic NAME" to the first line not ending in "\\".
    command = re.search(r"create secret generic (\S+)((?:[^\n]*\\\n)*[^\n]*)", TEXT)
    assert command, "the guide must show how to create the secret"
    keys = set(re.findall(r"--from-literal=([\w-]+)=", command.group(2)))
    assert refs == {(command.group(1), key) for key in keys}


@pytest.mark.parametrize("service", ["redis", "service", "ray-head", "ray-worker", "score"])
def test_every_compose_service_is_explained(service: str) -> None:
    compose = checks.load_yaml(checks.COMPOSE_FILE)
    assert service in compose["services"]
    names = {"service": "selection service", "ray-head": "Ray head", "ray-worker": "Ray GPU"}
    assert names.get(service, service) in TEXT


def test_guide_exists_in_docs() -> None:
    assert DOC.parent == Path(checks.REPO / "docs")
