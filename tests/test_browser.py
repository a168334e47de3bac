"""The page in a real browser: `sedic serve` as a subprocess, driven by headless Debian chromium.

Uploads kodim23 with examples/semantics, checks the stream bar, texts and masks, decodes stage by
stage, downloads the .sedic and the PNG and checks them against the Python API. Set
SEDIC_SCREENSHOT=path to keep a screenshot (docs/images/serve.png was made that way).
"""

from __future__ import annotations

import contextlib
import io
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from conftest import EXAMPLES, REPO

CHROMIUM = Path("/usr/bin/chromium")
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", "--no-first-run"]

pytestmark = pytest.mark.skipif(not CHROMIUM.exists(), reason="Debian chromium is not installed at /usr/bin/chromium "
                                "(CI installs it: apt-get install chromium)")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def running_server(tmp_dir: Path, **env_extra):
    """`sedic serve --profile test` on a free port of 127.0.0.1; yields its base URL."""
    httpx = pytest.importorskip("httpx")
    port = free_port()
    log = tmp_dir / "serve.log"
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    env.pop("SEDIC_API_KEY", None)
    env.update(env_extra)
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "sedic", "serve", "--profile", "test", "--port", str(port)],
                                stdout=out, stderr=subprocess.STDOUT, env=env, cwd=REPO)
    base = f"http://127.0.0.1:{port}"
    headers = {"Authorization": "Bearer " + env_extra["SEDIC_API_KEY"]} if "SEDIC_API_KEY" in env_extra else {}
    try:
        deadline = time.monotonic() + 120
        while True:
            if proc.poll() is not None:
                pytest.fail(f"sedic serve exited with {proc.returncode}:\n{log.read_text()}")
            try:
                health = httpx.get(base + "/v1/health", timeout=2, headers=headers).json()
                if health["models"] == "ready":
                    break
                assert health["models"] == "loading", health
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"sedic serve not ready after 120 s:\n{log.read_text()}")
            time.sleep(0.3)
        yield base
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with running_server(tmp_path_factory.mktemp("serve")) as base:
        yield base


@pytest.fixture(scope="module")
def kodim23_sedic(tmp_path_factory):
    """The example photo coded with profile test, as a file the page can open: (path, bytes)."""
    import sedic

    data = sedic.compress(REPO / "examples" / "kodim23.png", bpp=0.02, semantics=EXAMPLES / "kodim23.json",
                          profile="test")
    path = tmp_path_factory.mktemp("coded") / "kodim23.sedic"
    path.write_bytes(data)
    return path, data


@pytest.fixture(scope="module")
def browser():
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        yield browser
        browser.close()


def test_compress_and_decode_stage_by_stage(server, browser, tmp_path):
    from PIL import Image

    import sedic

    page = browser.new_page(viewport={"width": 1100, "height": 900})
    errors = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)  # e.g. a 404
    page.goto(server + "/")
    page.wait_for_function("document.querySelectorAll('#profile option').length > 0")

    # keyboard: the drop zone takes focus, and Enter or Space opens the file picker (a click on the input)
    page.eval_on_selector("#image-input", "i => { window.picks = 0; i.addEventListener('click', e => { "
                          "e.preventDefault(); window.picks++; }); }")
    page.focus("#drop")
    page.keyboard.press("Enter")
    page.keyboard.press(" ")
    assert page.evaluate("window.picks") == 2
    page.set_input_files("#image-input", str(REPO / "examples" / "kodim23.png"))
    page.set_input_files("#semantics-input", [str(EXAMPLES / n) for n in
                                              ("kodim23.json", "kodim23.mask0.png", "kodim23.mask1.png")])
    page.select_option("#bpp", "0.02")
    page.select_option("#profile", "test")
    page.fill("#object-steps", "1")  # keeps the tiny decoder's three stages to seconds on 2 CPU cores
    page.fill("#final-steps", "1")
    page.click("#compress")
    page.wait_for_selector("#result:not([hidden])", timeout=60_000)
    page.wait_for_function("document.querySelector('#status').textContent.startsWith('Compressed')",
                           timeout=60_000)
    # keyboard users keep a focus: the busy (disabled) button hands it to the result
    assert page.evaluate("document.activeElement.id") == "result-title"

    # what the bits bought: size and bpp, stream bar adding up to the file, texts, masks
    summary = page.text_content("#summary")
    size = int(summary.split(" bytes")[0])
    assert 8 * size / (768 * 512) <= 0.02
    bits = page.eval_on_selector_all("#stream-bar span", "els => els.map(e => [e.dataset.stream, +e.dataset.bits])")
    assert [name for name, _ in bits] == ["reference", "text", "masks", "header"]
    assert sum(b for _, b in bits) == 8 * size and all(b > 0 for _, b in bits)
    assert "macaw parrots" in page.text_content("#overall")
    assert page.eval_on_selector_all("#objects li", "els => els.map(e => e.textContent)")[1].startswith(
        "scarlet macaw: parrot with glossy crimson")
    assert page.eval_on_selector("#mask-canvas", "c => [c.width, c.height]") == [768, 512]

    with page.expect_download() as download:
        page.click("#download-sedic")
    data = Path(download.value.path()).read_bytes()
    assert len(data) == size
    info = sedic.inspect(data)
    assert info["profile"] == "test" and len(info["semantics"]["objects"]) == 2

    # decode stage by stage: preview, two objects, overall
    assert not page.is_visible("#download-png")
    page.focus("#decode")
    page.keyboard.press("Enter")
    page.wait_for_selector("#decode-panel[data-done=true]", timeout=300_000)
    assert page.evaluate("document.activeElement.id") == "decode-title"
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.textContent") == "0. preview"
    stages = page.eval_on_selector_all("#stages li", "els => els.map(e => [e.className, e.textContent])")
    assert [t for _, t in stages] == ["0. preview", "1. object 1/2: blue-and-yellow macaw",
                                      "2. object 2/2: scarlet macaw", "3. overall"]
    assert all("done" in c for c, _ in stages)
    assert page.eval_on_selector("#after", "i => [i.naturalWidth, i.naturalHeight]") == [768, 512]
    page.focus("#slider")
    page.keyboard.press("ArrowLeft")
    assert page.input_value("#slider") == "49"

    with page.expect_download() as download:
        page.click("#download-png")
    final = np.asarray(Image.open(io.BytesIO(Path(download.value.path()).read_bytes())).convert("RGB"))
    preview = sedic.decompress(data, stages=0)
    assert final.shape == preview.shape == (512, 768, 3)
    assert np.abs(final.astype(int) - preview).mean() > 1  # the decoder changed the preview

    # item 14: the selected stage is the one downloaded (stage 0 is `sedic decompress --stages 0`)
    page.click("#stages li[data-stage='0'] button")
    with page.expect_download() as download:
        page.click("#download-png")
    assert download.value.suggested_filename == "kodim23.stage0.png"
    stage0 = np.asarray(Image.open(io.BytesIO(Path(download.value.path()).read_bytes())).convert("RGB"))
    assert np.array_equal(stage0, preview)
    # dragging on the image moves the divider: a quarter of the way across
    box = page.eval_on_selector("#compare", "c => { c.scrollIntoView(); const r = c.getBoundingClientRect(); "
                                "return [r.left, r.top, r.width, r.height]; }")
    page.mouse.move(box[0] + box[2] * 0.6, box[1] + box[3] / 2)
    page.mouse.down()
    page.mouse.move(box[0] + box[2] * 0.25, box[1] + box[3] / 2, steps=5)
    page.mouse.up()
    assert page.input_value("#slider") == "25"
    assert page.eval_on_selector("#after", "i => i.style.clipPath") == "inset(0px 0px 0px 25%)"
    # zoom: in a window narrower than the image, 1:1 shows it at its own size, 2:1 and 4:1 each
    # pixel as a sharp 2x2 or 4x4 block, scrolled inside its view around the same point; the page
    # never scrolls sideways
    page.set_viewport_size({"width": 600, "height": 900})
    shown = "i => [i.clientWidth, i.clientHeight]"
    assert page.eval_on_selector("#after", shown)[0] < 768
    view = ("v => [(v.scrollLeft + v.clientWidth / 2) / v.scrollWidth, "
            "(v.scrollTop + v.clientHeight / 2) / v.scrollHeight]")
    for zoom in (1, 2, 4):
        page.select_option("#zoom", str(zoom))
        assert page.eval_on_selector("#after", shown) == [768 * zoom, 512 * zoom], zoom
        assert page.eval_on_selector("#before", shown) == [768 * zoom, 512 * zoom], zoom
        assert page.evaluate("document.documentElement.scrollWidth") <= 600
        centre = page.eval_on_selector("#compare-view", view)
        assert abs(centre[0] - 0.5) < 0.02, (zoom, centre)  # still the middle of the image
    assert page.eval_on_selector("#after", "i => getComputedStyle(i).imageRendering") == "pixelated"
    # at 4:1 one image pixel is a 4x4 block on screen: the screenshot of the view, block by block
    from PIL import Image as PILImage

    page.eval_on_selector("#compare-view", "v => { v.scrollLeft = 0; v.scrollTop = 0; v.scrollIntoView(); }")
    page.fill("#slider", "0")  # all "after"
    page.dispatch_event("#slider", "input")
    left, top = page.eval_on_selector("#after", "i => { const r = i.getBoundingClientRect(); return [r.left, r.top]; }")
    # 8 px in from the image's corner (past the divider's 2 px line), 16x16 image pixels
    clip = {"x": left + 8, "y": top + 8, "width": 64, "height": 64}
    shot = np.asarray(PILImage.open(io.BytesIO(page.screenshot(clip=clip))).convert("RGB")).astype(int)
    assert shot.shape == (64, 64, 3)
    block = shot.reshape(16, 4, 16, 4, 3)
    assert np.abs(block - block[:, :1, :, :1]).max() <= 1, np.abs(block - block[:, :1, :, :1]).max()
    assert len(np.unique(shot.reshape(-1, 3), axis=0)) > 4  # blocks of the photo, not one flat colour
    page.fill("#slider", "25")
    page.dispatch_event("#slider", "input")
    page.select_option("#zoom", "fit")
    assert page.eval_on_selector("#after", shown)[0] < 768
    page.set_viewport_size({"width": 1100, "height": 900})

    shot = tmp_path / "serve.png"
    page.screenshot(path=str(shot), full_page=True)
    if os.environ.get("SEDIC_SCREENSHOT"):
        shutil.copy(shot, os.environ["SEDIC_SCREENSHOT"])
    assert not errors, errors
    page.close()


def test_open_sedic_and_phone_width(server, browser, kodim23_sedic):
    path, data = kodim23_sedic
    page = browser.new_page(viewport={"width": 390, "height": 844})
    page.goto(server + "/")
    page.set_input_files("#sedic-input", str(path))
    page.wait_for_selector("#result:not([hidden])", timeout=60_000)
    assert page.text_content("#summary").startswith(f"{len(data)} bytes")
    # readable on a phone: nothing wider than the window
    assert page.evaluate("document.documentElement.scrollWidth") <= 390
    page.close()


def test_bad_file_is_one_line_on_the_page(server, browser, tmp_path):
    import sedic

    data = sedic.compress(REPO / "examples" / "kodim23.png", bpp=0.02, analyze=False, profile="test")
    path = tmp_path / "broken.sedic"
    path.write_bytes(data[:-10])
    page = browser.new_page()
    page.goto(server + "/")
    page.set_input_files("#sedic-input", str(path))
    page.wait_for_function("document.querySelector('#status').classList.contains('error')", timeout=30_000)
    message = page.text_content("#status")
    assert "\n" not in message and "truncated" in message, message
    page.close()


def test_api_docs_load_without_external_requests(server, browser):
    """/docs loaded Swagger UI from a CDN: blank offline, and third-party script beside the API key."""
    httpx = pytest.importorskip("httpx")
    page = browser.new_page()
    requested = []
    page.on("request", lambda request: requested.append(request.url))
    page.goto(server + "/docs")
    page.wait_for_selector(".swagger-ui .info .title", timeout=60_000)
    assert "sedic" in page.inner_text(".swagger-ui .info .title")
    # an operation's summary: the operations came from /openapi.json
    page.wait_for_function("document.body.innerText.includes('Image in, .sedic bytes out')", timeout=60_000)
    page.close()
    assert requested and all(url.startswith(server + "/") for url in requested), requested
    assert server + "/openapi.json" in requested
    assert httpx.get(server + "/redoc", timeout=10).status_code == 404  # ReDoc's bundle calls its CDN


def watch_errors(page, expected_status: int) -> list:
    """Script errors and console errors, but for the failed request (status) the test makes on purpose."""
    errors = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" and
            f"status of {expected_status} " not in msg.text else None)
    return errors


def test_what_is_shown_is_what_is_sent_and_downloaded(server, browser, tmp_path):
    """Issue 16 item 11: an image then a .sedic, a good then a corrupt file, Compress during a decode."""
    import sedic

    data = sedic.compress(REPO / "examples" / "kodim23.png", bpp=0.02, semantics=EXAMPLES / "kodim23.json",
                          profile="test")
    good, corrupt = tmp_path / "good.sedic", tmp_path / "corrupt.sedic"
    good.write_bytes(data)
    corrupt.write_bytes(data[:-10])
    page = browser.new_page()
    errors = watch_errors(page, 422)  # the corrupt file
    page.goto(server + "/")

    # an image, then a .sedic: Compress has nothing to send any more
    page.set_input_files("#image-input", str(REPO / "examples" / "kodim23.png"))
    assert page.is_enabled("#compress")
    page.set_input_files("#sedic-input", str(good))
    page.wait_for_selector("#result:not([hidden])", timeout=60_000)
    assert page.is_disabled("#compress") and page.text_content("#drop-name") == "no image chosen"

    # a good file, then a corrupt one: the old one is neither shown, nor decoded, nor downloaded
    page.set_input_files("#sedic-input", str(corrupt))
    page.wait_for_function("document.querySelector('#status').classList.contains('error')", timeout=30_000)
    assert page.is_hidden("#result") and page.get_attribute("#download-sedic", "href") is None

    # Compress while a decode streams: the old decode stops and never ends over the new result
    page.set_input_files("#sedic-input", str(good))
    page.wait_for_selector("#result:not([hidden])", timeout=60_000)
    page.click("#decode")
    page.wait_for_function("document.querySelector('#status').textContent.startsWith('Decoding stage 1')",
                           timeout=60_000)
    page.set_input_files("#image-input", str(REPO / "examples" / "kodim23.png"))
    page.set_input_files("#semantics-input", [str(EXAMPLES / n) for n in
                                              ("kodim23.json", "kodim23.mask0.png", "kodim23.mask1.png")])
    page.click("#compress")
    page.wait_for_function("document.querySelector('#status').textContent.startsWith('Compressed')",
                           timeout=60_000)
    assert page.is_hidden("#decode-panel")
    page.wait_for_timeout(4000)  # longer than the rest of the old decode would take
    assert page.is_hidden("#decode-panel") and page.text_content("#status").startswith("Compressed")
    assert page.eval_on_selector("#stages", "s => s.children.length") == 0
    assert not errors, errors
    page.close()


def test_the_right_key_clears_the_401(browser, tmp_path):
    with running_server(tmp_path, SEDIC_API_KEY="right-key") as base:
        page = browser.new_page()
        errors = watch_errors(page, 401)
        page.goto(base + "/")
        page.wait_for_selector("#key-panel:not([hidden])", timeout=30_000)
        page.wait_for_function("document.querySelector('#status').classList.contains('error')")
        page.fill("#api-key", "right-key")
        page.press("#api-key", "Enter")  # Enter in the key box uses it
        page.wait_for_function("document.querySelectorAll('#profile option').length > 0", timeout=30_000)
        assert page.is_hidden("#key-panel")
        assert page.text_content("#status") == "" and not page.eval_on_selector(
            "#status", "s => s.classList.contains('error')")
        assert not errors, errors
        page.close()


def test_progress_and_cancel_stop_the_job(server, browser, kodim23_sedic):
    """Issue 16 item 12: a visible busy bar (elapsed time, stage and step), and Cancel stops the server's job."""
    import httpx

    path, data = kodim23_sedic
    before = httpx.get(server + "/v1/health", timeout=10).json()["queue"]
    page = browser.new_page(viewport={"width": 1100, "height": 500})  # a short window: the bar must stay in view
    errors = watch_errors(page, 0)
    page.goto(server + "/")
    page.set_input_files("#sedic-input", str(path))
    page.wait_for_selector("#result:not([hidden])", timeout=60_000)
    page.click("#decode")
    page.wait_for_function("document.querySelector('#busy-text').textContent.includes(', step ')", timeout=60_000)
    assert page.is_visible("#busy") and page.text_content("#busy-text").startswith("Decoding stage ")
    box = page.eval_on_selector("#busy", "b => { const r = b.getBoundingClientRect(); return [r.top, r.bottom]; }")
    assert 0 <= box[0] and box[1] <= 500, box  # on screen
    first = float(page.text_content("#busy-time").split()[0])
    page.wait_for_timeout(600)
    assert float(page.text_content("#busy-time").split()[0]) > first  # the clock runs
    assert 0 < page.eval_on_selector("#busy-bar", "b => b.position") < 1
    page.click("#cancel")
    assert page.is_hidden("#busy") and page.text_content("#status") == "Cancelled."
    # the server stopped the job: counted as cancelled, nothing left in flight
    deadline = time.monotonic() + 30
    while True:
        queue = httpx.get(server + "/v1/health", timeout=10).json()["queue"]
        if queue["in_flight"] == 0 and queue["cancelled"] > before["cancelled"]:
            break
        assert time.monotonic() < deadline, queue
        time.sleep(0.2)
    page.wait_for_timeout(1000)
    assert page.get_attribute("#decode-panel", "data-done") is None and page.text_content("#status") == "Cancelled."
    assert not errors, errors
    page.close()


def test_warnings_and_best_effort_reach_the_page(server, browser, tmp_path):
    """Issue 16 item 13: the server's warnings are shown, and rate errors name the page's controls, not CLI flags."""
    import httpx
    from PIL import Image

    rgba = Image.open(REPO / "examples" / "kodim23.png").convert("RGBA").resize((64, 64))
    rgba.putalpha(128)
    path = tmp_path / "small.png"
    rgba.save(path)
    page = browser.new_page()
    errors = watch_errors(page, 422)  # the rate that cannot be met
    page.goto(server + "/")
    page.wait_for_function("document.querySelectorAll('#profile option').length > 0")
    page.set_input_files("#image-input", str(path))
    page.uncheck("#analyze")
    page.select_option("#bpp", "0.01")
    page.click("#compress")
    page.wait_for_function("document.querySelector('#status').classList.contains('error')", timeout=60_000)
    message = page.text_content("#status")
    assert "cannot be met" in message and 'tick "best effort"' in message and "--" not in message, message
    page.check("#best-effort")
    page.click("#compress")
    page.wait_for_function("document.querySelector('#status').textContent.startsWith('Compressed')",
                           timeout=60_000)
    warnings = page.eval_on_selector_all("#warnings li", "els => els.map(e => e.textContent)")
    assert any("alpha" in w for w in warnings) and any("best effort" in w for w in warnings), warnings
    assert page.is_visible("#warnings")
    # item 14: sizes with the ratio, measured from the bytes; plain words beside the profile and steps
    size = int(page.text_content("#summary").split(" bytes")[0])
    original = path.stat().st_size
    assert page.text_content("#sizes") == (f"Original file {original} bytes ({original / size:.0f}:1); "
                                           f".sedic {size} bytes; uncompressed RGB {64 * 64 * 3} bytes "
                                           f"({64 * 64 * 3 / size:.0f}:1)")
    profiles = httpx.get(server + "/v1/profiles", timeout=10).json()["profiles"]
    chosen = page.input_value("#profile")
    assert page.text_content("#profile-help") == next(p["description"] for p in profiles if p["name"] == chosen)
    assert page.text_content("#profile-help") and "More steps decode slower" in page.text_content("#steps-help")
    assert not errors, errors
    page.close()


def test_schedule_and_guidance_reach_the_file(server, browser):
    """The decoder schedule and the guidance scales chosen on the page are the ones the server
    writes into the file (`sedic.inspect`'s "schedule"); "profile default" and empty inputs send
    nothing. The page's table of these inputs names exactly the form's fields and choices."""
    import httpx

    import sedic
    from sedic.schedule import OVERRIDES

    page = browser.new_page(viewport={"width": 1100, "height": 900})
    errors = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)
    page.goto(server + "/")
    page.wait_for_function("document.querySelectorAll('#profile option').length > 0")
    form = httpx.get(server + "/openapi.json", timeout=10).json()["components"]["schemas"][
        "Body_compress_v1_compress_post"]["properties"]
    table = page.evaluate("SCHEDULE_FIELDS.map(f => [f.field, f.choices || null])")
    assert sorted(name for name, _ in table) == sorted(spec.name for spec in OVERRIDES)  # the page's order is its own
    for name, choices in table:
        assert name in form, name
        enum = next((t["enum"] for t in form[name]["anyOf"] if "enum" in t), None)
        assert choices == enum, (name, choices, enum)
    # the inputs' limits are what the file can store (sedic.schedule's codes: low..high in 1/scale)
    limits = dict(page.evaluate("SCHEDULE_FIELDS.filter(f => !f.choices).map(f => [f.field, [f.min, f.max, f.step]])"))
    assert limits == {spec.name: [spec.low / spec.scale, spec.high / spec.scale, 1 / spec.scale]
                      for spec in OVERRIDES if not spec.choices}
    assert page.eval_on_selector_all("#schedule option", "os => os.map(o => [o.value, o.textContent])") == [
        ["", "profile default"], ["sequential", "sequential"], ["fused", "fused"]]
    help_text = page.text_content("#schedule-help")
    assert "one object at a time" in help_text and "one pass" in help_text, help_text
    assert "how strongly the texts steer the decoder" in page.text_content("#cfg-help")

    def compress_and_download() -> dict:
        page.set_input_files("#image-input", str(REPO / "examples" / "kodim23.png"))
        page.set_input_files("#semantics-input", [str(EXAMPLES / n) for n in
                                                  ("kodim23.json", "kodim23.mask0.png", "kodim23.mask1.png")])
        page.select_option("#bpp", "0.02")
        page.select_option("#profile", "test")
        page.click("#compress")
        page.wait_for_function("document.querySelector('#status').textContent.startsWith('Compressed')",
                               timeout=60_000)
        with page.expect_download() as download:
            page.click("#download-sedic")
        return sedic.inspect(Path(download.value.path()).read_bytes())

    page.select_option("#schedule", "fused")
    page.fill("#final-steps", "2")
    page.fill("#object-cfg", "2.5")
    page.fill("#final-cfg", "4")
    assert compress_and_download()["schedule"] == {"final_steps": 2, "object_cfg": 2.5, "final_cfg": 4.0,
                                                   "schedule": "fused"}
    page.select_option("#schedule", "sequential")
    for field in ("#final-steps", "#object-cfg", "#final-cfg"):
        page.fill(field, "")
    assert compress_and_download()["schedule"] == {"schedule": "sequential"}
    page.select_option("#schedule", "")  # profile default
    assert compress_and_download()["schedule"] == {}

    # a phone: the new controls and their help fit the window
    page.set_viewport_size({"width": 390, "height": 844})
    assert page.evaluate("document.documentElement.scrollWidth") <= 390
    for selector in ("#schedule", "#schedule-help", "#object-cfg", "#final-cfg", "#cfg-help"):
        right = page.eval_on_selector(selector, "e => e.getBoundingClientRect().right")
        assert right <= 390, (selector, right)
    assert not errors, errors
    page.close()
