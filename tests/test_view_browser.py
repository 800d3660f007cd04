"""`srft view` in a real browser (Debian Chromium, headless, driven by playwright): label with the keyboard,
reload, export; XSS payloads render as text and run nothing; no console errors; a screenshot for humans."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from srft.cli import app as cli
from srft.labels import read_labels
from srft.view.app import ViewConfig
from test_view import QWEN, XSS, free_port, real_store, running_server, viewer_data

CHROMIUM = Path("/usr/bin/chromium")
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
        "--disable-component-update", "--disable-sync"]

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def browser():
    if not CHROMIUM.exists():
        message = "Debian chromium not installed (`make test` installs it: apt-get install chromium)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=ARGS)
        yield b
        b.close()


@pytest.fixture()
def page(browser):
    """A fresh page that records console errors, uncaught exceptions and dialogs (and dismisses them)."""
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    pg = context.new_page()
    pg.problems, pg.dialogs = [], []
    pg.on("console", lambda m: pg.problems.append(f"console {m.type}: {m.text}") if m.type == "error" else None)
    pg.on("pageerror", lambda e: pg.problems.append(f"page error: {e}"))
    pg.on("dialog", lambda d: (pg.dialogs.append(d.message), d.dismiss()))
    yield pg
    context.close()


@pytest.fixture()
def served(tmp_path):
    data = viewer_data(tmp_path)
    config = ViewConfig(data=data["data"], annotations=data["annotations"], labels_db=data["db"], port=free_port(),
                        annotator="tester")
    with running_server(config) as url:
        yield url, data


def test_label_with_keyboard_reload_and_export(page, served, tmp_path, artifacts_dir):
    from playwright.sync_api import expect

    url, data = served
    ids = data["ids"]
    page.goto(url + "/")
    expect(page.locator("#trajectories tbody tr")).to_have_count(4)
    page.get_by_role("link", name="django__django-11099").click()
    page.wait_for_url(f"**/t/{ids['plain']}")  # waits for `load`: app.js is listening
    expect(page.locator("article.step")).to_have_count(5)

    # j/k move between steps, 1-4 label the focused one; each label is saved at once
    for keys, step, label in [("j1", 1, "good"), ("j3", 2, "mistake"), ("jj4", 4, "recover")]:
        for key in keys:
            page.keyboard.press(key)
        card = page.locator(f"#step-{step}")
        expect(card).to_have_class(re.compile(rf"\bfocused human-{label}$"))
        expect(card.locator(".status")).to_contain_text("saved")
    page.keyboard.press("k")
    expect(page.locator("#step-3")).to_have_class("step critic-unnecessary focused")  # unlabelled
    page.keyboard.press("k")
    page.keyboard.press("n")  # note on step 2, saved when the field is left
    page.keyboard.type("wrong function <b>f2</b>")
    page.keyboard.press("Escape")
    expect(page.locator("#step-2 .status")).to_contain_text("saved")
    # live agreement: heuristic said good/mistake/unnecessary/recover on steps 1-4
    expect(page.locator('#agreement tr[data-source="heuristic"] .here')).to_have_text(
        "3 steps · acc 1.00 · κ 1.00 · F1 masked 1.00")
    expect(page.locator("#labelled")).to_have_text("3")

    page.reload()
    for step, label in [(1, "good"), (2, "mistake"), (4, "recover")]:
        expect(page.locator(f"#step-{step}")).to_have_attribute("data-label", label)
        expect(page.locator(f'#step-{step} button.lab[data-label="{label}"]')).to_have_attribute("aria-pressed", "true")
    expect(page.locator("#step-3")).to_have_attribute("data-label", "")
    expect(page.locator("#step-2 textarea.note")).to_have_value("wrong function <b>f2</b>")
    page.locator("#step-3 details.obs summary").click()  # the long output opens on demand
    expect(page.locator("#step-3 details.obs")).to_have_attribute("open", "")
    page.screenshot(path=str(artifacts_dir / "view_trajectory.png"), full_page=True)
    assert page.problems == [] and page.dialogs == []

    out = tmp_path / "gold.jsonl"
    result = CliRunner().invoke(cli, ["labels", "export", str(data["db"]), "--out", str(out)])
    assert result.exit_code == 0, result.output
    gold = {(x.trajectory_id, x.step): (x.label, x.reason, x.source) for x in read_labels(out)}
    assert gold == {(ids["plain"], 1): ("good", None, "human:tester"),
                    (ids["plain"], 2): ("mistake", "wrong function <b>f2</b>", "human:tester"),
                    (ids["plain"], 4): ("recover", None, "human:tester")}
    assert (artifacts_dir / "view_trajectory.png").stat().st_size > 20_000


def test_xss_payloads_render_as_text_and_run_nothing(page, served, artifacts_dir):
    from playwright.sync_api import expect

    url, data = served
    page.goto(f"{url}/t/{data['ids']['xss']}")
    expect(page.locator("article.step")).to_have_count(3)
    for key in ("obs1", "obs2", "reason", "thought", "command"):
        expect(page.get_by_text(XSS[key], exact=False).first).to_be_visible()
    expect(page.locator("section.task pre")).to_have_text(XSS["task"])
    assert page.evaluate("typeof window.__xss") == "undefined"  # every payload would set it
    assert page.locator("img").count() == 0 and page.locator("svg").count() == 0
    assert page.locator("script").count() == 1  # /static/app.js only
    page.keyboard.press("j")
    page.keyboard.press("2")  # the page still works next to the payloads
    expect(page.locator("#step-1 .status")).to_contain_text("saved")
    page.screenshot(path=str(artifacts_dir / "view_xss.png"), full_page=True)
    assert page.dialogs == [], page.dialogs
    assert page.problems == [], page.problems


def test_real_trajectory_page_and_token_mask(page, traj_dir, tokenizer_dir, tmp_path, artifacts_dir):
    from playwright.sync_api import expect

    real = real_store(traj_dir, tmp_path)
    config = ViewConfig(data=real["data"], annotations=[real["critic"]], labels_db=tmp_path / "l.db",
                        port=free_port(), annotator="tester", tokenizer=tokenizer_dir / QWEN)
    with running_server(config) as url:
        page.goto(url + "/?outcome=unresolved")
        page.get_by_role("link", name="pvlib__pvlib-python-1072").click()
        page.wait_for_url("**/t/*")  # waits for `load`: app.js (deferred) listens to keys from then on
        expect(page.locator("article.step")).to_have_count(74)
        expect(page.locator("#step-2 .sources")).to_contain_text("critic: mistake critic 2")
        page.keyboard.press("j")
        page.keyboard.press("j")
        page.keyboard.press("3")
        expect(page.locator("#step-2 .status")).to_contain_text("saved")
        expect(page.locator('#agreement tr[data-source="critic"] .here')).to_have_text(
            "1 step · acc 1.00 · κ n/a · F1 masked 1.00")
        page.screenshot(path=str(artifacts_dir / "view_real_trajectory.png"))

        page.select_option("#mask-source", "critic")
        page.click("#mask-toggle")
        expect(page.locator("#mask-out pre.tokens")).to_be_visible()
        masked = page.locator("#mask-out pre.tokens .tok.masked.mistake")
        expect(masked).to_have_count(2)  # the critic's two mistake steps (2 and 4)
        expect(masked.first).to_contain_text("Now let me look at the pvlib directory structure")
        assert page.locator("#mask-out pre.tokens .tok.trained").count() == 72
        page.select_option("#mask-source", "human")  # the human label (step 2 mistake) instead
        expect(page.locator("#mask-out pre.tokens .tok.masked.mistake")).to_have_count(1)
        page.locator("#mask-out pre.tokens .tok.masked.mistake").scroll_into_view_if_needed()
        page.screenshot(path=str(artifacts_dir / "view_token_mask.png"))
    assert page.problems == [] and page.dialogs == []
