"""The page at `/` in a real browser: Debian's Chromium, headless, driven by Selenium and chromedriver.

It types a query, waits for the thumbnails, switches rerank on (the score menu shows the service's
default), switches the score, compares CLIP's order with the reranked one side by side, opens a
result's map, and saves a screenshot in the test's tmp folder; a page opened from a URL reranks with
the score and fusion the URL names. Skipped, saying why, only where no Chromium
and chromedriver are installed (`.ci/run` installs them with apt-get).
"""

from __future__ import annotations

import shutil

import pytest

from conftest_index import tiny_clip_dir  # noqa: F401
from conftest_serve import live_server, served_index, start_service  # noqa: F401
from discff_cli.engine.config import DEFAULT_SCORE

QUERY = "a red circle left of a blue square"
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


def test_the_page_searches_switches_score_compares_orders_and_opens_a_map(served_index, browser, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import Select, WebDriverWait

    worker, app = start_service(served_index)
    try:
        with live_server(app) as port:
            browser.get(f"http://127.0.0.1:{port}/")
            wait = WebDriverWait(browser, 120)
            wait.until(lambda b: "16 images" in b.find_element(By.ID, "index-info").text)
            score = Select(browser.find_element(By.ID, "score"))
            assert score.first_selected_option.text == DEFAULT_SCORE  # the service's default, as /info says
            assert Select(browser.find_element(By.ID, "fusion")).first_selected_option.text == "zsum"

            box = browser.find_element(By.ID, "q")
            box.send_keys(QUERY, Keys.ENTER)
            wait.until(lambda b: len(b.find_elements(By.CSS_SELECTOR, "#grid .card")) == 16)
            loaded = "return [...document.querySelectorAll('#grid img')].filter(i => i.complete && i.naturalWidth > 0).length"
            wait.until(lambda b: b.execute_script(loaded) >= 10)  # lazy images below the fold may wait
            assert "fused" not in browser.find_element(By.ID, "grid").text
            assert "16 results" in status(browser)

            depth = browser.find_element(By.ID, "rerank")
            depth.clear()
            depth.send_keys("3")
            browser.find_element(By.ID, "rerank-on").click()  # a switch: searches again, reranked
            wait.until(lambda b: "U-Net passes" in status(b))
            assert f"reranked by {DEFAULT_SCORE}" in status(browser) and "fused with CLIP (zsum, weight 0.5)" in status(browser)
            cards = browser.find_elements(By.CSS_SELECTOR, "#grid .card")
            assert len(cards) == 16 and all("fused" in c.text and DEFAULT_SCORE in c.text for c in cards[:3])
            assert [c.find_element(By.CLASS_NAME, "rank").text for c in cards[:3]] == ["#1", "#2", "#3"]
            moves = [c.find_element(By.CLASS_NAME, "clip-rank").text for c in cards[:3]]
            assert {m.split()[1] for m in moves} == {"#1", "#2", "#3"} and all(m[-1] in "↑↓=" or m[-2] in "↑↓"
                                                                              for m in moves)
            assert "rerank=3" in browser.current_url and f"score={DEFAULT_SCORE}" in browser.current_url

            score.select_by_visible_text("attention")  # switching the score reranks again with it
            wait.until(lambda b: "reranked by attention" in status(b))
            assert "attention" in browser.find_elements(By.CSS_SELECTOR, "#grid .card")[0].text

            browser.find_element(By.CSS_SELECTOR, "input[name=view][value=compare]").click()
            clip_side = browser.find_elements(By.CSS_SELECTOR, "#clip-list li")
            reranked_side = browser.find_elements(By.CSS_SELECTOR, "#reranked-list li")
            assert len(clip_side) == len(reranked_side) == 16
            ranks = [li.find_element(By.CLASS_NAME, "label").text.split()[0] for li in clip_side[:4]]
            assert ranks == ["#1", "#2", "#3", "#4"]
            assert all("CLIP #" in li.text for li in reranked_side[:3]) and "view=compare" in browser.current_url
            assert not browser.find_element(By.ID, "grid").is_displayed()
            assert browser.find_element(By.ID, "compare").is_displayed()

            target = next(li for li in reranked_side[:3] if "link-to-outside" not in li.text)
            assert "click the image for its map" in target.find_element(By.TAG_NAME, "img").get_attribute("title")
            target.find_element(By.TAG_NAME, "img").click()
            wait.until(lambda b: b.execute_script("const i = document.getElementById('explain-image');"
                                                  "return !i.hidden && i.complete && i.naturalWidth > 0;"))
            note = browser.find_element(By.ID, "explain-note").text
            assert "attention" in note and "is the sum of its map" in note
            assert browser.find_element(By.ID, "explain-error").get_attribute("hidden") is not None
            shot = tmp_path / "serve-page.png"
            assert browser.save_screenshot(str(shot)) and shot.stat().st_size > 10_000
    finally:
        worker.stop()


def test_a_page_opened_from_a_url_reranks_with_the_score_it_names(served_index, browser):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select, WebDriverWait

    worker, app = start_service(served_index)
    try:
        with live_server(app) as port:
            browser.get(f"http://127.0.0.1:{port}/?q=a+green+square&rerank=2&score=discffusion&fusion=rrf")
            wait = WebDriverWait(browser, 120)
            wait.until(lambda b: "U-Net passes" in status(b))
            assert "reranked by discffusion" in status(browser) and "(rrf, weight 0.5)" in status(browser)
            assert Select(browser.find_element(By.ID, "score")).first_selected_option.text == "discffusion"
    finally:
        worker.stop()


def status(browser) -> str:
    from selenium.webdriver.common.by import By

    return browser.find_element(By.ID, "status").text
