"""The Kubernetes manifests under deploy/k8s/ against the offline schemas of kubernetes-validate."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from service.http.app import create_app
from service.settings import Settings

K8S = Path(__file__).resolve().parents[2] / "deploy" / "k8s"
# The oldest Kubernetes still commonly run, and the newest the schemas know.
VERSIONS = ["1.29.0", kubernetes_validate.latest_version()]
IMAGE_UID = 10001  # the Dockerfile's `useradd --uid`


def load(name: str) -> dict[str, Any]:
    (document,) = list(yaml.safe_load_all((K8S / name).read_text()))
    return document


def plain_manifests() -> list[str]:
    return load("kustomization.yaml")["resources"]


def by_kind() -> dict[str, dict[str, Any]]:
    documents = [load(name) for name in plain_manifests()]
    return {document["kind"]: document for document in documents}


def test_kustomization_lists_every_plain_manifest() -> None:
    on_disk = {path.name for path in K8S.glob("*.yaml")} - {
        "kustomization.yaml",
        "kserve-inferenceservice.yaml",
    }
    assert sorted(plain_manifests()) == sorted(on_disk)
    assert set(by_kind()) == {
        "PersistentVolumeClaim",
        "Job",
        "Deployment",
        "Service",
        "HorizontalPodAutoscaler",
        "PodDisruptionBudget",
    }


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("name", plain_manifests())
def test_manifest_is_valid_kubernetes(name: str, version: str) -> None:
    kubernetes_validate.validate(load(name), version, strict=True)


def test_job_and_deployment_share_the_model_claim() -> None:
    kinds = by_kind()
    claim = kinds["PersistentVolumeClaim"]["metadata"]["name"]
    for kind in ("Job", "Deployment"):
        volumes = kinds[kind]["spec"]["template"]["spec"]["volumes"]
        claims = [v["persistentVolumeClaim"]["claimName"] for v in volumes if "persistentVolumeClaim" in v]
        assert claims == [claim], kind
    (job_container,) = kinds["Job"]["spec"]["template"]["spec"]["containers"]
    assert job_container["command"] == ["python", "-m", "training"]
    assert job_container["args"][job_container["args"].index("--artifacts") + 1] == "/models"


def test_deployment_probes_resources_and_user() -> None:
    deployment = by_kind()["Deployment"]
    pod = deployment["spec"]["template"]["spec"]
    (api,) = pod["containers"]
    assert api["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert api["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert {"cpu", "memory"} <= set(api["resources"]["requests"])
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == IMAGE_UID
    assert deployment["spec"]["replicas"] >= 2


def test_service_and_autoscaler_target_the_deployment() -> None:
    kinds = by_kind()
    deployment = kinds["Deployment"]
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    service = kinds["Service"]
    assert service["spec"]["selector"].items() <= pod_labels.items()
    (port,) = service["spec"]["ports"]
    (api,) = deployment["spec"]["template"]["spec"]["containers"]
    assert port["targetPort"] in {p["name"] for p in api["ports"]}
    hpa = kinds["HorizontalPodAutoscaler"]
    target = hpa["spec"]["scaleTargetRef"]
    assert (target["kind"], target["name"]) == ("Deployment", deployment["metadata"]["name"])
    assert hpa["spec"]["minReplicas"] >= 2
    assert hpa["spec"]["maxReplicas"] > hpa["spec"]["minReplicas"]


def test_kserve_example_is_a_v2_custom_predictor_on_the_claim() -> None:
    service = load("kserve-inferenceservice.yaml")
    assert service["apiVersion"] == "serving.kserve.io/v1beta1"
    # A CRD: the core schemas do not know it, so check its containers as a Pod's instead.
    with pytest.raises(kubernetes_validate.SchemaNotFoundError):
        kubernetes_validate.validate(service, VERSIONS[-1], strict=True)
    containers = service["spec"]["predictor"]["containers"]
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "check"},
        "spec": {"containers": containers},
    }
    for version in VERSIONS:
        kubernetes_validate.validate(pod, version, strict=True)
    (container,) = containers
    env = {variable["name"]: variable["value"] for variable in container["env"]}
    claim = by_kind()["PersistentVolumeClaim"]["metadata"]["name"]
    assert env["STORAGE_URI"] == f"pvc://{claim}/"
    assert env["DROPSERVE_MODEL_REPOSITORY"] == "/mnt/models"
    assert container["readinessProbe"]["httpGet"]["path"] == "/v2/health/ready"
    assert container["livenessProbe"]["httpGet"]["path"] == "/v2/health/live"
    routes = {getattr(route, "path", None) for route in create_app(Settings()).routes}
    for probe in ("readinessProbe", "livenessProbe"):
        assert container[probe]["httpGet"]["path"] in routes  # the service's real V2 routes
        assert container[probe]["httpGet"]["port"] == container["ports"][0]["containerPort"] == 8000


# Pod Security Standards, "restricted" profile (kubernetes.io/docs/concepts/security/pod-security-standards):
# the checks of its baseline and restricted levels that a pod template can fail.
ALLOWED_VOLUMES = {
    "configMap", "csi", "downwardAPI", "emptyDir", "ephemeral", "persistentVolumeClaim", "projected",
    "secret",
}  # fmt: skip


def restricted_profile_violations(pod: dict[str, Any]) -> list[str]:
    """What keeps `pod` (a PodSpec) from the restricted profile, each as a sentence."""
    problems = []
    pod_context = pod.get("securityContext", {})
    for host in ("hostNetwork", "hostPID", "hostIPC"):
        if pod.get(host):
            problems.append(f"{host} is set")
    for volume in pod.get("volumes", []):
        kinds = set(volume) - {"name"}
        if not kinds <= ALLOWED_VOLUMES:
            problems.append(f"volume {volume['name']} is of type {sorted(kinds)}")
    for container in pod.get("initContainers", []) + pod["containers"]:
        name, context = container["name"], container.get("securityContext", {})
        merged = {**pod_context, **context}
        if context.get("privileged"):
            problems.append(f"{name}: privileged")
        if context.get("allowPrivilegeEscalation") is not False:
            problems.append(f"{name}: allowPrivilegeEscalation must be false")
        capabilities = context.get("capabilities", {})
        if "ALL" not in capabilities.get("drop", []):
            problems.append(f"{name}: capabilities must drop ALL")
        if set(capabilities.get("add", [])) - {"NET_BIND_SERVICE"}:
            problems.append(f"{name}: adds capabilities {capabilities['add']}")
        if merged.get("runAsNonRoot") is not True:
            problems.append(f"{name}: runAsNonRoot must be true")
        if merged.get("runAsUser") == 0:
            problems.append(f"{name}: runs as uid 0")
        if merged.get("seccompProfile", {}).get("type") not in ("RuntimeDefault", "Localhost"):
            problems.append(f"{name}: seccompProfile must be RuntimeDefault or Localhost")
        if any("hostPort" in port for port in container.get("ports", [])):
            problems.append(f"{name}: hostPort")
    return problems


def pod_templates() -> dict[str, dict[str, Any]]:
    """Every pod this repository deploys: the plain stack's, and the KServe example's predictor."""
    templates = {
        kind: doc["spec"]["template"]["spec"]
        for kind, doc in by_kind().items()
        if kind in ("Job", "Deployment")
    }
    templates["InferenceService"] = load("kserve-inferenceservice.yaml")["spec"]["predictor"]
    return templates


@pytest.mark.parametrize("kind", ["Job", "Deployment", "InferenceService"])
def test_pods_pass_the_restricted_pod_security_profile(kind: str) -> None:
    assert restricted_profile_violations(pod_templates()[kind]) == []


def test_the_restricted_check_catches_what_it_checks() -> None:
    loose = {
        "hostNetwork": True,
        "volumes": [{"name": "h", "hostPath": {"path": "/"}}],
        "containers": [
            {
                "name": "c",
                "securityContext": {"capabilities": {"add": ["SYS_ADMIN"]}},
                "ports": [{"hostPort": 80}],
            }
        ],
    }
    assert len(restricted_profile_violations(loose)) == 8


def test_no_api_token_is_mounted() -> None:
    for kind in ("Job", "Deployment"):
        assert pod_templates()[kind]["automountServiceAccountToken"] is False, kind


def test_images_are_tagged_and_the_tag_is_a_kustomize_parameter() -> None:
    images = {
        c["image"]
        for pod in pod_templates().values()
        for c in pod.get("initContainers", []) + pod["containers"]
    }
    for image in images:
        tag = image.partition(":")[2]
        assert tag and tag != "latest", f"{image}: name a version, never latest"
    (parameter,) = load("kustomization.yaml")["images"]
    assert {image.partition(":")[0] for image in images} == {parameter["name"]}
    assert parameter["newTag"] != "latest"


def test_a_disruption_budget_keeps_an_api_pod_serving() -> None:
    kinds = by_kind()
    budget, deployment = kinds["PodDisruptionBudget"], kinds["Deployment"]
    assert (
        budget["spec"]["selector"]["matchLabels"].items()
        <= deployment["spec"]["template"]["metadata"]["labels"].items()
    )
    assert 1 <= budget["spec"]["minAvailable"] < deployment["spec"]["replicas"]
    pod = deployment["spec"]["template"]["spec"]
    (api,) = pod["containers"]
    # Drained, not cut: preStop keeps it serving while the endpoint goes, then the grace period
    # covers a request's full timeout.
    assert api["lifecycle"]["preStop"]["exec"]["command"] == ["sleep", "5"]
    assert pod["terminationGracePeriodSeconds"] > 5 + 31
