"""Fixtures of the deploy tier: generated chart values, kubeconform schemas, the local cluster."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from kstream.cli.main import cli
from tests.deploy.k8s import REPO, TOOLS, ControlPlane, control_plane, kubeconform_schemas, tool


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # Everything here needs built tools (and some a broker): never part of `make unit`.
    for item in items:
        if Path(str(item.fspath)).parent == Path(__file__).parent:
            item.add_marker(pytest.mark.deploy)
            item.add_marker(pytest.mark.integration)


@pytest.fixture(scope="session")
def nodes_values(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`kstream helm values` of examples/orders.py, as the image imports it (orders:topology)."""
    out = tmp_path_factory.mktemp("values") / "nodes.yaml"
    result = CliRunner().invoke(cli, ["helm", "values", str(REPO / "examples" / "orders.py") + ":topology",
                                      "--app-ref", "orders:topology", "-o", str(out)], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return out


@pytest.fixture(scope="session")
def schemas() -> Path:
    stamp = (TOOLS / "stamps" / "crds").read_text().strip() if (TOOLS / "stamps" / "crds").exists() else "none"
    assert list((TOOLS / "crds").glob("*.yaml")), "generated CRDs missing: run `make deploy-tools`"
    return kubeconform_schemas(TOOLS / f"schemas-{stamp}")


@pytest.fixture(scope="session")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControlPlane]:
    """A fresh local control plane with the KEDA and prometheus-operator CRDs installed."""
    for name in ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kwok", "kubectl", "helm"):
        tool(name)
    with control_plane(tmp_path_factory.mktemp("k8s")) as plane:
        # Server-side: KEDA's CRDs are too large for the last-applied annotation of a client apply.
        plane.kubectl("apply", "--server-side", "-f", str(TOOLS / "crds"))
        for crd in ("scaledobjects.keda.sh", "triggerauthentications.keda.sh", "servicemonitors.monitoring.coreos.com"):
            plane.wait_for(lambda crd=crd: plane.condition("crd", crd, "Established"), 120, f"CRD {crd} established")
        yield plane
