"""End-to-end tests of ``sar2opt-geo serve`` in a real headless browser (Debian's ``chromium`` driven by
Playwright): the map loads a demo scene translated by the bundled model, the swipe moves and both sides show
the expected layers (grey SAR on the left, coloured output on the right), a chip upload returns a result,
the jobs table shows a finished job that opens in the map, the system panel fills in, and the page requests
nothing outside 127.0.0.1 and logs no console error.

Skips, saying why, where Playwright or the browser is missing (``.ci/run`` installs both). Set
``SAR2OPT_SERVE_SCREENSHOT=docs/serve_swipe.png`` to save the swipe view (the README's picture).
"""

from __future__ import annotations

import io as _io
import os
import shutil
import socket
import threading
import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("starlette")
pytest.importorskip("rio_tiler")
playwright_sync = pytest.importorskip(
    "playwright.sync_api", reason="playwright is not installed (serve extra)"
)

CHROMIUM = os.environ.get("SAR2OPT_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
VIEW = {"width": 1100, "height": 640}

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not os.path.exists(CHROMIUM),
        reason=f"no chromium browser at {CHROMIUM} (apt-get install chromium; .ci/run does it when it can)",
    ),
]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> dict:
    """A demo folder (synthetic scene, its optical truth, its translation by the bundled model), a job spec
    with one finished scene, and a chip to upload."""
    import yaml
    from PIL import Image

    from sar2opt_geo.defaults import BUNDLED_MODEL
    from sar2opt_geo.distributed import ThreadedExecutor
    from sar2opt_geo.jobs import load_job, run_job
    from sar2opt_geo.plan import TranslateOptions
    from sar2opt_geo.run import run_translate
    from sar2opt_geo.synth import SceneSpec, write_scene

    root = tmp_path_factory.mktemp("browser")
    demo = root / "demo"
    sar, _ = write_scene(demo, SceneSpec(width=640, height=512, seed=2024))
    run_translate(
        str(sar), str(demo / "translated.tif"), TranslateOptions(model=str(BUNDLED_MODEL)), ThreadedExecutor()
    )
    (root / "job" / "scenes").mkdir(parents=True)
    write_scene(root / "job" / "src", SceneSpec(width=256, height=256, seed=9))
    shutil.copy(root / "job" / "src" / "sar.tif", root / "job" / "scenes" / "field.tif")
    spec = root / "job" / "job.yaml"
    spec.write_text(
        yaml.safe_dump(
            {"version": 1, "inputs": ["scenes/*.tif"], "output": {"dir": "out/", "pattern": "{stem}_opt.tif"}}
        )
    )
    run_job(load_job(spec), ThreadedExecutor())
    chip = root / "chip.png"
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(30, 230, (128, 128), dtype=np.uint8)).save(chip)
    return {"demo": demo, "spec": spec, "chip": chip}


@pytest.fixture(scope="module")
def server(data):
    import uvicorn

    from sar2opt_geo.serve.app import create_app

    port = _free_port()
    app = create_app([str(data["demo"])], [str(data["spec"])])
    srv = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on"))
    th = threading.Thread(target=srv.run, daemon=True)
    th.start()
    t0 = time.time()
    while not srv.started:
        assert time.time() - t0 < 30 and th.is_alive(), "the server did not start"
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    srv.should_exit = True
    th.join(15)


@pytest.fixture(scope="module")
def browser():
    with playwright_sync.sync_playwright() as p:
        try:
            b = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS, headless=True)
        except Exception as exc:  # a browser that cannot start here (no display libraries, ...)
            pytest.skip(f"chromium at {CHROMIUM} does not start: {str(exc).splitlines()[0]}")
        yield b
        b.close()


class Watch:
    """Every request the page makes (requests elsewhere than the app are aborted and kept) and every
    console error or uncaught exception."""

    def __init__(self, page, base: str):
        self.base, self.requests, self.foreign, self.errors = base, [], [], []
        page.on("request", lambda r: self.requests.append(r.url))
        page.on("console", lambda m: self.errors.append(f"console: {m.text}") if m.type == "error" else None)
        page.on("pageerror", lambda e: self.errors.append(f"page error: {e}"))
        page.on("requestfailed", lambda r: self.errors.append(f"request failed: {r.url} {r.failure}"))
        page.route("**/*", self._route)

    def _route(self, route):
        url = route.request.url
        if url.startswith(self.base + "/") or url == self.base:
            return route.continue_()
        self.foreign.append(url)
        return route.abort()


def _wait_tiles(page):
    page.wait_for_function(
        "() => window.sar2opt && window.sar2opt.ready && window.sar2opt.state.loaded.left "
        "&& window.sar2opt.state.loaded.right",
        timeout=60_000,
    )
    page.wait_for_timeout(300)  # the last tiles fade in (Leaflet's 200 ms opacity transition)


def _map_pixels(page) -> np.ndarray:
    from PIL import Image

    png = page.locator("#map").screenshot()
    return np.asarray(Image.open(_io.BytesIO(png)).convert("RGB")).astype(int)


def _column_stats(px: np.ndarray, x_frac: float) -> tuple[float, float]:
    """(mean channel spread, share of scene pixels) in a 24-px-wide strip around ``x_frac`` of the width,
    over the middle third of the height; background (the map's dark fill) is left out."""
    h, w, _ = px.shape
    x = int(w * x_frac)
    strip = px[h // 3 : 2 * h // 3, x - 12 : x + 12].reshape(-1, 3)
    background = np.abs(strip - np.array([0x1B, 0x1F, 0x24])).sum(axis=1) < 6
    scene = strip[~background]
    if len(scene) == 0:
        return 0.0, 0.0
    spread = (scene.max(axis=1) - scene.min(axis=1)).mean()
    return float(spread), len(scene) / len(strip)


def test_map_swipe_upload_jobs_system(browser, server, data, tmp_path):
    page = browser.new_page(viewport=VIEW)
    watch = Watch(page, server)
    page.goto(server + "/")
    _wait_tiles(page)

    # the demo scene: SAR on the left (grey), the translation on the right (coloured), labels on each side
    assert page.locator("#scene option").count() >= 2
    assert "SAR input" in page.locator("#label-left").inner_text()
    assert "translated" in page.locator("#label-right").inner_text()
    px = _map_pixels(page)
    left_spread, left_share = _column_stats(px, 0.3)
    right_spread, right_share = _column_stats(px, 0.7)
    assert left_share > 0.9 and right_share > 0.9, (left_share, right_share)
    assert left_spread < 2, left_spread  # grey
    assert right_spread > 15, right_spread  # coloured

    # drag the swipe handle from the middle to 40 % of the width: x = 45 % is now on the coloured side
    box = page.locator("#map").bounding_box()
    y = box["y"] + box["height"] / 2
    page.mouse.move(box["x"] + box["width"] / 2, y)
    page.mouse.down()
    page.mouse.move(box["x"] + box["width"] * 0.4, y, steps=8)
    page.mouse.up()
    assert page.locator(".leaflet-popup").count() == 0  # the end of a swipe is not a click on the map
    divider = page.locator(".leaflet-sbs-divider").bounding_box()
    assert abs(divider["x"] + divider["width"] / 2 - (box["x"] + box["width"] * 0.4)) < 0.02 * box["width"]
    page.wait_for_timeout(200)
    px = _map_pixels(page)
    spread, share = _column_stats(px, 0.33)
    assert spread < 2 and share > 0.9  # still grey left of the divider
    spread, share = _column_stats(px, 0.45)
    assert spread > 15 and share > 0.9  # coloured where it was grey before the swipe
    shot = os.environ.get("SAR2OPT_SERVE_SCREENSHOT")
    if shot:
        _save_small_png(page.screenshot(), Path(shot))

    # other layer on the right (optical truth), colormap on the SAR side, click for pixel values
    page.select_option("#right", "optical")
    page.select_option("#cmap", "viridis")
    _wait_tiles(page)
    assert "optical truth" in page.locator("#label-right").inner_text()
    spread, share = _column_stats(_map_pixels(page), 0.33)  # the swipe stayed at 40 %
    assert spread > 15 and share > 0.9  # viridis SAR is not grey
    page.evaluate("() => { document.getElementById('pixel').textContent = ''; }")
    page.locator("#map").click(position={"x": box["width"] * 0.5, "y": box["height"] * 0.5})
    page.wait_for_function("() => document.getElementById('pixel').textContent.includes('dB')")
    assert "RGB" in page.locator("#pixel").inner_text()

    # chip upload → result
    page.click("button[data-tab=translate]")
    page.wait_for_selector("#samples img")
    page.set_input_files("#file", str(data["chip"]))
    page.click("#translate-go")
    page.wait_for_function(
        "() => { const i = document.getElementById('result-output'); "
        "return i && i.complete && i.naturalWidth > 0; }",
        timeout=120_000,
    )
    assert page.locator("#result-output").evaluate("i => [i.naturalWidth, i.naturalHeight]") == [128, 128]
    assert "done in" in page.locator("#translate-msg").inner_text()
    assert page.locator("#result-download").get_attribute("href").endswith("result.png")

    # jobs table: the finished job's scene, opened in the map
    page.click("button[data-tab=jobs]")
    page.wait_for_selector("table.jobs-table td.state-done")
    row = page.locator("table.jobs-table tr", has_text="scenes/field.tif")
    assert "done" in row.inner_text() and "100%" in row.inner_text()
    row.locator("a.open-map").click()
    page.wait_for_function("() => window.sar2opt.state.scene && window.sar2opt.state.scene.source === 'job'")
    _wait_tiles(page)
    assert "translated" in page.locator("#label-right").inner_text()

    # system panel
    page.click("button[data-tab=system]")
    page.wait_for_selector("#system h3")
    text = page.locator("#system").inner_text()
    assert "torch" in text and "gdal" in text and "unet_sar2optical" in text

    page.close()
    assert watch.foreign == [], watch.foreign
    assert all(u.startswith(server + "/") for u in watch.requests), [
        u for u in watch.requests if server not in u
    ]
    assert any("/tiles/" in u for u in watch.requests)
    assert watch.errors == [], watch.errors


def _save_small_png(png: bytes, path: Path) -> None:
    """The screenshot as a 256-colour PNG (the README picture stays well under 300 KB)."""
    from PIL import Image

    im = Image.open(_io.BytesIO(png)).convert("RGB").quantize(colors=256, method=Image.Quantize.MEDIANCUT)
    path.parent.mkdir(parents=True, exist_ok=True)
    im.save(path, optimize=True)
