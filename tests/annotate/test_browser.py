"""The annotation app in a real browser: Debian's headless Chromium driven by Playwright, against uvicorn.

Two annotators work through a study, one with clicks and one with keyboard shortcuts; the admin dashboard's
figures are checked against values worked by hand; screenshots are saved (and, with
PSYCHOCOUNSEL_UPDATE_SCREENSHOTS=1, copied to docs/img/ for the docs: a plain test run never edits the repo).
Chromium comes from the Debian packages ``chromium`` and ``chromium-driver`` (``.ci/run`` installs them);
Playwright never downloads a browser here. A missing Chromium FAILS these tests: they are not optional.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import threading
import time
from pathlib import Path

import pytest

from psychocounsel import PRINCIPLE_KEYS
from psychocounsel.annotate.app import create_app
from psychocounsel.annotate.sources import study_spec
from psychocounsel.annotate.store import AnnotationStore

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
ADMIN = "browser-test-admin-token-0123456789"
DOCS_IMG = Path(__file__).resolve().parents[2] / "docs" / "img"


def _to_docs(shot: Path, name: str) -> None:
    if os.environ.get("PSYCHOCOUNSEL_UPDATE_SCREENSHOTS") == "1":
        DOCS_IMG.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(shot, DOCS_IMG / name)
XSS = '<img src=x onerror="alert(1)"><script>alert(2)</script>'

# Ten realistic items (the dashboard shows no figure from fewer: dashboard.MIN_ITEMS); the chosen response
# always explores, the rejected one rushes to advice.
ITEMS = [
    ("I don't really know how to start. Everything is just... grey? I get up, I go to work, I come home, I sit "
     "on the couch and scroll until it's late enough to go to bed. Nothing bad has happened, that's the thing.",
     "It sounds like life has lost its colour, even though nothing on paper is wrong, and that can feel "
     "confusing and lonely. I'm glad you came. When did you first notice things turning grey?",
     "You should try exercising and getting more sleep. Maybe put your phone away at night."),
    ("My GP sent me. She says I've been 'low' for a while. I'm seventy-three, I buried my wife two years ago and "
     "my knees are shot. Of course I'm low. I don't know what talking will do. I'm not one for talking.",
     "You've carried a great deal: losing your wife, your health, and now being sent here when talking isn't "
     "your way. We can go at your pace. What was it like, giving up the bowls club?",
     "Grief is normal at your age. Most people feel better after a year or so."),
    ("Since we moved here I have not felt like myself. Everyone is fine, and I am at home all day in this cold "
     "house. I cry when they leave in the morning and then I wipe my face before they come back.",
     "You left your sisters, your church and your shop, and you are holding this sadness alone so your family "
     "won't see it. That sounds exhausting. What do you miss most from home?",
     "Have you thought about getting a job? That would get you out of the house."),
    ("I used to paint. I haven't touched a brush in eight months. When I think about it I feel nothing. Same "
     "with music, same with food. I don't feel sad exactly. I just don't feel.",
     "Losing the pull of the things you loved, painting, music, even food, can be frightening in its own way. "
     "You're asking whether this is depression; let's look at it together. When did the numbness begin?",
     "That's probably just burnout. Take a holiday and you'll be back to painting in no time."),
    ("My daughter stopped speaking to me after the wedding. I said something I shouldn't have. It's been a year.",
     "A year of silence from your daughter, and you carry the weight of what was said. That sounds painful. "
     "What do you wish she knew about how you feel now?",
     "Just send her a message and apologise. Time heals everything."),
    ("I check the locks six, seven times before bed. I know they're locked. I still can't stop.",
     "Knowing the door is locked and still feeling pulled back to it sounds exhausting. What happens in you "
     "if you try to walk away after the first check?",
     "Lots of people double-check things. Try to just ignore the urge."),
    ("Work keeps piling on and my manager says I'm the only one who can do it. I haven't had a weekend in months.",
     "Being the one everyone relies on can feel like a compliment and a trap at once. What has giving up your "
     "weekends cost you?",
     "You need to set boundaries. Tell your manager no."),
    ("Since the accident I don't drive. I take the bus two hours each way rather than get behind the wheel.",
     "Four hours a day on the bus tells me how strong the fear is since the accident. What comes up when you "
     "picture sitting in the driver's seat?",
     "Accidents are rare. Statistically you're safe, so you should start driving again."),
    ("My friends all have kids now. I smile at the parties and then I cry in the car on the way home.",
     "Smiling through the parties and then letting the tears come once you're alone sounds lonely. What are "
     "the tears about, when they come?",
     "Maybe find some new friends who don't have kids."),
    ("I got the promotion and I feel like a fraud. Any day now they'll realise they made a mistake.",
     "Getting the promotion and bracing for it to be taken away at the same time is a hard way to live. When "
     "did you first start feeling you had to prove you belong?",
     "Everyone feels like that. Just fake it till you make it."),
]


def _chromium_or_fail() -> None:
    if not CHROMIUM.exists():
        pytest.fail(f"Chromium not found at {CHROMIUM}: install it with `apt-get install -y chromium "
                    "chromium-driver` (.ci/run does this before the tests). These browser tests are not optional.",
                    pytrace=False)
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        pytest.fail("Playwright for Python is missing: `.venv/bin/pip install playwright` "
                    "(never `playwright install`: the tests use the system Chromium)", pytrace=False)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _write_pairs(path: Path, items, xss: bool = False) -> Path:
    with open(path, "w", encoding="utf-8") as f:
        for q, good, bad in items:
            row = {"question": q + (f" {XSS}" if xss else ""), "chosen": good, "rejected": bad + (f" {XSS}" if xss else ""),
                   "chosen_model": "model-one", "rejected_model": "model-two"}
            for p in PRINCIPLE_KEYS:
                row[f"chosen_{p}_rating"], row[f"rejected_{p}_rating"] = 5, 2
            f.write(json.dumps(row) + "\n")
    return path


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    _chromium_or_fail()
    import uvicorn

    tmp = tmp_path_factory.mktemp("annotate_browser")
    db = tmp / "annotate.sqlite"
    store = AnnotationStore(db)
    _write_pairs(tmp / "test.jsonl", ITEMS)
    cwd = os.getcwd()
    os.chdir(tmp)  # a relative source path, as a user would type it (it shows on the dashboard screenshot)
    try:
        sid = store.create_study(study_spec("test.jsonl", n=len(ITEMS), seed=7, name="pilot study"))
    finally:
        os.chdir(cwd)
    tokens = {name: store.add_annotator(sid, name)[1] for name in ("Dr. Rivera", "Dr. Okafor")}
    xss_sid = store.create_study(study_spec(_write_pairs(tmp / "xss.jsonl", ITEMS[:1], xss=True), n=1, name="xss"))
    tokens["xss"] = store.add_annotator(xss_sid, f"Eve {XSS}")[1]
    port = _free_port()
    srv = uvicorn.Server(uvicorn.Config(create_app(db, ADMIN, n_boot=500), host="127.0.0.1", port=port,
                                        log_level="warning"))
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not srv.started:
        assert time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.02)
    yield {"url": f"http://127.0.0.1:{port}", "tokens": tokens, "sid": sid, "xss_sid": xss_sid, "tmp": tmp}
    srv.should_exit = True
    thread.join(timeout=10)


@pytest.fixture(scope="module")
def browser(server):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield b
        b.close()


# Planted answers in canonical terms: F = the chosen response, S = the rejected one, T = tie.
PLAN = {"Dr. Rivera": "FFSTFFFSFF", "Dr. Okafor": "FSSTFFSSFT"}


def _item_index(page) -> int:
    speech = page.inner_text("#speech")
    return next(i for i, (q, _, _) in enumerate(ITEMS) if speech.startswith(q[:40]))


def _letter(page, planned: str) -> str:
    good = "A" if page.inner_text("#response-a").startswith(ITEMS[_item_index(page)][1][:30]) else "B"
    return {"F": good, "S": "B" if good == "A" else "A", "T": "tie"}[planned]


def test_two_annotators_then_dashboard(server, browser, tmp_path):
    url, tokens = server["url"], server["tokens"]
    dialogs: list[str] = []

    # Dr. Rivera: mouse only. Rates two principles on the first item, stops halfway, resumes from the link.
    ctx = browser.new_context(viewport={"width": 1200, "height": 900})
    page = ctx.new_page()
    page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    page.goto(f"{url}/a/{tokens['Dr. Rivera']}")
    assert page.url == f"{url}/annotate"  # the token left the address bar
    assert "0 of 10 answered" in page.inner_text("#progress")
    page.click("#continue")
    for n in range(10):
        if n == 2:  # stop for now, then come back with the private link
            page.click("#stop")
            assert "Every answer you gave is stored" in page.inner_text("#stopped")
            page.goto(f"{url}/a/{tokens['Dr. Rivera']}")
            assert "2 of 10 answered" in page.inner_text("#progress")
            page.click("#continue")
        choice = _letter(page, PLAN["Dr. Rivera"][_item_index(page)])
        page.click(f"label:has(#choice-{choice})")
        if n == 0:
            page.click("details.ratings summary")
            good = _letter(page, "F")
            weak = "B" if good == "A" else "A"
            page.select_option(f"#rating-{good}-empathy", "4")
            page.select_option(f"#rating-{weak}-empathy", "2")
            page.fill("#comment", f"{good} explores; {weak} jumps to advice.")
            shot = tmp_path / "item.png"
            page.screenshot(path=str(shot), full_page=True)
            _check_png(shot)
            _to_docs(shot, "annotate_item.png")
        with page.expect_navigation():
            page.click("#save")
    assert page.url == f"{url}/annotate" and "All 10 items are answered" in page.inner_text("#all-done")
    ctx.close()

    # Dr. Okafor: keyboard only (1/2/3 and A/B/T, Enter saves).
    ctx = browser.new_context()
    page = ctx.new_page()
    page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    page.goto(f"{url}/a/{tokens['Dr. Okafor']}")
    page.click("#continue")
    keys = {"A": ["1", "a"], "B": ["2", "b"], "tie": ["3", "t"]}
    for n in range(10):
        choice = _letter(page, PLAN["Dr. Okafor"][_item_index(page)])
        page.keyboard.press(keys[choice][n % 2])
        assert page.is_checked(f"#choice-{choice}")
        with page.expect_navigation():
            page.keyboard.press("Enter")
    assert "10 of 10 answered" in page.inner_text("#progress")
    ctx.close()

    # The admin signs in and reads the dashboard.
    ctx = browser.new_context(viewport={"width": 1200, "height": 900})
    page = ctx.new_page()
    page.goto(f"{url}/admin")
    assert page.url.endswith("/admin/login")
    page.fill("#token", ADMIN)
    with page.expect_navigation():
        page.click("#login")
    page.click("text=pilot study")
    assert [c.strip() for c in page.locator("#progress-table td.done").all_inner_texts()] == ["10 / 10", "10 / 10"]
    # Hand-computed (canonical answers FFSTFFFSFF vs FSSTFFSSFT): items 2, 7 and 10 differ, 7 of 10 agree = 70.0%;
    # kappa: Rivera F 7, S 2, T 1; Okafor F 4, S 4, T 2; p_e = (7*4 + 2*4 + 1*2) / 100 = 0.38,
    # (0.7 - 0.38) / 0.62 = 0.516; alpha: F 11, S 6, T 3 of 20 values, 1 - 19 * 6 / (400 - 166) = 0.513.
    row = page.locator("#agreement tr.between")
    assert row.locator("td.n").inner_text() == "7 / 10"
    assert row.locator("td.percent").inner_text().startswith("70.0% [")  # each figure with its interval
    assert row.locator("td.kappa").inner_text().startswith("0.516 [")
    assert row.locator("td.alpha").inner_text().startswith("0.513 [")
    # Versus the dataset label (always the chosen response): Rivera 7 of 10, Okafor 4 of 10.
    label_rows = page.locator("#agreement tr.vs-label")
    assert label_rows.nth(0).locator("td.percent").inner_text().startswith("70.0%")
    assert label_rows.nth(1).locator("td.percent").inner_text().startswith("40.0%")
    assert page.inner_text("#alpha-all") == "0.513"
    assert "n = 10" in page.inner_text("#alpha-all-row")
    # Only Rivera rated empathy, on one item: nothing to pair among annotators, and with the judge one item
    # is too few for a figure; the page says so instead of showing one.
    empathy = page.locator("#principles tr[data-principle=empathy]")
    assert empathy.locator("td.among").inner_text() == "-"
    assert empathy.locator("td.judge").inner_text() == "not enough ratings (n=1; at least 10)"
    shot = tmp_path / "dashboard.png"
    page.screenshot(path=str(shot), full_page=True)
    _check_png(shot)
    _to_docs(shot, "annotate_dashboard.png")
    # The export link serves a CSV with both annotators' answers.
    with page.expect_download() as dl:
        page.click("#export-csv")
    text = Path(dl.value.path()).read_text(encoding="utf-8")
    assert text.count("\n") == 1 + 20 and " explores; " in text
    ctx.close()
    assert dialogs == []


def test_markup_in_data_is_shown_as_text(server, browser):
    """Speech, response and annotator name carry script payloads: nothing runs, the text shows as typed."""
    url = server["url"]
    ctx = browser.new_context()
    page = ctx.new_page()
    dialogs: list[str] = []
    page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    page.goto(f"{url}/a/{server['tokens']['xss']}")
    page.click("#continue")
    assert XSS in page.inner_text("#speech")
    assert XSS in page.inner_text("#response-a") + page.inner_text("#response-b")
    assert page.locator("main img").count() == 0 and page.locator("main script").count() == 0
    page.keyboard.press("t")
    page.fill("#comment", XSS)
    with page.expect_navigation():
        page.click("#save")
    ctx.close()
    ctx = browser.new_context()
    page = ctx.new_page()
    page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    page.goto(f"{url}/admin/login")
    page.fill("#token", ADMIN)
    with page.expect_navigation():
        page.click("#login")
    page.goto(f"{url}/admin/studies/{server['xss_sid']}")
    assert f"Eve {XSS}" in page.inner_text("#progress-table")
    ctx.close()
    assert dialogs == []


def _check_png(path: Path) -> None:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000
