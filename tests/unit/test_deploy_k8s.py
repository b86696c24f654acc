"""deploy/k8s: manifests valid against Kubernetes' schemas (strict), consistent with each other."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest

from tests.unit.test_deploy_compose import checks, redis_conf

MANIFESTS = checks.k8s_manifests()
RESOURCES = [
    pytest.param(resource, id=f"{path.name}:{resource['kind']}")
    for path in MANIFESTS
    for resource in checks.load_yaml_documents(path)
]


ALL_RESOURCES: list[dict[str, Any]] = [
    resource for path in MANIFESTS for resource in checks.load_yaml_documents(path)
]


def resources_of(kind: str) -> list[dict[str, Any]]:
    found = [resource for resource in ALL_RESOURCES if resource["kind"] == kind]
    assert found, f"no {kind} under deploy/k8s"
    return found


def named(kind: str, name: str) -> dict[str, Any]:
    (resource,) = [r for r in resources_of(kind) if r["metadata"]["name"] == name]
    return resource


def containers(pod_template: dict[str, Any]) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = pod_template["spec"]["containers"]
    return found


def env_of(container: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {item["name"]: item for item in container.get("env", [])}


def ray_cluster() -> dict[str, Any]:
    (cluster,) = resources_of("RayCluster")
    return cluster


def ray_pod_templates() -> list[dict[str, Any]]:
    spec = ray_cluster()["spec"]
    return [group["template"] for group in [spec["headGroupSpec"], *spec["workerGroupSpecs"]]]


@pytest.mark.parametrize("resource", RESOURCES)
def test_resource_is_valid_against_its_schema(resource: dict[str, Any]) -> None:
    if resource["kind"] == "RayCluster":
        # A custom resource: its pod templates are checked against PodTemplateSpec below.
        assert resource["apiVersion"] == "ray.io/v1"
        return
    if resource["kind"] == "ServiceMonitor":  # a CRD too: tests/unit/test_deploy_monitoring.py
        assert checks.check_service_monitor(resource) == []
        return
    assert checks.check_k8s_resource(resource) == []


def test_strict_validation_reports_an_unknown_field_and_a_wrong_type() -> None:
    misspelt = copy.deepcopy(named("Deployment", "grace-selection"))
    misspelt["spec"]["template"]["spec"]["containers"][0]["readynessProbe"] = {}
    (problem,) = checks.check_k8s_resource(misspelt)
    assert "readynessProbe" in problem
    wrong_type = copy.deepcopy(named("StatefulSet", "redis"))
    wrong_type["spec"]["replicas"] = "one"
    (problem,) = checks.check_k8s_resource(wrong_type)
    assert "replicas" in problem


@pytest.mark.parametrize("index", range(len(ray_pod_templates())))
def test_ray_pod_templates_are_valid_pod_templates(index: int) -> None:
    assert checks.check_pod_template(ray_pod_templates()[index]) == []


def test_pod_template_check_reports_a_broken_container() -> None:
    template = copy.deepcopy(ray_pod_templates()[1])
    template["spec"]["containers"][0]["resource"] = {"limits": {}}
    template["spec"]["volumes"][0]["emptyDir"]["medium"] = 5
    assert len(checks.check_pod_template(template)) == 2


def test_kustomization_lists_every_manifest_and_nothing_else() -> None:
    assert checks.check_kustomization() == []


def test_ray_cluster_matches_the_pinned_ray_and_runs_no_work_on_the_head() -> None:
    spec = ray_cluster()["spec"]
    assert spec["rayVersion"] == checks.pinned_versions()["ray"]
    assert spec["headGroupSpec"]["rayStartParams"]["num-cpus"] == "0"
    assert spec["headGroupSpec"]["rayStartParams"]["num-gpus"] == "0"


def test_gpu_group_requests_gpus_tolerates_gpu_taints_and_has_shm() -> None:
    (group,) = [g for g in ray_cluster()["spec"]["workerGroupSpecs"] if g["groupName"] == "gpu"]
    assert group["minReplicas"] <= group["replicas"] <= group["maxReplicas"]
    pod = group["template"]["spec"]
    (worker,) = pod["containers"]
    assert int(worker["resources"]["limits"]["nvidia.com/gpu"]) >= 1
    assert any(t["key"] == "nvidia.com/gpu" for t in pod["tolerations"])
    volumes = {volume["name"]: volume for volume in pod["volumes"]}
    shm = [m for m in worker["volumeMounts"] if m["mountPath"] == "/dev/shm"]
    assert shm
    assert volumes[shm[0]["name"]]["emptyDir"]["medium"] == "Memory"


def test_every_ray_process_uses_one_image_and_the_cluster_token() -> None:
    job = checks.load_yaml(checks.K8S_DIR / "jobs" / "score-job.yaml")
    pods = [*ray_pod_templates(), job["spec"]["template"]]
    images = {container["image"] for pod in pods for container in containers(pod)}
    version = checks.pyproject()["project"]["version"]
    assert images == {f"grace-coresets/worker:{version}"}
    for pod in pods:
        for container in containers(pod):
            env = env_of(container)
            assert env["RAY_AUTH_MODE"]["value"] == "token"
            ref = env["RAY_AUTH_TOKEN"]["valueFrom"]["secretKeyRef"]
            assert ref == {"name": "grace-secrets", "key": "ray-auth-token"}
    autoscaler_env = {e["name"]: e for e in ray_cluster()["spec"]["autoscalerOptions"]["env"]}
    assert autoscaler_env["RAY_AUTH_MODE"]["value"] == "token"


def test_selection_service_is_a_single_writer_with_probes() -> None:
    deployment = named("Deployment", "grace-selection")
    assert deployment["spec"]["replicas"] == 1
    assert deployment["spec"]["strategy"]["type"] == "Recreate"
    (container,) = containers(deployment["spec"]["template"])
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"


def test_selection_env_names_real_settings_and_takes_the_token_from_a_secret() -> None:
    deployment = named("Deployment", "grace-selection")
    (container,) = containers(deployment["spec"]["template"])
    env = env_of(container)
    settings = checks.service_settings()
    assert sorted(set(env) - set(settings)) == []
    ref = env["GRACE_TOKEN"]["valueFrom"]["secretKeyRef"]
    assert ref == {"name": "grace-secrets", "key": "grace-token"}
    assert ref.get("optional") is not True


def test_selection_reaches_redis_and_keeps_its_data_on_a_volume() -> None:
    deployment = named("Deployment", "grace-selection")
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    env = env_of(container)
    redis_service = named("Service", "redis")
    (redis_port,) = redis_service["spec"]["ports"]
    assert str(redis_port["port"]) == redis_conf()["port"]
    assert env["GRACE_STORE"]["value"] == f"redis://redis:{redis_port['port']}/0"
    data_dir = env["GRACE_DATA_DIR"]["value"]
    (mount,) = [m for m in container["volumeMounts"] if m["mountPath"] == data_dir]
    (volume,) = [v for v in pod["volumes"] if v["name"] == mount["name"]]
    claim = volume["persistentVolumeClaim"]["claimName"]
    assert named("PersistentVolumeClaim", claim)["spec"]["accessModes"] == ["ReadWriteOnce"]
    service = named("Service", "grace-selection")
    (port,) = service["spec"]["ports"]
    (container_port,) = container["ports"]
    assert port["targetPort"] == container_port["name"]
    assert container_port["containerPort"] == settings_default("GRACE_PORT")


def settings_default(name: str) -> Any:
    return checks.service_settings()[name]


def test_redis_has_a_persistent_volume_the_same_config_and_a_ping_probe() -> None:
    statefulset = named("StatefulSet", "redis")
    (claim,) = statefulset["spec"]["volumeClaimTemplates"]
    (container,) = containers(statefulset["spec"]["template"])
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    assert mounts[redis_conf()["dir"]] == claim["metadata"]["name"]
    config = named("ConfigMap", "redis-config")
    assert config["data"]["redis.conf"] == (checks.DOCKER_DIR / "redis.conf").read_text()
    assert config["data"]["redis-data.sh"] == (checks.DOCKER_DIR / "redis-data.sh").read_text()
    assert container["command"][-1] == "/etc/redis/redis.conf"
    assert "redis-cli ping" in " ".join(container["readinessProbe"]["exec"]["command"])


def test_only_the_selection_pods_may_reach_redis() -> None:
    (policy,) = resources_of("NetworkPolicy")
    redis_labels = named("StatefulSet", "redis")["spec"]["template"]["metadata"]["labels"]
    selection = named("Deployment", "grace-selection")["spec"]["template"]["metadata"]["labels"]
    assert policy["spec"]["podSelector"]["matchLabels"].items() <= redis_labels.items()
    (rule,) = policy["spec"]["ingress"]
    (source,) = rule["from"]
    assert source["podSelector"]["matchLabels"].items() <= selection.items()


def test_scoring_job_reaches_the_ray_head_and_the_service() -> None:
    job = checks.load_yaml(checks.K8S_DIR / "jobs" / "score-job.yaml")
    (container,) = containers(job["spec"]["template"])
    cluster_name = ray_cluster()["metadata"]["name"]
    head = containers(ray_cluster()["spec"]["headGroupSpec"]["template"])[0]
    client_port = {p["name"]: p["containerPort"] for p in head["ports"]}["client"]
    assert f"ray://{cluster_name}-head-svc:{client_port}" in container["command"]
    (port,) = named("Service", "grace-selection")["spec"]["ports"]
    assert env_of(container)["GRACE_URL"]["value"] == f"http://grace-selection:{port['port']}"


def test_images_carry_the_project_version_and_uids_match_the_dockerfiles() -> None:
    version = checks.pyproject()["project"]["version"]
    kustomization = checks.load_yaml(checks.K8S_DIR / "kustomization.yaml")
    assert {image["newTag"] for image in kustomization["images"]} == {version}
    service_uid = user_of(checks.DOCKER_DIR / "service.Dockerfile")
    worker_uid = user_of(checks.DOCKER_DIR / "worker.Dockerfile")
    selection = named("Deployment", "grace-selection")["spec"]["template"]["spec"]
    assert selection["securityContext"]["runAsUser"] == service_uid
    for pod in ray_pod_templates():
        assert pod["spec"]["securityContext"]["runAsUser"] == worker_uid


def user_of(dockerfile: Path) -> int:
    """The numeric uid of the last USER instruction (Kubernetes' runAsNonRoot needs a number)."""
    users = [
        line.split()[1] for line in dockerfile.read_text().splitlines() if line.startswith("USER ")
    ]
    return int(users[-1].split(":")[0])


def test_restore_pod_mounts_the_redis_claim_and_checks_the_redis_service() -> None:
    pod = checks.load_yaml(checks.K8S_DIR / "jobs" / "redis-restore.yaml")
    assert checks.check_k8s_resource(pod) == []
    statefulset = named("StatefulSet", "redis")
    (claim,) = statefulset["spec"]["volumeClaimTemplates"]
    # A StatefulSet's claims are named <template>-<statefulset>-<ordinal>.
    expected_claim = f"{claim['metadata']['name']}-{statefulset['metadata']['name']}-0"
    volumes = {v["name"]: v for v in pod["spec"]["volumes"]}
    (container,) = pod["spec"]["containers"]
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    assert volumes[mounts[redis_conf()["dir"]]]["persistentVolumeClaim"]["claimName"] == (
        expected_claim
    )
    (redis_container,) = containers(statefulset["spec"]["template"])
    assert container["image"] == redis_container["image"]
    config_dir = [m["mountPath"] for m in redis_container["volumeMounts"] if m["name"] == "config"]
    assert mounts[config_dir[0]] == "config"
    assert env_of(container)["REDIS_CLI_ARGS"]["value"] == "-h redis"
    assert named("Service", "redis")["metadata"]["name"] == "redis"


def test_compose_and_kubernetes_run_the_same_redis() -> None:
    compose = checks.load_yaml(checks.COMPOSE_FILE)
    (redis_container,) = containers(named("StatefulSet", "redis")["spec"]["template"])
    assert compose["services"]["redis"]["image"] == redis_container["image"]
