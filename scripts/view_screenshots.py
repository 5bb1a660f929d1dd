"""Screenshots of ``ttscale view`` for docs/view.md, taken with headless chromium via selenium.

    PYTHONPATH=src:tests python scripts/view_screenshots.py   # writes docs/view/*.png
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from view_browser import make_driver, served, wait_for  # noqa: E402

OUT = ROOT / "docs" / "view"
BEAM = ROOT / "tests" / "fixtures" / "beam_search.jsonl"
ADAPTIVE = ROOT / "tests" / "fixtures" / "adaptive.jsonl"
TABLE = ROOT / "docs" / "lab" / "embedded-gsm-table.jsonl"


def shot(d, name: str, scroll_to: str | None = None) -> None:
    if scroll_to:
        d.execute_script("document.querySelector(arguments[0]).scrollIntoView()", scroll_to)
        d.execute_script("window.scrollBy(0, -50)")
    time.sleep(0.4)
    d.save_screenshot(str(OUT / name))
    print("wrote", OUT / name)


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    d = make_driver(1360, 900)
    try:
        with served([BEAM, ADAPTIVE, TABLE]) as url:
            d.get(url)
            wait_for(d, "#runs tr.click", count=10)
            shot(d, "home.png")
            d.get(url + "#/run/r1")
            wait_for(d, "#problems tbody tr", count=3)
            shot(d, "run.png")
            d.set_window_size(1360, 1000)
            d.get(url + "#/run/r1/p/0")
            wait_for(d, "#tree-host g.node", count=12)
            d.execute_script("document.querySelector('#tree-host g.node[data-id=\"8\"]')"
                             ".dispatchEvent(new MouseEvent('click', {bubbles: true}))")
            shot(d, "problem.png")
            shot(d, "tree.png", scroll_to="#tree-sec")
            d.get(url + "#/run/r2/p/1")
            wait_for(d, "#trace-sec svg")
            shot(d, "trace.png", scroll_to="#votes")
            d.set_window_size(1360, 1250)
            d.get(url + "#/sweep/s1")
            wait_for(d, "#panels svg", count=6)
            shot(d, "sweep.png")
            shot(d, "policy.png", scroll_to="#policy")
    finally:
        d.quit()


if __name__ == "__main__":
    main()
