"""The Kubernetes manifests are valid for the cluster versions we support, and safe to run.

Schema validation is offline (``kubernetes-validate`` ships the schemas) and strict, so a
misspelt field fails here rather than being silently dropped by the API server. The other
tests hold the manifests to what running many replicas of a clinical service needs (an SRE's
review: the autoscaler alone sets the replica count, workers match the CPU limit, traffic
reaches gunicorn only through the proxy, the schema upgrade runs before the service with
its own credentials, a network policy allows only what the service uses), and to the image
that ``Dockerfile`` builds.
"""

from __future__ import annotations

import ipaddress
import json
import os
import re
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import kubernetes_validate
import pytest
import yaml

from cds_hooks import gunicorn_conf, proxy
from cds_hooks.app import create_app
from cds_hooks.auth.issuers import configured_issuers
from cds_hooks.config import settings_from_environment
from cds_hooks.store import normalise_database_url
from tests.conftest import sqlite_url

ROOT = Path(__file__).resolve().parent.parent
MANIFESTS = ROOT / "deploy" / "kubernetes"
DOCKERFILE = ROOT / "Dockerfile"
# The oldest Kubernetes minor release the manifests must work on (autoscaling/v2, policy/v1).
KUBERNETES_VERSION = "1.31"
IMAGE_NAME = "baclofen-cds"
CONTAINER = "baclofen-cds"
PROXY = "proxy"
DB_UPGRADE = "db-upgrade"
APP_SECRET = "baclofen-cds-secrets"
MIGRATION_SECRET = "baclofen-cds-migration"


def _documents(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text(encoding="utf-8")) if doc]


def _resources() -> list[tuple[str, dict[str, Any]]]:
    return [
        (f"{path.name}:{doc['kind']}:{doc['metadata']['name']}", doc)
        for path in sorted(MANIFESTS.glob("*.yaml"))
        if path.name != "kustomization.yaml"
        for doc in _documents(path)
    ]


RESOURCES = _resources()


def _one(kind: str) -> dict[str, Any]:
    found = [doc for _, doc in RESOURCES if doc["kind"] == kind]
    assert len(found) == 1, f"expected exactly one {kind}, found {len(found)}"
    return found[0]


def _named(kind: str, name: str) -> dict[str, Any]:
    (found,) = [
        doc for _, doc in RESOURCES if (doc["kind"], doc["metadata"]["name"]) == (kind, name)
    ]
    return found


def _pod() -> dict[str, Any]:
    pod: dict[str, Any] = _one("Deployment")["spec"]["template"]["spec"]
    return pod


def _container(name: str = CONTAINER) -> dict[str, Any]:
    """A container of the pod by name, the init and sidecar containers included."""
    pod = _pod()
    return next(
        c for c in [*pod.get("initContainers", []), *pod["containers"]] if c["name"] == name
    )


def _all_containers() -> list[dict[str, Any]]:
    pod = _pod()
    return [*pod.get("initContainers", []), *pod["containers"]]


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
            "NetworkPolicy",
            "PodDisruptionBudget",
            "Secret",
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
    images = {c["image"] for c in _all_containers()}
    assert len(images) == 1, "the service, its proxy and its schema upgrade run one image"
    name, _, tag = images.pop().rpartition(":")
    assert name == IMAGE_NAME
    mapping = next(entry for entry in kustomization["images"] if entry["name"] == IMAGE_NAME)
    assert mapping["newTag"] == tag
    assert mapping["newName"].rsplit("/", 1)[-1] == IMAGE_NAME
    image_title = dict(
        re.findall(r'([\w.]+)="([^"]*)"', " ".join(_dockerfile_instruction("LABEL")))
    )
    assert image_title["org.opencontainers.image.title"] == IMAGE_NAME


def test_the_autoscaler_alone_sets_the_replica_count_and_pods_survive_disruption() -> None:
    deployment = _one("Deployment")
    pdb = _one("PodDisruptionBudget")
    hpa = _one("HorizontalPodAutoscaler")
    target = hpa["spec"]["scaleTargetRef"]
    assert (target["kind"], target["name"]) == ("Deployment", deployment["metadata"]["name"])
    # With `replicas` in the Deployment, every apply would reset what the HPA had scaled to.
    assert "replicas" not in deployment["spec"]
    assert deployment["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    # A drain must always be able to evict one pod: the autoscaler never goes down to the budget.
    assert 1 <= pdb["spec"]["minAvailable"] < hpa["spec"]["minReplicas"]
    assert hpa["spec"]["minReplicas"] <= hpa["spec"]["maxReplicas"]


def test_selectors_pick_the_deployments_pods() -> None:
    deployment = _one("Deployment")
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    for selector in (
        deployment["spec"]["selector"]["matchLabels"],
        _one("PodDisruptionBudget")["spec"]["selector"]["matchLabels"],
        _one("Service")["spec"]["selector"],
    ):
        assert selector.items() <= pod_labels.items()


def test_traffic_and_probes_reach_gunicorn_only_through_the_proxy() -> None:
    """The production topology (docs/operations.md): nginx on the pod's port, a native
    sidecar; gunicorn on loopback, probed from inside its container."""
    env = _container_environment(CONTAINER)
    proxy_container = _container(PROXY)
    assert proxy_container["command"] == ["baclofen-cds", "proxy"]
    assert proxy_container["restartPolicy"] == "Always"  # a sidecar: first up, last down
    ports = {port["name"]: port["containerPort"] for port in proxy_container["ports"]}
    assert ports == {"http": int(env["CDS_PROXY_PORT"])}
    assert proxy_container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    assert proxy_container["livenessProbe"]["tcpSocket"]["port"] == "http"
    assert _one("Service")["spec"]["ports"][0]["targetPort"] == ports["http"]
    annotations = _one("Deployment")["spec"]["template"]["metadata"]["annotations"]
    assert int(annotations["prometheus.io/port"]) == ports["http"]
    assert [int(p.split("/")[0]) for p in _dockerfile_instruction("EXPOSE")] == [ports["http"]]

    service = _container()
    assert "ports" not in service
    assert env["CDS_HOST"] == "127.0.0.1"
    assert int(env["CDS_PORT"]) != ports["http"]
    (healthcheck,) = _dockerfile_instruction("HEALTHCHECK")
    image_probe = json.loads(healthcheck.split(" CMD ", 1)[1])
    assert service["startupProbe"]["exec"]["command"] == image_probe
    assert service["livenessProbe"]["exec"]["command"] == image_probe
    assert "readinessProbe" not in service  # the proxy's readiness goes through to /readyz


def test_pods_run_unprivileged_on_a_read_only_root() -> None:
    pod = _pod()
    assert pod["securityContext"]["runAsNonRoot"] is True
    for container in _all_containers():
        security = container["securityContext"]
        assert security["runAsNonRoot"] is True, container["name"]
        assert security["readOnlyRootFilesystem"] is True, container["name"]
        assert security["allowPrivilegeEscalation"] is False, container["name"]
        assert security["capabilities"]["drop"] == ["ALL"], container["name"]
    assert pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
    assert pod["automountServiceAccountToken"] is False
    (user,) = _dockerfile_instruction("USER")
    assert pod["securityContext"]["runAsUser"] == int(user.split(":")[0]) != 0


def test_writable_paths_are_pod_local_volumes() -> None:
    pod = _pod()
    empty_dirs = {volume["name"] for volume in pod["volumes"] if "emptyDir" in volume}
    for container in _all_containers():
        mounts = {mount["mountPath"]: mount["name"] for mount in container["volumeMounts"]}
        assert mounts["/tmp"] in empty_dirs, container["name"]
    # nginx's buffers (under /tmp) cannot crowd out the service's temporary files.
    assert _container(PROXY)["volumeMounts"][0]["name"] not in {
        mount["name"] for mount in _container()["volumeMounts"]
    }
    mounts = {mount["mountPath"]: mount["name"] for mount in _container()["volumeMounts"]}
    env = {item["name"]: item["value"] for item in _container()["env"]}
    assert mounts[env["PROMETHEUS_MULTIPROC_DIR"]] in empty_dirs
    assert env["PROMETHEUS_MULTIPROC_DIR"] == _dockerfile_env()["PROMETHEUS_MULTIPROC_DIR"]


def test_resources_are_bounded() -> None:
    for container in _all_containers():
        for section in ("requests", "limits"):
            assert {"cpu", "memory"} <= container["resources"][section].keys(), container["name"]


def _cores(quantity: str) -> float:
    return int(quantity[:-1]) / 1000 if quantity.endswith("m") else float(quantity)


def test_workers_per_pod_match_the_cpu_limit() -> None:
    """Hook evaluation is CPU-bound Python: one worker uses one core at most, so fewer
    workers than cores leave the limit unused and more only queue on it."""
    workers = int(_container_environment(CONTAINER)["WEB_CONCURRENCY"])
    assert workers == _cores(_container()["resources"]["limits"]["cpu"])


def _env_sources(container: dict[str, Any]) -> set[str]:
    return {ref.get("configMapRef", ref.get("secretRef"))["name"] for ref in container["envFrom"]}


def _container_environment(name: str) -> dict[str, str]:
    """The environment a container starts with: its envFrom sources, then its env."""
    container = _container(name)
    env: dict[str, str] = {}
    for ref in container["envFrom"]:
        if "configMapRef" in ref:
            env.update(_named("ConfigMap", ref["configMapRef"]["name"])["data"])
        else:
            env.update(_named("Secret", ref["secretRef"]["name"])["stringData"])
    env.update({item["name"]: item["value"] for item in container.get("env", [])})
    return env


def _manifest_environment() -> dict[str, str]:
    config_map = _one("ConfigMap")["metadata"]["name"]
    assert _env_sources(_container()) == {config_map, APP_SECRET}
    return _container_environment(CONTAINER)


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
    assert options["bind"] == f"127.0.0.1:{env['CDS_PORT']}"
    assert options["worker_tmp_dir"] == "/dev/shm"


def test_the_proxy_starts_from_its_manifest_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    env = _container_environment(PROXY)
    assert _env_sources(_container(PROXY)) == {_one("ConfigMap")["metadata"]["name"]}
    for name in list(os.environ):
        if name.startswith("CDS_"):
            monkeypatch.delenv(name)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    settings = proxy.settings_from_env()
    assert (settings.listen_host, settings.listen_port) == ("0.0.0.0", int(env["CDS_PROXY_PORT"]))
    assert settings.upstream_port == int(_container_environment(CONTAINER)["CDS_PORT"])
    assert settings.max_body_bytes == settings_from_environment().max_body_bytes


def test_the_schema_is_upgraded_before_the_service_starts_with_the_owners_credentials() -> None:
    """The service's role reads and writes rows; only the init container may change the
    schema (docs/operations.md, "Database schema")."""
    init_names = [c["name"] for c in _pod()["initContainers"]]
    assert init_names.index(DB_UPGRADE) < init_names.index(PROXY)
    upgrade = _container(DB_UPGRADE)
    assert upgrade["command"] == ["baclofen-cds", "db", "upgrade"]
    assert "restartPolicy" not in upgrade  # runs to completion before anything serves
    assert MIGRATION_SECRET in _env_sources(upgrade)
    assert MIGRATION_SECRET not in _env_sources(_container())
    assert not any("secretRef" in ref for ref in _container(PROXY)["envFrom"])

    owner = urlsplit(_container_environment(DB_UPGRADE)["DATABASE_URL"])
    service = urlsplit(_container_environment(CONTAINER)["DATABASE_URL"])
    assert (owner.hostname, owner.port, owner.path) == (
        service.hostname,
        service.port,
        service.path,
    )
    assert owner.username != service.username


def _rule_ports(rule: dict[str, Any]) -> set[tuple[str, int]]:
    return {(port["protocol"], port["port"]) for port in rule["ports"]}


def test_the_network_policy_allows_only_what_the_service_uses() -> None:
    policy = _one("NetworkPolicy")["spec"]
    pod_labels = _one("Deployment")["spec"]["template"]["metadata"]["labels"]
    assert policy["podSelector"]["matchLabels"].items() <= pod_labels.items()
    assert sorted(policy["policyTypes"]) == ["Egress", "Ingress"]

    # In: only the proxy's port, from named namespaces (the ingress controller, the EHR,
    # Prometheus); never gunicorn's, never from anywhere.
    proxy_port = _container(PROXY)["ports"][0]["containerPort"]
    for rule in policy["ingress"]:
        assert rule["from"] and all("namespaceSelector" in peer for peer in rule["from"])
        assert _rule_ports(rule) == {("TCP", proxy_port)}

    # Out: DNS to the cluster's resolver, the database's port, HTTPS to the FHIR servers and
    # JWKS hosts; every rule names its peers and ports (none allows everything).
    env = _container_environment(CONTAINER)
    database = urlsplit(env["DATABASE_URL"])
    https_targets = [
        *env["CDS_FHIR_ALLOWLIST"].split(","),
        *(issuer["jwks_url"] for issuer in json.loads(env["CDS_TRUSTED_ISSUERS"])),
    ]
    https_ports = {urlsplit(url).port or 443 for url in https_targets}
    assert all(urlsplit(url).scheme == "https" for url in https_targets)
    assert all(rule["to"] and rule["ports"] for rule in policy["egress"])
    allowed = set().union(*(_rule_ports(rule) for rule in policy["egress"]))
    assert allowed == {
        ("UDP", 53),
        ("TCP", 53),
        ("TCP", database.port or 5432),
        *(("TCP", port) for port in https_ports),
    }
    dns = next(rule for rule in policy["egress"] if ("UDP", 53) in _rule_ports(rule))
    assert dns["to"][0]["podSelector"]["matchLabels"] == {"k8s-app": "kube-dns"}
    for rule in policy["egress"]:
        for peer in rule["to"]:
            if "ipBlock" in peer:
                network = ipaddress.ip_network(peer["ipBlock"]["cidr"])
                assert network.prefixlen >= 16, f"{network} is wider than a site's addresses"
