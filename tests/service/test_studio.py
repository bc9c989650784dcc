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


def _finished_run(store, run_dir: Path, data: Path, lr: float) -> str:
    """A real tiny run (lmtune.finetune), entered in the store as a succeeded job, as the worker would."""
    from lmtune.api import finetune
    from lmtune.service.store import new_id

    finetune({
        "model": {"name": "preset:tiny-chat"}, "output_dir": str(run_dir), "method": {"name": "lora", "r": 4},
        "data": {"train": str(data), "validation": str(data), "max_length": 64},
        "forgetting": {"measure": False}, "train": {"lr": lr, "batch_size": 8, "max_steps": 4, "eval_every": 2},
    })  # fmt: skip
    job_id = new_id("ftjob")
    store.add_job(job_id, "preset:tiny-chat", {"training_file": "file-x"}, {"output_dir": str(run_dir)})
    store.finish_job(job_id, "succeeded", fine_tuned_model=f"ft:preset:tiny-chat:{job_id[6:]}")
    return job_id


def test_key_login_then_a_files_check_and_two_runs_compared(browser, tmp_path) -> None:
    """With an API key the studio shows a login form; the key typed there opens it (a cookie the server reads).
    A file's page shows its data check and the loss mask; the compare page draws both runs' curves."""
    from lmtune.service.store import Store, new_id

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    store = Store(tmp_path / "store")
    data = write_jsonl(tmp_path / "adder.jsonl", [chat_record(i) for i in range(16)])
    a, b = (_finished_run(store, tmp_path / name, data, lr) for name, lr in (("a", 1e-3), ("b", 1e-2)))
    flawed, file_id = data.read_text(encoding="utf-8") + '{"messages": "oops"}\n', new_id("file")
    store.add_file(file_id, len(flawed), "adder.jsonl", "fine-tune")
    store.file_path(file_id).write_text(flawed, encoding="utf-8")
    with running_service(tmp_path / "store", api_key="s3cret") as service:
        page = browser.new_page(viewport={"width": 1000, "height": 760})
        response = page.goto(service.url + "/")
        assert response.status == 401 and page.locator("#login").count() == 1
        assert "Start a job" not in page.content()
        page.fill("#login input[name=key]", "wrong")
        page.click("#login button")
        page.wait_for_load_state()
        assert page.locator("#login").count() == 1  # a wrong key opens nothing
        page.fill("#login input[name=key]", "s3cret")
        page.click("#login button")
        page.wait_for_selector("text=Start a job")

        page.goto(service.url + f"/studio/files/{file_id}")
        body = page.text_content("body")
        assert " records · 1 errors · " in body  # the train split's count: a validation share is held out
        assert page.locator("table.wide tr:has(td:text-is('17')):has(td:text-is('messages'))").count() == 1
        assert page.locator("pre mark").count() >= 3  # each previewed example shows its trained tokens
        page.screenshot(path=str(ARTIFACTS / "file-check.png"))

        page.goto(service.url + f"/studio/compare?a={a}&b={b}")
        page.wait_for_function("[...document.querySelectorAll('svg.static-curve')].every(s => s.dataset.points >= 2)")
        assert page.locator("svg.static-curve polyline").count() == 4  # train and validation, both runs
        rows = page.locator("table tr:has-text('val_loss_after') td").all_text_contents()
        assert len(rows) == 3 and all(float(x) > 0 for x in rows[1:])
        page.screenshot(path=str(ARTIFACTS / "compare.png"))
