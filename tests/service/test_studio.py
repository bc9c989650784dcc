"""The studio in a real browser: Playwright driving Debian's Chromium (no Playwright browser download). Upload a
file, start a job, watch the curve grow, open the report, chat with the result; screenshots are kept."""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import pytest
from service_support import running_service
from support import chat_record, write_jsonl

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
ARTIFACTS = Path(os.environ.get("LMTUNE_TEST_ARTIFACTS", "/tmp/lmtune-test-artifacts")) / "studio"


@pytest.fixture(scope="module")
def browser():
    if CHROMIUM is None:
        pytest.skip("Debian's chromium is not installed (make install installs it)")
    playwright = pytest.importorskip("playwright.sync_api")
    with playwright.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield b
        b.close()


def test_upload_start_watch_report_chat(browser, tmp_path) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    data = write_jsonl(tmp_path / "adder.jsonl", [chat_record(i) for i in range(24)])
    with running_service(tmp_path / "store") as service:
        page = browser.new_page(viewport={"width": 1000, "height": 760})
        page.goto(service.url + "/")
        page.set_input_files("input[name=upload]", str(data))
        page.fill("input[name=max_steps]", "12")
        page.click("#estimate")
        page.wait_for_selector("#estimate-out:has-text('peak memory')", timeout=60_000)
        page.click("#start")
        page.wait_for_url("**/studio/jobs/ftjob-*", timeout=30_000)
        page.wait_for_function("Number(document.getElementById('curve').dataset.points || 0) >= 2", timeout=90_000)
        first = int(page.eval_on_selector("#curve", "s => s.dataset.points"))
        page.screenshot(path=str(ARTIFACTS / "job-training.png"))
        page.wait_for_selector("a:has-text('report')", timeout=120_000)  # the page reloads when the job ends
        assert page.text_content("#status") == "succeeded"
        page.wait_for_function(f"Number(document.getElementById('curve').dataset.points || 0) > {first}")  # it grew
        page.screenshot(path=str(ARTIFACTS / "job-succeeded.png"))
        page.click("a:has-text('report')")
        page.wait_for_load_state()
        assert "lmtune" in page.title().lower() or page.locator("h1").count()
        page.go_back()
        page.click("a:has-text('chat with it')")
        page.click("#chat button")
        page.wait_for_selector("#answers p.answer", timeout=30_000)
        page.screenshot(path=str(ARTIFACTS / "chat.png"))


def test_first_paint_with_50_runs_under_a_second(browser, tmp_path) -> None:
    from lmtune.service.store import Store, new_id

    store = Store(tmp_path / "store")
    for i in range(50):  # 50 finished jobs listed (rows as the service writes them)
        job_id = new_id("ftjob")
        store.add_job(job_id, "preset:tiny-chat", {"training_file": "file-x", "suffix": f"s{i}"},
                      {"output_dir": str(store.runs_dir / job_id)})  # fmt: skip
        store.finish_job(job_id, "succeeded", fine_tuned_model=f"ft:preset:tiny-chat:s{i}:{job_id[6:]}")
    with running_service(tmp_path / "store") as service:
        page = browser.new_page()
        start = time.perf_counter()
        page.goto(service.url + "/", wait_until="load")
        seconds = time.perf_counter() - start
        paint = page.evaluate("performance.getEntriesByName('first-contentful-paint')[0]?.startTime ?? null")
        assert page.locator("a[href^='/studio/jobs/']").count() == 50, page.content()[:1500]
        print(f"studio with 50 runs: load {seconds:.3f} s, first contentful paint {paint} ms")
        assert seconds < 1.0 and (paint is None or paint < 1000)
