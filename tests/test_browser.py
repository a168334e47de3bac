"""The page in a real browser: `sedic serve` as a subprocess, driven by headless Debian chromium.

Uploads kodim23 with examples/semantics, checks the stream bar, texts and masks, decodes stage by
stage, downloads the .sedic and the PNG and checks them against the Python API. Set
SEDIC_SCREENSHOT=path to keep a screenshot (docs/images/serve.png was made that way).
"""

from __future__ import annotations

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


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """`sedic serve --profile test` on a free port of 127.0.0.1; yields its base URL."""
    httpx = pytest.importorskip("httpx")
    port = free_port()
    log = tmp_path_factory.mktemp("serve") / "serve.log"
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    env.pop("SEDIC_API_KEY", None)
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "sedic", "serve", "--profile", "test", "--port", str(port)],
                                stdout=out, stderr=subprocess.STDOUT, env=env, cwd=REPO)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            if proc.poll() is not None:
                pytest.fail(f"sedic serve exited with {proc.returncode}:\n{log.read_text()}")
            try:
                health = httpx.get(base + "/v1/health", timeout=2).json()
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
def browser():
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        yield browser
        browser.close()


def test_compress_and_decode_stage_by_stage(server, browser, tmp_path):
    import sedic
    from PIL import Image

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

    shot = tmp_path / "serve.png"
    page.screenshot(path=str(shot), full_page=True)
    if os.environ.get("SEDIC_SCREENSHOT"):
        shutil.copy(shot, os.environ["SEDIC_SCREENSHOT"])
    assert not errors, errors
    page.close()


def test_open_sedic_and_phone_width(server, browser, tmp_path):
    import sedic

    data = sedic.compress(REPO / "examples" / "kodim23.png", bpp=0.02, semantics=EXAMPLES / "kodim23.json",
                          profile="test")
    path = tmp_path / "kodim23.sedic"
    path.write_bytes(data)
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
