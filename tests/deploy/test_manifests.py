"""The Kubernetes manifests in deploy/kubernetes, checked offline.

Every Kubernetes object is validated with kubernetes-validate (its bundled OpenAPI schemas, in
strict mode: an unknown or misspelled field fails) for the Kubernetes versions below. The
agent-sandbox objects are custom resources with no schema in that package: their fields are
checked against the v1beta1 CRDs of kubernetes-sigs/agent-sandbox (transcribed below), and the
SandboxTemplate's pod template is validated as a Pod. Then what the manifests promise: the pod
runs the server the way the image expects (port 3000, the readiness and liveness routes, uid
1000, a grace period over the server's own shutdown timeout, writable volumes for what the
services write on a read-only root), the plain example and the template run the same pod, and
the image is named in one place per kustomization, with no registry host. The sandboxd example
(agent-sandbox/sandboxd) runs the image's sandboxd personality: its ports, probes and
``SANDBOXD_*_ADDR`` variables are checked against what that config (deploy/container/sandboxd.toml,
read as the server reads it) makes the server serve, and, having no token, its NetworkPolicy.
None of it uses the network (a fixture makes every connection attempt fail).
"""

from __future__ import annotations

import copy
import ipaddress
import re
import shlex
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kubernetes_validate
import msgspec
import pytest
import yaml

from sandbox_core.config import Config, ServerConfig, load_config
from sandbox_core.edge import bind_refusal, is_loopback
from sandbox_services.backup.service import BackupSettings
from sandbox_transport_sandboxd import rest as sandboxd_rest
from sandbox_transport_sandboxd.settings import SandboxdSettings

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy" / "kubernetes"
AGENT_SANDBOX = DEPLOY / "agent-sandbox"
SANDBOXD = AGENT_SANDBOX / "sandboxd"
#: the sandboxd personality's config, in the repository and where the Containerfile puts it
SANDBOXD_CONFIG = ROOT / "deploy" / "container" / "sandboxd.toml"
KUSTOMIZATIONS = (DEPLOY, AGENT_SANDBOX, SANDBOXD)
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
TEMPLATE_NETWORK_POLICY = {"ingress", "egress"}  # a restricted NetworkPolicySpec
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


def sandboxd() -> list[Obj]:
    return objects(SANDBOXD)


def sandboxd_pod() -> Obj:
    pod: Obj = one(sandboxd(), "SandboxTemplate")["spec"]["podTemplate"]
    return pod


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
        assert set(spec.get("networkPolicy", {})) <= TEMPLATE_NETWORK_POLICY, sorted(spec["networkPolicy"])
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
    listed = {folder / name for folder in KUSTOMIZATIONS for name in kustomization(folder)["resources"]}
    on_disk = {path for path in DEPLOY.rglob("*.yaml") if path.name != "kustomization.yaml"}
    assert listed | NOT_IN_A_KUSTOMIZATION == on_disk
    assert {p.parent for p in DEPLOY.rglob("kustomization.yaml")} == set(KUSTOMIZATIONS)


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


def check_hardening(spec: Obj) -> Obj:
    """What every pod of the server has: no API token, no service links, uid 1000, a grace period
    over the server's own shutdown timeout, resources, a locked-down container and writable
    volumes where the services write. Returns the (one) container."""
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
    container_obj: Obj = container
    return container_obj


@pytest.mark.parametrize(
    "pod", [deployment_pod, template_pod, sandboxd_pod], ids=["deployment", "sandbox-template", "sandboxd"]
)
def test_every_pod_is_hardened(pod: Any) -> None:
    check_hardening(pod()["spec"])


@pytest.mark.parametrize("pod", [deployment_pod, template_pod], ids=["deployment", "sandbox-template"])
def test_the_pod_runs_the_server_as_the_image_expects(pod: Any) -> None:
    spec = pod()["spec"]
    container = check_hardening(spec)
    assert "command" not in container and "args" not in container, "the image's command: http, ws, rpc on 3000"
    (port,) = container["ports"]
    assert port["containerPort"] == 3000
    for probe, path in (("readinessProbe", "/api/ready"), ("livenessProbe", "/api/ping")):
        get = container[probe]["httpGet"]
        assert get["path"] == path and get["port"] in (port["name"], 3000), probe
        assert "httpHeaders" not in get, "the probe routes need no token"


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


@pytest.mark.parametrize("folder", KUSTOMIZATIONS, ids=["plain", "agent-sandbox", "sandboxd"])
def test_the_image_is_set_in_one_place_and_names_no_registry(folder: Path) -> None:
    """Each kustomization's `images:` entry covers every container; the manifests say a plain
    name (the user points `newName` at their registry)."""
    (entry,) = kustomization(folder)["images"]
    assert "/" not in entry["name"] and "/" not in entry["newName"], "no registry host in the repo"
    pods = [as_pod(obj["spec"]["template"], "x") for obj in objects(folder) if obj["kind"] == "Deployment"]
    pods += [as_pod(obj["spec"]["podTemplate"], "x") for obj in objects(folder) if obj["kind"] == "SandboxTemplate"]
    images = [c["image"] for pod in pods for c in containers(pod)]
    assert images and all(image.split(":")[0] == entry["name"] for image in images), images


# -- the sandboxd example ---------------------------------------------------------------------

#: what the controller's secure default egress keeps a sandbox from: the cluster, LANs, metadata
PRIVATE_NETWORKS = ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "169.254.0.0/16", "fc00::/7", "fe80::/10")


def containerfile() -> dict[str, list[str]]:
    """The Containerfile's instructions of the final stage, continuation lines joined: keyword ->
    their arguments, in order."""
    text = (ROOT / "Containerfile").read_text(encoding="utf-8")
    text = re.sub(r"\\\n\s*", " ", text)
    stages = re.split(r"^FROM ", text, flags=re.MULTILINE)
    found: dict[str, list[str]] = {}
    for line in stages[-1].splitlines()[1:]:
        if line.strip() and not line.lstrip().startswith("#"):
            keyword, _, rest = line.strip().partition(" ")
            found.setdefault(keyword, []).append(rest)
    return found


def sandboxd_config() -> tuple[Config, SandboxdSettings]:
    """The sandboxd personality's config, read as ``sandbox serve --config`` reads it."""
    config = load_config(SANDBOXD_CONFIG, env={})
    return config, msgspec.convert(config.transports.get("sandboxd", {}), SandboxdSettings)


def image_path_of_sandboxd_config() -> str:
    (dest,) = [
        shlex.split(args)[-1]
        for args in containerfile()["COPY"]
        if shlex.split(args)[0] == str(SANDBOXD_CONFIG.relative_to(ROOT))
    ]
    return dest


def serves(bind_host: str, host: str) -> bool:
    """Whether a listener bound to ``bind_host`` answers on ``host``."""
    return bind_host in ("0.0.0.0", "::") or bind_host == host


def check_sandboxd_pod(pod: Obj, settings: SandboxdSettings) -> None:
    """The pod reaches what the sandboxd personality serves: its ports, its token-free probe,
    the addresses code in the sandbox is told (SANDBOXD_*_ADDR), and it starts (no token, so the
    variable that allows it)."""
    (container,) = pod["spec"]["containers"]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"grpc": settings.grpc_port, "http": settings.rest_port}
    probe_paths = {path for method, path in sandboxd_rest.PROBES if method == "GET"}
    for probe in ("readinessProbe", "livenessProbe"):
        get = container[probe]["httpGet"]
        assert get["path"] in probe_paths, f"{probe}: the server answers {get['path']} only with the token"
        assert ports.get(get["port"], get["port"]) == settings.rest_port, f"{probe}: not the REST port"
        assert "httpHeaders" not in get
    env = {e["name"]: e.get("value") for e in container["env"]}
    for name, port in (("SANDBOXD_GRPC_ADDR", settings.grpc_port), ("SANDBOXD_REST_ADDR", settings.rest_port)):
        host, _, number = env[name].rpartition(":")
        assert int(number) == port, f"{name}: the server listens on {port}"
        assert is_loopback(host) and serves(settings.host, host), f"{name}: {settings.host} does not serve {host}"
    # no token: the SDK sends none; the variable is what lets the server bind a pod address
    assert "SANDBOX_TOKEN" not in env
    assert env["SANDBOX_ALLOW_UNAUTHENTICATED"] == "1"
    assert bind_refusal(settings.host, token=False, allow_unauthenticated=False) is not None
    assert bind_refusal(settings.host, token=False, allow_unauthenticated=True) is None


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_the_sandboxd_example_is_valid(version: str) -> None:
    """The template and pool use their CRDs' fields; the pod is a valid Pod; the template's
    network policy rules are valid NetworkPolicy rules; the pool names the template."""
    objs = sandboxd()
    assert sorted(obj["kind"] for obj in objs) == ["SandboxTemplate", "SandboxWarmPool"]
    for obj in objs:
        check_agent_sandbox(obj)
    template, pool = one(objs, "SandboxTemplate"), one(objs, "SandboxWarmPool")
    validate(as_pod(sandboxd_pod(), "sandboxd"), version)
    policy = {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": "sandboxd"},
        "spec": {"podSelector": {}, "policyTypes": ["Ingress", "Egress"], **template["spec"]["networkPolicy"]},
    }
    validate(policy, version)
    assert pool["spec"]["sandboxTemplateRef"]["name"] == template["metadata"]["name"]
    assert template["spec"]["service"] is True, "the SDK's in-cluster-service mode dials the Sandbox's Service"


def test_the_sandboxd_template_runs_the_images_sandboxd_config() -> None:
    """The template's command is the image's sandboxd config (where the Containerfile puts it),
    which serves the sandboxd transport alone: http, ws and rpc would be open with no token."""
    (container,) = sandboxd_pod()["spec"]["containers"]
    assert container["command"] == ["/opt/sandbox/bin/sandbox", "serve", "--config", image_path_of_sandboxd_config()]
    assert "args" not in container
    config, settings = sandboxd_config()
    assert config.server.transports == ["sandboxd"]
    assert is_loopback(config.server.host), "the server's own port stays in the pod"
    assert not is_loopback(settings.host), "published ports and the pod IP must reach sandboxd"


def test_the_sandboxd_pod_reaches_what_the_server_serves() -> None:
    _, settings = sandboxd_config()
    check_sandboxd_pod(sandboxd_pod(), settings)


@pytest.mark.parametrize(
    ("where", "value"),
    [
        ("probe path", "/api/ready"),
        ("probe port", 9090),
        ("grpc addr", "127.0.0.1:9091"),
        ("rest addr", "10.0.0.1:8080"),
        ("token", "t"),
    ],
)
def test_a_wrong_sandboxd_pod_fails(where: str, value: Any) -> None:
    """The check above catches each way the pod and the server could disagree."""
    _, settings = sandboxd_config()
    pod = copy.deepcopy(sandboxd_pod())
    (container,) = pod["spec"]["containers"]
    env = {e["name"]: e for e in container["env"]}
    if where == "probe path":
        container["readinessProbe"]["httpGet"]["path"] = value
    elif where == "probe port":
        container["livenessProbe"]["httpGet"]["port"] = value
    elif where == "grpc addr":
        env["SANDBOXD_GRPC_ADDR"]["value"] = value
    elif where == "rest addr":
        env["SANDBOXD_REST_ADDR"]["value"] = value
    else:
        container["env"].append({"name": "SANDBOX_TOKEN", "value": value})
    with pytest.raises(AssertionError):
        check_sandboxd_pod(pod, settings)


def test_the_unauthenticated_sandboxd_pod_is_fenced_by_a_network_policy() -> None:
    """No token, so the controller-made NetworkPolicy is the fence: ingress only from selected
    pods, only on the two ports; egress no wider than the controller's secure default."""
    _, settings = sandboxd_config()
    spec = one(sandboxd(), "SandboxTemplate")["spec"]
    assert spec.get("networkPolicyManagement", "Managed") == "Managed"
    policy = spec["networkPolicy"]
    assert policy["ingress"], "an empty list would block the SDK too"
    for rule in policy["ingress"]:
        assert rule.get("from"), "a rule without `from` admits every peer"
        assert all("ipBlock" not in peer for peer in rule["from"]), "pods only"
        assert {(p["port"], p.get("protocol", "TCP")) for p in rule["ports"]} <= {
            (settings.grpc_port, "TCP"),
            (settings.rest_port, "TCP"),
        }
    for rule in policy["egress"]:
        for peer in rule["to"]:
            block = ipaddress.ip_network(peer["ipBlock"]["cidr"])
            excepted = [ipaddress.ip_network(e) for e in peer["ipBlock"].get("except", [])]
            for private in map(ipaddress.ip_network, PRIVATE_NETWORKS):
                if private.version == block.version and block.overlaps(private):
                    assert any(e.supernet_of(private) for e in excepted), f"egress reaches {private}"  # type: ignore[arg-type]


def test_the_image_serves_sandboxd_only_when_asked() -> None:
    """The image exposes the sandboxd ports, and its default command names the transports it
    serves: the token-protected three, not sandboxd."""
    _, settings = sandboxd_config()
    instructions = containerfile()
    exposed = {int(port) for args in instructions["EXPOSE"] for port in args.split()}
    assert {3000, settings.grpc_port, settings.rest_port} <= exposed
    (cmd,) = instructions["CMD"]
    argv = yaml.safe_load(cmd)
    transports = [argv[i + 1] for i, arg in enumerate(argv) if arg == "--transport"]
    assert sorted(transports) == ["http", "rpc", "ws"]
