"""The operator console in a real browser (Chromium via Playwright) against the real broker:
topology with live counts, the Trash (filter, open, edit, replay, discard), a workflow's
timeline while it runs, cursors, and access (token, CSRF)."""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from contextlib import ExitStack
from datetime import UTC, datetime, timedelta

import orjson
import pytest
from playwright.sync_api import Browser, BrowserContext, Page, expect, sync_playwright

from examples.shop_api import ShopApi
from kstream.api.server import Kafka, create_app
from kstream.app import ack_producer, cursor_reader, tail_consumer, trash_store
from kstream.batch import read_cursors
from kstream.config import Settings
from kstream.console.app import create_console, mount
from kstream.trash import TrashCodec, TrashEntry
from kstream.types import Attempt
from tests.apps.chain import make_chain
from tests.apps.onboarding_wf import Services, make
from tests.apps.shop_sync import make_shop_sync
from tests.integration.browser import CHROMIUM, serving, shot, sign_in
from tests.integration.kafkatools import consume, create_topics, jsons, produce, provision, running, wait_until
from tests.integration.wftools import http

pytestmark = pytest.mark.integration

TOKEN = "console-T0ken-never-in-urls"
expect.set_options(timeout=30_000)  # a shared 2-core machine: pages refresh every 1-2 s, the broker may lag


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    assert CHROMIUM.exists(), "Debian's chromium is missing: `make browser` installs it"
    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=str(CHROMIUM), headless=True)
        yield b
        b.close()


@pytest.fixture()
def context(browser: Browser) -> Iterator[BrowserContext]:
    ctx = browser.new_context(viewport={"width": 1280, "height": 800})
    ctx.set_default_timeout(60_000)
    urls: list[str] = []
    ctx.on("request", lambda r: urls.append(r.url))
    yield ctx
    ctx.close()
    assert not [u for u in urls if TOKEN in u], "the token appeared in a URL"


def _trash(settings: Settings) -> dict[str, list[str]]:
    by_node: dict[str, list[str]] = {}
    for e in trash_store(settings).entries():
        by_node.setdefault(e.node, []).append(e.id)
    return by_node


def _box(page: Page, node: str) -> str:
    return f'#graph g.box.node[data-name="{node}"]'


def test_topology_and_trash_edit_replay_discard(settings: Settings, context: BrowserContext,
                                                caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    ns = settings.namespace
    src, dst = f"{ns}.in", f"{ns}.out"
    create_topics(settings.bootstrap_servers, src, dst)
    topology = make_chain(src, dst)
    provision(topology, settings)
    page = context.new_page()
    console = create_console(topology, settings, token=TOKEN)
    with ExitStack() as stack, running(topology, settings, ["parse", "enrich"]), serving(console) as base:
        # Given 3 good orders, 2 that fail in parse, 1 that enrich's model refuses (no amount); deliver not running
        good = [{"id": i, "key": f"k{i}", "seq": i, "amount": 1.0} for i in range(3)]
        bad = [{"id": 10 + i, "key": "x", "seq": i, "amount": 1.0, "explode": True} for i in range(2)]
        invalid = {"id": 9, "key": "k9", "seq": 9}
        produce(settings.bootstrap_servers, src, [(o["key"], o) for o in [*good, *bad, invalid]])
        wait_until(lambda: {k: len(v) for k, v in _trash(settings).items()} == {"parse": 2, "enrich": 1},
                   timeout=90, what="3 trash entries")
        # When the operator signs in with the form, the topology page draws the chain with its counts
        sign_in(page, base, TOKEN)
        expect(page.locator(_box(page, "parse"))).to_have_attribute("data-trash", "2")
        expect(page.locator(_box(page, "enrich"))).to_have_attribute("data-trash", "1")
        expect(page.locator("#graph g.box.topic")).to_have_count(2)
        # And deliver, which does not run, is the bottleneck: its 3 messages wait
        expect(page.locator(_box(page, "deliver"))).to_have_attribute("data-lag", "3")
        expect(page.locator("#graph g.box.bottleneck")).to_have_attribute("data-name", "deliver")
        expect(page.locator(_box(page, "parse"))).to_contain_text("in flight 0")
        expect(page.locator(_box(page, "parse"))).to_contain_text("/s")  # rates, from the second poll on
        shot(page, "topology")
        # And it is live: a new failure and deliver's start show up without a reload
        produce(settings.bootstrap_servers, src, [("x", {"id": 12, "key": "x", "seq": 3, "amount": 1.0, "explode": True})])
        expect(page.locator(_box(page, "parse"))).to_have_attribute("data-trash", "3")
        stack.enter_context(running(topology, settings, ["deliver"]))
        expect(page.locator(_box(page, "deliver"))).to_have_attribute("data-lag", "0")
        expect(page.locator("#graph g.box.bottleneck")).to_have_count(0)

        # The Trash: counts per node and error type, filters
        page.click("header nav >> text=Trash")
        expect(page.locator("p.total")).to_contain_text("4 entries")
        expect(page.locator("table.counts")).to_contain_text("chain/parse")
        shot(page, "trash-list")
        page.fill("form.filters input[name=node]", "enrich")
        page.click("form.filters button")
        expect(page.locator("table.entries tbody tr")).to_have_count(1)
        page.fill("form.filters input[name=node]", "")
        page.fill("form.filters input[name=error]", "cannot parse order 1")
        page.click("form.filters button")
        expect(page.locator("table.entries tbody tr")).to_have_count(3)  # orders 10, 11, 12
        page.fill("form.filters input[name=error]", "")
        page.fill("form.filters input[name=node]", "enrich")
        page.click("form.filters button")

        # An entry: payload, error, attempts, traceback
        page.click("table.entries tbody tr a")
        enrich_id = _trash(settings)["enrich"][0]
        expect(page.locator("h1")).to_contain_text(enrich_id)
        expect(page.locator("table.facts")).to_contain_text("validation")
        expect(page.locator("textarea[name=payload]")).to_contain_text('"seq": 9')
        # An invalid edit is refused inline and nothing is kept
        page.fill("textarea[name=payload]", '{"id": 9, "key": "k9", "seq": 9, "amount": "lots"}')
        page.click("form.editor button")
        expect(page.locator("#edit-error")).to_contain_text("Edit refused")
        expect(page.locator("#edit-error")).to_contain_text("amount")
        entry = trash_store(settings).get(enrich_id)
        assert not entry.edited and orjson.loads(entry.value or b"") == {**invalid, "parsed": True}
        shot(page, "trash-entry-refused")
        # A valid edit is kept
        page.fill("textarea[name=payload]", '{"id": 9, "key": "k9", "seq": 9, "amount": 10.0}')
        page.click("form.editor button")
        expect(page.locator("p.note")).to_contain_text("Payload saved")
        entry = trash_store(settings).get(enrich_id)
        assert entry.edited and orjson.loads(entry.value or b"")["amount"] == 10.0

        # Replay: a dry-run preview, a confirmation, then progress; the record reaches the output topic
        page.click(".actions >> text=Replay…")
        expect(page.locator("p.preview")).to_contain_text("would touch 1 entries")
        shot(page, "trash-replay-preview")
        page.once("dialog", lambda d: d.accept())
        page.click("form.confirm button")
        expect(page.locator(".progress")).to_contain_text("replay: 1/1 done")
        delivered = consume(settings.bootstrap_servers, dst, until=lambda ms: any(v["id"] == 9 for v in jsons(ms)))
        assert [v["total"] for v in jsons(delivered) if v["id"] == 9] == [12.0]
        assert "enrich" not in _trash(settings)

        # Bulk discard by filter: preview of 3, confirm, progress to the end
        page.goto(f"{base}/trash?error=cannot+parse")
        page.select_option("form#bulk select[name=verb]", "discard")
        page.select_option("form#bulk select[name=scope]", "filter")
        page.click("form#bulk button")
        expect(page.locator("p.preview")).to_contain_text("would touch 3 entries")
        page.once("dialog", lambda d: d.accept())
        page.click("form.confirm button")
        expect(page.locator(".progress")).to_contain_text("discard: 3/3 done")
        shot(page, "trash-discard-done")
        assert _trash(settings) == {}

        # CSRF: the signed-in session's cookie without the form's token writes nothing
        produce(settings.bootstrap_servers, src, [("x", {"id": 13, "key": "x", "seq": 4, "amount": 1.0, "explode": True})])
        wait_until(lambda: "parse" in _trash(settings), timeout=60, what="a new entry")
        forged = context.request.post(f"{base}/trash/run", form={"verb": "discard", "scope": "filter", "node": "parse"})
        assert forged.status == 403
        assert "parse" in _trash(settings)
    assert TOKEN not in caplog.text


def test_without_the_token_nothing_is_shown(settings: Settings, context: BrowserContext) -> None:
    topology = make_chain(f"{settings.namespace}.in", f"{settings.namespace}.out")
    with serving(create_console(topology, settings, token=TOKEN)) as base:
        page = context.new_page()
        # Every page leads to the login form; JSON and assets answer 401
        for path in ("/", "/topology", "/trash", "/trash/0123456789abcdef0123", "/workflows", "/cursors", "/jobs/x"):
            page.goto(base + path)
            assert page.url == f"{base}/login", (path, page.url)
            expect(page.locator("h1")).to_have_text("Sign in")
            expect(page.locator("main")).not_to_contain_text("chain")
        for path in ("/api/topology", "/static/console.js", "/workflows/x/timeline", "/api/jobs/x"):
            assert context.request.get(base + path).status == 401, path
        assert context.request.post(f"{base}/trash/run", form={"scope": "filter", "node": "parse"}).status == 401
        # A wrong token is refused; a bearer header is accepted (for scripts)
        page.fill("input[name=token]", "wrong")
        page.click("form.login button")
        expect(page.locator("p.error")).to_have_text("Wrong token.")
        shot(page, "login-refused")
        bearer = context.request.get(f"{base}/api/topology", headers={"Authorization": f"Bearer {TOKEN}"})
        assert bearer.status == 200 and bearer.json()["topology"] == "chain"
        # The session cookie holds no token
        sign_in(page, base, TOKEN)
        assert all(TOKEN not in c["value"] for c in context.cookies())


def test_workflow_timeline_updates_while_it_runs_and_buttons_steer(settings: Settings, context: BrowserContext) -> None:
    # Given the workflows API of `kstream serve` with the console mounted at /console (one process)
    # verify takes 12 s: time enough, on a loaded machine, to find the workflow running
    services = Services(delay={"verify": 12.0})
    wf = make(services)
    held = make(services, name="held", on_failure="hold")
    for w in (wf, held):
        provision(w.topology, settings)
    kafka = Kafka(ack_producer(settings), cursor_reader(settings), lambda: tail_consumer(settings, "api"), settings.namespace)
    api_app = create_app([wf, held], kafka, token=TOKEN)
    mount(api_app, create_console(wf.topology, settings, token=TOKEN, workflows=api_app))
    auth = {"Authorization": f"Bearer {TOKEN}"}
    with running(wf.topology, settings), running(held.topology, settings), serving(api_app) as root:
        base = f"{root}/console"
        wait_until(lambda: http("GET", f"{root}/readyz")[0] == 200, timeout=60, what="ready")
        status, body = http("POST", f"{root}/workflows/onboarding", {"email": "ann@x"}, auth)
        assert status == 202
        wid = body["workflowId"]
        # (the list is the orchestrator's record: it shows the workflow once its workers have
        # joined their groups and decided the start, which takes a while on a loaded machine)
        wait_until(lambda: wid in str(http("GET", f"{root}/workflows?type=onboarding", None, auth)[1]), timeout=60,
                   what="the started workflow in the list")
        page = context.new_page()
        sign_in(page, base, TOKEN)
        page.click("header nav >> text=Workflows")
        page.click(f"table.workflows >> text={wid}")
        # Then the timeline shows verify running, and follows the workflow to its end without a reload
        expect(page.locator("table.timeline tr", has_text="verify")).to_contain_text("running", timeout=30_000)
        shot(page, "workflow-running")
        expect(page.locator("#wf-status")).to_have_text("completed", timeout=90_000)
        expect(page.locator("table.timeline tr", has_text="welcome")).to_contain_text("completed")
        duration = page.locator("table.timeline tr", has_text="verify").locator("td").nth(3)
        expect(duration).to_have_text(re.compile(r"^(1[2-9]|[2-9]\d)\.\ds$"))
        shot(page, "workflow-timeline")

        # Cancel: a running workflow is cancelled (nothing completed to undo, or undone)
        wid2 = http("POST", f"{root}/workflows/onboarding", {"email": "bob@x"}, auth)[1]["workflowId"]
        page.goto(f"{base}/workflows/{wid2}")
        page.click(".actions >> text=Cancel")
        expect(page.locator("p.note")).to_contain_text("cancel sent")
        expect(page.locator("#wf-status")).to_have_text("cancelled", timeout=90_000)

        # Retry: a workflow held after a failure runs again and completes
        services.fail["verify"] = 1
        services.delay["verify"] = 0.0
        wid3 = http("POST", f"{root}/workflows/held", {"email": "eve@x"}, auth)[1]["workflowId"]
        page.goto(f"{base}/workflows/{wid3}")
        expect(page.locator("#wf-status")).to_have_text("blocked", timeout=90_000)
        expect(page.locator("table.timeline tr", has_text="verify")).to_contain_text("503")
        page.click(".actions >> text=Retry")
        expect(page.locator("#wf-status")).to_have_text("completed", timeout=90_000)
        page.goto(f"{base}/workflows?status=completed")
        expect(page.locator("table.workflows")).to_contain_text(wid3)

        # Compensations: crm always fails, so provision and billing are undone, shown in their table
        services.fail["crm"] = -1
        wid4 = http("POST", f"{root}/workflows/onboarding", {"email": "zed@x"}, auth)[1]["workflowId"]
        page.goto(f"{base}/workflows/{wid4}")
        expect(page.locator("#wf-status")).to_have_text("compensated", timeout=90_000)
        expect(page.locator("table.timeline tr", has_text="crm")).to_contain_text("failed")
        expect(page.locator("table.compensations tr", has_text="deprovision")).to_contain_text("completed")
        expect(page.locator("table.compensations tr", has_text="refund")).to_contain_text("completed")
        shot(page, "workflow-compensated")


def test_cursors_page_resets_a_scope_after_confirmation(settings: Settings, context: BrowserContext) -> None:
    ns = settings.namespace
    create_topics(settings.bootstrap_servers, f"{ns}.out")
    with ShopApi(150) as shop:
        topology = make_shop_sync(shop.url, f"{ns}.out")
        provision(topology, settings)
        with running(topology, settings):
            produce(settings.bootstrap_servers, f"{ns}.shop.fetch", [("eu", {})])
            consume(settings.bootstrap_servers, f"{ns}.out", count=150, timeout=90)

            def done() -> bool:
                states = read_cursors(cursor_reader(settings), settings.cursors_topic, topology="shop", timeout=30)
                return any(s.scope == "eu" and s.run is None and s.last_cursor == 150 for s in states)

            wait_until(done, timeout=60, what="the run of scope eu completed")
        with serving(create_console(topology, settings, token=TOKEN)) as base:
            page = context.new_page()
            sign_in(page, base, TOKEN)
            page.click("header nav >> text=Cursors")
            row = page.locator("table.cursors tr", has_text='"eu"')
            expect(row).to_contain_text("idle")
            expect(row).to_contain_text("150")
            shot(page, "cursors")
            row.locator("text=Reset…").click()
            expect(page.locator("main")).to_contain_text("next run is a full sync")
            page.once("dialog", lambda d: d.accept())
            page.click("form.confirm button")
            expect(page.locator("p.note")).to_contain_text("shop/fetch/eu reset")
            expect(page.locator("table.cursors")).not_to_contain_text('"eu"')
    assert [s for s in read_cursors(cursor_reader(settings), settings.cursors_topic, topology="shop") if s.scope == "eu"] == []


def test_trash_list_pages_through_100000_entries(settings: Settings) -> None:
    # Given 100,000 entries on the Trash topic: 70,000 of parse, 30,000 of enrich, five error types
    topology = make_chain(f"{settings.namespace}.in", f"{settings.namespace}.out")
    provision(topology, settings)
    codec, start = TrashCodec(), datetime(2026, 1, 1, tzinfo=UTC)
    entries = []
    for i in range(100_000):
        at = start + timedelta(seconds=i)
        node = "parse" if i % 10 < 7 else "enrich"
        entries.append(TrashEntry(
            id=f"e{i:06d}", topology="chain", node=node, reason="error", error_type=f"Boom{i % 5}",
            error_message=f"boom {i}", traceback="", key=b"k", value=b'{"id": %d}' % i, headers=[], topic="t",
            partition=0, offset=i, workflow=None, attempts=(Attempt(at, "boom"),), first_failure=at, last_failure=at))
    produce(settings.bootstrap_servers, settings.trash_topic, [(e.id, codec.encode(e)) for e in entries], raw=True)
    auth = {"Authorization": f"Bearer {TOKEN}"}
    with serving(create_console(topology, settings, token=TOKEN)) as base:
        # When the list is asked for: 50 a page, newest first, the counts over all of them
        status, html = http("GET", f"{base}/trash", None, auth, timeout=120)
        assert status == 200
        assert "<b>100000</b> entries" in html and "page 1 of 2000" in html
        assert "<td>chain/parse</td><td>Boom0</td><td>20000</td>" in html
        assert html.count('name="id" value="e') == 50 and 'value="e099999"' in html
        # Then the last page holds the oldest, and a filter pages through its own matches
        status, html = http("GET", f"{base}/trash?page=2000", None, auth, timeout=120)
        assert 'value="e000000"' in html and "page 2000 of 2000" in html
        status, html = http("GET", f"{base}/trash?node=enrich&error=boom2&page=2", None, auth, timeout=120)
        matching = [e for e in entries if e.node == "enrich" and e.error_type == "Boom2"]
        assert f"<b>{len(matching)}</b> entries" in html and f"page 2 of {-(-len(matching) // 50)}" in html
        assert f'value="{matching[-51].id}"' in html
        # And a time range (ISO, naive = UTC) selects the failures inside it
        status, html = http("GET", f"{base}/trash?since=2026-01-01T00:01:00&until=2026-01-01T00:01:59", None, auth)
        assert "<b>60</b> entries" in html and 'value="e000119"' in html and 'value="e000120"' not in html
