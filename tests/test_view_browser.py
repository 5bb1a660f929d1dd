"""``ttscale view`` in a real headless browser (Debian's chromium + chromium-driver, via selenium):
the command serves pages that render the problems table, the beam-search tree (kept/pruned counts
checked against the results file), the sweep curves; the live view picks up an appended line; the
exported page works from a file:// URL. Skipped, with the reason, when chromium is absent."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from view_browser import chromium_paths, make_driver, served, wait_for

pytestmark = pytest.mark.browser

ROOT = Path(__file__).resolve().parents[1]
BEAM = ROOT / "tests" / "fixtures" / "beam_search.jsonl"
ADAPTIVE = ROOT / "tests" / "fixtures" / "adaptive.jsonl"
TABLE = ROOT / "docs" / "lab" / "embedded-gsm-table.jsonl"


@pytest.fixture(scope="module")
def driver():
    chromium_paths()
    d = make_driver()
    yield d
    d.quit()


def css(d, sel):
    from selenium.webdriver.common.by import By

    return d.find_elements(By.CSS_SELECTOR, sel)


def click(d, sel):
    """Click the first match through JS, found and clicked in one step (the page may be redrawing;
    an SVG node may sit under another element's box)."""
    js = ("const e = document.querySelector(arguments[0]); if (!e) return false;"
          "e.dispatchEvent(new MouseEvent('click', {bubbles: true})); return true;")
    until(lambda: d.execute_script(js, sel), what=f"{sel} to click")


def until(fn, timeout=15.0, what="condition"):
    from selenium.common.exceptions import StaleElementReferenceException

    deadline = time.monotonic() + timeout
    while True:
        try:
            v = fn()
        except StaleElementReferenceException:  # the page redrew under us: look again
            v = None
        if v:
            return v
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not met after {timeout}s")
        time.sleep(0.1)


class Cli:
    """``ttscale view ARGS --port 0`` as a subprocess; the URL it prints."""

    def __init__(self, *args: str) -> None:
        env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
        self.p = subprocess.Popen([sys.executable, "-m", "ttscale.cli", "view", *args, "--port", "0"],
                                  stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, cwd=ROOT)
        line = self.p.stdout.readline()
        m = re.search(r"http://127\.0\.0\.1:\d+/", line)
        if not m:
            self.p.kill()
            raise AssertionError(f"no URL printed: {line!r} {self.p.stdout.read()}")
        self.url = m.group(0)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.p.terminate()
        self.p.wait(10)


def check_tree(d, rec):
    """The tree of one beam-search problem: fold/unfold, statuses and per-round counts as recorded."""
    rounds = rec["extra"]["rounds"]
    n_nodes = len(rec["extra"]["tree"])
    wait_for(d, "#tree-host g.node", count=n_nodes)
    click(d, "#tree-collapse")
    roots = sum(1 for n in rec["extra"]["tree"] if n["parent"] is None)
    until(lambda: len(css(d, "#tree-host g.node")) == roots, what="collapsed to the roots")
    click(d, "#tree-expand")
    until(lambda: len(css(d, "#tree-host g.node")) == n_nodes, what="expanded")
    seen = Counter(g.get_attribute("data-status") for g in css(d, "#tree-host g.node"))
    kept = sum(len(r["kept"]) for r in rounds)
    finished = sum(len(r["finished"]) for r in rounds)
    assert seen == Counter({"kept": kept, "finished": finished, "pruned": n_nodes - kept - finished})
    for r in rounds:
        cells = {td.get_attribute("class"): int(td.text)
                 for td in css(d, f'#rounds tr[data-round="{r["round"]}"] td[class]')}
        assert cells == {"generated": len(r["generated"]), "kept": len(r["kept"]), "finished": len(r["finished"]),
                         "pruned": len(r["generated"]) - len(r["kept"]) - len(r["finished"])}
    # click the chosen leaf: its step text and the whole path show up
    click(d, f'#tree-host g.node[data-id="{rec["chosen"]}"]')
    chosen = next(c for c in rec["candidates"] if c["id"] == rec["chosen"])
    until(lambda: css(d, "#node-detail pre.node-step") and
          css(d, "#node-detail pre.node-step")[0].text == chosen["steps"][-1], what="node text shown")


def test_view_beam_results_file_table_and_tree(driver):
    recs = [json.loads(x) for x in BEAM.read_text().splitlines()]
    with Cli(str(BEAM)) as cli:
        driver.get(cli.url)  # one run: the page opens it
        rows = wait_for(driver, "#problems tbody tr", count=3)
        assert [r.find_element("css selector", "td:nth-child(2)").text for r in rows] == ["add-1", "mul-2", "sub-3"]
        assert "66.7%" in css(driver, "#summary")[0].text
        click(driver, "th[data-sort=generated_tokens]")
        wait_for(driver, "th.sorted[data-sort=generated_tokens]:not(.desc)")
        click(driver, "th[data-sort=generated_tokens]")  # again: descending
        wait_for(driver, "th.sorted.desc[data-sort=generated_tokens]")
        until(lambda: [r.text.split()[1] for r in css(driver, "#problems tbody tr")] == ["add-1", "sub-3", "mul-2"],
              what="sorted by tokens, descending")
        click(driver, '#problems a[href$="/p/2"]')
        wait_for(driver, "#votes tr.chosen")
        check_tree(driver, recs[2])
        assert css(driver, "#answer")[0].text == "4"
        click(driver, "#prevp")
        until(lambda: css(driver, "h1") and css(driver, "h1")[0].text.startswith("mul-2"), what="previous problem")
        check_tree(driver, recs[1])


def test_view_sweep_table_curves_and_runs(driver):
    rows = [json.loads(x) for x in TABLE.read_text().splitlines()]
    with Cli(str(TABLE)) as cli:
        driver.get(cli.url)
        wait_for(driver, "#runs tr.click", count=13)
        click(driver, 'a[href="#/sweep/s1"]')
        panels = wait_for(driver, "#panels svg", count=6)
        assert "all problems" in panels[0].text
        wait_for(driver, "#policy tr")
        pts = css(driver, "#panels svg circle.pt")
        assert pts
        title = pts[-1].find_element("css selector", "title").get_attribute("textContent")
        config = title.split("\n")[0]
        driver.execute_script("arguments[0].dispatchEvent(new MouseEvent('click', {bubbles: true}))", pts[-1])
        n = sum(r["config"] == config for r in rows)
        got = wait_for(driver, "#problems tbody tr", count=min(n, 50))
        assert len(got) == n and css(driver, "h1")[0].text.startswith(config)


def test_live_view_picks_up_an_appended_line(driver, tmp_path):
    lines = BEAM.read_text().splitlines(keepends=True)
    f = tmp_path / "live.jsonl"
    f.write_text("".join(lines[:2]))
    with served([f]) as url:
        driver.get(url)
        wait_for(driver, "#problems tbody tr", count=2)
        time.sleep(0.5)
        with f.open("a") as fh:
            fh.write(lines[2])
        wait_for(driver, "#problems tbody tr", count=3, timeout=20)
        assert css(driver, "#summary .card b")[2].text == "3"
        assert "updated" in css(driver, "#live")[0].text


def test_adaptive_trace_and_exported_page(driver, tmp_path):
    from ttscale.view.catalog import Catalog
    from ttscale.view.command import write_export

    out = write_export(Catalog([BEAM, ADAPTIVE]), tmp_path / "view.html")
    driver.get(out.as_uri())
    wait_for(driver, "#runs tr.click", count=2)
    driver.get(out.as_uri() + "#/run/r2/p/0")
    wait_for(driver, "#trace-sec svg line.stop")
    assert css(driver, "#stop-at")[0].text == "7"
    driver.get(out.as_uri() + "#/run/r1?status=wrong")
    rows = wait_for(driver, "#problems tbody tr")
    assert len(rows) == 1 and "sub-3" in rows[0].text
    driver.get(out.as_uri() + "#/run/r1/p/0")
    check_tree(driver, json.loads(BEAM.read_text().splitlines()[0]))


def test_live_view_follows_a_run_as_problems_finish(driver, tmp_path):
    import asyncio
    import threading

    from ttscale.core.types import Problem
    from ttscale.engines.scripted import ScriptedEngine
    from ttscale.lab.runner import Runner
    from ttscale.verifiers.math_answers import MathAnswers

    f = tmp_path / "run.jsonl"
    f.write_text("")  # `ttscale run` has opened its file, nothing finished yet
    problems = [Problem(id=f"q{i}", prompt="q", answer=str(i)) for i in range(4)]
    eng = ScriptedEngine({f"q{i}": [f"\\boxed{{{i}}}"] for i in range(4)}, delay_s=1.5)
    runner = Runner(engine=eng, strategy="self_consistency", params={"n": 2}, answers=MathAnswers(),
                    grader=MathAnswers(), progress=False, concurrency=1)
    with served([f]) as url:
        driver.get(url)
        until(lambda: "No finished problem yet" in css(driver, "#app")[0].text, what="empty run shown")
        t = threading.Thread(target=lambda: asyncio.run(runner.run(problems, f)))
        t.start()
        seen = set()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            n = driver.execute_script("return document.querySelectorAll('#problems tbody tr').length")
            seen.add(n)
            if n == 4:
                break
            time.sleep(0.2)
        t.join(30)
    assert 4 in seen and seen & {1, 2, 3}, seen  # it grew while the run was writing
