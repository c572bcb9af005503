"""The Kubernetes manifests under deploy/k8s/ against the offline schemas of kubernetes-validate."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

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
    assert "NOT landed" in (K8S / "kserve-inferenceservice.yaml").read_text()
