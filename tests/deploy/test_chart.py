"""The Helm chart, offline: lint, render for several values files, validate every object against
the Kubernetes 1.34 schemas (kubernetes-validate and kubeconform, plus the KEDA and
prometheus-operator CRD schemas), check what the objects say, and reject bad values."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from kstream.config import load_settings
from tests.deploy.k8s import CHART, K8S_VERSION, helm_template, kubeconform, objects, run, tool

BOOTSTRAP = ["--set", "kafka.bootstrapServers=kafka-0.kafka:9092"]

# Values files layered on the generated nodes.yaml, from plain to everything switched on.
VARIANTS: dict[str, dict[str, Any]] = {
    "plain": {},
    "scaled": {
        "nodeDefaults": {"autoscaling": {"enabled": True, "lagThreshold": 50}},
        "nodes": {"price": {"replicas": 3, "autoscaling": {"enabled": False},
                            "env": [{"name": "ERP_URL", "value": "http://erp"}],
                            "resources": {"requests": {"cpu": "250m", "memory": "256Mi"}}}},
        "metrics": {"serviceMonitor": {"enabled": True, "labels": {"release": "prometheus"}}},
        "dashboard": {"enabled": True},
    },
    "secured": {
        "kafka": {"sasl": {"enabled": True, "secretName": "kafka-user"},
                  "tls": {"enabled": True, "secretName": "kafka-tls", "certKey": "tls.crt", "keyKey": "tls.key"}},
        "nodeDefaults": {"autoscaling": {"enabled": True}},
        "settings": {"topics": {"partitions": 12}, "runtime": {"shutdown_timeout": 25}},
        "terminationGracePeriodSeconds": 40,
        "provisioning": {"args": ["--create-external"]},
    },
}


def render(nodes_values: Path, tmp_path: Path, variant: str, *extra: str) -> list[dict[str, Any]]:
    overlay = tmp_path / f"{variant}.yaml"
    overlay.write_text(yaml.safe_dump(VARIANTS[variant]))
    return objects(helm_template("-f", nodes_values, "-f", overlay, *BOOTSTRAP, *extra).stdout)


def by_kind(objs: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    return {o["metadata"]["name"]: o for o in objs if o["kind"] == kind}


def test_lint_strict_with_defaults_and_generated_values(nodes_values: Path, tmp_path: Path) -> None:
    run([tool("helm"), "lint", "--strict", CHART])
    for variant, values in VARIANTS.items():
        overlay = tmp_path / f"{variant}.yaml"
        overlay.write_text(yaml.safe_dump(values))
        result = run([tool("helm"), "lint", "--strict", CHART, "-f", nodes_values, "-f", overlay, *BOOTSTRAP])
        assert "0 chart(s) failed" in result.stdout


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_every_rendered_object_is_valid_kubernetes(nodes_values: Path, tmp_path: Path, schemas: Path, variant: str) -> None:
    objs = render(nodes_values, tmp_path, variant)
    # Hooks included: `helm template` renders them with the rest.
    out = tmp_path / "rendered.yaml"
    out.write_text(yaml.safe_dump_all(objs))
    crd_kinds = {"ScaledObject", "TriggerAuthentication", "ServiceMonitor"}
    for obj in objs:
        if obj["kind"] not in crd_kinds:
            kubernetes_validate.validate(obj, K8S_VERSION, strict=True)
    result = kubeconform(schemas, [out])
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"Valid: {len(objs)}, Invalid: 0, Errors: 0, Skipped: 0" in result.stdout, result.stdout


def test_one_deployment_per_node_running_that_node(nodes_values: Path, tmp_path: Path) -> None:
    nodes = yaml.safe_load(nodes_values.read_text())["nodes"]
    deployments = by_kind(render(nodes_values, tmp_path, "plain"), "Deployment")
    assert sorted(deployments) == sorted(f"t-kstream-{key}" for key in nodes)
    for key, node in nodes.items():
        spec = deployments[f"t-kstream-{key}"]["spec"]
        pod = spec["template"]["spec"]
        (worker,) = pod["containers"]
        assert worker["args"] == ["run", "orders:topology", "--node", node["node"], "--http-port", "9090"]
        assert spec["replicas"] == 1
        assert spec["selector"]["matchLabels"]["kstream.io/node"] == key
        assert worker["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "metrics"}
        assert worker["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "metrics"}
        assert worker["ports"] == [{"name": "metrics", "containerPort": 9090, "protocol": "TCP"}]
        env = {e["name"]: e.get("value") for e in worker["env"]}
        assert env["KSTREAM_BOOTSTRAP_SERVERS"] == "kafka-0.kafka:9092"
        assert env["KSTREAM_NAMESPACE"] == "kstream"
        # The worker's shutdown budget is 20 s by default: Kubernetes must wait longer.
        assert pod["terminationGracePeriodSeconds"] > 20
        assert worker["securityContext"]["readOnlyRootFilesystem"] is True
        assert pod["securityContext"]["runAsUser"] == 10001
        mounts = {m["mountPath"] for m in worker["volumeMounts"]}
        assert {"/tmp", "/etc/kstream/kstream.toml"} <= mounts


def test_node_overrides_and_pdb_per_node(nodes_values: Path, tmp_path: Path) -> None:
    objs = render(nodes_values, tmp_path, "scaled")
    deployments = by_kind(objs, "Deployment")
    price = deployments["t-kstream-price"]["spec"]
    # Autoscaled nodes leave replicas to KEDA; price opted out and keeps its own count.
    assert price["replicas"] == 3
    assert "replicas" not in deployments["t-kstream-parse"]["spec"]
    (worker,) = price["template"]["spec"]["containers"]
    assert {"name": "ERP_URL", "value": "http://erp"} in worker["env"]
    assert worker["resources"]["requests"] == {"cpu": "250m", "memory": "256Mi"}
    assert worker["resources"]["limits"] == {"memory": "512Mi"}  # merged from nodeDefaults
    pdbs = by_kind(objs, "PodDisruptionBudget")
    assert sorted(pdbs) == sorted(deployments)
    for name, pdb in pdbs.items():
        assert pdb["spec"]["selector"]["matchLabels"] == deployments[name]["spec"]["selector"]["matchLabels"]


def test_provisioning_job_is_a_pre_install_pre_upgrade_hook(nodes_values: Path, tmp_path: Path) -> None:
    objs = render(nodes_values, tmp_path, "secured")
    (job,) = by_kind(objs, "Job").values()
    annotations = job["metadata"]["annotations"]
    assert annotations["helm.sh/hook"] == "pre-install,pre-upgrade"
    (container,) = job["spec"]["template"]["spec"]["containers"]
    assert container["args"] == ["topics", "apply", "orders:topology", "--create-external"]
    # Hooks run before the release's own ConfigMap exists: the Job's comes as an earlier hook.
    config_name = next(v["configMap"]["name"] for v in job["spec"]["template"]["spec"]["volumes"] if v["name"] == "config")
    hook_config = by_kind(objs, "ConfigMap")[config_name]
    assert hook_config["metadata"]["annotations"]["helm.sh/hook"] == "pre-install,pre-upgrade"
    assert int(hook_config["metadata"]["annotations"]["helm.sh/hook-weight"]) < int(annotations["helm.sh/hook-weight"])


def test_scaled_objects_speak_kedas_kafka_trigger(nodes_values: Path, tmp_path: Path) -> None:
    nodes = yaml.safe_load(nodes_values.read_text())["nodes"]
    objs = render(nodes_values, tmp_path, "secured")
    scaled = by_kind(objs, "ScaledObject")
    assert sorted(scaled) == sorted(f"t-kstream-{key}" for key in nodes)
    for key, node in nodes.items():
        spec = scaled[f"t-kstream-{key}"]["spec"]
        assert spec["scaleTargetRef"]["name"] == f"t-kstream-{key}"
        # Never more workers than partitions of the input topic.
        assert spec["maxReplicaCount"] == node["partitions"]
        (trigger,) = spec["triggers"]
        meta = trigger["metadata"]
        assert trigger["type"] == "kafka"
        assert all(isinstance(v, str) for v in meta.values()), meta
        assert meta["bootstrapServers"] == "kafka-0.kafka:9092"
        assert meta["consumerGroup"] == node["group"]
        assert meta["topic"] == node["topic"]
        assert meta["lagThreshold"] == "10"
        assert meta["sasl"] == "scram_sha512"
        assert meta["tls"] == "enable"
        assert trigger["authenticationRef"]["name"] == "t-kstream-kafka"
    (auth,) = by_kind(objs, "TriggerAuthentication").values()
    refs = {r["parameter"]: (r["name"], r["key"]) for r in auth["spec"]["secretTargetRef"]}
    assert refs == {"username": ("kafka-user", "username"), "password": ("kafka-user", "password"),
                    "ca": ("kafka-tls", "ca.crt"), "cert": ("kafka-tls", "tls.crt"), "key": ("kafka-tls", "tls.key")}
    # The workers get the same credentials, from the same Secrets.
    (worker,) = by_kind(objs, "Deployment")["t-kstream-parse"]["spec"]["template"]["spec"]["containers"]
    env = {e["name"]: e for e in worker["env"]}
    assert env["KSTREAM_KAFKA_SECURITY_PROTOCOL"]["value"] == "SASL_SSL"
    assert env["KSTREAM_KAFKA_SASL_PASSWORD"]["valueFrom"]["secretKeyRef"] == {"name": "kafka-user", "key": "password"}
    assert env["KSTREAM_KAFKA_SSL_CA_LOCATION"]["value"] == "/etc/kstream/tls/ca.crt"


def test_service_monitor_selects_the_metrics_service_which_selects_the_workers(nodes_values: Path, tmp_path: Path) -> None:
    objs = render(nodes_values, tmp_path, "scaled")
    (service,) = by_kind(objs, "Service").values()
    (monitor,) = by_kind(objs, "ServiceMonitor").values()
    assert monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    assert monitor["metadata"]["labels"]["release"] == "prometheus"
    (endpoint,) = monitor["spec"]["endpoints"]
    assert endpoint["port"] in {p["name"] for p in service["spec"]["ports"]}
    assert endpoint["path"] == "/metrics"
    for deployment in by_kind(objs, "Deployment").values():
        assert service["spec"]["selector"].items() <= deployment["spec"]["template"]["metadata"]["labels"].items()


def test_settings_table_becomes_a_toml_file_kstream_reads(nodes_values: Path, tmp_path: Path) -> None:
    objs = render(nodes_values, tmp_path, "secured")
    toml = tmp_path / "kstream.toml"
    toml.write_text(by_kind(objs, "ConfigMap")["t-kstream"]["data"]["kstream.toml"])
    settings = load_settings(toml, environ={})
    assert settings.topics.partitions == 12
    assert settings.runtime.shutdown_timeout == 25
    # The settings' partitions are the generated values' business: they are what KEDA caps at.
    assert by_kind(objs, "ScaledObject")["t-kstream-price"]["spec"]["maxReplicaCount"] == 6


def test_dashboard_configmap_ships_the_dashboard_file(nodes_values: Path, tmp_path: Path) -> None:
    objs = render(nodes_values, tmp_path, "scaled")
    dashboard = by_kind(objs, "ConfigMap")["t-kstream-dashboard"]
    assert dashboard["metadata"]["labels"]["grafana_dashboard"] == "1"
    shipped = dashboard["data"]["kstream.json"]
    assert json.loads(shipped) == json.loads((CHART / "dashboards" / "kstream.json").read_text())
    assert "t-kstream-dashboard" not in by_kind(render(nodes_values, tmp_path, "plain"), "ConfigMap")


BAD_VALUES = [
    (["--set", "nodes.price.replicas=-1"], "at '/nodes/price/replicas': minimum"),
    (["--set", "nodes.price.replica=2"], "additional properties 'replica' not allowed"),
    (["--set", "nodes.Price_Node.node=x,nodes.Price_Node.group=g,nodes.Price_Node.topic=t,nodes.Price_Node.partitions=1"],
     "Price_Node"),
    (["--set", "nodes.extra.node=extra"], "missing properties"),
    (["--set", "nodeDefaults.autoscaling.lagThreshold=lots"], "lagThreshold"),
    (["--set", "kafka.sasl.enabled=true"], "at '/kafka/sasl/secretName'"),
    (["--set", "kafka.sasl.mechanism=GSSAPI"], "at '/kafka/sasl/mechanism'"),
    (["--set", "image.pullPolicy=Sometimes"], "at '/image/pullPolicy'"),
    (["--set", "nodes.parse.autoscaling.enabled=true,nodes.parse.autoscaling.maxReplicas=7"],
     "maxReplicas is 7 but its input topic shop.orders.raw has 6 partitions"),
    (["--set", "terminationGracePeriodSeconds=20"], "must exceed the worker's shutdown budget"),
    (["--set", "settings.runtime.shutdown_timeout=45"], "must exceed the worker's shutdown budget"),
    (["--set", "app="], "app is required"),
]


@pytest.mark.parametrize(("args", "message"), BAD_VALUES, ids=[m[:40] for _, m in BAD_VALUES])
def test_bad_values_are_rejected(nodes_values: Path, args: list[str], message: str) -> None:
    result = helm_template("-f", nodes_values, *BOOTSTRAP, *args, check=False)
    assert result.returncode != 0, result.stdout[:2000]
    assert message in result.stderr, result.stderr


def test_bootstrap_servers_are_required_with_nodes(nodes_values: Path) -> None:
    result = helm_template("-f", nodes_values, check=False)
    assert result.returncode != 0
    assert "kafka.bootstrapServers is required" in result.stderr


def test_crd_schemas_catch_what_the_chart_must_get_right(schemas: Path, tmp_path: Path) -> None:
    # The validation above means something only if these schemas refuse a numeric KEDA
    # lagThreshold and an unknown ServiceMonitor field.
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump_all([
        {"apiVersion": "keda.sh/v1alpha1", "kind": "ScaledObject", "metadata": {"name": "x"},
         "spec": {"scaleTargetRef": {"name": "x"}, "triggers": [{"type": "kafka", "metadata": {"lagThreshold": 10}}]}},
        {"apiVersion": "monitoring.coreos.com/v1", "kind": "ServiceMonitor", "metadata": {"name": "x"},
         "spec": {"selector": {"matchLabels": {"a": "b"}}, "endpoints": [{"port": "m", "pathh": "/metrics"}]}},
    ]))
    result = kubeconform(schemas, [bad])
    assert result.returncode != 0
    assert "Valid: 0, Invalid: 2" in result.stdout, result.stdout
    assert "lagThreshold': got number, want string" in result.stdout
    assert "'pathh' not allowed" in result.stdout
