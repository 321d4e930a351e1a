"""Issue 13: the Dagster UI in a real browser, against the sandbox-backed code location.

`dagster dev` (webserver + daemon, as in the README's "Opening the UI") on a SQLite instance in which
the master data and documents jobs ran against both sandboxes (the seed's unmappable invoices are
quarantined). Headless Chromium — the system package (`apt-get install -y chromium`), never a browser
Playwright downloads — driven by Playwright opens what an operator opens each morning and checks what
it shows: the catalog (every asset of the Definitions with its group), the lineage (every group), the
runs, the automation page (the webhook sensor and the schedules), the quarantine check's failed result
and its details table (each quarantined invoice with its reason), the partition-range backfill dialog
and the replay job's launchpad. Nothing is launched from the browser.

Every page is saved as a PNG (1280 px wide) under the test's ``screenshots/`` directory and, when
UI_SCREENSHOT_DIR is set, copied there: the README's screenshots are made with
``UI_SCREENSHOT_DIR=docs/screenshots scripts/test.sh coupa_d365_pipeline_tests/e2e/test_ui_browser.py``.
Every wait is on a selector or a text (Playwright's auto-waiting), never a fixed sleep."""

from __future__ import annotations

import os
import re
import shutil
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

import dagster as dg
import httpx
import pytest
from playwright.sync_api import Page, expect, sync_playwright

from coupa_d365_pipeline.definitions import defs
from coupa_d365_pipeline.defs.documents import daily_documents_job, vendor_invoices_not_stuck
from coupa_d365_pipeline.demo import prepare_dagster_home
from coupa_d365_pipeline.sandbox.server import free_port
from coupa_d365_pipeline.state.ledger import Ledger
from coupa_d365_pipeline.state.store import make_engine
from coupa_d365_pipeline_tests.conftest import ALLOWED_SKIPS, in_ci
from coupa_d365_pipeline_tests.e2e.processes import start, stop, wait_for
from coupa_d365_pipeline_tests.e2e.test_dagster_dev import graphql
from coupa_d365_pipeline_tests.flow.helpers import run_documents, run_master

pytestmark = pytest.mark.e2e
REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
VIEWPORT = {"width": 1280, "height": 800}
UI_TIMEOUT_MS = 30_000  # a page's GraphQL answers under a loaded CI host (stop 21: the catalog took over 5 s)
ROW_PX = 64  # one asset row of the catalog table
LOCATION = "coupa_d365_pipeline"
QUARANTINE_CHECK = next(iter(vendor_invoices_not_stuck.check_keys))
LOADED = "{ assetNodes { assetKey { path } } instance { daemonHealth { allDaemonStatuses { healthy required } } } }"


def chromium() -> str:
    """The system Chromium; .ci/run installs the Debian package when it is missing and says why it
    could not (CHROMIUM_NOT_INSTALLABLE) when it is neither root nor has apt-get."""
    found = os.environ.get("CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
    if found:
        return found
    why = os.environ.get("CHROMIUM_NOT_INSTALLABLE")
    if in_ci() and not why:
        pytest.fail("chromium is missing although .ci/run could install it (apt-get install -y chromium)")
    pytest.skip(f"chromium not installable here: {why or 'not on PATH; install it: apt-get install -y chromium'}")


class Screenshots:
    def __init__(self, directory: Path) -> None:
        self.directory = directory
        directory.mkdir()
        target = os.environ.get("UI_SCREENSHOT_DIR")
        self.copy_to = Path(target) if target else None
        if self.copy_to is not None:
            self.copy_to.mkdir(parents=True, exist_ok=True)

    def take(self, page: Page, name: str) -> None:
        path = self.directory / f"{name}.png"
        page.screenshot(path=path, full_page=True, animations="disabled")
        if self.copy_to is not None:
            shutil.copyfile(path, self.copy_to / path.name)


@pytest.fixture
def chromium_path() -> str:
    return chromium()  # first, so a missing browser skips before anything starts


@contextmanager
def browser_page(executable: str) -> Iterator[Page]:
    """One page in headless Chromium. Opened after the in-process runs: Playwright's sync API keeps
    an asyncio loop running on this thread, which Dagster's in-process run cleanup cannot share."""
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable, headless=True)
        try:
            context = browser.new_context(viewport=VIEWPORT)  # type: ignore[arg-type]
            context.set_default_timeout(UI_TIMEOUT_MS)
            expect.set_options(timeout=UI_TIMEOUT_MS)  # expect() keeps its own 5 s default otherwise
            yield context.new_page()
        finally:
            expect.set_options(timeout=5_000)  # Playwright's default, for any later test in this worker
            browser.close()


def _loaded(url: str) -> bool:
    """The code location is loaded and every required daemon reports healthy (no "daemon not
    running" banner in the screenshots)."""
    try:
        data = graphql(url, LOADED)
    except (httpx.HTTPError, AssertionError):
        return False
    statuses = data["instance"]["daemonHealth"]["allDaemonStatuses"]
    return bool(data["assetNodes"]) and all(s["healthy"] for s in statuses if s["required"])


SHOT_NAMES = [
    "catalog",
    "lineage",
    "runs",
    "automation",
    "quarantine-check",
    "quarantine-details",
    "backfill-dialog",
    "replay-launchpad",
]  # docs/screenshots/ holds these, referenced by the README


def test_operator_pages_in_a_real_browser(chromium_path, sandboxes, sandbox_env, tmp_path):
    shots = Screenshots(tmp_path / "screenshots")
    home = prepare_dagster_home(tmp_path / "home")
    instance = dg.DagsterInstance.from_config(str(home))  # creates the SQLite schema before dagster dev does
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {**os.environ, **sandbox_env, "DAGSTER_HOME": str(home), "WEBHOOK_STAGING_DIR": str(tmp_path / "webhooks")}
    log = tmp_path / "dagster-dev.log"
    dev_args = ["dev", "-w", str(REPO / "workspace.yaml"), "-h", "127.0.0.1", "-p", str(port)]
    dev = start([str(BIN / "dagster"), *dev_args], env, log)
    try:
        # while dagster dev starts: the runs an operator finds in the morning
        master = run_master(instance)
        documents = run_documents(instance)
        assert master.success and documents.success
        evaluation = next(e for e in documents.get_asset_check_evaluations() if e.asset_check_key == QUARANTINE_CHECK)
        unfinished = Ledger(make_engine(sandbox_env["SYNC_DATABASE_URL"])).unfinished("invoice")
        assert not evaluation.passed and any(u.kind == "quarantined" for u in unfinished), unfinished
        wait_for(lambda: _loaded(url), 120, "dagster dev did not load the code location", [log])

        with browser_page(chromium_path) as page:
            check_catalog(page, url, shots)
            check_backfill_dialog(page, shots)
            check_lineage(page, url, shots)
            check_runs(page, url, shots, [master.run_id, documents.run_id])
            check_automation(page, url, shots)
            check_quarantine(page, url, shots, evaluation, unfinished, documents.run_id)
            check_replay_launchpad(page, url, shots, [u.row.coupa_id for u in unfinished])
    finally:
        stop(dev)
        instance.dispose()
    assert sorted(p.name for p in shots.directory.iterdir()) == sorted(f"{n}.png" for n in SHOT_NAMES)


def check_catalog(page: Page, url: str, shots: Screenshots) -> None:
    """Every asset of the Definitions in the catalog, each row naming its group (the window is made
    tall enough for every row: the table renders only the rows in view)."""
    specs = list(defs.resolve_all_asset_specs())
    assert {s.group_name for s in specs} >= {"coupa", "d365"}
    page.set_viewport_size({"width": VIEWPORT["width"], "height": max(VIEWPORT["height"], 260 + ROW_PX * len(specs))})
    page.goto(f"{url}/assets")
    for spec in specs:
        path = "/".join(spec.key.path)
        link = page.locator(f'a[href="/assets/{path}"]')
        expect(link).to_contain_text(" / ".join(spec.key.path))
        row = page.locator("div", has=page.get_by_test_id(f"checkbox-{path}")).filter(has=link).last
        expect(row.locator('a[href*="asset-groups"]')).to_have_text(str(spec.group_name))
    expect(page.get_by_text("Materialized").first).to_be_visible()  # statuses loaded
    expect(page.get_by_text("Loading...")).to_have_count(0)
    shots.take(page, "catalog")


def check_lineage(page: Page, url: str, shots: Screenshots) -> None:
    """The global lineage shows every group of the Definitions."""
    page.goto(f"{url}/asset-groups")
    for group in sorted({str(s.group_name) for s in defs.resolve_all_asset_specs()}):
        expect(page.get_by_text(group, exact=True).first).to_be_visible()
    expect(page.get_by_text("fetching statuses")).to_have_count(0)
    shots.take(page, "lineage")


def check_runs(page: Page, url: str, shots: Screenshots, run_ids: list[str]) -> None:
    page.goto(f"{url}/runs")
    for run_id in run_ids:
        link = page.get_by_role("link", name=f"run {run_id[:8]}")
        expect(link).to_have_attribute("href", f"/runs/{run_id}")
        row = page.locator("div", has=link).filter(has_text="Manually launched").last
        expect(row.get_by_text("Success", exact=True)).to_be_visible()
    for job in ("master_data_job", "daily_documents_job"):
        expect(page.get_by_role("link", name=job)).to_be_visible()
    shots.take(page, "runs")


def check_automation(page: Page, url: str, shots: Screenshots) -> None:
    """The webhook sensor, running by default, and every schedule, stopped until turned on."""
    page.goto(f"{url}/automation")
    sensors = [s.name for s in defs.sensors or []]
    schedules = [s.name for s in defs.schedules or []]
    assert "coupa_webhook_sensor" in sensors and schedules
    for kind, names, running in (("sensors", sensors, True), ("schedules", schedules, False)):
        for name in names:
            link = page.locator(f'a[href="/locations/{LOCATION}/{kind}/{name}"]')
            expect(link).to_contain_text(name)
            row = page.locator("div", has=link).filter(has=page.get_by_role("checkbox")).last
            toggle = row.get_by_role("checkbox").last
            expect(toggle).to_be_checked(checked=running)
    expect(page.get_by_text("Standard sensor")).to_be_visible()  # descriptions loaded
    shots.take(page, "automation")


def check_quarantine(page: Page, url: str, shots: Screenshots, evaluation, unfinished, run_id: str) -> None:
    """The quarantine check's page: failed in the documents run, its description, the count; then
    the details table: every unfinished invoice of the ledger with its state and reason."""
    asset_path = "/".join(QUARANTINE_CHECK.asset_key.path)
    page.goto(f"{url}/assets/{asset_path}?view=checks")
    page.get_by_text(QUARANTINE_CHECK.name, exact=True).first.click()
    expect(page.get_by_role("tab", name="Execution history")).to_be_visible()
    expect(page.get_by_role("paragraph").filter(has_text=evaluation.description)).to_be_visible()
    result = page.locator("div", has=page.get_by_text("Evaluation result", exact=True)).last
    expect(result.get_by_text("Failed", exact=True)).to_be_visible()
    evaluated_in = page.locator(f'a[href^="/runs/{run_id}?"][href*="{QUARANTINE_CHECK.name}"]')
    expect(evaluated_in).to_be_visible()
    metadata = page.get_by_role("row")
    expect(metadata.filter(has=page.get_by_role("cell", name="stuck", exact=True))).to_have_text(
        re.compile(rf"stuck\s*{len(unfinished)}$")
    )
    shots.take(page, "quarantine-check")

    details = metadata.filter(has=page.get_by_role("cell", name="details", exact=True))
    details.get_by_text("[Show Markdown]").click()
    dialog = page.get_by_role("dialog")
    for item in unfinished:
        row = dialog.get_by_role("row").filter(has=page.get_by_role("cell", name=str(item.row.coupa_id), exact=True))
        expect(row).to_contain_text(item.kind)
        expect(row).to_contain_text(item.reason)
    shots.take(page, "quarantine-details")
    dialog.get_by_role("button", name="Close").click()
    expect(dialog).to_have_count(0)


def check_backfill_dialog(page: Page, shots: Screenshots) -> None:
    """On the catalog: the documents job's assets ticked, "Materialize selected", a range of days
    typed in the partition selection. Cancelled, not launched (test_ui_backfill.py launches one)."""
    keys = sorted("/".join(k.path) for k in daily_documents_job.selection.resolve(defs.resolve_asset_graph()))
    assert keys and all(k.split("/")[0] in ("coupa", "d365") for k in keys)
    for key in keys:
        page.locator("label", has=page.get_by_test_id(f"checkbox-{key}")).click()
        expect(page.get_by_test_id(f"checkbox-{key}")).to_be_checked()
    page.get_by_role("button", name=re.compile(rf"Materialize selected \({len(keys)}\)")).click()
    dialog = page.get_by_role("dialog")
    expect(dialog.get_by_text(f"Launch runs to materialize {len(keys)} assets")).to_be_visible()
    expect(dialog.get_by_role("button", name="Launch backfill")).to_be_visible()
    expect(dialog.get_by_text(re.compile("daemon is not running"))).to_have_count(0)
    page.set_viewport_size(VIEWPORT)  # type: ignore[arg-type]
    today = datetime.now(UTC).date()
    first, last = today - timedelta(days=6), today - timedelta(days=1)  # within the dialog's 90-day window
    ranges = dialog.get_by_placeholder("No matching partitions")
    ranges.fill(f"[{first.isoformat()}...{last.isoformat()}]")
    ranges.press("Enter")
    expect(dialog.get_by_text("6 partitions", exact=True)).to_be_visible()
    expect(dialog.get_by_role("button", name="Launch backfill")).to_be_enabled()
    shots.take(page, "backfill-dialog")
    dialog.get_by_role("button", name="Cancel", exact=True).click()
    expect(dialog).to_have_count(0)


def check_replay_launchpad(page: Page, url: str, shots: Screenshots, coupa_ids: list[int]) -> None:
    """replay_invoices_job's launchpad with the quarantined invoices' ids as run config: the UI
    validates it against the job's config schema (a wrong one shows an error first), ready to
    launch (not launched)."""
    page.goto(f"{url}/locations/{LOCATION}/jobs/replay_invoices_job/playground")
    expect(page.get_by_text("refetch_from_coupa").first).to_be_visible()  # the scaffolded config
    set_config = "(text) => document.querySelector('.CodeMirror').CodeMirror.setValue(text)"  # CodeMirror 5
    replay = "ops:\n  replay_invoices:\n    config:\n      coupa_ids: [{}]\n"
    page.evaluate(set_config, replay.format("not-an-id"))
    expect(page.get_by_text("No errors")).to_have_count(0)
    page.evaluate(set_config, replay.format(", ".join(map(str, sorted(coupa_ids)))))
    expect(page.get_by_text("No errors")).to_be_visible()
    expect(page.get_by_role("button", name="Launch Run")).to_be_enabled()
    shots.take(page, "replay-launchpad")


def test_without_chromium_it_skips_only_when_not_installable(monkeypatch):
    """The skip CI allows (conftest.ALLOWED_SKIPS) is the one .ci/run causes when it cannot install
    Chromium; in CI a Chromium that could have been installed and is missing fails instead."""
    monkeypatch.setenv("PATH", "")
    monkeypatch.delenv("CHROMIUM", raising=False)
    monkeypatch.setenv("CHROMIUM_NOT_INSTALLABLE", "installing it needs root and apt-get (uid 1000)")
    with pytest.raises(pytest.skip.Exception) as skipped:
        chromium()
    assert str(skipped.value) == "chromium not installable here: installing it needs root and apt-get (uid 1000)"
    assert any(re.search(pattern, str(skipped.value)) for pattern in ALLOWED_SKIPS)

    monkeypatch.delenv("CHROMIUM_NOT_INSTALLABLE")
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="chromium is missing although .ci/run could install it"):
        chromium()
