"""The chart on a real Kubernetes API server (v1.34, built from source; kwok fakes the node):
install with the provisioning hook, upgrade with a changed node, uninstall; the KEDA and
ServiceMonitor objects accepted by the server's CRD schemas, bad ones refused."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.deploy.k8s import CHART, ControlPlane

# Cold, the first test also builds the images (or starts the control plane) on a shared 2-core box.
pytestmark = pytest.mark.timeout(1200)

VALUES = {
    "kafka": {"bootstrapServers": "kafka-0.kafka:9092"},
    "nodeDefaults": {"autoscaling": {"enabled": True}},
    "nodes": {"price": {"autoscaling": {"enabled": False}, "replicas": 1}},
    "metrics": {"serviceMonitor": {"enabled": True}},
    "dashboard": {"enabled": True},
}
RELEASE_LABEL = "app.kubernetes.io/instance=orders"


def items(cluster: ControlPlane, kind: str, namespace: str) -> list[dict[str, Any]]:
    out = cluster.kubectl("get", kind, "-n", namespace, "-l", RELEASE_LABEL, "-o", "json").stdout
    return list(json.loads(out)["items"])


def test_install_upgrade_uninstall(cluster: ControlPlane, nodes_values: Path, tmp_path: Path) -> None:
    ns = "orders"
    values = tmp_path / "values.yaml"
    values.write_text(yaml.safe_dump(VALUES))
    chart = ["orders", str(CHART), "-n", ns, "-f", str(nodes_values), "-f", str(values)]

    # Given the generated values, when installed and waited for (hook Job included)
    installed = cluster.helm("install", *chart, "--create-namespace", "--wait", "--wait-for-jobs", "--timeout", "5m")
    # Then NOTES tell where lag and the Trash are
    assert "kstream lag orders:topology" in installed.stdout
    assert "kstream trash list" in installed.stdout
    deployments = {d["metadata"]["name"]: d for d in items(cluster, "deployments", ns)}
    assert sorted(deployments) == ["orders-kstream-deliver", "orders-kstream-parse", "orders-kstream-price"]
    for d in deployments.values():
        assert d["status"].get("availableReplicas") == d["spec"]["replicas"], d["status"]
    # KEDA owns the replicas of autoscaled nodes (the API server defaults the missing field to 1).
    scaled = {s["metadata"]["name"]: s for s in items(cluster, "scaledobjects.keda.sh", ns)}
    assert sorted(scaled) == ["orders-kstream-deliver", "orders-kstream-parse"]
    assert scaled["orders-kstream-parse"]["spec"]["triggers"][0]["metadata"]["consumerGroup"] == "kstream.orders.parse"
    assert [m["metadata"]["name"] for m in items(cluster, "servicemonitors.monitoring.coreos.com", ns)] == ["orders-kstream"]
    # The hook ran and, having succeeded, was deleted (hook-succeeded policy).
    jobs = json.loads(cluster.kubectl("get", "jobs", "-n", ns, "-o", "json").stdout)["items"]
    assert jobs == []
    events = cluster.kubectl("get", "events", "-n", ns, "-o", "json").stdout
    assert "orders-kstream-topics" in events
    price_generation = deployments["orders-kstream-price"]["metadata"]["generation"]
    parse_generation = deployments["orders-kstream-parse"]["metadata"]["generation"]

    # When one node changes (more replicas, a new variable)
    cluster.helm("upgrade", *chart, "--set", "nodes.price.replicas=3",
                 "--set", "nodes.price.env[0].name=ERP_URL,nodes.price.env[0].value=http://erp",
                 "--wait", "--wait-for-jobs", "--timeout", "5m")
    # Then that Deployment rolls out 3 ready workers and the others are untouched
    deployments = {d["metadata"]["name"]: d for d in items(cluster, "deployments", ns)}
    price = deployments["orders-kstream-price"]
    assert price["spec"]["replicas"] == 3
    assert price["status"].get("readyReplicas") == 3, price["status"]
    assert price["metadata"]["generation"] > price_generation
    env = price["spec"]["template"]["spec"]["containers"][0]["env"]
    assert {"name": "ERP_URL", "value": "http://erp"} in env
    assert deployments["orders-kstream-parse"]["metadata"]["generation"] == parse_generation
    revision = json.loads(cluster.helm("status", "orders", "-n", ns, "-o", "json").stdout)["version"]
    assert revision == 2

    # When uninstalled, then nothing of the release is left
    cluster.helm("uninstall", "orders", "-n", ns, "--wait", "--timeout", "5m")
    for kind in ("deployments", "scaledobjects.keda.sh", "servicemonitors.monitoring.coreos.com", "configmaps",
                 "services", "poddisruptionbudgets"):
        assert items(cluster, kind, ns) == [], kind


SCALED_OBJECT = """
apiVersion: keda.sh/v1alpha1
kind: ScaledObject
metadata: {name: probe, namespace: default}
spec:
  scaleTargetRef: {name: probe}
  triggers:
    - type: kafka
      metadata: {bootstrapServers: "kafka:9092", consumerGroup: g, topic: t, lagThreshold: %s}
"""


def test_server_enforces_the_crd_schemas_the_chart_is_written_for(cluster: ControlPlane) -> None:
    # KEDA's trigger metadata is a map of strings: the server accepts "10" and refuses 10.
    ok = cluster.kubectl("apply", "--dry-run=server", "-f", "-", input=SCALED_OBJECT % '"10"', check=False)
    assert ok.returncode == 0, ok.stderr
    bad = cluster.kubectl("apply", "--dry-run=server", "-f", "-", input=SCALED_OBJECT % "10", check=False)
    assert bad.returncode != 0
    assert "lagThreshold" in bad.stderr
