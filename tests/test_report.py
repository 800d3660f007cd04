"""report.html of a real `srft run` (the `tiny_run` fixture): self-contained, every section present, every text
escaped, and it renders in headless Chromium without a console error (screenshot saved as a test artifact)."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest

CHROMIUM = Path("/usr/bin/chromium")
SECTIONS = ("data", "critic", "training", "comparison", "examples", "recipe")
HOSTILE = '<script>window.pwned = 1; console.error("pwned")</script><img src="http://example.invalid/x.png">'


def _html(tiny_run) -> str:
    return (tiny_run["dir"] / "report" / "report.html").read_text(encoding="utf-8")


def test_report_is_self_contained_and_holds_the_run_numbers(tiny_run) -> None:
    html = _html(tiny_run)
    assert not re.search(r"""(?:src|href)=["'](?!data:|#)""", html)  # no file or network reference
    images = re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', html)
    assert len(images) == 3  # confusion matrix, loss curves, forest plot
    for section in SECTIONS:
        assert f'<section id="{section}">' in html
    run = tiny_run["dir"]
    ingest = json.loads((run / "ingest" / "ingest_report.json").read_text())
    compare = json.loads((run / "compare" / "compare.json").read_text())
    build = json.loads((run / "build" / "srft_gold" / "build_report.json").read_text())
    assert f"<td>{ingest['trajectories']}</td><td>{ingest['resolved']}</td>" in html
    share = build["masked_step_tokens"] / (build["trained_tokens"] + build["masked_step_tokens"])
    assert f"{100 * share:.1f}%" in html  # masked-token share of the oracle-labelled policy
    for system in compare["systems"]:
        assert f"<td>{system['name']}</td>" in html
    assert html.count('class="traj"') == 3 and 'class="step masked"' in html  # examples show masked steps
    assert "tiny &lt;run&gt; &amp; &#34;quotes&#34;" in html  # the recipe's title, escaped


def test_every_text_is_escaped(tiny_run, tmp_path: Path) -> None:
    """Trajectory text is attacker-controlled (it comes from agents and tools): render a hostile step."""
    from srft.run.graph import load_recipe
    from srft.run.report import collect, render
    from srft.run.runner import read_manifest

    run = tiny_run["dir"]
    recipe, _ = load_recipe(Path(__file__).parent / "fixtures" / "pipeline" / "tiny.yaml")
    deps = {key: run / key for key in read_manifest(run / "report")["parts"]["deps"]}
    data = collect(recipe, deps)
    data["examples"][0]["steps"][0]["thought"] = HOSTILE
    data["examples"][0]["task"] = HOSTILE
    html = render(data)
    assert "<script" not in html and "http://example.invalid" in html  # shown as text, never as markup
    assert "&lt;script&gt;window.pwned" in html
    (tmp_path / "hostile.html").write_text(html, encoding="utf-8")
    errors, requests, pwned = _open(tmp_path / "hostile.html", None)
    assert errors == [] and pwned is None and not [r for r in requests if r.startswith("http")]


@pytest.mark.browser
def test_report_renders_in_chromium(tiny_run, artifacts_dir: Path) -> None:
    shutil.copy(tiny_run["dir"] / "report" / "report.html", artifacts_dir / "pipeline_report.html")
    errors, requests, _ = _open(tiny_run["dir"] / "report" / "report.html", artifacts_dir / "pipeline_report.png")
    assert errors == []
    assert all(r.startswith(("file:", "data:")) for r in requests), requests
    assert (artifacts_dir / "pipeline_report.png").stat().st_size > 50_000


def _open(path: Path, screenshot: Path | None) -> tuple[list[str], list[str], object]:
    """(console errors + page errors, requested URLs, window.pwned) after loading `path` in headless Chromium."""
    if not CHROMIUM.exists():
        pytest.skip("Debian chromium not installed (make test installs it)")
    from playwright.sync_api import sync_playwright

    errors: list[str] = []
    requests: list[str] = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=[
            "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
            "--disable-component-update", "--disable-sync"])
        try:
            page = browser.new_page(viewport={"width": 1200, "height": 900})
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.on("request", lambda r: requests.append(r.url))
            page.goto(path.resolve().as_uri())
            page.wait_for_load_state("load")
            for section in SECTIONS:
                assert page.locator(f"section#{section} h2").is_visible()
            images = page.locator("img")
            for i in range(images.count()):  # every inline image decoded to a real picture
                assert images.nth(i).evaluate("img => img.complete && img.naturalWidth > 100")
            masked = page.locator(".step.masked .head").first
            if masked.count():
                assert masked.evaluate("e => getComputedStyle(e).textDecorationLine") == "line-through"
            pwned = page.evaluate("window.pwned")
            if screenshot is not None:
                page.screenshot(path=str(screenshot), full_page=True)
        finally:
            browser.close()
    return errors, requests, pwned
