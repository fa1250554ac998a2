"""Refresh the README's screenshots of `discff serve` from the real page, on the demo index, after reranking:

    python benchmarks/serve_screenshot.py --out docs

Writes a demo gallery (test-split scenes with their caption sidecars), indexes it with the bundled
demo CLIP and diffusion model, starts the real service (model worker, app, uvicorn) and drives
Debian's Chromium with Selenium: search QUERY reranked at --rerank with the service's defaults,
show CLIP's order beside the reranked one (docs/serve-page.png), then open the first reranked
result's map (docs/serve-explain.png). Needs chromium and chromedriver (apt-get install chromium
chromium-driver) and the serve extra.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))  # the browser and live-server helpers the browser test uses


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="docs", help="folder for serve-page.png and serve-explain.png")
    p.add_argument("--images", type=int, default=120, help="demo gallery size")
    p.add_argument("--query", default="a red circle left of a blue square")
    p.add_argument("--rerank", type=int, default=12)
    p.add_argument("--dir", default=None, help="gallery + index folder (default: a temporary one)")
    return p.parse_args(argv)


def build_demo_index(root: Path, images: int) -> Path:
    from discff_cli.cli import app
    from discff_cli.commands.demo import write_gallery

    write_gallery(root / "images", images, seed=0)
    app.main(["index", "build", str(root / "images"), "--index", str(root / ".discff"), "--clip", "demo",
              "--model", "demo"], standalone_mode=False)
    return root / ".discff"


def shoot(index_dir: Path, out: Path, query: str, rerank: int) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import WebDriverWait

    from conftest_serve import live_server
    from discff_cli.engine.config import EngineConfig
    from discff_cli.service.app import ServeSettings, create_app
    from discff_cli.service.queries import TimedSearcher
    from discff_cli.service.worker import ModelWorker

    worker = ModelWorker(lambda: TimedSearcher(str(index_dir), None, None, None, EngineConfig(device="cpu")))
    worker.start()
    browser = open_browser(out / ".chromium-profile")
    try:
        with live_server(create_app(worker, ServeSettings(str(index_dir)))) as port:
            browser.get(f"http://127.0.0.1:{port}/")
            wait = WebDriverWait(browser, 600)
            wait.until(lambda b: "images" in b.find_element(By.ID, "index-info").text)
            browser.find_element(By.ID, "top").clear()
            browser.find_element(By.ID, "top").send_keys(str(rerank))
            browser.find_element(By.ID, "rerank").clear()
            browser.find_element(By.ID, "rerank").send_keys(str(rerank))
            browser.find_element(By.ID, "rerank-on").click()
            browser.find_element(By.ID, "q").send_keys(query, Keys.ENTER)
            wait.until(lambda b: "U-Net passes" in b.find_element(By.ID, "status").text)
            browser.find_element(By.CSS_SELECTOR, "input[name=view][value=compare]").click()
            settle(browser)
            browser.save_screenshot(str(out / "serve-page.png"))
            browser.find_element(By.CSS_SELECTOR, "#reranked-list li img").click()
            wait.until(lambda b: b.execute_script("const i = document.getElementById('explain-image');"
                                                  "return !i.hidden && i.complete && i.naturalWidth > 0;"))
            browser.save_screenshot(str(out / "serve-explain.png"))
    finally:
        browser.quit()
        worker.stop()


def open_browser(profile: Path):
    import shutil

    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    from test_serve_browser import BROWSERS, FLAGS

    binary = next((shutil.which(name) for name in BROWSERS if shutil.which(name)), None)
    if not binary or not shutil.which("chromedriver"):
        raise SystemExit("needs chromium and chromedriver: apt-get install chromium chromium-driver")
    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for flag in [f for f in FLAGS if not f.startswith("--window-size")] + ["--window-size=1280,1000",
                                                                            f"--user-data-dir={profile}"]:
        options.add_argument(flag)
    return webdriver.Chrome(service=Service(shutil.which("chromedriver")), options=options)


def settle(browser) -> None:
    """Wait until every visible thumbnail has loaded."""
    from selenium.webdriver.support.ui import WebDriverWait

    loaded = ("return [...document.querySelectorAll('#compare img')].every(i => i.complete && i.naturalWidth > 0)")
    WebDriverWait(browser, 60).until(lambda b: b.execute_script(loaded))


def main(argv: list[str] | None = None) -> None:
    import shutil

    args = parse_args(argv)
    root = Path(args.dir or tempfile.mkdtemp(prefix="serve-shot-"))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    index_dir = build_demo_index(root, args.images)
    try:
        shoot(index_dir, out, args.query, args.rerank)
    finally:
        shutil.rmtree(out / ".chromium-profile", ignore_errors=True)
    print(f"wrote {out / 'serve-page.png'} and {out / 'serve-explain.png'} (index {index_dir})")


if __name__ == "__main__":
    main()
