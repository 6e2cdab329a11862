"""`paretune report`: one self-contained HTML page of a study, checked in a real Chromium."""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import pytest
from conftest import RESULTS_STUDY as STUDY
from conftest import paretune, write_study

from sweeps.results.colours import METHOD_COLOURS
from sweeps.results.report import parse_preference, recommend
from sweeps.results.store import ResultsStore


@pytest.fixture(scope="module")
def results_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    db = tmp_path_factory.mktemp("results") / "results.duckdb"
    write_study(db)
    return db


@pytest.fixture(scope="module")
def report(results_db: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("report") / "report.html"
    done = paretune(
        "report", STUDY, "--db", str(results_db), "--out", str(out), "--prefer", "quality"
    )
    assert done.returncode == 0, done.stderr
    return out


def test_preferences_pick_frontier_trials(results_db: Path) -> None:
    rows = ResultsStore(results_db).trials(STUDY)
    # Trials (quality, forgetting, $): 0 (1.1, .05, .01), 1 (.95, .12, .012), 2 (1.0, .04, .02),
    # 3 (0.8, .4, .05), 4 dominated. Scaled to [0, 1] over the complete trials.
    assert recommend(rows, parse_preference("quality=1")).trial["number"] == 3
    assert recommend(rows, parse_preference("forgetting")).trial["number"] == 2
    assert recommend(rows, parse_preference("cost")).trial["number"] == 0
    assert recommend(rows, parse_preference("quality")).trial["number"] == 1
    assert parse_preference("quality=2,cost=2") == (0.5, 0.0, 0.5)


def test_report_holds_every_part_and_fetches_nothing(report: Path) -> None:
    page = report.read_text()
    for part in ("recommendation", "costs", "frontier", "trials", "curves", "forgetting", "noise"):
        assert f"id='{part}'" in page or f'id="{part}"' in page, part
    assert "trial #1</b>: lora" in page and "$0.123" in page and "oom" in page
    assert page.count("<svg") == 5  # 3-D, three projections, learning curves
    for colour in (METHOD_COLOURS[m] for m in ("lora", "dora", "full", "freeze")):
        assert colour in page
    assert not re.search(r"<script|<link|\b(src|href)=[\"']https?:", page)


def test_report_noise_bands_from_repeats(results_db: Path, tmp_path: Path) -> None:
    from sweeps.results.report import build_report

    rows = [dict(r) for r in ResultsStore(results_db).trials(STUDY)]
    rows[0].update(objective_quality_sd=0.03, objective_forgetting_sd=0.01, objective_cost_sd=0.001)
    page = build_report(
        {"study": STUDY, "model": "demo"},
        rows,
        {},
        weights=(1, 0, 0),
        preference="x",
        front={0, 1, 2, 3},
    )
    assert "1.1 ± 0.03" in page and "bars: ± one standard deviation" in page


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--prefer", "speed"], "'speed' is not a preference"),
        (["--out", "r.pdf"], "is not an .html file"),
        (["--out", "nothere/r.html"], "does not exist"),
    ],
)
def test_report_bad_input_exits_2(results_db: Path, tmp_path: Path, args, message) -> None:
    done = paretune("report", STUDY, "--db", str(results_db), *args, cwd=tmp_path)
    assert done.returncode == 2 and message in done.stderr and "Traceback" not in done.stderr
    unknown = paretune("report", "demo-frontiers", "--db", str(results_db), cwd=tmp_path)
    assert unknown.returncode == 2 and "demo-frontier" in unknown.stderr


def _chromium() -> str | None:
    for name in (
        os.environ.get("PARETUNE_CHROMIUM"),
        "chromium",
        "chromium-browser",
        "google-chrome",
    ):
        if name and shutil.which(name):
            return shutil.which(name)
    return None


@pytest.mark.slow
def test_report_renders_in_headless_chromium(report: Path) -> None:
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
    browser_path = _chromium()
    if browser_path is None:
        reason = "no Chromium on this machine (set PARETUNE_CHROMIUM to its path)"
        if os.environ.get("PARETUNE_REQUIRE_CHROMIUM") == "1":
            pytest.fail(reason + " and PARETUNE_REQUIRE_CHROMIUM=1 requires it")
        pytest.skip(reason)
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=browser_path, args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": 1200, "height": 900})
            requests: list[str] = []
            page.on("request", lambda request: requests.append(request.url))
            page.goto(report.as_uri())
            for selector in ("#frontier svg", "#trials", "#curves svg", "#forgetting"):
                element = page.locator(selector).first
                element.scroll_into_view_if_needed()
                assert element.is_visible(), selector
                box = element.bounding_box()
                assert box is not None and box["width"] > 200 and box["height"] > 100, selector
            assert page.locator("#trials tbody tr").count() == 6
            assert page.locator("#frontier svg").count() == 4
            assert requests == [report.as_uri()]  # nothing fetched but the file itself
        finally:
            browser.close()


async def test_frontier_screen_writes_the_report(results_db: Path, tmp_path: Path) -> None:
    from tui.app import ParetuneApp

    app = ParetuneApp(db=results_db, run_dir=tmp_path, start="frontier")
    async with app.run_test(size=(80, 24)) as pilot:
        await app.workers.wait_for_complete()
        await pilot.pause()
        app.screen.query_one("#points").focus()
        await pilot.press("h")
        await pilot.pause()
        await app.workers.wait_for_complete()
        await pilot.pause()
    page = (tmp_path / "reports" / f"{STUDY}.html").read_text()
    assert "paretune report: demo-frontier" in page and "id='trials'" in page
