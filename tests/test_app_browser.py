"""`lary app` in a real browser: headless Chromium (Debian's `chromium` and `chromium-driver`, driven by Selenium)
opens the page that the command line serves, uploads a short video and waits for the timeline.

`.ci/run` installs the browser, so in CI (`CI` set) a missing browser fails the test instead of skipping it.
`LARY_SAVE_SCREENSHOT=1` writes the screenshot to `space/lary_app.png`, the one the README, the model card and the
Space show.
"""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from conftest import free_port
from PIL import Image

from lary.app.page import example_clips

CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
CHROMIUM_FLAGS = (
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run", "--window-size=1400,2000",
)
SCREENSHOT = Path(__file__).resolve().parents[1] / "space" / "lary_app.png"


def require_browser():
    """Selenium, or a skip outside CI; in CI a missing browser is a failure."""
    missing = [path for path in (CHROMIUM, CHROMEDRIVER) if not Path(path).exists()]
    try:
        from selenium import webdriver
    except ImportError:
        missing.append("selenium")
    if missing:
        message = f"{', '.join(missing)} missing: apt-get install chromium chromium-driver; pip install -e '.[test]'"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return webdriver


@pytest.fixture
def lary_app():
    """`lary app` on a free port (embedded model, offline), until the test ends."""
    port = free_port()
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "GRADIO_ANALYTICS_ENABLED": "False"}
    server = subprocess.Popen([sys.executable, "-m", "lary", "app", "--port", str(port), "-q"], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}/"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                urllib.request.urlopen(url, timeout=5)
                break
            except OSError:
                if server.poll() is not None:
                    pytest.fail(f"`lary app` stopped: {server.stdout.read()}")
                if time.monotonic() > deadline:
                    pytest.fail(f"`lary app` did not serve {url} in 120 s")
                time.sleep(0.5)
        yield url
    finally:
        server.terminate()
        server.wait(timeout=30)


def test_upload_a_video_and_see_the_timeline(lary_app, tmp_path):
    webdriver = require_browser()
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    video = dict((label, path) for path, label in example_clips(tmp_path))["moving up"]  # the page's example clip
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (*CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'chromium'}"):
        options.add_argument(flag)
    browser = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    try:
        browser.set_page_load_timeout(60)
        browser.get(lary_app)
        wait = WebDriverWait(browser, 120)
        wait.until(lambda page: page.find_elements(By.CSS_SELECTOR, "#video input[type=file]"))
        assert "LAPA-DINOv3 latent actions" in browser.title
        browser.find_element(By.CSS_SELECTOR, "#video input[type=file]").send_keys(str(video))
        wait.until(lambda page: page.find_elements(By.CSS_SELECTOR, "#video video"))  # uploaded and previewed
        browser.find_element(By.CSS_SELECTOR, "#extract").click()

        loaded = "return arguments[0].complete && arguments[0].naturalWidth"
        timeline = wait.until(lambda page: next(
            (image for image in page.find_elements(By.CSS_SELECTOR, "#timeline img")
             if browser.execute_script(loaded, image)),
            None,
        ))
        wait.until(lambda page: page.find_elements(By.CSS_SELECTOR, "#what-if img"))  # the "what if" panel follows
        time.sleep(1)  # let the last pictures settle before the screenshot

        shown = np.asarray(Image.open(io.BytesIO(timeline.screenshot_as_png)).convert("RGB"))
        assert shown.shape[1] >= 400 and shown.shape[0] >= 100, shown.shape
        assert shown.std() > 20, "the timeline is blank"
        assert "9 pairs" in browser.find_element(By.TAG_NAME, "body").text
        page = tmp_path / "lary_app.png"
        browser.save_screenshot(str(page))
        assert np.asarray(Image.open(page).convert("RGB")).std() > 20
        if os.environ.get("LARY_SAVE_SCREENSHOT") == "1":
            shutil.copyfile(page, SCREENSHOT)
    finally:
        browser.quit()
