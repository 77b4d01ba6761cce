"""The Kubernetes manifests in deploy/kubernetes, checked offline.

Every Kubernetes object is validated with kubernetes-validate (its bundled OpenAPI schemas, in
strict mode: an unknown or misspelled field fails) for the Kubernetes versions below. The
agent-sandbox objects are custom resources with no schema in that package: their fields are
checked against the v1beta1 CRDs of kubernetes-sigs/agent-sandbox (transcribed below), and the
SandboxTemplate's pod template is validated as a Pod. Then what the manifests promise: the pod
runs the server the way the image expects (port 3000, the readiness and liveness routes, uid
1000, a grace period over the server's own shutdown timeout, writable volumes for what the
services write on a read-only root), the plain example and the template run the same pod, and
the image is named in one place per kustomization, with no registry host. None of it uses the
network (a fixture makes every connection attempt fail).
"""

from __future__ import annotations

import copy
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from sandbox_core.config import ServerConfig
from sandbox_services.backup.service import BackupSettings

DEPLOY = Path(__file__).resolve().parents[2] / "deploy" / "kubernetes"
AGENT_SANDBOX = DEPLOY / "agent-sandbox"
#: the Kubernetes releases the manifests are validated for: the three minor versions upstream
#: supports at the time of writing (the newest is the newest kubernetes-validate bundles)
KUBERNETES_VERSIONS = ("1.35", "1.36", "1.37")
#: the manifests outside a kustomization's resources, and why: a claim is made per sandbox
NOT_IN_A_KUSTOMIZATION = {AGENT_SANDBOX / "sandbox-claim.yaml"}

Obj = dict[str, Any]

# The v1beta1 fields of the agent-sandbox extensions (extensions.agents.x-k8s.io), from their
# CRDs: each spec's properties, and the values of the enums among them.
AGENT_SANDBOX_API = "extensions.agents.x-k8s.io/v1beta1"
TEMPLATE_SPEC = {
    "podTemplate",
    "volumeClaimTemplates",
    "volumeClaimTemplatesPolicy",
    "service",
    "networkPolicy",
    "networkPolicyManagement",
    "envVarsInjectionPolicy",
}
POD_TEMPLATE = {"metadata", "spec"}
POD_TEMPLATE_METADATA = {"labels", "annotations"}
WARM_POOL_SPEC = {"replicas", "sandboxTemplateRef", "updateStrategy"}
CLAIM_SPEC = {"warmPoolRef", "lifecycle", "additionalPodMetadata", "env", "volumeClaimTemplates"}
CLAIM_LIFECYCLE = {"shutdownTime", "ttlSecondsAfterFinished", "shutdownPolicy"}
ENUMS = {
    "networkPolicyManagement": {"Managed", "Unmanaged"},
    "envVarsInjectionPolicy": {"Allowed", "Overrides", "Disallowed"},
    "volumeClaimTemplatesPolicy": {"Disallowed", "Allowed", "Overrides"},
}
UPDATE_STRATEGIES = {"OnReplenish", "Recreate"}
SHUTDOWN_POLICIES = {"Delete", "DeleteForeground", "Retain"}


@pytest.fixture(autouse=True)
def no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any connection attempt fails the test: the schemas come from the installed package."""

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("the manifest checks must not use the network")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


def load(path: Path) -> list[Obj]:
    with path.open(encoding="utf-8") as fh:
        return [doc for doc in yaml.safe_load_all(fh) if doc is not None]


def kustomization(folder: Path) -> Obj:
    (doc,) = load(folder / "kustomization.yaml")
    assert doc["apiVersion"] == "kustomize.config.k8s.io/v1beta1" and doc["kind"] == "Kustomization"
    return doc


def generated_secrets(folder: Path) -> list[Obj]:
    """The Secrets a kustomization's secretGenerator makes, with a made-up token in place of the
    git-ignored env file's (which a user writes before `kubectl apply -k`)."""
    secrets = []
    for gen in kustomization(folder).get("secretGenerator", []):
        assert set(gen) <= {"name", "type", "envs", "options"}, gen
        assert gen["envs"] == ["sandbox-token.env"], "the token file the README tells the user to write"
        secrets.append(
            {
                "apiVersion": "v1",
                "kind": "Secret",
                "metadata": {"name": gen["name"]},
                "type": gen.get("type", "Opaque"),
                "stringData": {"SANDBOX_TOKEN": "0123456789abcdef" * 4},
            }
        )
    return secrets


def objects(folder: Path) -> list[Obj]:
    """What `kubectl apply -k folder` creates (its resources and generated Secrets)."""
    found = [obj for name in kustomization(folder)["resources"] for obj in load(folder / name)]
    return found + generated_secrets(folder)


def one(objs: list[Obj], kind: str) -> Obj:
    (found,) = [obj for obj in objs if obj["kind"] == kind]
    return found


def plain() -> list[Obj]:
    return objects(DEPLOY)


def agent_sandbox() -> list[Obj]:
    return objects(AGENT_SANDBOX) + load(AGENT_SANDBOX / "sandbox-claim.yaml")


def deployment_pod() -> Obj:
    pod: Obj = one(plain(), "Deployment")["spec"]["template"]
    return pod


def template_pod() -> Obj:
    pod: Obj = one(agent_sandbox(), "SandboxTemplate")["spec"]["podTemplate"]
    return pod


def as_pod(pod_template: Obj, name: str) -> Obj:
    """A pod template (metadata and spec) as the Pod it describes."""
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, **pod_template.get("metadata", {})},
        "spec": pod_template["spec"],
    }


def validate(obj: Obj, version: str) -> None:
    """kubernetes-validate, strict: unknown fields fail; and the schema of that very version."""
    assert kubernetes_validate.validate(obj, version, strict=True) == version


def check_agent_sandbox(obj: Obj) -> None:
    """An agent-sandbox extension object uses only the fields and values of its v1beta1 CRD."""
    assert obj["apiVersion"] == AGENT_SANDBOX_API, obj["apiVersion"]
    assert set(obj) <= {"apiVersion", "kind", "metadata", "spec"}, sorted(obj)
    assert obj["metadata"]["name"]
    spec = obj["spec"]
    if obj["kind"] == "SandboxTemplate":
        assert set(spec) <= TEMPLATE_SPEC, sorted(set(spec) - TEMPLATE_SPEC)
        assert set(spec["podTemplate"]) <= POD_TEMPLATE, sorted(spec["podTemplate"])
        assert set(spec["podTemplate"].get("metadata", {})) <= POD_TEMPLATE_METADATA
        assert "spec" in spec["podTemplate"]
        for field, values in ENUMS.items():
            assert spec.get(field, next(iter(values))) in values, field
        assert isinstance(spec.get("service", True), bool)
    elif obj["kind"] == "SandboxWarmPool":
        assert set(spec) <= WARM_POOL_SPEC, sorted(set(spec) - WARM_POOL_SPEC)
        assert set(spec["sandboxTemplateRef"]) == {"name"}
        assert isinstance(spec.get("replicas", 1), int) and spec.get("replicas", 1) >= 0
        assert set(spec.get("updateStrategy", {})) <= {"type"}
        assert spec.get("updateStrategy", {}).get("type", "OnReplenish") in UPDATE_STRATEGIES
    elif obj["kind"] == "SandboxClaim":
        assert set(spec) <= CLAIM_SPEC, sorted(set(spec) - CLAIM_SPEC)
        assert set(spec["warmPoolRef"]) == {"name"}
        assert set(spec.get("lifecycle", {})) <= CLAIM_LIFECYCLE
        assert spec.get("lifecycle", {}).get("shutdownPolicy", "Retain") in SHUTDOWN_POLICIES
    else:
        raise AssertionError(f"not an agent-sandbox extension kind: {obj['kind']}")


def containers(pod: Obj) -> Iterator[Obj]:
    yield from pod["spec"]["containers"]
    yield from pod["spec"].get("initContainers", [])


# -- the schemas ------------------------------------------------------------------------------


def test_every_manifest_is_applied_by_a_kustomization() -> None:
    """No manifest is left out of `kubectl apply -k` by mistake (nor listed but missing)."""
    listed = {folder / name for folder in (DEPLOY, AGENT_SANDBOX) for name in kustomization(folder)["resources"]}
    on_disk = {path for path in DEPLOY.rglob("*.yaml") if path.name != "kustomization.yaml"}
    assert listed | NOT_IN_A_KUSTOMIZATION == on_disk
    assert {p.parent for p in DEPLOY.rglob("kustomization.yaml")} == {DEPLOY, AGENT_SANDBOX}


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_the_plain_example_is_valid_kubernetes(version: str) -> None:
    objs = plain()
    assert sorted(obj["kind"] for obj in objs) == ["Deployment", "Secret", "Service"]
    for obj in objs:
        validate(obj, version)


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_the_agent_sandbox_example_is_valid(version: str) -> None:
    """The custom resources use their CRDs' fields; the template's pod is a valid Pod; the
    Secret it reads is a valid Secret."""
    objs = agent_sandbox()
    assert sorted(obj["kind"] for obj in objs) == ["SandboxClaim", "SandboxTemplate", "SandboxWarmPool", "Secret"]
    for obj in objs:
        if obj["kind"] == "Secret":
            validate(obj, version)
        else:
            check_agent_sandbox(obj)
    validate(as_pod(template_pod(), "sandbox"), version)


def test_a_misspelled_field_fails() -> None:
    """The checks above would catch a typo: in a Deployment, in the template's pod and in the
    template itself (and a wrong enum value)."""
    version = KUBERNETES_VERSIONS[-1]
    broken = copy.deepcopy(one(plain(), "Deployment"))
    container = broken["spec"]["template"]["spec"]["containers"][0]
    container["readinesProbe"] = container.pop("readinessProbe")
    with pytest.raises(kubernetes_validate.ValidationError, match="readinesProbe"):
        validate(broken, version)

    pod = copy.deepcopy(template_pod())
    pod["spec"]["securityContext"]["runAsNonRot"] = pod["spec"]["securityContext"].pop("runAsNonRoot")
    with pytest.raises(kubernetes_validate.ValidationError, match="runAsNonRot"):
        validate(as_pod(pod, "sandbox"), version)

    template = copy.deepcopy(one(agent_sandbox(), "SandboxTemplate"))
    template["spec"]["podTemplates"] = template["spec"].pop("podTemplate")
    with pytest.raises(AssertionError, match="podTemplates"):
        check_agent_sandbox(template)

    pool = copy.deepcopy(one(agent_sandbox(), "SandboxWarmPool"))
    pool["spec"]["updateStrategy"]["type"] = "Rolling"
    with pytest.raises(AssertionError):
        check_agent_sandbox(pool)


# -- what the manifests promise ---------------------------------------------------------------


@pytest.mark.parametrize("pod", [deployment_pod, template_pod], ids=["deployment", "sandbox-template"])
def test_the_pod_runs_the_server_as_the_image_expects(pod: Any) -> None:
    spec = pod()["spec"]
    assert spec["automountServiceAccountToken"] is False
    assert spec["enableServiceLinks"] is False
    security = spec["securityContext"]
    assert security["runAsNonRoot"] is True
    assert security["runAsUser"] == security["runAsGroup"] == security["fsGroup"] == 1000
    assert security["seccompProfile"] == {"type": "RuntimeDefault"}
    # the kubelet's SIGKILL comes a few seconds after the server's own deadline, not before
    shutdown = ServerConfig().shutdown_timeout
    assert shutdown + 2 <= spec["terminationGracePeriodSeconds"] <= shutdown + 15

    (container,) = spec["containers"]
    (port,) = container["ports"]
    assert port["containerPort"] == 3000
    for probe, path in (("readinessProbe", "/api/ready"), ("livenessProbe", "/api/ping")):
        get = container[probe]["httpGet"]
        assert get["path"] == path and get["port"] in (port["name"], 3000), probe
        assert "httpHeaders" not in get, "the probe routes need no token"
    for part in ("requests", "limits"):
        assert {"cpu", "memory"} <= set(container["resources"][part]), part

    box = container["securityContext"]
    assert box["allowPrivilegeEscalation"] is False
    assert box["capabilities"] == {"drop": ["ALL"]}
    assert box.get("privileged", False) is False

    volumes = {v["name"]: v for v in spec["volumes"]}
    mounts = {m["mountPath"]: volumes[m["name"]] for m in container["volumeMounts"]}
    assert "emptyDir" in mounts["/workspace"] or "persistentVolumeClaim" in mounts["/workspace"]
    env = {e["name"]: e for e in container["env"]}
    if box.get("readOnlyRootFilesystem"):
        # where the services write: /tmp (kernels, backups' staging), the backup directory,
        # and HOME for what user code keeps there
        for path in ("/tmp", BackupSettings().archive_root.rstrip("/"), env["HOME"]["value"]):
            assert path in mounts, f"{path} is not writable on a read-only root"


@pytest.mark.parametrize("folder", [DEPLOY, AGENT_SANDBOX], ids=["plain", "agent-sandbox"])
def test_the_token_comes_from_the_generated_secret(folder: Path) -> None:
    objs = objects(folder)
    (secret,) = generated_secrets(folder)
    pods = [as_pod(obj["spec"]["template"], "x") for obj in objs if obj["kind"] == "Deployment"]
    pods += [as_pod(obj["spec"]["podTemplate"], "x") for obj in objs if obj["kind"] == "SandboxTemplate"]
    (pod,) = pods
    (container,) = pod["spec"]["containers"]
    (token,) = [e for e in container["env"] if e["name"] == "SANDBOX_TOKEN"]
    ref = token["valueFrom"]["secretKeyRef"]
    assert ref["name"] == secret["metadata"]["name"]
    assert ref["key"] in secret["stringData"]
    assert "value" not in token, "never a token in a manifest"


def test_the_deployment_and_the_template_run_the_same_pod() -> None:
    """The agent-sandbox template runs the image the same way as the plain example; only the
    Secret's name differs."""
    deployment, template = copy.deepcopy(deployment_pod()), copy.deepcopy(template_pod())
    for pod in (deployment, template):
        for env in pod["spec"]["containers"][0]["env"]:
            if "valueFrom" in env:
                env["valueFrom"]["secretKeyRef"]["name"] = "the token"
    assert deployment == template


def test_the_service_reaches_the_deployments_pod() -> None:
    objs = plain()
    deployment, service = one(objs, "Deployment"), one(objs, "Service")
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert deployment["spec"]["replicas"] == 1
    assert deployment["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert service["spec"]["selector"].items() <= labels.items()
    (port,) = service["spec"]["ports"]
    (container_port,) = deployment["spec"]["template"]["spec"]["containers"][0]["ports"]
    assert port["port"] == 3000
    assert port["targetPort"] in (container_port["name"], container_port["containerPort"])


def test_the_pool_and_the_claim_refer_to_what_exists() -> None:
    objs = agent_sandbox()
    template, pool, claim = (one(objs, kind) for kind in ("SandboxTemplate", "SandboxWarmPool", "SandboxClaim"))
    assert pool["spec"]["sandboxTemplateRef"]["name"] == template["metadata"]["name"]
    assert claim["spec"]["warmPoolRef"]["name"] == pool["metadata"]["name"]
    assert template["spec"]["service"] is True, "the Sandbox Router reaches a sandbox through its Service"


@pytest.mark.parametrize("folder", [DEPLOY, AGENT_SANDBOX], ids=["plain", "agent-sandbox"])
def test_the_image_is_set_in_one_place_and_names_no_registry(folder: Path) -> None:
    """Each kustomization's `images:` entry covers every container; the manifests say a plain
    name (the user points `newName` at their registry)."""
    (entry,) = kustomization(folder)["images"]
    assert "/" not in entry["name"] and "/" not in entry["newName"], "no registry host in the repo"
    pods = [as_pod(obj["spec"]["template"], "x") for obj in objects(folder) if obj["kind"] == "Deployment"]
    pods += [as_pod(obj["spec"]["podTemplate"], "x") for obj in objects(folder) if obj["kind"] == "SandboxTemplate"]
    images = [c["image"] for pod in pods for c in containers(pod)]
    assert images and all(image.split(":")[0] == entry["name"] for image in images), images
