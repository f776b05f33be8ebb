"""The explorer in a real headless browser (Debian's Chromium driven by selenium): load the page, upload a
photo, type a text, run, see a map; a mistake shows as a message in the page. Skipped, saying what is missing,
where selenium, Chromium or chromedriver is not installed.

Set ``CLIPLENS_EXPLORE_SCREENSHOT=PATH`` to keep a screenshot of the page with its map (the docs' picture)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from cliplens.explore import Explorer
from tests.explore.conftest import PHOTO, served

CHROMIUM = ("/usr/bin/chromium", "/usr/bin/chromium-browser", "/usr/bin/google-chrome")
DRIVER = ("/usr/bin/chromedriver", "/usr/lib/chromium/chromedriver")


def _first(paths: tuple[str, ...], name: str) -> str:
    found = next((p for p in paths if Path(p).exists()), None) or shutil.which(name)
    if not found:
        pytest.skip(f"{name} is not installed (looked at {', '.join(paths)} and PATH): install Debian's chromium "
                    "and chromium-driver to run the browser test")
    return found


@pytest.fixture(scope="module")
def browser():
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed (pip install selenium)")
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = _first(CHROMIUM, "chromium")
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                "--window-size=1400,1000"):
        options.add_argument(arg)
    try:
        driver = webdriver.Chrome(service=Service(_first(DRIVER, "chromedriver")), options=options)
    except Exception as e:  # a browser that cannot start here (no display libraries, …)
        pytest.skip(f"Chromium could not be started by selenium: {str(e).splitlines()[0]}")
    yield driver
    driver.quit()


def test_upload_type_run_and_see_a_map(browser, random_toy, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    app = served(Explorer(random_toy))
    try:
        browser.get(app.url + "/")
        wait = WebDriverWait(browser, 15)
        wait.until(lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-ready") == "1")
        assert "toy" in browser.find_element(By.ID, "model").text
        assert len(browser.find_elements(By.CSS_SELECTOR, "#gallery img")) == 6  # the toy world's scenes
        # a mistake first: no text -> a message in the page, not a traceback
        browser.find_element(By.ID, "texts").clear()
        browser.find_element(By.ID, "run").click()
        error = wait.until(ec.visibility_of_element_located((By.ID, "error")))
        assert "type at least one text" in error.text and "Traceback" not in error.text
        # upload a real photo: it joins the gallery, chosen
        browser.find_element(By.ID, "upload").send_keys(str(PHOTO))
        wait.until(lambda d: d.find_element(By.ID, "chosen-name").text == PHOTO.name)
        browser.find_element(By.ID, "texts").send_keys("a red circle")
        browser.find_element(By.ID, "run").click()
        img = wait.until(ec.presence_of_element_located((By.CSS_SELECTOR, "#results img.result[data-view=maps]")))
        wait.until(lambda d: d.execute_script("return arguments[0].complete && arguments[0].naturalWidth", img) > 0)
        assert not browser.find_element(By.ID, "error").is_displayed()
        assert "CLIP Surgery" in browser.find_element(By.CSS_SELECTOR, "#results figcaption").text
        # the run ends with the layer and head bars (checked by default) and the similarity
        wait.until(lambda d: "cosine similarity: 'a red circle'" in d.find_element(By.ID, "similarity").text)
        assert len(browser.find_elements(By.CSS_SELECTOR, "#results img.result[data-view=bars]")) == 2
        assert not browser.find_element(By.ID, "status").is_displayed()
        shot = Path(os.environ.get("CLIPLENS_EXPLORE_SCREENSHOT") or tmp_path / "explorer.png")
        assert browser.save_screenshot(str(shot)) and shot.stat().st_size > 0
    finally:
        app.stop()
