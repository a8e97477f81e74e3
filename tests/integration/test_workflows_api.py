"""The workflows HTTP API on the real broker: start, status, idempotency, auth, readiness."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
import uvicorn

from kstream.api.server import Kafka, create_app
from kstream.app import ack_producer, tail_consumer
from kstream.config import Settings
from kstream.kafka.confluent import KafkaTopicReader
from kstream.naming import node_topic
from kstream.types import Record
from tests.apps.onboarding_wf import Services, make
from tests.integration.kafkatools import consume, provision, running, wait_until
from tests.integration.wftools import api, free_port, http, start, wait_states

pytestmark = pytest.mark.integration


def test_post_answers_at_once_and_get_follows_the_workflow(settings: Settings) -> None:
    # Given verify taking 2 s
    services = Services(delay={"verify": 2.0})
    wf = make(services)
    provision(wf.topology, settings)
    with running(wf.topology, settings), api(settings, [wf]) as url:
        wait_until(lambda: http("GET", f"{url}/readyz")[0] == 200, timeout=60, what="ready")
        # When a workflow is started
        status, body = http("POST", f"{url}/workflows/onboarding", {"email": "ann@x"})
        # Then the answer is 202 with an id, before verify could have finished; a GET finds it at once
        assert status == 202 and body["status"] == "accepted"
        wid = body["workflowId"]
        status, doc = http("GET", f"{url}/workflows/{wid}")
        assert status == 200 and doc["status"] in ("accepted", "running")
        assert doc["steps"]["welcome"] == {"status": "pending"}
        assert services.of("verify") == []
        # And a long poll follows it to the end
        deadline = time.monotonic() + 60
        while doc["status"] != "completed" and time.monotonic() < deadline:
            status, doc = http("GET", f"{url}/workflows/{wid}?wait=5s")
        assert doc["status"] == "completed", doc
        assert doc["workflowId"] == wid and doc["type"] == "onboarding" and doc["startedAt"].endswith("Z")
        assert doc["steps"]["verify"]["status"] == "completed" and doc["steps"]["verify"]["duration"].endswith("s")
        assert doc["output"] == "welcome ann@x"
        status, page = http("GET", f"{url}/workflows?type=onboarding&status=completed")
        assert [w["workflowId"] for w in page["workflows"]] == [wid]


def test_bad_requests_get_a_json_error_and_write_nothing(settings: Settings) -> None:
    wf = make(Services())
    provision(wf.topology, settings)
    with api(settings, [wf], token="s3cret") as url:
        auth = {"Authorization": "Bearer s3cret"}
        assert http("GET", f"{url}/healthz")[0] == 200  # probes need no token
        assert http("POST", f"{url}/workflows/onboarding", {"email": "a"})[0] == 401
        assert http("POST", f"{url}/workflows/onboarding", {"email": "a"}, {"Authorization": "Bearer nope"})[0] == 401
        status, body = http("POST", f"{url}/workflows/nosuch", {}, auth)
        assert status == 404 and "no workflow type 'nosuch'" in body["error"]
        status, body = http("GET", f"{url}/workflows/unknown-id", None, auth)
        assert status == 404 and "error" in body
        status, body = http("POST", f"{url}/workflows/unknown-id/cancel", None, auth)
        assert status == 404
        status, body = http("POST", f"{url}/workflows/x/explode", None, auth)
        assert status == 404 and "no command 'explode'" in body["error"]
        metrics = http("GET", f"{url}/metrics")[1]  # open, like the probes: scrapers carry no token
        assert "\nkstream_api_requests_total 6\n" in metrics, metrics
    inbox = node_topic(settings.namespace, wf.name, "orchestrator")
    assert consume(settings.bootstrap_servers, inbox, timeout=3) == []


def test_ten_concurrent_posts_with_one_key_start_one_workflow_and_other_input_conflicts(settings: Settings) -> None:
    services = Services()
    wf = make(services)
    provision(wf.topology, settings)
    with running(wf.topology, settings), api(settings, [wf]) as url:
        wait_until(lambda: http("GET", f"{url}/readyz")[0] == 200, timeout=60, what="ready")
        # When ten clients post the same start with one Idempotency-Key at once
        def post(_: int) -> tuple[int, Any]:
            return http("POST", f"{url}/workflows/onboarding", {"email": "bob@x"}, {"Idempotency-Key": "signup-42"})

        with ThreadPoolExecutor(10) as pool:
            answers = list(pool.map(post, range(10)))
        # Then all get the same id, one of them 202, the others 200
        ids = {body["workflowId"] for _, body in answers}
        assert len(ids) == 1, answers
        assert sorted(status for status, _ in answers) == [200] * 9 + [202]
        wid = ids.pop()
        wait_states(settings, wf, [wid], {"completed"})
        # And the same key with other input is a conflict; the same input again is fine
        status, body = http("POST", f"{url}/workflows/onboarding", {"email": "eve@x"}, {"Idempotency-Key": "signup-42"})
        assert status == 409 and "other input" in body["error"]
        assert http("POST", f"{url}/workflows/onboarding", {"email": "bob@x"}, {"Idempotency-Key": "signup-42"})[0] == 200
    assert [c.key for c in services.of("verify")] == [f"{wid}:verify"]  # one run
    assert len(services.of("welcome")) == 1


class GatedReader(KafkaTopicReader):
    """A real reader that starts reading only once the test opens the gate."""

    def __init__(self, settings: Settings) -> None:
        super().__init__(settings.bootstrap_servers, settings.kafka)
        self.gate = threading.Event()

    def read_compacted(self, topic: str, timeout: float) -> list[Record]:
        self.gate.wait(60)
        return super().read_compacted(topic, timeout)


def test_a_restarted_api_is_not_ready_until_its_view_caught_up_then_serves_every_status(settings: Settings) -> None:
    # Given 50 finished workflows
    wf = make(Services())
    provision(wf.topology, settings)
    ids = [f"w{i}" for i in range(50)]
    with running(wf.topology, settings):
        start(settings, wf, ids)
        wait_states(settings, wf, ids, {"completed"})
    # When a fresh API process starts (its state view still loading)
    reader = GatedReader(settings)
    kafka = Kafka(ack_producer(settings), reader, lambda: tail_consumer(settings, "api"), settings.namespace)
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(create_app([wf], kafka), host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: server.started, timeout=30, what="the server")
        # Then it is alive but not ready, and knows no workflow yet
        assert http("GET", f"{url}/healthz")[0] == 200
        assert http("GET", f"{url}/readyz")[0] == 503
        assert http("GET", f"{url}/workflows/w0")[0] == 404
        reader.gate.set()
        wait_until(lambda: http("GET", f"{url}/readyz")[0] == 200, timeout=60, what="ready")
        # And once ready, every status is served
        answers = [http("GET", f"{url}/workflows/{wid}") for wid in ids]
        assert all(status == 200 and doc["status"] == "completed" for status, doc in answers)
    finally:
        server.should_exit = True
        thread.join(30)

