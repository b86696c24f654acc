"""docker-compose.yml: accepted by Compose and its schema, consistent with the service and repo."""

from __future__ import annotations

import importlib.util
import re
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml


def _load_checks() -> ModuleType:
    """scripts/validate_deploy.py, the checks that people also run by hand before a deploy."""
    if "validate_deploy" in sys.modules:
        return sys.modules["validate_deploy"]
    path = Path(__file__).resolve().parents[2] / "scripts" / "validate_deploy.py"
    spec = importlib.util.spec_from_file_location("validate_deploy", path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules["validate_deploy"] = module
    spec.loader.exec_module(module)
    return module


checks = _load_checks()
TOKENS = {"GRACE_TOKEN": "t" * 64, "RAY_AUTH_TOKEN": "r" * 64}
RAY_SERVICES = ("ray-head", "ray-worker", "score")


@pytest.fixture(scope="module")
def raw() -> dict[str, Any]:
    document: dict[str, Any] = checks.load_yaml(checks.COMPOSE_FILE)
    return document


@pytest.fixture(scope="module")
def resolved() -> dict[str, Any]:
    """The file as Compose resolves it (variables at their defaults, anchors merged)."""
    result = checks.run_compose_config(TOKENS)
    assert result.returncode == 0, result.stderr
    document: dict[str, Any] = yaml.safe_load(result.stdout)
    return document


def redis_conf() -> dict[str, str]:
    lines = (checks.DOCKER_DIR / "redis.conf").read_text().splitlines()
    pairs = (line.split(None, 1) for line in lines if line.strip() and not line.startswith("#"))
    return dict(pairs)


def test_compose_accepts_the_file_with_both_tokens_set(resolved: dict[str, Any]) -> None:
    assert set(resolved["services"]) >= {"redis", "service", "ray-head", "ray-worker", "score"}


@pytest.mark.parametrize("missing", sorted(TOKENS))
@pytest.mark.parametrize("value", [None, ""])
def test_compose_refuses_to_start_without_a_token(missing: str, value: str | None) -> None:
    env = dict(TOKENS)
    if value is None:
        del env[missing]
    else:
        env[missing] = value
    result = checks.run_compose_config(env)
    assert result.returncode != 0
    assert missing in result.stderr, result.stderr


def test_env_example_copied_as_is_is_refused_until_the_tokens_are_filled(tmp_path: Path) -> None:
    env_file = tmp_path / ".env"
    env_file.write_text(checks.ENV_EXAMPLE.read_text())
    refused = checks.run_compose_config({}, env_file=env_file)
    assert refused.returncode != 0
    assert "GRACE_TOKEN" in refused.stderr or "RAY_AUTH_TOKEN" in refused.stderr

    # Fill the tokens and uncomment every documented default: still a valid configuration.
    lines = [f"{name}={value}" for name, value in checks.env_example_entries().items()]
    lines += [f"{name}={value}" for name, value in TOKENS.items()]
    env_file.write_text("\n".join(lines) + "\n")
    accepted = checks.run_compose_config({}, env_file=env_file)
    assert accepted.returncode == 0, accepted.stderr


def test_compose_file_matches_the_compose_spec_schema(raw: dict[str, Any]) -> None:
    assert checks.check_compose_schema(raw) == []


def test_compose_schema_check_reports_a_broken_service(raw: dict[str, Any]) -> None:
    broken = yaml.safe_load(yaml.safe_dump(raw))
    broken["services"]["service"]["healthcheck"]["retires"] = 3
    broken["services"]["redis"]["depends_on"] = {"service": {"condition": "when_ready"}}
    problems = checks.check_compose_schema(broken)
    assert any("retires" in problem for problem in problems)
    assert any("when_ready" in problem for problem in problems)


def test_every_file_a_service_references_exists(raw: dict[str, Any]) -> None:
    assert checks.check_compose_references(raw) == []


def test_reference_check_reports_missing_files(raw: dict[str, Any]) -> None:
    broken = yaml.safe_load(yaml.safe_dump(raw))
    broken["services"]["service"]["build"]["dockerfile"] = "deploy/docker/nope.Dockerfile"
    broken["services"]["redis"]["volumes"].append("./deploy/docker/missing.conf:/x:ro")
    broken["services"]["redis"]["volumes"].append("undeclared:/y")
    problems = checks.check_compose_references(broken)
    assert len(problems) == 3, problems


def test_redis_persists_with_aof_everysec_a_volume_and_a_ping_healthcheck(
    resolved: dict[str, Any],
) -> None:
    redis = resolved["services"]["redis"]
    conf = redis_conf()
    assert conf["appendonly"] == "yes"
    assert conf["appendfsync"] == "everysec"
    assert conf["maxmemory-policy"] == "noeviction"
    mounts = checks.volume_mounts(redis)
    assert mounts[conf["dir"]][0] in resolved["volumes"], "Redis data must live in a named volume"
    config_source, read_only = mounts[redis["command"][-1]]
    assert config_source.endswith("deploy/docker/redis.conf")
    assert read_only
    assert "redis-cli ping" in " ".join(redis["healthcheck"]["test"])
    script_source, _ = mounts["/usr/local/bin/redis-data.sh"]
    assert script_source.endswith("deploy/docker/redis-data.sh")


def test_service_waits_for_healthy_redis_and_reports_readiness(resolved: dict[str, Any]) -> None:
    service = resolved["services"]["service"]
    assert service["depends_on"]["redis"]["condition"] == "service_healthy"
    assert "/readyz" in " ".join(service["healthcheck"]["test"])
    store = service["environment"]["GRACE_STORE"]
    assert store == f"redis://redis:{redis_conf()['port']}/0"
    assert service["environment"]["GRACE_TOKEN"] == TOKENS["GRACE_TOKEN"]


def test_tokens_come_from_the_environment_and_are_required(raw: dict[str, Any]) -> None:
    text = checks.COMPOSE_FILE.read_text()
    for name in TOKENS:
        uses = [op for var, op, _ in checks.interpolations(text) if var == name]
        assert uses, f"{name} is never read from the environment"
        assert set(uses) == {":?"}, f"{name} must always be ${{{name}:?...}} (required, non-empty)"
    assert raw["services"]["service"]["environment"]["GRACE_TOKEN"].startswith("${GRACE_TOKEN:?")


def test_ray_head_runs_no_work_and_its_gcs_port_is_not_redis_port(
    resolved: dict[str, Any],
) -> None:
    head = resolved["services"]["ray-head"]["command"]
    assert "--head" in head
    assert checks.flag_value(head, "--num-cpus") == "0"
    assert checks.flag_value(head, "--num-gpus") == "0"
    gcs_port = checks.flag_value(head, "--port")
    assert gcs_port is not None
    assert gcs_port != redis_conf()["port"]
    worker = resolved["services"]["ray-worker"]["command"]
    assert checks.flag_value(worker, "--address") == f"ray-head:{gcs_port}"
    client_port = checks.flag_value(head, "--ray-client-server-port")
    assert f"ray://ray-head:{client_port}" in resolved["services"]["score"]["entrypoint"]


def test_gpu_workers_reserve_gpus_and_have_room_for_the_object_store(
    resolved: dict[str, Any],
) -> None:
    worker = resolved["services"]["ray-worker"]
    devices = worker["deploy"]["resources"]["reservations"]["devices"]
    gpus = [device for device in devices if "gpu" in device["capabilities"]]
    assert gpus, "the GPU workers reserve no device with capabilities [gpu]"
    # Compose accepts an integer or "all" only (an interpolated string count is rejected).
    assert all(device["count"] == "all" or isinstance(device["count"], int) for device in gpus)
    shm_bytes = checks.parse_size(worker["shm_size"])
    store_bytes = int(checks.flag_value(worker["command"], "--object-store-memory") or 0)
    assert store_bytes > 0
    assert shm_bytes > store_bytes, "shm_size must hold the whole object store"


def test_every_ray_process_runs_one_image_with_one_token(resolved: dict[str, Any]) -> None:
    services = resolved["services"]
    assert len({services[name]["image"] for name in RAY_SERVICES}) == 1
    for name in RAY_SERVICES:
        assert services[name]["environment"]["RAY_AUTH_MODE"] == "token"
        assert services[name]["environment"]["RAY_AUTH_TOKEN"] == TOKENS["RAY_AUTH_TOKEN"]


def test_the_scoring_job_runs_only_on_demand_and_sees_the_workers_data(
    resolved: dict[str, Any],
) -> None:
    services = resolved["services"]
    score = services["score"]
    assert score["profiles"] == ["job"]
    assert score["entrypoint"][:2] == ["grace", "score"]
    for flag in ("--job", "--round", "--model", "--data", "--workers"):
        assert flag in score["command"]
    assert score["environment"]["GRACE_URL"] == "http://service:8765"
    assert (
        checks.volume_mounts(score)["/assets"]
        == checks.volume_mounts(services["ray-worker"])["/assets"]
    )
    model = checks.flag_value(score["command"], "--model")
    assert model is not None
    assert model.startswith("/assets/")


def test_every_setting_the_service_reads_is_documented_in_env_example() -> None:
    documented = checks.env_example_entries()
    missing = sorted(set(checks.service_settings()) - set(documented))
    assert missing == [], f"add these to .env.example: {missing}"


def test_every_variable_compose_reads_is_documented_in_env_example() -> None:
    documented = checks.env_example_entries()
    used = {name for name, _, _ in checks.interpolations(checks.COMPOSE_FILE.read_text())}
    assert sorted(used - set(documented)) == []


def test_service_variables_in_compose_are_real_settings(raw: dict[str, Any]) -> None:
    settings = checks.service_settings()
    environment = raw["services"]["service"]["environment"]
    unknown = sorted(name for name in environment if name not in settings)
    assert unknown == [], f"the service reads no such setting: {unknown}"


def _same_setting(default: object, text: str) -> bool:
    if default is None:
        return text == ""
    if isinstance(default, bool):
        return text.lower() == str(default).lower()
    if isinstance(default, Path):
        return Path(text) == default
    return str(default) == text


def test_documented_defaults_equal_the_service_defaults() -> None:
    settings = checks.service_settings()
    documented = checks.env_example_entries()
    compose_defaults = {
        name: argument
        for name, operator, argument in checks.interpolations(checks.COMPOSE_FILE.read_text())
        if operator == ":-"
    }
    for name, default in settings.items():
        if name in compose_defaults:
            assert _same_setting(default, compose_defaults[name]), (name, default)
        if name in documented and name != "GRACE_TOKEN":
            assert _same_setting(default, documented[name]), (name, default)


def test_images_are_tagged_with_the_project_version(resolved: dict[str, Any]) -> None:
    version = checks.pyproject()["project"]["version"]
    for name, service in resolved["services"].items():
        if "build" in service:
            assert service["image"].endswith(f":{version}"), name
    torch_index = {
        service["build"]["args"]["TORCH_INDEX_URL"]
        for service in resolved["services"].values()
        if "build" in service and "args" in service["build"]
    }
    worker_args = checks.dockerfile_build_args(checks.DOCKER_DIR / "worker.Dockerfile")
    assert torch_index == {worker_args["TORCH_INDEX_URL"]}


def test_only_loopback_is_published_by_default(resolved: dict[str, Any]) -> None:
    for name, service in resolved["services"].items():
        for host_ip, _, _ in checks.published_ports(service):
            assert host_ip == "127.0.0.1", name
    assert "ports" not in resolved["services"]["redis"]


@pytest.mark.parametrize(
    ("text", "expected"),
    [("8gb", 8 << 30), ("512m", 512 << 20), ("1024", 1024), ("2G", 2 << 30), ("64kb", 64 << 10)],
)
def test_parse_size_reads_compose_sizes(text: str, expected: int) -> None:
    assert checks.parse_size(text) == expected


def test_volume_and_port_syntaxes_both_parse() -> None:
    short = {"volumes": ["a:/b:ro", "c:/d"], "ports": ["127.0.0.1:1:2/tcp", "3:4"]}
    long = {
        "volumes": [
            {"type": "volume", "source": "a", "target": "/b", "read_only": True},
            {"type": "volume", "source": "c", "target": "/d"},
        ],
        "ports": [
            {"host_ip": "127.0.0.1", "published": "1", "target": 2},
            {"published": 3, "target": 4},
        ],
    }
    for service in (short, long):
        assert checks.volume_mounts(service) == {"/b": ("a", True), "/d": ("c", False)}
        assert checks.published_ports(service) == [("127.0.0.1", "1", "2"), ("", "3", "4")]


def test_interpolations_are_parsed_with_operator_and_argument() -> None:
    text = "a ${A} b ${B:-x y} c ${C:?need C} d ${D-z}"
    assert list(checks.interpolations(text)) == [
        ("A", "", ""),
        ("B", ":-", "x y"),
        ("C", ":?", "need C"),
        ("D", "-", "z"),
    ]
    assert re.sub(r"\s+", " ", checks._default_of("${B:-./x}:/y")) == "./x:/y"
