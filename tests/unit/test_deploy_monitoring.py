"""deploy/: the ServiceMonitor and the Grafana dashboard, checked offline like the rest.

The ServiceMonitor is a prometheus-operator CRD, not among the schemas kubernetes-validate
ships: it is checked against scripts/schemas/servicemonitor-v1.json, the CRD's fields that we use
written down with their types, and against the Service it must find. The dashboard is checked
for what Grafana needs to import it, and its queries against the series the service exposes.
"""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest

from tests.unit.test_deploy_compose import checks
from tests.unit.test_deploy_k8s import named

MONITOR_FILE = checks.K8S_DIR / "monitoring" / "servicemonitor.yaml"
DASHBOARDS = checks.grafana_dashboards()


def monitor() -> dict[str, Any]:
    (resource,) = checks.load_yaml_documents(MONITOR_FILE)
    found: dict[str, Any] = resource
    return found


@pytest.fixture(scope="module")
def metrics() -> dict[str, tuple[str, ...]]:
    exposed: dict[str, tuple[str, ...]] = checks.exposed_metrics()
    return exposed


@pytest.fixture(scope="module")
def routes() -> set[str]:
    templates: set[str] = checks.app_route_templates()
    return templates


def test_service_monitor_is_valid_against_the_operator_fields() -> None:
    assert checks.check_service_monitor(monitor()) == []


def test_service_monitor_check_reports_a_misspelt_field_and_a_bad_duration() -> None:
    broken = copy.deepcopy(monitor())
    broken["spec"]["endpoints"][0]["intervall"] = "15s"
    broken["spec"]["endpoints"][0]["scrapeTimeout"] = "10 seconds"
    problems = checks.check_service_monitor(broken)
    assert len(problems) == 2
    assert any("intervall" in p for p in problems)
    assert any("scrapeTimeout" in p for p in problems)


def test_service_monitor_finds_the_selection_service_and_its_metrics_port() -> None:
    spec = monitor()["spec"]
    service = named("Service", "grace-selection")
    labels = service["metadata"]["labels"]
    assert spec["selector"]["matchLabels"].items() <= labels.items()
    (endpoint,) = spec["endpoints"]
    assert endpoint["port"] in {port["name"] for port in service["spec"]["ports"]}
    assert endpoint["path"] == "/metrics"
    assert spec["namespaceSelector"]["matchNames"] == [monitor()["metadata"]["namespace"]]


def test_service_monitor_is_left_out_of_the_base_kustomization() -> None:
    """Clusters without the prometheus-operator must still `kubectl apply -k deploy/k8s`."""
    listed = checks.load_yaml(checks.K8S_DIR / "kustomization.yaml")["resources"]
    assert not any("monitoring" in str(item) for item in listed)


@pytest.mark.parametrize("path", DASHBOARDS, ids=[p.name for p in DASHBOARDS])
def test_grafana_dashboard_is_importable_and_queries_real_series(
    path: Any, metrics: dict[str, tuple[str, ...]], routes: set[str]
) -> None:
    dashboard = json.loads(path.read_text(encoding="utf-8"))
    assert checks.check_grafana_dashboard(dashboard, metrics, routes) == []


def test_grafana_dashboard_shows_every_per_job_gauge(metrics: dict[str, tuple[str, ...]]) -> None:
    text = " ".join(p.read_text(encoding="utf-8") for p in DASHBOARDS)
    per_job = {name for name, labels in metrics.items() if "job" in labels}
    assert len(per_job) == 8
    assert sorted(name for name in per_job if name not in text) == []


def test_grafana_check_reports_an_unknown_metric_label_and_route(
    metrics: dict[str, tuple[str, ...]], routes: set[str]
) -> None:
    dashboard = json.loads(DASHBOARDS[0].read_text(encoding="utf-8"))
    target = dashboard["panels"][0]["targets"][0]
    target["expr"] = 'grace_job_rounds{job="a"} + grace_job_round{jobb="a"}'
    dashboard["panels"][1]["targets"][0]["expr"] = (
        'rate(grace_http_request_seconds_count{route="/v1/jobs/{job}/indices"}[5m])'
    )
    dashboard["panels"][2]["gridPos"]["x"] = 22
    problems = checks.check_grafana_dashboard(dashboard, metrics, routes)
    assert any("grace_job_rounds is not a series" in p for p in problems)
    assert any("no label 'jobb'" in p for p in problems)
    assert any("is not a route of the service" in p for p in problems)
    assert any("gridPos" in p for p in problems)
    assert len(problems) == 4
