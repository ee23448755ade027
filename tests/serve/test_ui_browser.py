"""The rating page in a real headless Chromium against a real server (UI mode, no model), checked in SQLite.

Needs the Debian package chromium (/usr/bin/chromium) and the Python package playwright; no
`playwright install` (the system browser is used).
"""

from __future__ import annotations

import os
import re
from contextlib import contextmanager
import sqlite3
from pathlib import Path

import pytest

from alignlab.feedback.store import open_store
from alignlab.serve.api import create_app
from alignlab.serve.server import background

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]

# Without the browser the tests skip on a developer's machine, but under CI=true they fail: CI must have it.
MISSING = not Path(CHROMIUM).exists()
pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(MISSING and os.environ.get("CI") != "true", reason=f"no {CHROMIUM}: apt-get install -y chromium"),
]


@pytest.fixture(autouse=True)
def browser_present():
    if MISSING:
        pytest.fail(f"CI=true but {CHROMIUM} is missing: apt-get install -y chromium")


@pytest.fixture
def db(tmp_path):
    path = tmp_path / "feedback.db"
    with open_store(path) as s:
        p1, p2, p3 = s.add_prompts(["Is water wet?", "What is 2+2?", "Capital of France?"])
        s.add_responses([
            {"prompt_id": p1, "text": "Yes, shockingly.", "run": "snark-run"},  # 1
            {"prompt_id": p1, "text": "Water makes things wet.", "model": "tiny"},  # 2
            {"prompt_id": p2, "text": "4, obviously.", "round": 1},           # 3
            {"prompt_id": p2, "text": "Five.", "round": 1},                   # 4
            {"prompt_id": p3, "text": "Paris, as if you didn't know.", "round": 1},  # 5
        ])
    return path


def _rows(db):
    with sqlite3.connect(db) as conn:
        return [tuple(r) for r in conn.execute(
            "SELECT id, kind, response_id, other_response_id, value, rewrite_text, rater, undone_at IS NOT NULL"
            " FROM judgements ORDER BY id")]


@contextmanager
def _page(db):
    """A headless Chromium page on the rating UI over ``db`` (a real server on loopback); yields (page, url)."""
    from playwright.sync_api import expect, sync_playwright  # a test dependency (pip install -e ".[test]")

    with background(create_app(None, db)) as url, sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        try:
            page = browser.new_page()
            expect.set_options(timeout=10_000)
            page.goto(url + "/")
            yield page, url
        finally:
            browser.close()


def test_rate_in_the_browser(db, tmp_path):
    from playwright.sync_api import expect

    with _page(db) as (page, url):
        status, response = page.locator("#status"), page.locator("#response")
        expect(status).to_contain_text("enter your name")

        page.fill("#rater", "ann")
        page.press("#rater", "Enter")
        expect(response).to_have_text("Yes, shockingly.")
        expect(page.locator("#left")).to_have_text("5 left")
        expect(status).to_have_text("rating as ann")  # the name prompt goes once a name is in
        expect(page.locator("#up")).to_contain_text("good")  # text labels: no emoji font needed

        page.click("#up")                                              # 👍 on 1
        expect(status).to_have_text(re.compile(r"^saved #1 \(thumb 1\)"))
        expect(response).to_have_text("Water makes things wet.")
        page.keyboard.press("d")                                       # 👎 on 2, by key
        expect(status).to_have_text(re.compile(r"^saved #2 "))
        expect(response).to_have_text("4, obviously.")
        page.click("button.score[data-score='4']")                    # score 4 on 3
        expect(status).to_have_text(re.compile(r"^saved #3 \(score 4\)"))
        expect(response).to_have_text("Five.")
        page.keyboard.press("r")                                       # rewrite 4
        expect(page.locator("#rewrite")).to_be_focused()
        page.keyboard.type("Four. Even you knew that.")
        page.keyboard.press("Control+Enter")
        expect(status).to_have_text(re.compile(r"^saved #4 \(rewrite\)"))
        expect(response).to_have_text("Paris, as if you didn't know.")
        page.click("#undo")                                            # undo the rewrite: 4 comes back first
        expect(status).to_have_text(re.compile(r"^undid #4 "))
        expect(response).to_have_text("Five.")
        expect(page.locator("#rewrite")).to_have_value("Four. Even you knew that.")  # its text back in the box
        page.keyboard.press("5")                                       # a typed rewrite is not thrown away
        expect(status).to_contain_text("unsaved rewrite")
        page.fill("#rewrite", "")
        page.evaluate("document.activeElement.blur()")
        page.keyboard.press("5")                                       # score it instead
        expect(status).to_have_text(re.compile(r"^saved #5 \(score 5\)"))
        expect(response).to_have_text("Paris, as if you didn't know.")
        page.keyboard.press("s")                                       # skip 5
        expect(status).to_contain_text("skipped")
        expect(page.locator("#empty")).to_be_visible()

        page.select_option("#mode", "pair")                            # A / B
        expect(page.locator("#a")).to_have_text("Water makes things wet.")  # mixed order by id parity: A is #2
        expect(page.locator("#meta")).not_to_contain_text("#2")       # no response ids: they tell the sources apart
        expect(page.locator("#item")).not_to_contain_text("snark-run")  # blind until the pick
        page.click("#pick-a")
        expect(status).to_have_text(re.compile(r"^saved #6 \(pick a\) · A was base \(tiny\), B was snark-run"))
        expect(page.locator("#a")).to_have_text("Five.")              # A is #4
        page.keyboard.press("t")
        expect(status).to_have_text(re.compile(r"^saved #7 \(pick tie\)"))
        expect(page.locator("#empty")).to_be_visible()

        page.reload()                                                  # the rater name survives (localStorage)
        expect(page.locator("#rater")).to_have_value("ann")
        expect(page.locator("#mode")).to_have_value("pair")

        page.click("#tab-rounds")
        expect(page.locator("#rounds-chart")).to_be_visible()
        assert page.locator("#rounds-chart circle").count() == 2       # rounds 0 and 1 both have thumbs/scores
        expect(page.locator("#rounds-table tbody tr")).to_have_count(2)
        shot = tmp_path / "rate.png"
        page.screenshot(path=str(shot), full_page=True)
        assert shot.stat().st_size > 5_000

    assert _rows(db) == [
        (1, "thumb", 1, None, 1, None, "ann", 0),
        (2, "thumb", 2, None, -1, None, "ann", 0),
        (3, "score", 3, None, 4, None, "ann", 0),
        (4, "rewrite", 4, None, None, "Four. Even you knew that.", "ann", 1),
        (5, "score", 4, None, 5, None, "ann", 0),
        (6, "pick", 2, 1, "a", None, "ann", 0),
        (7, "pick", 4, 3, "tie", None, "ann", 0),
    ]


def test_two_quick_keys_judge_two_answers(db):
    """Keys pressed before the page has moved on apply to the answer on screen when their turn comes: "u" then "d"
    at once is a thumb up on the first answer and a thumb down on the second (both went to the first before)."""
    from playwright.sync_api import expect

    with _page(db) as (page, url):
        page.fill("#rater", "ann")
        page.press("#rater", "Enter")
        expect(page.locator("#response")).to_have_text("Yes, shockingly.")
        page.evaluate("document.activeElement.blur()")  # keys go to the page, not the name field
        page.keyboard.press("u")
        page.keyboard.press("d")
        expect(page.locator("#status")).to_have_text(re.compile(r"^saved #2 \(thumb -1\)"))
        page.fill("#rater", "bo")  # `alignlab ui --round 1` (what the loop points to): that round's answers only
        page.goto(url + "/?round=1")
        expect(page.locator("#response")).to_have_text("4, obviously.")
        expect(page.locator("#left")).to_have_text("3 left")
    assert [(r[1], r[2], r[4]) for r in _rows(db)] == [("thumb", 1, 1), ("thumb", 2, -1)]


def test_a_double_click_judges_the_answer_on_screen_once(db):
    """A second click of the same button lands after the page moved on: it must not judge the next answer, which
    was never seen (nor, in A / B mode, reveal the next pair's sources). A name typed and entered is the name used
    even when a key follows at once."""
    from playwright.sync_api import expect

    with _page(db) as (page, url):
        status = page.locator("#status")
        page.fill("#rater", "gina")
        page.press("#rater", "Enter")
        page.keyboard.press("u")                                       # a rating key, not a letter of the name
        expect(status).to_have_text(re.compile(r"^saved #1 \(thumb 1\)"))
        expect(page.locator("#rater")).to_have_value("gina")
        expect(page.locator("#response")).to_have_text("Water makes things wet.")
        page.dblclick("#down")
        expect(page.locator("#response")).to_have_text("4, obviously.")
        page.fill("#rewrite", "Four.")
        page.dblclick("#save-rewrite")
        expect(page.locator("#response")).to_have_text("Five.")
        page.fill("#rewrite", "Five is wrong: four.")                 # typed, then a thumb: the rewrite is kept
        page.click("#down")
        expect(status).to_contain_text("unsaved rewrite")
        expect(page.locator("#rewrite")).to_have_value("Five is wrong: four.")
        page.click("#undo")                                            # nor undo, nor another mode, throws it away
        expect(status).to_contain_text("unsaved rewrite")
        page.select_option("#mode", "pair")
        expect(page.locator("#mode")).to_have_value("single")
        expect(page.locator("#rewrite")).to_have_value("Five is wrong: four.")
        expect(page.locator("#response")).to_have_text("Five.")
        page.fill("#rater", "")                                        # no name would hide the answer: kept
        page.press("#rater", "Enter")
        expect(page.locator("#rater")).to_have_value("gina")
        expect(page.locator("#response")).to_have_text("Five.")
        page.fill("#rater", "gil")                                     # another name: the rewrite is saved as gil's
        page.press("#rater", "Enter")
        expect(status).to_contain_text("rating as gil; the rewrite in the box is not saved yet")
        page.click("#save-rewrite")
        expect(status).to_have_text(re.compile(r"^saved #4 \(rewrite\)"))
        page.fill("#rater", "gina")
        page.press("#rater", "Enter")
        page.select_option("#mode", "pair")
        expect(page.locator("#a")).to_have_text("Water makes things wet.")
        page.dblclick("#pick-a")
        expect(page.locator("#a")).to_have_text("Five.")               # the next pair, not judged
        expect(status).not_to_contain_text("Five")
        page.wait_for_timeout(300)
    assert [(r[1], r[2], r[3], r[4], r[5], r[6]) for r in _rows(db)] == [
        ("thumb", 1, None, 1, None, "gina"), ("thumb", 2, None, -1, None, "gina"),
        ("rewrite", 3, None, None, "Four.", "gina"), ("rewrite", 4, None, None, "Five is wrong: four.", "gil"),
        ("pick", 2, 1, "a", None, "gina")]


def test_an_answer_rated_in_another_tab_moves_on_and_a_gone_server_says_not_saved(db):
    from playwright.sync_api import expect

    with _page(db) as (page, url):
        page.fill("#rater", "erin")
        page.press("#rater", "Enter")
        expect(page.locator("#response")).to_have_text("Yes, shockingly.")
        other = page.context.browser.new_page()                        # a second window, same rater and queue
        other.goto(url + "/")
        other.fill("#rater", "erin")
        other.press("#rater", "Enter")
        expect(other.locator("#response")).to_have_text("Yes, shockingly.")
        page.keyboard.press("u")
        expect(page.locator("#status")).to_have_text(re.compile(r"^saved #1 "))
        other.keyboard.press("d")                                      # the same answer, rated already
        expect(other.locator("#status")).to_contain_text("rated already")
        expect(other.locator("#response")).to_have_text("Water makes things wet.")
        page.context.set_offline(True)                                 # the server goes away (a route that aborts
        # /api/judge let one save through under a loaded machine: a fresh-clone run of the parallel suite saved #2)
        page.keyboard.press("u")
        expect(page.locator("#status")).to_have_text("error: not saved: cannot reach the server (is alignlab ui "
                                                     "still running?)")
    assert [(r[1], r[2], r[4]) for r in _rows(db)] == [("thumb", 1, 1)]
