"""The deploy tier's tools: the Go binaries tools/k8s/build.sh made, offline schemas for
kubeconform, and a throwaway local Kubernetes control plane (etcd, kube-apiserver,
controller-manager, scheduler and kwok faking one node and the pod lifecycle)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import kubernetes_validate
import yaml

from tests.conftest import _free_port

REPO = Path(__file__).resolve().parents[2]
TOOLS = Path(os.environ.get("KSTREAM_K8S_TOOLS", REPO / ".tools" / "k8s"))
BIN = TOOLS / "bin"
CHART = REPO / "helm" / "kstream"
K8S_VERSION = "1.34.0"


def tool(name: str) -> Path:
    """A built tool; missing means `make deploy-tools` did not run or failed: fail, never skip."""
    path = BIN / name
    assert path.is_file() and os.access(path, os.X_OK), f"{path} is missing: run `make deploy-tools` (tools/k8s/build.sh)"
    return path


def run(args: Sequence[str | Path], *, check: bool = True, timeout: float = 300, env: dict[str, str] | None = None,
        input: str | None = None) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run([str(a) for a in args], capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **(env or {})}, input=input)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(map(str, args))} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}")
    return proc


def helm_template(*args: str | Path, release: str = "t", check: bool = True) -> subprocess.CompletedProcess[str]:
    return run([tool("helm"), "template", release, CHART, "--kube-version", K8S_VERSION, *args], check=check)


def objects(rendered: str) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(rendered) if doc]


# --- offline schemas for kubeconform ------------------------------------------------------

def kubeconform_schemas(out: Path) -> Path:
    """kubeconform's default schema download fails offline: lay out kubernetes-validate's bundled
    strict schemas (relative ``$ref``, no ``$id``) and the generated CRDs' schemas, once."""
    if (out / ".done").exists():
        return out
    src = Path(kubernetes_validate.__file__).parent / "kubernetes-json-schema" / f"v{K8S_VERSION}-local-strict"
    out.mkdir(parents=True, exist_ok=True)
    for file in src.iterdir():
        text = file.read_text().replace('"/api/_definitions.json#', '"_definitions.json#')
        schema = json.loads(text)
        schema.pop("$id", None)
        (out / file.name).write_text(json.dumps(schema))
    for crd_file in sorted((TOOLS / "crds").glob("*.yaml")):
        for crd in yaml.safe_load_all(crd_file.read_text()):
            if not crd:
                continue
            kind = crd["spec"]["names"]["kind"].lower()
            group = crd["spec"]["group"].split(".")[0]
            for version in crd["spec"]["versions"]:
                schema = version["schema"]["openAPIV3Schema"]
                schema.setdefault("properties", {}).setdefault("metadata", {"type": "object"})
                _strict(schema)
                (out / f"{kind}-{group}-{version['name']}.json").write_text(json.dumps(schema))
    (out / ".done").touch()
    return out


def _strict(schema: Any) -> None:
    """Unknown fields are errors, as in the strict Kubernetes schemas (CRDs allow them unless told)."""
    if isinstance(schema, dict):
        if "properties" in schema and "additionalProperties" not in schema \
                and not schema.get("x-kubernetes-preserve-unknown-fields"):
            schema["additionalProperties"] = False
        for value in schema.values():
            _strict(value)
    elif isinstance(schema, list):
        for value in schema:
            _strict(value)


def kubeconform(schemas: Path, files: Sequence[Path]) -> subprocess.CompletedProcess[str]:
    return run([tool("kubeconform"), "-strict", "-summary", "-output", "text",
                "-schema-location", f"file://{schemas}/{{{{ .ResourceKind }}}}{{{{ .KindSuffix }}}}.json",
                *files], check=False)


# --- the local control plane ----------------------------------------------------------------

class ControlPlane:
    """etcd + kube-apiserver + controller-manager + scheduler + kwok on free local ports.

    kwok plays the kubelet: it marks one fake Node ready, pods Running and Ready (so Deployments
    become Available) and pods of Jobs Succeeded. No container runs: this checks what the API
    server accepts and how controllers roll the objects out, not the worker inside.
    """

    def __init__(self, workdir: Path) -> None:
        self.dir = workdir
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.kubeconfig = workdir / "kubeconfig"
        self.env = {"KUBECONFIG": str(self.kubeconfig), "HELM_CACHE_HOME": str(workdir / "helm-cache"),
                    "HELM_CONFIG_HOME": str(workdir / "helm-config"), "HELM_DATA_HOME": str(workdir / "helm-data")}

    def kubectl(self, *args: str, check: bool = True, input: str | None = None) -> subprocess.CompletedProcess[str]:
        return run([tool("kubectl"), *args], check=check, env=self.env, input=input, timeout=120)

    def condition(self, kind: str, name: str, condition: str) -> bool:
        # Not `kubectl wait`: it errors out on an object whose status is not written yet.
        jsonpath = f'{{.status.conditions[?(@.type=="{condition}")].status}}'
        return self.kubectl("get", kind, name, "-o", f"jsonpath={jsonpath}", check=False).stdout.strip() == "True"

    def helm(self, *args: str | Path, check: bool = True, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        return run([tool("helm"), *args], check=check, env=self.env, timeout=timeout)

    def start(self) -> None:
        d = self.dir
        token = "kstream-test-token"
        (d / "tokens.csv").write_text(f'{token},admin,admin,"system:masters"\n')
        run(["openssl", "genrsa", "-out", d / "sa.key", "2048"])
        run(["openssl", "rsa", "-in", d / "sa.key", "-pubout", "-out", d / "sa.pub"])
        etcd_port, peer_port, api_port = _free_port(), _free_port(), _free_port()
        self._spawn("etcd", [tool("etcd"), "--data-dir", d / "etcd-data",
                             "--listen-client-urls", f"http://127.0.0.1:{etcd_port}",
                             "--advertise-client-urls", f"http://127.0.0.1:{etcd_port}",
                             "--listen-peer-urls", f"http://127.0.0.1:{peer_port}",
                             "--initial-advertise-peer-urls", f"http://127.0.0.1:{peer_port}",
                             "--initial-cluster", f"default=http://127.0.0.1:{peer_port}"])
        self._spawn("apiserver", [
            tool("kube-apiserver"), f"--etcd-servers=http://127.0.0.1:{etcd_port}", "--bind-address=127.0.0.1",
            "--advertise-address=127.0.0.1", f"--secure-port={api_port}", f"--cert-dir={d / 'certs'}",
            f"--token-auth-file={d / 'tokens.csv'}", "--authorization-mode=AlwaysAllow",
            "--service-account-issuer=https://kubernetes.default.svc", f"--service-account-key-file={d / 'sa.pub'}",
            f"--service-account-signing-key-file={d / 'sa.key'}", "--service-cluster-ip-range=10.96.0.0/16"])
        self.kubeconfig.write_text(yaml.safe_dump({
            "apiVersion": "v1", "kind": "Config", "current-context": "local",
            "clusters": [{"name": "local", "cluster": {"server": f"https://127.0.0.1:{api_port}",
                                                       "insecure-skip-tls-verify": True}}],
            "users": [{"name": "admin", "user": {"token": token}}],
            "contexts": [{"name": "local", "context": {"cluster": "local", "user": "admin", "namespace": "default"}}],
        }))
        self.wait_for(lambda: self.kubectl("get", "--raw", "/readyz", check=False).returncode == 0, 120, "kube-apiserver ready")
        kube = [f"--kubeconfig={self.kubeconfig}", f"--authentication-kubeconfig={self.kubeconfig}",
                f"--authorization-kubeconfig={self.kubeconfig}", "--leader-elect=false", "--bind-address=127.0.0.1"]
        self._spawn("controller-manager", [tool("kube-controller-manager"), *kube, f"--secure-port={_free_port()}",
                                           f"--service-account-private-key-file={d / 'sa.key'}"])
        self._spawn("scheduler", [tool("kube-scheduler"), *kube, f"--secure-port={_free_port()}"])
        self._spawn("kwok", [tool("kwok"), f"--kubeconfig={self.kubeconfig}", "-c", REPO / "tools" / "k8s" / "kwok-stages.yaml",
                             "--manage-all-nodes=true", "--node-lease-duration-seconds=40",
                             f"--server-address=127.0.0.1:{_free_port()}"])
        self.kubectl("apply", "-f", "-", input=FAKE_NODE)
        self.wait_for(lambda: self.condition("node", "kwok-node-0", "Ready"), 120, "the kwok node ready")
        self.wait_for(lambda: self.kubectl("get", "serviceaccount", "default", check=False).returncode == 0, 120,
                   "the default ServiceAccount")

    def _spawn(self, name: str, args: Sequence[str | Path]) -> None:
        with (self.dir / f"{name}.log").open("wb") as log:  # the child keeps its own descriptor
            self.procs[name] = subprocess.Popen([str(a) for a in args], stdout=log, stderr=subprocess.STDOUT,
                                                start_new_session=True)

    def wait_for(self, ready: Any, timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for name, proc in self.procs.items():
                if proc.poll() is not None:
                    tail = (self.dir / f"{name}.log").read_text(errors="replace")[-2000:]
                    raise AssertionError(f"{name} exited {proc.returncode} while waiting for {what}:\n{tail}")
            if ready():
                return
            time.sleep(0.5)
        raise AssertionError(f"timed out after {timeout:g}s waiting for {what}")

    def stop(self) -> None:
        # Throwaway state: no graceful shutdown needed (the API server's takes ~20 s).
        for proc in self.procs.values():
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
        for proc in self.procs.values():
            proc.wait(30)
        shutil.rmtree(self.dir / "etcd-data", ignore_errors=True)


@contextmanager
def control_plane(workdir: Path) -> Iterator[ControlPlane]:
    plane = ControlPlane(workdir)
    try:
        plane.start()
        yield plane
    finally:
        plane.stop()


FAKE_NODE = """
apiVersion: v1
kind: Node
metadata:
  name: kwok-node-0
  annotations: {node.alpha.kubernetes.io/ttl: "0", kwok.x-k8s.io/node: fake}
  labels: {kubernetes.io/hostname: kwok-node-0, kubernetes.io/os: linux, type: kwok}
status:
  allocatable: {cpu: "32", memory: 256Gi, pods: "110"}
  capacity: {cpu: "32", memory: 256Gi, pods: "110"}
"""
