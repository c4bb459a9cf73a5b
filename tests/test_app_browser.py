"""A real browser on the real app: Debian's chromium, headless, driven by Playwright.

Opens the page, uploads a clip, clicks on the frame, checks on a screenshot that the mask
overlay appeared, presses Track, sees the progress and the result. Screenshots of each state go
to ``tests/_artifacts/`` (git-ignored); ``docs/screenshot.png`` is ``browser_4_tracked.png``
reduced to 128 colours (refresh it by hand when the UI changes).

Only loopback requests are allowed out of the browser (no fonts/CDNs/telemetry).
"""

from __future__ import annotations

import io
from pathlib import Path
from urllib.parse import urlsplit

import numpy as np
import pytest
from PIL import Image

from appserver import ONE_CLIENT, app_checkpoint, run_app
from clips import make_moving_disc_clip
from sam2_web.ui.render import display_scale

playwright_api = pytest.importorskip("playwright.sync_api")

CHROMIUM = Path("/usr/bin/chromium")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]
ARTIFACTS = Path(__file__).resolve().parent / "_artifacts"
N_FRAMES = 8
SIZE = (160, 120)
CLICK = (30, 26)  # on the disc in frame 0
TIMEOUT_MS = 300_000  # a loaded 2-core machine; waits end as soon as the page shows the state

pytestmark = pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian's chromium at /usr/bin/chromium")


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("browser")


@pytest.fixture(scope="module")
def app(workdir):
    ckpt = app_checkpoint(workdir / "ckpt" / "t256.pt")
    # Random weights pass none of the generator's default thresholds: "Find objects" searches permissively.
    find = ("find.auto.points_per_side=4", "find.auto.pred_iou_thresh=0.0", "find.auto.stability_score_thresh=0.0",
            "find.auto.box_nms_thresh=1.0")
    with run_app(workdir, ckpt, extra=(*ONE_CLIENT, *find)) as running:
        yield running


@pytest.fixture(scope="module")
def clip(workdir) -> Path:
    return make_moving_disc_clip(workdir / "disc.mp4", N_FRAMES, SIZE, radius=20)[0]


@pytest.fixture(scope="module")
def browser(workdir):
    ARTIFACTS.mkdir(exist_ok=True)
    with playwright_api.sync_playwright() as pw:
        context = pw.chromium.launch_persistent_context(
            str(workdir / "profile"), executable_path=str(CHROMIUM), headless=True, args=FLAGS,
            viewport={"width": 1280, "height": 1000},
        )

        def loopback_only(route):
            host = urlsplit(route.request.url).hostname
            if host in ("127.0.0.1", "localhost") or route.request.url.startswith(("data:", "blob:")):
                route.continue_()
            else:
                route.abort()

        context.route("**/*", loopback_only)
        yield context
        context.close()


def _shot(page, name: str) -> Path:
    path = ARTIFACTS / f"browser_{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path


def _frame_pixels(page) -> np.ndarray:
    """The frame image as the browser draws it (element screenshot), RGB."""
    png = page.locator("#frame img").first.screenshot()
    return np.asarray(Image.open(io.BytesIO(png)).convert("RGB"), dtype=np.int16)


def _click_frame(page, x: float, y: float) -> None:
    """Click original-frame pixel (x, y): to the displayed picture's pixels (the app enlarges
    small frames), then to page coordinates the way Gradio maps a click back to pixels."""
    scale = display_scale(*SIZE)
    x, y = x / scale, y / scale
    img = page.locator("#frame img").first
    box = img.bounding_box()
    nw, nh = img.evaluate("el => [el.naturalWidth, el.naturalHeight]")
    r = min(box["width"] / nw, box["height"] / nh, 1.0)
    ox, oy = (box["width"] - nw * r) / 2, (box["height"] - nh * r) / 2
    page.mouse.click(box["x"] + ox + (x + 0.5) * r, box["y"] + oy + (y + 0.5) * r)


def _upload(page, app, path: Path) -> None:
    page.goto(app.url)
    page.locator("#clip-upload").wait_for(timeout=TIMEOUT_MS)
    page.locator("#clip-upload input[type=file]").set_input_files(str(path))


def test_upload_click_see_mask_track_see_progress_and_result(app, clip, browser):
    page = browser.new_page()
    expect = playwright_api.expect
    _upload(page, app, clip)
    expect(page.locator("#frame-info")).to_contain_text(f"Frame 0 / {N_FRAMES - 1}", timeout=TIMEOUT_MS)
    expect(page.locator("#objects")).to_contain_text("object 1", timeout=TIMEOUT_MS)
    _shot(page, "1_loaded")
    before = _frame_pixels(page)

    _click_frame(page, *CLICK)
    expect(page.locator("#objects")).to_contain_text("1 click)", timeout=TIMEOUT_MS)
    page.wait_for_function(
        "() => { const i = document.querySelector('#frame img'); return i && i.complete && i.naturalWidth > 0; }",
        timeout=TIMEOUT_MS,
    )
    _shot(page, "2_clicked")
    after = _frame_pixels(page)
    assert after.shape == before.shape
    changed = np.abs(after - before).sum(-1) > 40
    # A click marker alone changes a few dozen pixels; a mask overlay changes far more, and
    # pulls the colours towards object 1's orange (more red and green than blue).
    shift = (after - before)[changed].mean(0)
    print("overlay: changed pixels", int(changed.sum()), "of", changed.size, "mean RGB shift", shift.round(1))
    assert changed.sum() > 0.02 * changed.size
    assert shift[0] - shift[2] > 20

    page.locator("#track").click()
    expect(page.locator("#status")).to_contain_text("frames", timeout=TIMEOUT_MS)
    expect(page.locator("#status progress")).to_have_count(1, timeout=TIMEOUT_MS)
    _shot(page, "3_tracking")
    expect(page.locator("#status")).to_contain_text(f"{N_FRAMES}/{N_FRAMES} frames", timeout=TIMEOUT_MS)
    expect(page.locator("#status")).to_contain_text("done", timeout=TIMEOUT_MS)
    expect(page.locator("#preview video")).to_have_count(1, timeout=TIMEOUT_MS)
    src = page.locator("#preview video").first.get_attribute("src")
    assert src and ".mp4" in src
    status = page.locator("#status").inner_text()
    print("status:", status)
    assert "s/frame" in status and "ETA" in status
    _shot(page, "4_tracked")

    page.get_by_role("tab", name="Download").click()
    page.locator("#export").click()  # PNG matte zip is the default format
    link = page.locator("#download a[href*='.zip']").first
    expect(link).to_be_visible(timeout=TIMEOUT_MS)
    assert link.get_attribute("href").endswith("disc.zip")
    page.close()


def test_messages_for_bad_input_examples_and_separate_tabs(app, clip, browser, tmp_path):
    expect = playwright_api.expect
    page = browser.new_page()
    page.goto(app.url)
    page.locator("#track").wait_for(timeout=TIMEOUT_MS)
    page.locator("#track").click()  # Track before any upload
    expect(page.get_by_text("upload a clip", exact=False).first).to_be_visible(timeout=TIMEOUT_MS)
    fake = tmp_path / "holiday.mp4"
    fake.write_text("this is a text file\n" * 40)
    page.locator("#clip-upload input[type=file]").set_input_files(str(fake))
    expect(page.get_by_text("holiday.mp4 cannot be read as a video", exact=False).first).to_be_visible(
        timeout=TIMEOUT_MS)
    _shot(page, "5_bad_upload")
    # The shipped examples open with one click.
    page.get_by_text("ball.mp4", exact=True).first.click()
    expect(page.locator("#frame-info")).to_contain_text("24 frames at 12 fps, 320×192", timeout=TIMEOUT_MS)
    _shot(page, "6_example")

    # Two tabs at once: a click in one does not show up in the other.
    one, two = browser.new_page(), browser.new_page()
    for p in (one, two):
        _upload(p, app, clip)
        expect(p.locator("#frame-info")).to_contain_text("Frame 0", timeout=TIMEOUT_MS)
    _click_frame(one, *CLICK)
    expect(one.locator("#objects")).to_contain_text("1 click)", timeout=TIMEOUT_MS)
    two.locator("#add-object").click()
    expect(two.locator("#objects")).to_contain_text("object 2", timeout=TIMEOUT_MS)
    expect(two.locator("#objects")).to_contain_text("0 clicks", timeout=TIMEOUT_MS)
    expect(one.locator("#objects")).not_to_contain_text("object 2", timeout=TIMEOUT_MS)
    for p in (page, one, two):
        p.close()


def test_find_objects_pick_one_and_see_soft_edges(app, clip, browser):
    """"Find objects" outlines candidates with a progress display; a click on one makes it an
    object; "Soft edges" shows the shown frame's cut-out over a checkerboard."""
    expect = playwright_api.expect
    page = browser.new_page()
    _upload(page, app, clip)
    expect(page.locator("#frame-info")).to_contain_text("Frame 0", timeout=TIMEOUT_MS)
    page.locator("#find").get_by_text("Find objects without clicking").click()
    page.locator("#find-objects").click()
    expect(page.locator("#status")).to_contain_text("found (outlined)", timeout=TIMEOUT_MS)
    _shot(page, "7_candidates")
    white = (_frame_pixels(page) >= 250).all(-1).mean()
    print("outline pixels:", round(float(white), 4))
    assert white > 0.002
    _click_frame(page, 60, 60)  # the middle of the frame lies in some candidate
    expect(page.locator("#objects")).to_contain_text("object 2", timeout=TIMEOUT_MS)
    expect(page.locator("#objects")).to_contain_text("(#2, 1 click)", timeout=TIMEOUT_MS)
    page.get_by_role("tab", name="Download").click()
    page.locator("#soft-edges input").check()
    expect(page.locator("#cutout img")).to_have_count(1, timeout=TIMEOUT_MS)
    _shot(page, "8_soft_edges")
    page.close()
