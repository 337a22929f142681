"""The Memory panel in real Chromium on what today's ComfyUI does itself: dynamic VRAM and its RAM cache."""

from __future__ import annotations

import asyncio
import sys
import types
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

import pytest

from comfy_memhooks.engine.comfy_release import PromptRelease
from tests.panel.panel_support import GIB, container_engine, fake_gpu_engine
from tests.panel.test_panel_browser import Served, browser, serve  # noqa: F401  (the fixtures, shared)
from tests.standin_aimdo import install_aimdo
from tests.standin_ram_cache import install_system_memory

pytestmark = pytest.mark.browser


class RAMPressureCache:
    """Only its class name says which cache ComfyUI runs (``--cache-ram``)."""


class CacheSet:
    def __init__(self) -> None:
        self.outputs = RAMPressureCache()


@pytest.fixture
def comfyui_with_cache_ram(monkeypatch: pytest.MonkeyPatch) -> Iterator[CacheSet]:
    cli_args = types.ModuleType("comfy.cli_args")
    cli_args.args = types.SimpleNamespace(cache_ram=4.0)  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "comfy.cli_args", cli_args)
    monkeypatch.delitem(sys.modules, "comfy.memory_management", raising=False)  # 0.18: no extra_ram_release
    yield CacheSet()  # what the hook would have told the engine


async def test_dynamic_vram_is_said_with_its_headroom_and_what_the_threshold_reads(
    serve: Callable[..., Awaitable[Served]],  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # 76 of 80 GB in use (95%, over the 85% threshold), 60 GB of it evictable on demand: the threshold reads 20%.
    install_aimdo(monkeypatch, resident=70 * GIB, evictable=60 * GIB, headroom=GIB)
    served = await serve(fake_gpu_engine(used_gib=76.0))
    status = await served.goto_panel()
    assert status["comfyui"]["dynamic_vram"] == "dynamic VRAM on, headroom 1GB"
    assert status["snapshot"]["vram_pressure_percent"] == pytest.approx(20.0)
    line = served.page.locator('[data-role="dynamic-vram"]')
    await line.wait_for()
    assert await line.text_content() == (
        "dynamic VRAM on, headroom 1GB · the VRAM threshold reads what cannot be evicted: 20%"
    )
    assert await served.page.locator('[data-role="comfy-cache"]').is_hidden()
    # The bar shows the device as it is; its colour, what the threshold reads.
    gauge = served.page.locator('[data-role="gauge-gpu"][data-key="gpu-0"]')
    assert float(await gauge.get_attribute("data-percent")) == 95.0
    assert await gauge.get_attribute("data-level") == "ok"  # red without dynamic VRAM: 95% >= 85%


async def test_in_a_container_the_panel_says_comfyuis_ram_cache_reads_the_host(
    serve: Callable[..., Awaitable[Served]],  # noqa: F811
    tmp_path: Path,
    comfyui_with_cache_ram: CacheSet,
) -> None:
    engine = container_engine(tmp_path, 4 * GIB, 3 * GIB)
    engine.caches.remember(comfyui_with_cache_ram)
    served = await serve(engine)
    status = await served.goto_panel()
    notice = status["comfyui"]["output_cache"]
    assert notice["kind"] == "RAMPressureCache" and notice["reads_host_ram"] is True
    warning = served.page.locator('[data-role="comfy-cache"]')
    await warning.wait_for()
    text = await warning.text_content()
    assert text.startswith("ComfyUI's RAM cache reads the host's free RAM (")
    assert "not this container's limit (4.0 GB): pass --cache-ram " in text
    assert await served.page.locator('[data-role="dynamic-vram"]').is_hidden()


async def test_after_033_the_panel_says_which_ram_reading_is_used_and_what_comfyuis_cache_released(
    serve: Callable[..., Awaitable[Served]],  # noqa: F811
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # ComfyUI's comfy.system_memory still sees the 6 GB limit it found at start-up; the container has 4 GB now.
    # Its reading leaves more available than comfy_memhooks': not used.
    install_system_memory(monkeypatch, 6 * GIB, 3 * GIB, 64 * GIB, 40 * GIB)
    finished = PromptRelease("p-7", 1000.0, 1004.0, 9, 4, 2 * GIB, 1, 1, GIB // 2, False, False, 2, GIB)
    engine = container_engine(tmp_path, 4 * GIB, 3 * GIB)
    monkeypatch.setattr(engine.release, "last", finished)
    served = await serve(engine)
    status = await served.goto_panel()
    assert status["comfyui"]["ram_reader"] == "comfy_memhooks"
    reader = served.page.locator('[data-role="ram-reader"]')
    await reader.wait_for()
    text = await reader.text_content()
    assert text.startswith("RAM read by comfy_memhooks (cgroup v2): ComfyUI's comfy.system_memory disagrees")
    assert text.endswith("by more than 5% (limit: ComfyUI 6.00 GB, comfy_memhooks 4.00 GB)")
    assert "memhooks-warning" in (await reader.get_attribute("class") or "")
    release = served.page.locator('[data-role="comfy-release"]')
    await release.wait_for()
    assert await release.text_content() == (
        "ComfyUI released its cache 9 time(s) in this prompt, evicting 4 outputs (2.00 GB as ComfyUI counts them) "
        "(this prompt's outputs too: no, small ones too: no); for comfy_memhooks' requests, 1 more (0.50 GB). "
        "comfy_memhooks freed 1.00 GB in 2 cleanups."
    )


async def test_what_comfyuis_cache_released_shows_when_a_prompt_ends_after_the_panel_loaded(
    serve: Callable[..., Awaitable[Served]],  # noqa: F811
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The ComfyUI lines follow the pushed status, not only the one the panel loaded with: on 0.33 what ComfyUI's
    cache released is known only once a prompt has run, usually long after the sidebar was opened."""
    install_system_memory(monkeypatch, None, None, 64 * GIB, 40 * GIB)
    engine = container_engine(tmp_path, 4 * GIB, 3 * GIB)
    served = await serve(engine)
    await served.goto_panel()
    await served.wait_live()
    release = served.page.locator('[data-role="comfy-release"]')
    assert await release.is_hidden()  # no prompt yet

    finished = PromptRelease("p-8", 1000.0, 1004.0, 3, 2, GIB, 0, 0, 0, True, False, 1, 0)
    monkeypatch.setattr(engine.release, "last", finished)
    await asyncio.to_thread(served.backend.sample_now)

    await release.wait_for()
    assert await release.text_content() == finished.describe()
    assert "evicting 2 outputs (1.00 GB as ComfyUI counts them) (this prompt's outputs too: yes" in finished.describe()
