"""The viewer's list ordered where critics are unsure: lowest critic confidence first, or most disagreement
between annotation files first, in a real browser (Debian Chromium via playwright) against the real server."""

from __future__ import annotations

import re

import pytest
from test_view import free_port, make_trajectory, running_server
from test_view_browser import browser, page  # noqa: F401 (pytest fixtures)

from srft.io import write_trajectories
from srft.labels import StepLabel, write_labels
from srft.view.app import ViewConfig

pytestmark = pytest.mark.browser


@pytest.fixture()
def unsure(tmp_path):
    """Three trajectories: `calm` (sure critic, both files agree), `split` (the files disagree on 3 steps),
    `doubt` (the critic is unsure: 2 of 3 votes on every step)."""
    trajs = {name: make_trajectory(iid, 3) for name, iid in
             (("calm", "astropy__astropy-12907"), ("split", "django__django-11099"), ("doubt", "sympy__sympy-20590"))}
    write_trajectories(tmp_path / "data" / "trajectories.parquet", sorted(trajs.values(), key=lambda t: t.id))
    votes = {"calm": {"good": 3}, "split": {"good": 3}, "doubt": {"good": 2, "mistake": 1}}
    voted = [StepLabel(trajectory_id=t.id, step=s, label="good", source="openai:m", votes=votes[name],
                       confidence=max(votes[name].values()) / 3) for name, t in trajs.items() for s in (1, 2, 3)]
    other = [StepLabel(trajectory_id=t.id, step=s, label="mistake" if name == "split" else "good",
                       source="heuristic") for name, t in trajs.items() for s in (1, 2, 3)]
    other[-1] = other[-1].model_copy(update={"label": "unnecessary"})  # doubt step 3: one split step
    write_labels(tmp_path / "voted.parquet", voted)
    write_labels(tmp_path / "heuristic.jsonl", other)
    config = ViewConfig(data=tmp_path / "data", annotations=[tmp_path / "voted.parquet", tmp_path / "heuristic.jsonl"],
                        labels_db=tmp_path / "labels.db", port=free_port(), annotator="tester")
    by_id = [t.instance_id for t in sorted(trajs.values(), key=lambda t: t.id)]
    return config, {name: t.instance_id for name, t in trajs.items()}, by_id


def test_list_orders_by_critic_confidence_and_by_disagreement(page, unsure):  # noqa: F811 (fixture)
    from playwright.sync_api import expect

    config, iid, by_id = unsure
    rows = page.locator("#trajectories tbody tr")
    with running_server(config) as url:
        page.goto(url + "/")
        expect(rows).to_have_count(3)
        assert rows.locator("a.traj-link").all_inner_texts() == by_id  # the default order: by trajectory id

        page.select_option("#order", "confidence")
        page.get_by_role("button", name="filter").click()
        page.wait_for_url(re.compile(r"[?&]order=confidence\b"))
        expect(rows.first.locator("a.traj-link")).to_have_text(iid["doubt"])
        expect(rows.first.locator("td.confidence")).to_have_text("0.67")
        assert rows.nth(1).locator("td.confidence").inner_text() == "1.00"

        page.select_option("#order", "disagreement")
        page.get_by_role("button", name="filter").click()
        page.wait_for_url(re.compile(r"[?&]order=disagreement\b"))
        assert rows.locator("a.traj-link").all_inner_texts() == [iid["split"], iid["doubt"], iid["calm"]]
        assert rows.locator("td.split").all_inner_texts() == ["3", "1", "0"]

        page.goto(url + "/?order=bogus")
        expect(rows).to_have_count(3)  # an unknown order falls back to the id order
        assert rows.locator("a.traj-link").all_inner_texts() == by_id

        page.get_by_role("link", name=iid["doubt"]).click()  # each label shows its confidence, votes on hover
        chip = page.locator("#step-1 .sources .confidence").first
        expect(chip).to_have_text("0.67")
        assert chip.get_attribute("title") == "{'good': 2, 'mistake': 1}"
        assert page.problems == [] and page.dialogs == []
