"""The app in a real browser: headless Debian Chromium driven by Playwright against the app served
on loopback with the tiny model and the shared clips (or, in a checkout without ../shared/data,
generated stand-ins with the same names, domains and candidates). Screenshots are kept in
$ACTALIGN_ARTIFACTS (default: a pytest temporary folder, named at the end of the run)."""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

import pytest

from actalign.app import AppSettings
from media import SAMPLES, standin_samples

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
EXAMPLE_SCRIPTS = Path(__file__).resolve().parents[1] / "examples" / "sample-scripts.json"
TIMEOUT_MS = 120_000  # a run on a busy two-core machine, model load included

pytestmark = [
    pytest.mark.browser,
    pytest.mark.slow,
    pytest.mark.skipif(
        not Path(CHROMIUM).exists(), reason="no chromium: apt-get install chromium chromium-driver"
    ),
]


@pytest.fixture(scope="module")
def samples(tmp_path_factory) -> Path:
    """The shared sample clips, or generated stand-ins where they are absent (a fresh clone)."""
    return SAMPLES if SAMPLES.exists() else standin_samples(tmp_path_factory.mktemp("samples"))


def manifest_row(samples: Path, video: str) -> dict:
    rows = [
        json.loads(line) for line in (samples / "manifest.jsonl").read_text().splitlines() if line.strip()
    ]
    return next(r for r in rows if r["video"] == video)


@pytest.fixture(scope="module")
def artifacts(request, tmp_path_factory) -> Path:
    """Where screenshots go; the folder is named in the run's summary (see conftest.py)."""
    folder = Path(os.environ.get("ACTALIGN_ARTIFACTS") or tmp_path_factory.mktemp("app-screenshots"))
    folder.mkdir(parents=True, exist_ok=True)
    request.config.actalign_artifacts = folder
    return folder


@pytest.fixture(scope="module")
def served(siglip_dir, tmp_path_factory, samples):
    """The app with the tiny model, the example scripts and the shared samples; uploads over
    1.5 MB are refused (basketball.mp4 is 1.9 MB, tennis.mp4 0.6 MB)."""
    pytest.importorskip("gradio", reason="the app extra (gradio) is not installed")
    from app_server import serve

    home = tmp_path_factory.mktemp("browser-home")
    settings = AppSettings(
        model=str(siglip_dir),
        scripts=(str(EXAMPLE_SCRIPTS),),
        store=str(home / "scripts.sqlite"),
        cache_dir=str(home / "cache"),
        fps=4,
        samples=str(samples / "manifest.jsonl"),
        max_upload_mb=1.5,
    )
    with serve(settings) as (url, demo):
        yield url, demo


@pytest.fixture(scope="module")
def browser():
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (test-browser)")
    with sync_api.sync_playwright() as p:
        # Playwright gives every launch a fresh temporary profile (--user-data-dir)
        b = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=FLAGS)
        yield b
        b.close()


@pytest.fixture
def page(browser, served):
    context = browser.new_context(viewport={"width": 1400, "height": 1100})
    context.set_default_timeout(30_000)
    pg = context.new_page()
    pg.goto(served[0])
    pg.wait_for_selector("#aa-run")
    yield pg
    context.close()


def upload(page, path: Path) -> None:
    """Upload a file the way a user does: the button, then the file chooser."""
    with page.expect_file_chooser() as chooser:
        page.click("#aa-upload")
    chooser.value.set_files(str(path))


def fill(page, domain: str, candidates: list[str]) -> None:
    """Type the domain and candidates, then leave the field so that their scripts are looked up."""
    page.fill("#aa-domain :is(input, textarea)", domain)
    page.fill("#aa-candidates textarea", "\n".join(candidates))
    page.press("#aa-candidates textarea", "Tab")
    # the lookup has answered when each box is labelled with its candidate
    page.wait_for_function(
        """names => names.every((name, i) => {
            const box = document.querySelector('#aa-script-' + i);
            return box && box.querySelector('textarea') && box.innerText.includes(name);
        })""",
        arg=candidates,
    )


def set_field(page, selector: str, value: str) -> None:
    """Type `value` into a field and leave it, again if the page replaced the field meanwhile (an
    accordion that has just been opened may mount its fields a moment after they are first shown)."""
    for _ in range(5):
        page.fill(selector, value)
        page.press(selector, "Tab")
        time.sleep(0.3)
        if page.input_value(selector) == value:
            return
    raise AssertionError(f"{selector} keeps going back to {page.input_value(selector)!r}")


def run_and_wait(page) -> None:
    """Click Classify and wait for this run's outcome (the status numbers the runs)."""
    runs = "() => Number(document.querySelector('#aa-status [data-run]')?.dataset.run || 0)"
    before = page.evaluate(runs)
    page.click("#aa-run")
    page.wait_for_function(f"n => ({runs})() > n", arg=before, timeout=TIMEOUT_MS)


def status(page) -> str:
    return page.inner_text("#aa-status")


def test_an_uploaded_clip_gets_a_ranking_and_a_timeline_that_seeks(page, served, artifacts, samples):
    row = manifest_row(samples, "tennis.mp4")
    upload(page, samples / "tennis.mp4")
    page.wait_for_selector("#aa-video video")
    assert "tennis.mp4 is ready" in status(page)
    fill(page, row["domain"], row["candidates"])
    boxes = page.locator("[id^=aa-script-] textarea")
    assert all(boxes.nth(i).input_value().strip() for i in range(len(row["candidates"])))  # the examples'
    run_and_wait(page)
    assert "\u2713 tennis.mp4" in status(page), status(page)
    ranked = page.locator("#aa-ranking tbody tr td:nth-child(2)").all_inner_texts()
    assert sorted(ranked) == sorted(row["candidates"])
    scripts = json.loads(EXAMPLE_SCRIPTS.read_text())[row["domain"]]
    steps = page.locator("#aa-timeline .aa-step")
    assert steps.count() == len(scripts[ranked[0]])
    assert scripts[ranked[0]][0] in steps.first.inner_text()
    downloads = "".join(page.inner_text("#aa-downloads").split())
    assert all(name in downloads for name in ("tennis.json", "tennis.csv", "tennis.vtt")), downloads
    page.wait_for_function("() => document.querySelector('#aa-heatmaps img')?.naturalWidth > 0")
    page.screenshot(path=str(artifacts / "app-upload.png"), full_page=True)

    # a click on a step seeks the video to the step's start
    starts = [float(steps.nth(i).get_attribute("data-start")) for i in range(steps.count())]
    k = max(range(len(starts)), key=lambda i: starts[i])
    # where the random model put the steps varies; the seek is visible from wherever it is far from
    away = 0.0 if starts[k] > 0.5 else 1.0
    page.evaluate("t => { document.querySelector('#aa-video video').currentTime = t; }", away)
    page.wait_for_function(
        "t => Math.abs(document.querySelector('#aa-video video').currentTime - t) < 0.05", arg=away
    )
    steps.nth(k).click()
    page.wait_for_function(
        "t => Math.abs(document.querySelector('#aa-video video').currentTime - t) < 0.05", arg=starts[k]
    )
    page.wait_for_function(
        "k => document.querySelectorAll('#aa-timeline .aa-step')[k].matches('.aa-now')", arg=k
    )

    # the page's JSON download is exactly what the API returns for the same video and settings
    from gradio_client import Client, handle_file

    api = Client(served[0], verbose=False).predict(
        handle_file(str(samples / "tennis.mp4")),
        row["domain"],
        "\n".join(row["candidates"]),
        api_name="/classify",
    )
    newest = max(served[1].actalign_results.root.glob("run-*/tennis.json"), key=lambda p: p.parent.name)
    assert newest.read_text() == api


def test_a_sample_fills_the_form_and_runs(page, artifacts, samples):
    row = manifest_row(samples, "basketball.mp4")
    page.click("#aa-sample input")
    page.get_by_role("option", name="basketball \u2014 basketball").click()
    page.wait_for_selector("#aa-video video")
    page.wait_for_function(
        "n => document.querySelectorAll('[id^=aa-script-] textarea').length >= n", arg=len(row["candidates"])
    )
    assert page.input_value("#aa-domain :is(input, textarea)") == row["domain"]
    assert page.input_value("#aa-candidates textarea").splitlines() == row["candidates"]
    run_and_wait(page)  # 1.9 MB: over the upload limit, but samples are the host's own files
    assert "\u2713 basketball.mp4" in status(page), status(page)
    assert page.locator("#aa-ranking tbody tr").count() == len(row["candidates"])
    page.wait_for_function("() => document.querySelector('#aa-heatmaps img')?.naturalWidth > 0")
    page.set_viewport_size({"width": 1400, "height": 1240})
    page.evaluate("window.scrollTo(0, 0)")
    page.screenshot(path=str(artifacts / "app-sample.png"))  # the first screen: docs/images/app.png
    page.screenshot(path=str(artifacts / "app-sample-full.png"), full_page=True)


def test_a_run_shows_its_progress(page, monkeypatch):
    import actalign.app.page

    # the tiny model encodes 450 small frames in well under a second on a quiet machine, sooner
    # than Gradio may paint a progress event; slowed to the pace of a real model, every update shows
    real_update = actalign.app.page._FrameProgress.update

    def at_a_real_pace(self, frames):
        time.sleep(0.1)
        real_update(self, frames)

    monkeypatch.setattr(actalign.app.page._FrameProgress, "update", at_a_real_pace)
    page.click("#aa-sample input")
    page.get_by_role("option", name="cricket \u2014 cricket").click()
    page.wait_for_selector("#aa-video video")
    page.click("text=Settings")
    set_field(page, "#aa-fps input", "0")  # every frame: 450 of them, long enough to watch
    # record every progress text the page shows, however briefly (a fast machine is done in a second)
    page.evaluate(
        """() => {
            window.__progress = [];
            new MutationObserver(() => {
                const m = document.body.innerText.match(/\\d+\\/450 frames[^\\n]*\\n[^\\n]*Encoding frames/);
                if (m) window.__progress.push(m[0]);
            }).observe(document.body, {subtree: true, childList: true, characterData: true});
        }"""
    )
    # the status already says "cricket.mp4 is ready." (ok): wait for this run's own outcome
    run_and_wait(page)
    seen = page.evaluate("() => window.__progress")
    assert seen, f"no progress was shown while the video was encoded; the status: {status(page)}"
    assert "cricket.mp4: 450 frames" in status(page), status(page)


def test_script_lookups_answer_in_the_order_they_were_asked(page, monkeypatch, samples):
    import actalign.app.page

    # leaving the domain asks for scripts before the candidates are typed; when that first answer
    # is the slower one (a busy server), it must not land last and hide the candidates' scripts
    real, calls = actalign.app.page._box_texts, []

    def first_one_slow(state, domain, texts):
        calls.append(domain)
        if len(calls) == 1:
            time.sleep(2.0)
        return real(state, domain, texts)

    monkeypatch.setattr(actalign.app.page, "_box_texts", first_one_slow)
    row = manifest_row(samples, "tennis.mp4")
    fill(page, row["domain"], row["candidates"])
    time.sleep(3.0)  # long enough for the slow first answer to have landed, wherever it lands
    assert len(calls) == 2, calls
    labels = [page.inner_text(f"#aa-script-{i}") for i in range(len(row["candidates"]))]
    assert all(c in label for c, label in zip(row["candidates"], labels)), labels
    assert page.locator("[id^=aa-script-] textarea:visible").count() == len(row["candidates"])


def test_a_missing_script_is_said_and_can_be_written_in_the_page(page, artifacts, samples):
    upload(page, samples / "soccer.mp4")
    page.wait_for_selector("#aa-video video")
    fill(page, "soccer", ["Penalty kick", "Bicycle kick"])
    assert "No script found for 2 of 2 candidates" in page.inner_text("#aa-scripts-note")
    hint = page.get_attribute("#aa-script-1 textarea", "placeholder")
    assert hint.startswith("No script found for Bicycle kick"), hint
    run_and_wait(page)
    assert "No script for 'Penalty kick', 'Bicycle kick' in 'soccer'" in status(page), status(page)
    page.fill("#aa-script-0 textarea", "player places the ball on the spot\nplayer shoots at the goal")
    page.fill("#aa-script-1 textarea", "ball in the air\nplayer kicks it over his head")
    run_and_wait(page)
    assert "\u2713 soccer.mp4" in status(page), status(page)
    texts = page.locator("#aa-timeline .aa-step .aa-text").all_inner_texts()
    assert texts in (
        ["player places the ball on the spot", "player shoots at the goal"],
        ["ball in the air", "player kicks it over his head"],
    )
    page.screenshot(path=str(artifacts / "app-edited-scripts.png"), full_page=True)


def test_a_file_that_is_not_a_video_gets_one_message(page, tmp_path, artifacts):
    notes = tmp_path / "notes.txt"
    notes.write_text("these are my notes, not a video\n")
    upload(page, notes)
    page.wait_for_selector("#aa-status .aa-error")
    message = status(page)
    assert "notes.txt is not a video" in message and "Traceback" not in page.content()
    assert page.locator("#aa-video video").count() == 0
    assert page.locator(".toast-body").count() == 0  # ours is the only message
    page.fill("#aa-domain :is(input, textarea)", "tennis")
    page.fill("#aa-candidates textarea", "Serve\nVolley")
    page.click("#aa-run")
    page.wait_for_function("() => document.querySelector('#aa-status').innerText.includes('upload a video')")
    page.screenshot(path=str(artifacts / "app-not-a-video.png"))


def test_a_video_over_the_upload_limit_is_refused_with_one_message(page, artifacts, samples):
    assert (samples / "basketball.mp4").stat().st_size > 1.5 * 2**20
    upload(page, samples / "basketball.mp4")  # over the 1.5 MB limit
    toast = page.wait_for_selector(".toast-body")
    assert "maximum allowed size" in toast.inner_text()
    assert page.locator(".toast-body").count() == 1
    assert page.locator("#aa-video video").count() == 0 and "ready" not in status(page)
    page.screenshot(path=str(artifacts / "app-too-large.png"))


def test_missing_scripts_are_generated_at_a_click(browser, siglip_dir, tmp_path):
    pytest.importorskip("gradio", reason="the app extra (gradio) is not installed")
    from app_server import serve
    from llm_server import FakeLLM

    written = {"Bicycle kick": ["player leaps with his back to the goal", "he kicks the ball over his head"]}
    with FakeLLM() as llm:
        llm.answer(("answer", json.dumps(written)))
        settings = AppSettings(
            model=str(siglip_dir),
            scripts=(str(EXAMPLE_SCRIPTS),),
            store=str(tmp_path / "scripts.sqlite"),
            llm_base_url=llm.url,
            llm_model="fake",
        )
        with serve(settings) as (url, _):
            context = browser.new_context(viewport={"width": 1400, "height": 1100})
            page = context.new_page()
            page.goto(url)
            page.wait_for_selector("#aa-run")
            fill(page, "soccer", ["Penalty kick", "Bicycle kick"])
            page.fill("#aa-script-0 textarea", "player places the ball\nplayer shoots")  # kept as typed
            page.click("#aa-generate")
            page.wait_for_function(
                "() => document.querySelector('#aa-script-1 textarea').value.includes('leaps')",
                timeout=TIMEOUT_MS,
            )
            assert page.input_value("#aa-script-1 textarea").splitlines() == written["Bicycle kick"]
            assert page.input_value("#aa-script-0 textarea").splitlines() == [
                "player places the ball",
                "player shoots",
            ]
            assert len(llm.requests) == 1 and "Penalty kick" not in llm.requests[0]["messages"][0]["content"]
            context.close()


def test_candidates_typed_then_classified_at_once_use_their_own_scripts(page, artifacts, samples):
    """Type new candidates and click Classify without leaving the box (no blur first): every
    candidate is scored with its own script, and one without a script is named."""
    page.click("#aa-sample input")
    page.get_by_role("option", name="basketball \u2014 basketball").click()
    row = manifest_row(samples, "basketball.mp4")
    page.wait_for_function(
        "n => document.querySelectorAll('[id^=aa-script-] textarea').length >= n", arg=len(row["candidates"])
    )
    box = "#aa-candidates textarea"
    page.fill(box, "")
    page.type(box, "Tip-in\nSky hook")  # still in the box
    run_and_wait(page)
    said = status(page)
    assert "Sky hook" in said and "No script" in said, said
    assert "best:" not in said
    page.fill(box, "")
    page.type(box, "Tip-in\nPutback dunk")
    run_and_wait(page)
    said = status(page)
    assert "\u2713 basketball.mp4" in said, said
    steps = page.locator("#aa-timeline [data-start]")
    top = page.inner_text("#aa-ranking tbody tr:first-child")
    shown = "\n".join(steps.nth(i).inner_text() for i in range(steps.count()))
    scripts = json.loads(EXAMPLE_SCRIPTS.read_text())["basketball"]
    winner = "Tip-in" if "Tip-in" in top else "Putback dunk"
    assert all(step in shown for step in scripts[winner]), (winner, shown)
    page.screenshot(path=str(artifacts / "app-typed-then-run.png"))


# --------------------------------------------------------------------------- the Search tab


@pytest.fixture(scope="module")
def archive_served(siglip_dir, tmp_path_factory):
    """(url, videos) of the app with an index of two generated videos (`actalign app --index`)."""
    pytest.importorskip("gradio", reason="the app extra (gradio) is not installed")
    from app_server import serve
    from test_app_search import SCRIPTS, build_archive

    folder = tmp_path_factory.mktemp("archive")
    index, videos = build_archive(folder, siglip_dir)
    scripts = folder / "scripts.json"
    scripts.write_text(json.dumps(SCRIPTS))
    settings = AppSettings(
        model=str(siglip_dir),
        scripts=(str(scripts),),
        store=str(folder / "scripts.sqlite"),
        cache_dir=str(folder / "cache"),
        index=str(index),
    )
    with serve(settings) as (url, _):
        yield url, videos


def test_the_search_tab_shows_hits_with_thumbnails_and_plays_a_hit_from_its_start(
    browser, archive_served, artifacts
):
    from urllib.parse import quote

    from gradio_client import Client

    url, videos = archive_served
    context = browser.new_context(viewport={"width": 1400, "height": 1100})
    context.set_default_timeout(30_000)
    page = context.new_page()
    page.goto(url)
    page.get_by_role("tab", name="Search").click()
    page.fill("#aa-search-domain :is(input, textarea)", "t")
    page.fill("#aa-search-candidates textarea", "a\nb")
    set_field(page, "#aa-search-top input", "3")
    page.click("#aa-search-run")
    page.wait_for_selector("#aa-hits .aa-hit", timeout=TIMEOUT_MS)
    assert "3 hits in" in page.inner_text("#aa-search-status")
    hits = page.locator("#aa-hits .aa-hit")
    page.wait_for_function(
        """() => {
            const images = [...document.querySelectorAll('#aa-hits .aa-hit img.aa-thumb')];
            return images.length === 3 && images.every((i) => i.complete && i.naturalWidth > 0);
        }"""
    )
    # the hits the page lists are the API's (and so `actalign search`'s), in the same order
    api = json.loads(Client(url, verbose=False).predict("t", "a\nb", 3, None, api_name="/search"))["hits"]
    starts = [float(hits.nth(i).get_attribute("data-start")) for i in range(hits.count())]
    assert starts == [h["span"]["start"] for h in api]
    assert all(Path(h["video"]).name in hits.nth(i).inner_text() for i, h in enumerate(api))
    page.screenshot(path=str(artifacts / "app-search.png"), full_page=True)

    page.evaluate(
        """() => {
            window.__seeked = [];
            document.querySelector('#aa-search-player video')
                .addEventListener('seeked', (e) => window.__seeked.push(e.target.currentTime));
        }"""
    )
    frame = 1 / 10  # the generated videos' frame rate
    # the latest hit first (its seek is visible from 0), then one in the other video
    first = max(range(len(starts)), key=lambda i: starts[i])
    assert starts[first] > frame, starts
    others = [i for i, h in enumerate(api) if h["video"] != api[first]["video"]]
    for k in [first, *others[:1]]:
        seen = page.evaluate("() => window.__seeked.length")
        hits.nth(k).click()
        page.wait_for_function("n => window.__seeked.length > n", arg=seen)
        at = page.evaluate("() => window.__seeked[window.__seeked.length - 1]")
        assert abs(at - starts[k]) < frame, (at, starts[k])
        src = page.evaluate("() => document.querySelector('#aa-search-player video').currentSrc")
        assert src.endswith("gradio_api/file=" + quote(api[k]["video"])), src
        assert Path(api[k]["video"]).name in page.inner_text("#aa-search-player")
    page.screenshot(path=str(artifacts / "app-search-playing.png"))
    context.close()


def test_a_hit_whose_file_is_gone_is_listed_and_says_so_instead_of_playing(browser, siglip_dir, tmp_path):
    pytest.importorskip("gradio", reason="the app extra (gradio) is not installed")
    from app_server import serve
    from test_app_search import SCRIPTS, build_archive

    index, videos = build_archive(tmp_path, siglip_dir)
    videos[0].unlink()  # a.mp4 is gone since indexing
    scripts = tmp_path / "scripts.json"
    scripts.write_text(json.dumps(SCRIPTS))
    settings = AppSettings(
        model=str(siglip_dir), scripts=(str(scripts),), store=str(tmp_path / "s.sqlite"), index=str(index)
    )
    with serve(settings) as (url, _):
        context = browser.new_context(viewport={"width": 1400, "height": 1100})
        context.set_default_timeout(30_000)
        page = context.new_page()
        page.goto(url)
        page.get_by_role("tab", name="Search").click()
        page.fill("#aa-search-domain :is(input, textarea)", "t")
        page.fill("#aa-search-candidates textarea", "a\nb")
        page.click("#aa-search-run")
        page.wait_for_selector("#aa-hits .aa-hit", timeout=TIMEOUT_MS)
        gone = page.locator("#aa-hits .aa-hit", has_text="a.mp4")
        kept = page.locator("#aa-hits .aa-hit", has_text="b.mp4")
        assert gone.count() and kept.count()
        assert all("file gone" in t for t in gone.all_inner_texts())
        assert gone.locator("img").count() == 0 and kept.locator("img").count() == kept.count()
        kept.first.click()  # a playable one first: the gone one must also stop it
        page.wait_for_function("() => document.querySelector('#aa-search-player video').currentSrc")
        gone.first.click()
        note = page.inner_text("#aa-search-player .aa-player-note")
        assert note == "a.mp4 is gone since it was indexed; this hit comes from the index.", note
        assert (
            page.evaluate("() => document.querySelector('#aa-search-player video').getAttribute('src')")
            is None
        )
        context.close()
