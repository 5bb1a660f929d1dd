"""Helpers for the browser tests of ``ttscale view``: the app served from a thread, and a headless
Chromium driven by selenium (a skip with the reason when either is missing)."""

from __future__ import annotations

import shutil
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import pytest


def chromium_paths() -> tuple[str, str]:
    """The chromium and chromedriver binaries, or a pytest skip saying what is missing."""
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    if not browser or not driver:
        pytest.skip("browser tests need Debian's chromium and chromium-driver "
                    "(apt-get install -y chromium chromium-driver; scripts/test installs them)")
    try:
        import selenium  # noqa: F401
    except ImportError:
        pytest.skip("browser tests need selenium (pip install selenium; scripts/test installs it)")
    return browser, driver


def make_driver(width: int = 1400, height: int = 1000):
    browser, driver = chromium_paths()
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = browser
    for a in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
              f"--window-size={width},{height}", "--hide-scrollbars"):
        opts.add_argument(a)
    return webdriver.Chrome(service=Service(driver), options=opts)


@contextmanager
def served(paths: Sequence[str | Path]) -> Iterator[str]:
    """``ttscale view PATHS`` on a free loopback port in a thread; yields its URL."""
    import uvicorn

    from ttscale.view.app import create_app
    from ttscale.view.catalog import Catalog
    from ttscale.view.command import bind

    sock = bind(0)
    server = uvicorn.Server(uvicorn.Config(create_app(Catalog(paths)), log_level="warning"))
    t = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    t.start()
    deadline = time.monotonic() + 20
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}/"
    finally:
        server.should_exit = True
        t.join(10)
        sock.close()


def wait_for(driver, css: str, timeout: float = 15.0, count: int = 1):
    """The elements matching ``css`` once at least ``count`` exist (a clear failure otherwise)."""
    from selenium.webdriver.common.by import By

    deadline = time.monotonic() + timeout
    while True:
        found = driver.find_elements(By.CSS_SELECTOR, css)
        if len(found) >= count:
            return found
        if time.monotonic() > deadline:
            raise AssertionError(f"{css!r}: {len(found)} element(s) after {timeout}s, wanted {count}; page: "
                                 + driver.find_element(By.TAG_NAME, "body").text[:500])
        time.sleep(0.1)
