"""The Memory panel's "Predicted peaks" in real Chromium, over the standalone server's routes: each learned class,
its predicted peak beside what it took, refreshed when a prompt finishes."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from comfy_memhooks.triggers.learned import LearnedPeaks, Prediction, Sample, Workload
from comfy_memhooks.triggers.learned_file import LearnedFile
from tests.panel.test_panel_browser import Served, browser, serve  # noqa: F401  (fixtures, shared)
from tests.panel.test_panel_profile_browser import FINISHED, FRONTEND

pytestmark = pytest.mark.browser

MIB = 1024**2


async def cells(page: Any) -> list[list[str]]:
    found: list[list[str]] = await page.eval_on_selector_all(
        '[data-role="prediction-row"]', "rows => rows.map(row => [...row.cells].map(cell => cell.textContent))"
    )
    return found


async def test_each_class_shows_its_predicted_and_actual_peaks_and_follows_new_prompts(
    serve: Callable[..., Awaitable[Served]],  # noqa: F811
    tmp_path: Path,
) -> None:
    served = await serve(width=460)
    table = LearnedPeaks()
    learned = LearnedFile(tmp_path / "learned.json", table)
    served.backend.learned = lambda: learned
    table.learn("VHS_LoadVideo", Sample(900 * MIB, None, Workload("frame_pixels", 1000)))
    page = served.page
    await page.goto(served.url + "memhooks/settings")
    await page.evaluate(FRONTEND)
    await page.click('[data-role="predictions-section"] summary')
    await page.wait_for_selector('[data-role="prediction-row"]')

    assert await cells(page) == [["VHS_LoadVideo", "1", "—", "900 MB", "—", "—"]]  # nothing predicted yet
    summary = page.locator('[data-role="predictions-summary"]')
    assert "Predictive cleanup is on · 1 classes learned (at most 500)" in (await summary.text_content() or "")

    prediction = table.predict("VHS_LoadVideo", Workload("frame_pixels", 2000))
    table.learn("VHS_LoadVideo", Sample(1700 * MIB, None, Workload("frame_pixels", 2000)), prediction)
    table.learn("KSampler", Sample(None, 3000 * MIB, None), Prediction("KSampler", None, 2900 * MIB, "recent maximum"))
    await page.evaluate(FINISHED)
    await page.wait_for_function("() => document.querySelectorAll('[data-role=prediction-row]').length === 2")

    assert await cells(page) == [
        ["KSampler", "1", "—", "—", "2.83 GB", "2.93 GB"],
        ["VHS_LoadVideo", "2", "1.93 GB", "1.66 GB", "—", "—"],
    ]
    title = await page.get_attribute('[data-node-class="VHS_LoadVideo"] td', "title")
    assert title == "scaled by frame_pixels"


async def test_with_nothing_learned_it_says_how_it_learns(serve: Callable[..., Awaitable[Served]]) -> None:  # noqa: F811
    served = await serve(width=460)
    served.store.update({"predictive_cleanup": False})
    page = served.page
    await page.goto(served.url + "memhooks/settings")
    await page.evaluate(FRONTEND)
    summary = page.locator('[data-role="predictions-summary"]')
    await summary.filter(has_text="Predictive").wait_for(state="attached")

    assert await summary.text_content() == (
        "Predictive cleanup is off (predictive_cleanup) · no class learned yet: each one is learned the first time "
        "it runs."
    )
    assert await page.locator('[data-role="predictions"]').is_hidden()
