"""The page at `/` in a real browser: Debian's Chromium, headless, driven by Selenium and chromedriver.

It types a query, waits for the thumbnails to load, switches rerank on and waits for the reranked
grid, and saves a screenshot in the test's tmp folder. Skipped, saying why, only where no Chromium
and chromedriver are installed (`.ci/run` installs them with apt-get).
"""

from __future__ import annotations

import shutil

import pytest

from conftest_index import tiny_clip_dir  # noqa: F401
from conftest_serve import live_server, served_index, start_service  # noqa: F401

BROWSERS = ("chromium", "chromium-browser", "google-chrome")
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-dev-shm-usage", "--window-size=1200,900")


def chromium():
    """(browser, chromedriver) paths, or skip saying what is missing."""
    browser = next((shutil.which(name) for name in BROWSERS if shutil.which(name)), None)
    driver = shutil.which("chromedriver")
    if not browser or not driver:
        pytest.skip("no Chromium and chromedriver on this machine (apt-get install chromium chromium-driver)")
    return browser, driver


@pytest.fixture()
def browser(tmp_path):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    binary, driver = chromium()
    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for flag in FLAGS + (f"--user-data-dir={tmp_path / 'profile'}",):
        options.add_argument(flag)
    session = webdriver.Chrome(service=Service(driver), options=options)
    session.set_page_load_timeout(60)
    yield session
    session.quit()


def test_the_page_searches_shows_thumbnails_and_reranks(served_index, browser, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import WebDriverWait

    worker, app = start_service(served_index)
    try:
        with live_server(app) as port:
            browser.get(f"http://127.0.0.1:{port}/")
            wait = WebDriverWait(browser, 90)
            wait.until(lambda b: "16 images" in b.find_element(By.ID, "index-info").text)

            box = browser.find_element(By.ID, "q")
            box.send_keys("a red circle left of a blue square", Keys.ENTER)
            wait.until(lambda b: len(b.find_elements(By.CSS_SELECTOR, "#grid .card")) == 16)
            loaded = "return [...document.querySelectorAll('#grid img')].filter(i => i.complete && i.naturalWidth > 0).length"
            wait.until(lambda b: b.execute_script(loaded) >= 10)  # lazy images below the fold may wait
            assert "rerank" not in browser.find_element(By.ID, "grid").text
            assert "16 results" in browser.find_element(By.ID, "status").text

            depth = browser.find_element(By.ID, "rerank")
            depth.clear()
            depth.send_keys("3")
            browser.find_element(By.ID, "rerank-on").click()  # a switch: searches again, reranked
            wait.until(lambda b: "U-Net passes" in b.find_element(By.ID, "status").text)
            cards = browser.find_elements(By.CSS_SELECTOR, "#grid .card")
            assert len(cards) == 16 and all("rerank" in c.text for c in cards[:3])
            assert [c.find_element(By.CLASS_NAME, "rank").text for c in cards[:3]] == ["#1", "#2", "#3"]
            assert {c.find_element(By.CLASS_NAME, "clip-rank").text.split()[1] for c in cards[:3]} == {"#1", "#2", "#3"}
            assert browser.find_element(By.ID, "error").get_attribute("hidden") is not None
            assert "rerank=3" in browser.current_url
            shot = tmp_path / "serve-page.png"
            assert browser.save_screenshot(str(shot)) and shot.stat().st_size > 10_000
    finally:
        worker.stop()
