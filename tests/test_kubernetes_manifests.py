"""The Kubernetes manifests are valid for the cluster versions we support, and safe to run.

Schema validation is offline (``kubernetes-validate`` ships the schemas) and strict, so a
misspelt field fails here rather than being silently dropped by the API server. The other
tests hold the manifests to what running many replicas of a clinical service needs, and to
the image that ``Dockerfile`` builds.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from cds_hooks import gunicorn_conf
from cds_hooks.app import create_app
from cds_hooks.auth.issuers import configured_issuers
from cds_hooks.store import normalise_database_url
from tests.conftest import sqlite_url

ROOT = Path(__file__).resolve().parent.parent
MANIFESTS = ROOT / "deploy" / "kubernetes"
DOCKERFILE = ROOT / "Dockerfile"
# The oldest Kubernetes minor release the manifests must work on (autoscaling/v2, policy/v1).
KUBERNETES_VERSION = "1.31"
IMAGE_NAME = "baclofen-cds"
CONTAINER = "baclofen-cds"


def _documents(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text(encoding="utf-8")) if doc]


def _resources() -> list[tuple[str, dict[str, Any]]]:
    return [
        (f"{path.name}:{doc['kind']}", doc)
        for path in sorted(MANIFESTS.glob("*.yaml"))
        if path.name != "kustomization.yaml"
        for doc in _documents(path)
    ]


RESOURCES = _resources()


def _one(kind: str) -> dict[str, Any]:
    found = [doc for _, doc in RESOURCES if doc["kind"] == kind]
    assert len(found) == 1, f"expected exactly one {kind}, found {len(found)}"
    return found[0]


def _container() -> dict[str, Any]:
    containers = _one("Deployment")["spec"]["template"]["spec"]["containers"]
    return next(c for c in containers if c["name"] == CONTAINER)


def _dockerfile_runtime_stage() -> list[str]:
    """Instruction lines of the final stage, continuation lines joined."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text(encoding="utf-8"))
    lines = [
        line.strip()
        for line in text.splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    ]
    last_from = max(i for i, line in enumerate(lines) if line.upper().startswith("FROM "))
    return lines[last_from:]


def _dockerfile_instruction(name: str) -> list[str]:
    return [
        line.split(None, 1)[1]
        for line in _dockerfile_runtime_stage()
        if line.split()[0].upper() == name
    ]


def _dockerfile_env() -> dict[str, str]:
    env: dict[str, str] = {}
    for args in _dockerfile_instruction("ENV"):
        env.update(dict(re.findall(r"(\w+)=(\S+)", args)))
    return env


def test_every_kind_a_replicated_service_needs_is_present() -> None:
    kinds = sorted(doc["kind"] for _, doc in RESOURCES)
    assert kinds == sorted(
        [
            "ConfigMap",
            "Deployment",
            "HorizontalPodAutoscaler",
            "PodDisruptionBudget",
            "Secret",
            "Service",
        ]
    )


@pytest.mark.parametrize(("name", "resource"), RESOURCES, ids=[name for name, _ in RESOURCES])
def test_manifest_matches_the_kubernetes_schema(name: str, resource: dict[str, Any]) -> None:
    validated = kubernetes_validate.validate(resource, KUBERNETES_VERSION, strict=True)
    assert validated == KUBERNETES_VERSION, name


def test_schema_validation_rejects_a_misspelt_field() -> None:
    """Guards the guard: strict validation must catch what the API server would drop."""
    deployment = _one("Deployment")
    broken = {**deployment, "spec": {**deployment["spec"], "replica": 3}}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, KUBERNETES_VERSION, strict=True)


def test_kustomization_applies_every_manifest_and_names_the_built_image() -> None:
    kustomization = _documents(MANIFESTS / "kustomization.yaml")[0]
    listed = set(kustomization["resources"])
    on_disk = {p.name for p in MANIFESTS.glob("*.yaml")} - {"kustomization.yaml"}
    assert listed == on_disk
    image = _container()["image"]
    name, _, tag = image.rpartition(":")
    assert name == IMAGE_NAME
    mapping = next(entry for entry in kustomization["images"] if entry["name"] == IMAGE_NAME)
    assert mapping["newTag"] == tag
    assert mapping["newName"].rsplit("/", 1)[-1] == IMAGE_NAME
    image_title = dict(
        re.findall(r'([\w.]+)="([^"]*)"', " ".join(_dockerfile_instruction("LABEL")))
    )
    assert image_title["org.opencontainers.image.title"] == IMAGE_NAME


def test_replicas_spread_and_survive_disruption() -> None:
    deployment = _one("Deployment")
    replicas = deployment["spec"]["replicas"]
    pdb = _one("PodDisruptionBudget")
    hpa = _one("HorizontalPodAutoscaler")
    assert replicas >= 2
    assert deployment["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    assert 1 <= pdb["spec"]["minAvailable"] < replicas
    # A drain must always be able to evict one pod: the autoscaler never goes down to the budget.
    assert hpa["spec"]["minReplicas"] > pdb["spec"]["minAvailable"]
    assert hpa["spec"]["minReplicas"] <= replicas <= hpa["spec"]["maxReplicas"]
    target = hpa["spec"]["scaleTargetRef"]
    assert (target["kind"], target["name"]) == ("Deployment", deployment["metadata"]["name"])


def test_selectors_pick_the_deployments_pods() -> None:
    deployment = _one("Deployment")
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    for selector in (
        deployment["spec"]["selector"]["matchLabels"],
        _one("PodDisruptionBudget")["spec"]["selector"]["matchLabels"],
        _one("Service")["spec"]["selector"],
    ):
        assert selector.items() <= pod_labels.items()


def test_probes_hit_the_health_endpoints_on_the_served_port() -> None:
    container = _container()
    ports = {port["name"]: port["containerPort"] for port in container["ports"]}
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert ports[container[probe]["httpGet"]["port"]] == 8080
    env = {item["name"]: item["value"] for item in container["env"]}
    assert int(env["CDS_PORT"]) == 8080
    assert [int(p.split("/")[0]) for p in _dockerfile_instruction("EXPOSE")] == [8080]
    service_port = _one("Service")["spec"]["ports"][0]
    assert service_port["targetPort"] in ports


def test_pods_run_unprivileged_on_a_read_only_root() -> None:
    pod = _one("Deployment")["spec"]["template"]["spec"]
    container = _container()
    security = container["securityContext"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert security["runAsNonRoot"] is True
    assert security["readOnlyRootFilesystem"] is True
    assert security["allowPrivilegeEscalation"] is False
    assert security["capabilities"]["drop"] == ["ALL"]
    assert pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
    assert pod["automountServiceAccountToken"] is False
    (user,) = _dockerfile_instruction("USER")
    assert pod["securityContext"]["runAsUser"] == int(user.split(":")[0]) != 0


def test_writable_paths_are_pod_local_volumes() -> None:
    pod = _one("Deployment")["spec"]["template"]["spec"]
    container = _container()
    empty_dirs = {volume["name"] for volume in pod["volumes"] if "emptyDir" in volume}
    mounts = {mount["mountPath"]: mount["name"] for mount in container["volumeMounts"]}
    env = {item["name"]: item["value"] for item in container["env"]}
    assert mounts["/tmp"] in empty_dirs
    assert mounts[env["PROMETHEUS_MULTIPROC_DIR"]] in empty_dirs
    assert env["PROMETHEUS_MULTIPROC_DIR"] == _dockerfile_env()["PROMETHEUS_MULTIPROC_DIR"]


def test_resources_are_bounded() -> None:
    resources = _container()["resources"]
    for section in ("requests", "limits"):
        assert {"cpu", "memory"} <= resources[section].keys()


def _manifest_environment() -> dict[str, str]:
    container = _container()
    sources = {
        ref.get("configMapRef", ref.get("secretRef"))["name"] for ref in container["envFrom"]
    }
    config_map, secret = _one("ConfigMap"), _one("Secret")
    assert sources == {config_map["metadata"]["name"], secret["metadata"]["name"]}
    env = {**config_map["data"], **secret["stringData"]}
    env.update({item["name"]: item["value"] for item in container["env"]})
    return env


def test_shutdown_finishes_requests_before_the_kubelet_kills() -> None:
    pod = _one("Deployment")["spec"]["template"]["spec"]
    env = _manifest_environment()
    pre_stop = _container()["lifecycle"]["preStop"]["exec"]["command"]
    assert pre_stop[0] == "sleep"
    budget = int(pre_stop[1]) + int(env["GUNICORN_GRACEFUL_TIMEOUT"])
    assert pod["terminationGracePeriodSeconds"] > budget


def test_manifest_settings_start_a_production_service(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """The ConfigMap and Secret, read the way the container reads its environment."""
    for name in list(os.environ):
        if name.startswith("CDS_") or name in ("DATABASE_URL", "WEB_CONCURRENCY"):
            monkeypatch.delenv(name)
    env = _manifest_environment()
    for name, value in env.items():
        monkeypatch.setenv(name, value)

    assert normalise_database_url(env["DATABASE_URL"]).drivername == "postgresql+psycopg"
    # The PostgreSQL placeholder is unreachable here; everything else is as deployed.
    app = create_app({"DATABASE_URL": sqlite_url(tmp_path)})
    settings = app.extensions["baclofen_settings"]
    assert settings.env == "production"
    assert settings.auth_mode == "enforce"
    assert settings.fhir_allowlist and all(
        url.startswith("https://") for url in settings.fhir_allowlist
    )
    assert configured_issuers(app.config)
    assert app.test_client().get("/readyz").status_code == 200

    options = gunicorn_conf.options()
    assert options["workers"] == int(env["WEB_CONCURRENCY"])
    assert str(options["bind"]).endswith(":8080")
    assert options["worker_tmp_dir"] == "/dev/shm"
