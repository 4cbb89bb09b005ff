"""Screenshot of the published web leaderboard (leaderboards/web/index.html) taken by headless Chromium, for
docs/web_leaderboard.png: `python scripts/web_screenshot.py [OUT.png]`. Needs Debian's chromium and chromium-driver
and selenium (as tests/test_web.py); regenerate the page first with
`mddbench web --records leaderboards/records.jsonl --to leaderboards/web`."""
from __future__ import annotations

import io
import shutil
import sys
from pathlib import Path

from PIL import Image
from selenium import webdriver
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service

ROOT = Path(__file__).resolve().parents[1]


def main(out: Path) -> None:
    options = Options()
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--window-size=1280,820", "--hide-scrollbars"):
        options.add_argument(arg)
    chrome = webdriver.Chrome(options=options, service=Service(shutil.which("chromedriver")))
    try:
        chrome.get((ROOT / "leaderboards" / "web" / "index.html").as_uri())
        png = chrome.get_screenshot_as_png()
    finally:
        chrome.quit()
    # a palette of 64 colours: text and table shading stay sharp at a fraction of the bytes
    Image.open(io.BytesIO(png)).convert("RGB").quantize(64).save(out, optimize=True)
    print(f"wrote {out} ({out.stat().st_size // 1024} KB)")


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "docs" / "web_leaderboard.png")
