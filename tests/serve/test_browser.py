"""The drafting workspace in a real browser: Debian's headless Chromium driven by Playwright, against uvicorn and
the fake OpenAI-compatible server. A clinician drafts, edits and approves; a crisis message shows the risk panel;
an unsafe draft cannot be approved without the override box; an XSS payload in client text stays text.
Chromium comes from the Debian package ``chromium`` (.ci/run installs it); a missing Chromium FAILS these tests.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from helpers import ADMIN, CALM, CRISIS, config, run_uvicorn
from psychocounsel.serve.app import create_app
from psychocounsel.testing.fakeserver import fake_server

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
XSS = '<img src=x onerror="alert(1)"><script>alert(2)</script>'


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    if not CHROMIUM.exists():
        pytest.fail(f"Chromium not found at {CHROMIUM}: apt-get install -y chromium chromium-driver", pytrace=False)
    with fake_server(latency=0.0) as fake:
        app = create_app(config(tmp_path_factory.mktemp("serve_browser"), fake.base_url), ADMIN)
        token = app.state.store.add_clinician("Dr. Rivera")[1]
        url, stop = run_uvicorn(app)
        yield {"url": url, "token": token, "store": app.state.store}
        stop()


@pytest.fixture(scope="module")
def browser(server):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield b
        b.close()


@pytest.fixture()
def page(server, browser):
    ctx = browser.new_context(viewport={"width": 1100, "height": 900})
    pg = ctx.new_page()
    dialogs: list[str] = []
    pg.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    pg.goto(f"{server['url']}/c/{server['token']}")
    assert pg.url == f"{server['url']}/workspace"  # the token left the address bar
    yield pg
    assert dialogs == []  # no script of anyone's ever ran
    ctx.close()


def draft(page, message: str, n: int = 2) -> None:
    page.fill("#message", message)
    page.fill("#n", str(n))
    page.click("#make-drafts")
    page.wait_for_selector("#ranking-note")


def test_draft_edit_approve(page):
    assert "unranked" in page.inner_text("#unranked")
    draft(page, CALM)
    assert page.query_selector("#risk-panel") is None
    assert page.inner_text("#client-message") == CALM
    first = page.locator("article.draft").first
    box = first.locator("textarea")
    box.fill(box.input_value() + " What would you like to try first?")
    first.locator("button.approve").click()
    page.wait_for_selector(".decided")
    assert "Recorded: edit, 34 characters changed" in page.inner_text(".decided")
    assert "Nothing was sent to the client" in page.inner_text(".decided")


def test_crisis_panel_and_no_silent_approval_of_an_unsafe_draft(page, server):
    draft(page, CRISIS)
    assert page.inner_text("#risk-tier") == "high"
    assert "kill myself" in page.inner_text("#risk-evidence")
    assert "988" in page.inner_text("#risk-resources")
    first = page.locator("article.draft").first
    assert "missing points to help" in first.locator(".flags").inner_text()
    first.locator("button.approve").click()  # without the override box
    page.wait_for_selector("#error")
    assert "needs an explicit override" in page.inner_text("#error")
    assert page.query_selector(".decided") is None
    first = page.locator("article.draft").first
    first.locator(".override input").check()
    first.locator("button.approve").click()
    page.wait_for_selector(".decided")
    assert "safety override" in page.inner_text(".decided")
    assert any(r["action"] == "safety_override" for r in server["store"].audit_rows())


def test_xss_in_client_text_stays_text(page):
    draft(page, f"I feel stuck at work {XSS}", n=1)
    assert XSS in page.inner_text("#client-message")
    assert page.query_selector("#client-message img") is None and page.query_selector("#client-message script") is None
