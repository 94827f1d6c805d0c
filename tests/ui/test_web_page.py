"""The web page at `/ui`, in headless chromium, against a real API, Celery worker, Redis and S3 (moto).

What each test could catch: a form that loses a field or hides the API's 422; a page that never fills in from
the event streams; images that do not load from their presigned links; attempts and reasons not shown; a cancel
that does nothing; a prompt rendered as HTML; a key that leaks into a URL or a cookie, or another tenant's job
shown; a batch page that puts every job on the page at once.
"""

from __future__ import annotations

import json
import re
import time

import httpx
import pytest
from playwright.sync_api import expect

from tests.helpers import depth, wait_terminal

pytestmark = pytest.mark.timeout(240)
LOADED = "(img) => img.complete && img.naturalWidth > 0"


def test_the_form_shows_the_apis_errors_by_field_then_a_jobs_thumbnails_and_scores(stack, redis, s3_endpoint, page):
    stack.start_worker()
    api = stack.start_api()
    page.goto(f"{api}/ui/")
    page.fill("#f-prompt", "a purple cat with a red hat")
    page.fill("#f-steps", "0")
    page.fill("#f-width", "100")
    page.click("#submit button[type=submit]")
    expect(page.locator('[data-for="steps"]')).to_contain_text("greater than or equal to 1")
    expect(page.locator('[data-for="width"]')).to_contain_text("multiple of 8")
    assert depth(stack, redis) == 0 and "#/jobs" not in page.url  # refused: nothing queued

    page.fill("#f-steps", "")
    page.fill("#f-width", "")
    page.fill("#f-num_images", "2")
    page.fill("#f-seed", "7")
    page.click("#submit button[type=submit]")
    expect(page.locator("#job-status")).to_have_text("succeeded", timeout=90_000)
    job_id = page.url.rsplit("/", 1)[1]
    images = page.locator(".thumb img")
    expect(images).to_have_count(2)
    for n in range(2):
        page.wait_for_function(LOADED, arg=images.nth(n).element_handle(), timeout=10_000)
        # straight from S3 through its presigned link, not through the API
        assert images.nth(n).get_attribute("src").startswith(s3_endpoint)
    job = wait_terminal(api, job_id)
    assert job["request"]["seed"] == 7 and job["request"]["num_images"] == 2

    page.locator(".thumb").first.click()
    expect(page.locator(".details")).to_contain_text(f"kept seed {job['outputs'][0]['seed']}")
    expect(page.locator(".details tr.attempt")).to_have_count(len(job["outputs"][0]["attempts"]))

    page.goto(f"{api}/ui/#/fleet")  # the worker that ran it is listed with its warm model; its images counted
    expect(page.locator("#workers li")).to_have_count(1)
    expect(page.locator("#workers li")).to_contain_text("warm: embedded")
    counted = page.locator("h3", has_text="Images per minute").inner_text()
    hour, minute = map(int, re.search(r"last hour: (\d+), this minute: (\d+)", counted).groups())
    assert hour + minute == 2, counted
    # the caller's tenant (open access: public), with the day's usage its job's record adds up to
    expect(page.locator("#tenant code")).to_have_text("public")
    expect(page.locator("#tenant .images")).to_have_text("2")
    shown = float(page.locator("#tenant .accelerator").inner_text())  # one decimal
    assert abs(shown - job["usage"]["accelerator_s"]) <= 0.051 and job["usage"]["accelerator_s"] > 0
    assert page.errors == []


def test_a_batch_from_a_file_fills_in_to_100_percent_with_its_retries_and_manifest(stack, page, tmp_path):
    # the embedded default's storage, a local folder: images and manifest reach the page through the API
    folder = {"GENFLEET_STORAGE_URL": (tmp_path / "output").as_uri()}
    # every image scores under a bar of 1.0, so each is regenerated twice: three attempts, the best kept
    stack.start_worker(GENFLEET_QUALITY_THRESHOLD="1.0", GENFLEET_QUALITY_ATTEMPTS="3", **folder)
    api = stack.start_api(**folder)
    page.goto(f"{api}/ui/")
    prompts = ["a purple cat with a red hat", '{"prompt": "a green cat", "seed": 3}', "a blue cat", "a red hat",
               "a yellow cat with a blue hat", "an orange cat"]
    page.set_input_files("#f-prompts", files=[{"name": "prompts.txt", "mimeType": "text/plain",
                                               "buffer": "\n".join(prompts).encode()}])
    page.fill("#f-num_images", "2")
    page.click("#submit button[type=submit]")
    expect(page.locator("#batch-status")).to_have_text("finished", timeout=150_000)
    expect(page.locator(".progress .percent")).to_have_text("100%")
    expect(page.locator(".card")).to_have_count(6)
    expect(page.locator(".card.succeeded")).to_have_count(6)
    expect(page.locator(".card .prompt").nth(1)).to_have_text("a green cat")  # a JSON line is read as one
    images = page.locator(".thumb img")
    expect(images).to_have_count(12)
    for n in (0, 11):
        page.wait_for_function(LOADED, arg=images.nth(n).element_handle(), timeout=10_000)
        assert images.nth(n).get_attribute("src").startswith("blob:")

    page.locator(".thumb").first.click()
    rows = page.locator(".details tr.attempt")
    expect(rows).to_have_count(3)
    seeds = {rows.nth(n).locator("td").nth(1).inner_text() for n in range(3)}
    assert len(seeds) == 3, seeds  # each attempt its own seed
    expect(rows.nth(0).locator("td.reason")).not_to_be_empty()  # why it was regenerated
    page.screenshot(path=str(tmp_path / "batch.png"))  # docs/ui-batch.png is one of these

    page.select_option("select[name=order]", "score")
    expect(page.locator(".grid")).to_have_attribute("data-query", re.compile("order=score&only=all"))
    lowest = [min(float(s) for s in card.locator(".score").all_inner_texts()) for card in page.locator(".card").all()]
    assert lowest == sorted(lowest), lowest

    page.select_option("select[name=only]", "retried")
    expect(page.locator("#page-range")).to_have_text("1–6 of 6")
    page.select_option("select[name=only]", "failed")
    expect(page.locator("#page-range")).to_have_text("no jobs")

    page.select_option("select[name=only]", "all")
    with page.expect_download() as download:
        page.click("#manifest")
    manifest = json.loads(download.value.path().read_text())
    assert len(manifest["jobs"]) == 6 and manifest["counts"]["succeeded"] == 6


def test_a_queued_job_is_cancelled_from_its_page_and_the_fleet_shows_the_queue(stack, page):
    api = stack.start_api()  # no worker: jobs stay queued
    waiting = httpx.post(f"{api}/v1/jobs", json={"prompt": "a red hat", "priority": "high"}).json()
    page.goto(f"{api}/ui/#/fleet")
    expect(page.locator('#queues tr[data-priority="high"] .depth')).to_have_text("1")
    expect(page.locator('#queues tr[data-priority="low"] .depth')).to_have_text("0")
    expect(page.locator("#workers li")).to_have_count(0)

    page.goto(f"{api}/ui/#/jobs/{waiting['id']}")
    expect(page.locator("#job-status")).to_have_text("queued")
    page.click("button.cancel")
    expect(page.locator("#job-status")).to_have_text("cancelled")
    assert httpx.get(f"{api}/v1/jobs/{waiting['id']}").json()["status"] == "cancelled"
    expect(page.locator("button.cancel")).to_be_disabled()


def test_a_prompt_with_markup_shows_as_text_and_runs_nothing(stack, page):
    api = stack.start_api()
    prompt = '<img src=x onerror="window.pwned=1"><script>window.pwned=2</script><b>bold</b>'
    page.goto(f"{api}/ui/")
    page.fill("#f-prompt", prompt)
    page.click("#submit button[type=submit]")
    expect(page.locator(".card .prompt")).to_have_text(prompt)
    assert page.locator(".card .prompt b, .card .prompt img, .card .prompt script").count() == 0
    assert page.evaluate("window.pwned") is None

    csp = httpx.get(f"{api}/ui/").headers["content-security-policy"]
    assert "script-src 'self'" in csp and "unsafe-inline" not in csp
    page.goto(f"{api}/ui/")  # and the browser holds the page to it: an inline script does not run
    page.evaluate("""() => { const s = document.createElement('script'); s.textContent = 'window.inline = 1';
                             document.body.append(s); }""")
    assert page.evaluate("window.inline") is None
    assert page.errors == []


def test_a_wrong_key_sees_nothing_and_a_key_never_leaves_the_tab(stack, page):
    api = stack.start_api(GENFLEET_API_KEYS="team-a:key-a,team-b:key-b")
    job = httpx.post(f"{api}/v1/jobs", json={"prompt": "a secret cat"},
                     headers={"Authorization": "Bearer key-a"}).json()
    page.goto(f"{api}/ui/#/jobs/{job['id']}")
    expect(page.locator("#key-form")).to_be_visible()
    page.fill("#api-key", "not-a-key")
    page.click("#key-form button")
    expect(page.locator("#key-refused")).to_be_visible()

    page.fill("#api-key", "key-b")  # another tenant's key: the job reads as absent
    page.click("#key-form button")
    expect(page.locator("#not-found")).to_be_visible()
    expect(page.locator("body")).not_to_contain_text("a secret cat")

    page.click("#forget-key")
    page.fill("#api-key", "key-a")
    page.click("#key-form button")
    expect(page.locator(".card .prompt")).to_have_text("a secret cat")
    assert page.evaluate("sessionStorage.getItem('genfleet.key')") == "key-a"
    assert "key-a" not in page.url and page.context.cookies() == []


def test_a_batch_of_a_thousand_opens_on_one_page_of_jobs(stack, page):
    api = stack.start_api()  # no worker: 1,000 queued jobs
    batch = httpx.post(f"{api}/v1/batches", json={"prompts": [f"cat {n}" for n in range(1000)]}, timeout=60).json()
    started = time.monotonic()
    page.goto(f"{api}/ui/#/batches/{batch['id']}")
    expect(page.locator("#page-range")).to_have_text("1–48 of 1000")
    loaded_s = time.monotonic() - started
    expect(page.locator(".card")).to_have_count(48)
    page.click(".pager button:has-text('Next')")
    expect(page.locator("#page-range")).to_have_text("49–96 of 1000")
    expect(page.locator(".card .prompt").first).to_have_text("cat 48")
    print(f"batch page of 1,000 jobs loaded in {loaded_s:.2f} s")  # a figure, not a target: docs/benchmarks.md


def test_a_job_page_shows_previews_as_the_picture_forms_then_the_final_image(stack, page):
    api = stack.start_api()
    job = httpx.post(f"{api}/v1/jobs", json={"prompt": "a blue cat with a yellow hat", "steps": 60}).json()
    page.goto(f"{api}/ui/#/jobs/{job['id']}")  # the page listens before any worker runs the job
    expect(page.locator("#job-status")).to_have_text("queued")
    stack.start_worker()
    preview = page.locator("#previews img.preview").first
    expect(preview).to_be_attached(timeout=120_000)
    assert preview.evaluate(LOADED) or page.wait_for_function(
        f"() => {{ const i = document.querySelector('#previews img.preview'); return i && ({LOADED})(i); }}")
    assert page.locator(".thumb img").count() == 0  # a preview, and no final image yet
    expect(page.locator("#job-status")).to_have_text("succeeded", timeout=120_000)
    expect(page.locator(".thumb img").first).to_be_visible()
    expect(page.locator("#previews img")).to_have_count(0)  # the final image replaces them
