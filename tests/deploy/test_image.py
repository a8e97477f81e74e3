"""The container image, built and run for real: podman (vfs storage, chroot isolation, runc) on a
Debian bookworm base made by debootstrap, the example topology in a `FROM kstream` image of its
own, run against the session's real broker with the host network."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from kstream.config import RuntimeSettings
from tests.deploy.k8s import REPO, run
from tests.integration.kafkatools import consume, jsons, produce, wait_until

# Cold, the first test also builds the images (or starts the control plane) on a shared 2-core box.
pytestmark = pytest.mark.timeout(2400)

PODMAN = REPO / "tools" / "image" / "podman.sh"
RUN = ["run", "--network", "host", "--ulimit", "nofile=1024:1024", "--ulimit", "nproc=1024:1024",
       "--read-only", "--tmpfs", "/tmp"]


def podman(*args: str, check: bool = True, timeout: float = 900) -> subprocess.CompletedProcess[str]:
    return run([PODMAN, *args], check=check, timeout=timeout)


def _ca_bundle() -> list[str]:
    """Hand pip inside the build this machine's CA bundle (the registries sit behind its proxy)."""
    bundle = os.environ.get("PIP_CERT") or os.environ.get("SSL_CERT_FILE") or "/etc/ssl/certs/ca-certificates.crt"
    return ["--secret", f"id=ca-bundle,src={bundle}"] if Path(bundle).is_file() else []


@pytest.fixture(scope="session")
def images() -> Iterator[tuple[str, str]]:
    """(kstream image, example image built FROM it). Unchanged sources hit podman's layer cache
    (so no pruning: the wheels stage is part of that cache)."""
    base = run([REPO / "tools" / "image" / "base.sh"], timeout=900).stdout.strip().splitlines()[-1]
    kstream, example = "localhost/kstream:test", "localhost/kstream-orders:test"
    build = ["build", "--isolation", "chroot", *_ca_bundle()]
    podman(*build, "--build-arg", f"BASE_IMAGE={base}", "-f", str(REPO / "docker" / "Dockerfile"), "-t", kstream, str(REPO))
    podman(*build, "--build-arg", f"KSTREAM_IMAGE={kstream}", "-f", str(REPO / "examples" / "deploy" / "Dockerfile"),
           "-t", example, str(REPO / "examples"))
    yield kstream, example


def test_dockerfiles_are_hadolint_clean() -> None:
    hadolint = Path(os.environ.get("VIRTUAL_ENV", REPO / ".venv")) / "bin" / "hadolint"
    result = run([hadolint if hadolint.exists() else "hadolint", REPO / "docker" / "Dockerfile",
                  REPO / "examples" / "deploy" / "Dockerfile"], check=False)
    assert result.returncode == 0, result.stdout + result.stderr


def test_image_runs_as_a_fixed_non_root_user_behind_an_init(images: tuple[str, str]) -> None:
    kstream, example = images
    (config,) = json.loads(podman("image", "inspect", kstream).stdout)
    conf = config["Config"]
    assert conf["User"] == "10001:10001"
    assert conf["Entrypoint"] == ["dumb-init", "--", "kstream"]
    assert "MALLOC_ARENA_MAX=2" in conf["Env"]
    (example_config,) = json.loads(podman("image", "inspect", example).stdout)
    assert example_config["Config"]["Cmd"] == ["run", "orders:topology"]
    # With a read-only root and only /tmp writable, the CLI works and knows the example topology.
    graph = podman(*RUN, "--rm", example, "graph", "orders:topology")
    assert "parse" in graph.stdout and "deliver" in graph.stdout
    assert podman(*RUN, "--rm", "--entrypoint", "id", kstream, "-u").stdout.strip() == "10001"


def test_worker_in_the_container_moves_records_and_stops_cleanly_on_sigterm(images: tuple[str, str], bootstrap: str) -> None:
    _, example = images
    ns = "t" + uuid.uuid4().hex[:10]
    env = ["-e", f"KSTREAM_BOOTSTRAP_SERVERS={bootstrap}", "-e", f"KSTREAM_NAMESPACE={ns}"]
    name = f"kstream-worker-{ns}"
    # The example reads and writes fixed external topics (shop.orders.raw, erp.orders) shared
    # with other runs: this run's orders are told apart by their ids.
    applied = podman(*RUN, "--rm", *env, example, "topics", "apply", "orders:topology", "--create-external")
    assert "change(s) applied" in applied.stdout
    podman(*RUN, "-d", "--name", name, *env, example)
    try:
        run_id = uuid.uuid4().hex[:8]
        orders = [(f"{run_id}-{i}", {"order": f"{run_id}-{i}", "customer": f"c{i % 3}", "items": [["apple", i + 1]]})
                  for i in range(20)]
        produce(bootstrap, "shop.orders.raw", [(k.encode(), v) for k, v in orders])
        delivered = consume(bootstrap, "erp.orders", timeout=240,
                            until=lambda ms: sum(1 for v in jsons(ms) if v["erp_order"].startswith(run_id)) >= 20)
        mine = {v["erp_order"]: v for v in jsons(delivered) if v["erp_order"].startswith(run_id)}
        assert len(mine) == 20, podman("logs", name, check=False).stderr[-3000:]
        assert mine[f"{run_id}-3"] == {"erp_order": f"{run_id}-3", "customer": "c0", "amount": 2.0}

        # SIGTERM reaches the worker through dumb-init: it commits, leaves its group, exits 0.
        budget = RuntimeSettings().shutdown_timeout
        started = time.monotonic()
        podman("kill", "--signal", "TERM", name)
        wait_until(lambda: podman("inspect", "--format", "{{.State.Running}}", name).stdout.strip() == "false",
                   timeout=budget + 30, what="the container to stop")
        elapsed = time.monotonic() - started
        logging.getLogger(__name__).info("container exited %.1f s after SIGTERM", elapsed)
        code = podman("inspect", "--format", "{{.State.ExitCode}}", name).stdout.strip()
        logs = podman("logs", name, check=False)
        assert code == "0", logs.stderr[-3000:]
        assert elapsed < budget, f"stopped after {elapsed:.1f} s, budget {budget} s"
        assert "stopped" in logs.stderr
    finally:
        podman("rm", "--force", name, check=False)


def test_compose_file_wires_broker_provisioning_and_worker() -> None:
    compose = yaml.safe_load((REPO / "docker" / "compose.yaml").read_text())
    services = compose["services"]
    assert services["kafka"]["image"].startswith("apache/kafka:4.")
    assert services["topics"]["command"][:2] == ["topics", "apply"]
    assert services["topics"]["depends_on"]["kafka"]["condition"] == "service_healthy"
    worker = services["worker"]
    assert worker["command"][0] == "run" and "--http-port" in worker["command"]
    assert worker["depends_on"]["topics"]["condition"] == "service_completed_successfully"
    assert worker["read_only"] is True and worker["environment"]["KSTREAM_BOOTSTRAP_SERVERS"] == "kafka:9092"
