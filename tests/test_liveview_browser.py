"""The live view in a real browser: headless Chromium (selenium) against ``gunicorn -k gevent``.

The page is loaded while a bounded load of fan-out requests runs; the assertions read the
rendered DOM.  Set ``REQCTX_LIVE_VIEW_SCREENSHOT=path.png`` to keep the screenshot (the
README's picture is made that way).
"""

from __future__ import annotations

import os
import re
import shutil
import threading

import pytest
from servers import run_load
from waiting import wait_until

webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed (test extra)")
from selenium.webdriver.common.by import By  # noqa: E402

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
LEAK_AFTER = 0.3
pytestmark = [
    pytest.mark.skipif(
        CHROMIUM is None or CHROMEDRIVER is None,
        reason="Debian packages chromium and chromium-driver not installed",
    ),
    pytest.mark.gunicorn(
        app="liveview_app:app", env={"LIVE_VIEW_LEAK_AFTER": str(LEAK_AFTER)}, worker_connections=500
    ),
]

FANOUT_CHILDREN = 6
SECRET = "Bearer s3cr3t-browser"
APP_FILE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "liveview_app.py")


def _flagged(server, request_id: str) -> bool:
    """The live view's JSON flags ``request_id``'s context as a probable leak."""
    live = server.get_json("/_reqctx/json")["live"]
    return any(t["request_id"] == request_id and t["probable_leak"] for t in live)


def suspended_site_line() -> int:
    with open(APP_FILE) as f:
        return next(n for n, line in enumerate(f, 1) if "SUSPENDED-GREENLET-SITE" in line)


def age_ms(text: str) -> float:
    """Milliseconds of an age the page shows ("412 µs", "12.3 ms", "1.25 s")."""
    match = re.fullmatch(r"([\d.]+) (µs|ms|s)", text.strip())
    assert match, text
    value, unit = float(match.group(1)), match.group(2)
    return value * {"µs": 0.001, "ms": 1.0, "s": 1000.0}[unit]


@pytest.fixture(scope="module")
def browser():
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"):
        options.add_argument(arg)
    options.add_argument("--window-size=1100,1000")
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()


def test_the_page_shows_a_suspended_greenlet_and_a_fanout_timeline(server, browser, tmp_path):
    status, _headers, _body = server.request("/suspend", {"X-Request-ID": "browser-suspended"})
    assert status == 200
    load_report: dict = {}
    load = threading.Thread(
        target=lambda: load_report.update(
            run_load(server, path="/fanout?children=4&max_ms=5", requests=600, concurrency=30, timeout=60)
        )
    )
    load.start()
    try:
        status, _headers, _body = server.request(
            f"/fanout?children={FANOUT_CHILDREN}", {"X-Request-ID": "browser-fanout", "Authorization": SECRET}
        )
        assert status == 200
        wait_until(lambda: _flagged(server, "browser-suspended"), interval=0.05)  # older than the threshold
        browser.get(f"{server.base}/_reqctx/?last=2000")

        context = browser.find_element(By.CSS_SELECTOR, 'div.context[data-request-id="browser-suspended"]')
        assert context.get_attribute("data-probable-leak") == "true"
        assert "probable leak" in context.text
        [unit] = context.find_elements(By.CSS_SELECTOR, 'tr.unit[data-kind="greenlet"]')
        site = unit.find_element(By.CSS_SELECTOR, "td.site")
        assert site.text.startswith(f"tests/liveview_app.py:{suspended_site_line()}")
        assert site.get_attribute("title") == f"{APP_FILE}:{suspended_site_line()}"
        assert "wait_for_release" in unit.text
        assert age_ms(unit.find_element(By.CSS_SELECTOR, "td.age").text) >= LEAK_AFTER * 1000

        request = browser.find_element(By.CSS_SELECTOR, 'div.request[data-request-id="browser-fanout"]')
        lanes = request.find_elements(By.CSS_SELECTOR, "svg.timeline g.lane")
        kinds = [lane.get_attribute("data-kind") for lane in lanes]
        assert kinds == ["request"] + ["greenlet"] * FANOUT_CHILDREN
        assert {lane.get_attribute("data-outcome") for lane in lanes} == {"returned"}
        assert "s3cr3t" not in browser.page_source
        assert f"{FANOUT_CHILDREN} child units" in request.text
    finally:
        load.join(90)
    assert load_report.get("error_count") == 0, load_report.get("errors")
    assert load_report["statuses"] == {"200": 600}

    # After the load: a small page for the picture (leaked greenlet + the last few timelines).
    browser.get(f"{server.base}/_reqctx/?last=3")
    path = os.environ.get("REQCTX_LIVE_VIEW_SCREENSHOT") or str(tmp_path / "live-view.png")
    assert browser.save_screenshot(path)
    with open(path, "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"

    # Releasing the greenlet ends the last live context: nothing is left live in the worker.
    assert server.request("/release")[0] == 200
    server.wait_idle()
    data = server.get_json("/_reqctx/json")
    assert data["live"] == []
    assert any(t["request_id"] == "browser-suspended" for t in data["finished"])
