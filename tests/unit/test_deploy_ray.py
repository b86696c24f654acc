"""deploy/ray/cluster.yaml: valid for Ray's own config check and consistent with Compose."""

from __future__ import annotations

import copy
import shlex
from typing import Any

import pytest

from tests.unit.test_deploy_compose import checks, redis_conf


@pytest.fixture(scope="module")
def cluster() -> dict[str, Any]:
    config: dict[str, Any] = checks.load_yaml(checks.RAY_CLUSTER_FILE)
    return config


def start_command(commands: list[str]) -> list[str]:
    """The `ray start` invocation of a start-commands list, as arguments."""
    for command in commands:
        for part in command.split(";"):
            words = shlex.split(part)
            if words[:2] == ["ray", "start"]:
                return words
    raise AssertionError(f"no `ray start` in {commands}")


def test_rays_own_validation_accepts_the_cluster(cluster: dict[str, Any]) -> None:
    assert checks.check_ray_cluster(copy.deepcopy(cluster)) == []


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (lambda c: c.update(max_wokers=4), "max_wokers"),
        (lambda c: c.update(head_node_type="nope"), "head_node_type"),
        (lambda c: c["available_node_types"]["gpu_worker"].update(min_workers=99), "max_workers"),
        (lambda c: c["docker"].update(run_option=["--gpus all"]), "run_option"),
    ],
)
def test_rays_validation_reports_broken_configs(
    cluster: dict[str, Any], change: Any, expected: str
) -> None:
    broken = copy.deepcopy(cluster)
    change(broken)
    problems = checks.check_ray_cluster(broken)
    assert len(problems) == 1
    assert expected in problems[0]


def test_head_runs_no_work_and_gcs_keeps_off_redis_port(cluster: dict[str, Any]) -> None:
    head = start_command(cluster["head_start_ray_commands"])
    assert "--head" in head
    assert checks.flag_value(head, "--num-cpus") == "0"
    assert checks.flag_value(head, "--num-gpus") == "0"
    head_type = cluster["available_node_types"][cluster["head_node_type"]]
    assert head_type["resources"]["CPU"] == 0
    port = checks.flag_value(head, "--port")
    assert port is not None
    assert port != redis_conf()["port"]
    worker = start_command(cluster["worker_start_ray_commands"])
    assert checks.flag_value(worker, "--address") == f"$RAY_HEAD_IP:{port}"


def test_gpu_workers_get_gpus(cluster: dict[str, Any]) -> None:
    workers = {
        name: node
        for name, node in cluster["available_node_types"].items()
        if name != cluster["head_node_type"]
    }
    assert any(node["resources"].get("GPU", 0) >= 1 for node in workers.values())
    assert any(option.startswith("--gpus") for option in cluster["docker"]["worker_run_options"])


def test_nodes_run_the_compose_worker_image_and_install_no_other_ray(
    cluster: dict[str, Any],
) -> None:
    result = checks.run_compose_config({"GRACE_TOKEN": "t", "RAY_AUTH_TOKEN": "r"})
    assert result.returncode == 0, result.stderr
    compose = checks.yaml.safe_load(result.stdout)
    assert cluster["docker"]["image"] == compose["services"]["ray-worker"]["image"]
    commands = [
        *cluster["initialization_commands"],
        *cluster["setup_commands"],
        *cluster["head_setup_commands"],
        *cluster["worker_setup_commands"],
    ]
    assert not any("ray" in shlex.split(command) for command in commands)
    assert not any("ray[" in command or "ray==" in command for command in commands)


def test_assets_are_mounted_where_compose_mounts_them(cluster: dict[str, Any]) -> None:
    mounts = [
        option.split()[1] for option in cluster["docker"]["run_options"] if option.startswith("-v ")
    ]
    assert any(mount.split(":")[1] == "/assets" and mount.endswith(":ro") for mount in mounts)


def test_the_cluster_token_is_mounted_and_token_auth_is_on(cluster: dict[str, Any]) -> None:
    assert "~/.ray/auth_token" in cluster["file_mounts"]
    assert "--env RAY_AUTH_MODE=token" in cluster["docker"]["run_options"]
