"""Property-based tests: whatever comes from outside (node inputs, the settings file, request bodies and queries)
is either accepted or refused with :class:`InvalidSetting` naming the field, and a refusal changes nothing.

Kept fast: a modest number of examples per property and no deadline (a cold first example may import things).
"""

from __future__ import annotations

import asyncio
import json
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest
from aiohttp.test_utils import TestClient, TestServer
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from comfy_memhooks.comfy.node import UnifiedMemoryManager
from comfy_memhooks.comfy.runtime import current_runtime
from comfy_memhooks.engine.core import Engine
from comfy_memhooks.engine.modes import MANUAL_MODES, Mode
from comfy_memhooks.engine.pressure import MAX_COOLDOWN_SECONDS
from comfy_memhooks.errors import InvalidSetting, shown_field
from comfy_memhooks.panel.backend import PanelBackend
from comfy_memhooks.triggers.settings import MAX_INTERVAL, MIN_INTERVAL, AutoSettings, SettingsStore, When
from tests.conftest import FakeClock, runtime_on
from tests.engine.test_pressure import LIMIT, ScriptedProbe
from tests.panel.panel_support import RecordingPublisher, no_gpu_engine, panel_app

PROPERTY = settings(
    max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow]
)

# Anything a prompt, a JSON body or a careless caller could send: the edges of each Python type.
huge_ints = st.one_of(
    st.integers(),
    # 10**5000 is past Python's digit limit for repr; built by map so hypothesis never has to print it.
    st.tuples(st.sampled_from([63, 400, 5000]), st.sampled_from([1, -1])).map(lambda pair: pair[1] * 10 ** pair[0]),
)
junk = st.recursive(
    st.one_of(
        st.none(),
        st.booleans(),
        huge_ints,
        st.floats(allow_nan=True, allow_infinity=True),
        st.text(max_size=20),
        st.sampled_from([mode.value for mode in Mode] + ["balanced", "", " Balanced", "true", "1"]),
    ),
    lambda children: st.one_of(
        st.lists(children, max_size=3), st.dictionaries(st.text(max_size=5), children, max_size=3)
    ),
    max_leaves=6,
)

# Node inputs ------------------------------------------------------------------------------------------------------

BOOL_INPUTS = ("enable_monitoring", "enable_optimization", "auto_optimize", "enable_auto_cleanup", "detailed_report")
percent = st.floats(min_value=0.1, max_value=100.0, allow_nan=False) | st.integers(min_value=1, max_value=100)
VALID_INPUTS: dict[str, st.SearchStrategy[Any]] = {
    **{name: st.booleans() for name in BOOL_INPUTS},
    "mode": st.sampled_from([mode.value for mode in Mode]),
    "ram_threshold": percent,
    "vram_threshold": percent,
    "cooldown_seconds": st.floats(min_value=0.0, max_value=MAX_COOLDOWN_SECONDS, allow_nan=False),
}


@st.composite
def node_inputs(draw: st.DrawFn) -> tuple[dict[str, Any], set[str]]:
    """Every input, each either valid or arbitrary; also the names of those drawn arbitrarily."""
    values: dict[str, Any] = {}
    arbitrary: set[str] = set()
    for name, valid in VALID_INPUTS.items():
        if draw(st.booleans()):
            values[name] = draw(junk)
            arbitrary.add(name)
        else:
            values[name] = draw(valid)
    return values, arbitrary


@pytest.fixture
def node_engine(monkeypatch: pytest.MonkeyPatch) -> Iterator[Engine]:
    """The process's engine replaced by one on a scripted probe (RAM at 50% of 3 GB, no GPU) and a fake clock."""
    engine = Engine(probe=ScriptedProbe(LIMIT // 2), clock=FakeClock())  # type: ignore[arg-type]
    runtime_on(engine)
    yield engine


@PROPERTY
@given(drawn=node_inputs())
def test_node_inputs_are_accepted_or_refused_naming_the_input(node_engine: Engine, drawn: Any) -> None:
    values, arbitrary = drawn
    image, passthrough = object(), object()
    try:
        out = UnifiedMemoryManager().run(**values, trigger_image=image, passthrough=passthrough, unique_id="7")
    except InvalidSetting as error:
        assert error.field in arbitrary, (error.field, arbitrary)
        assert str(error).startswith(f"{shown_field(error.field)}: ")
        return
    result = out["result"]
    assert len(result) == 8 == len(UnifiedMemoryManager.RETURN_NAMES)
    summary, report, ram, vram, freed, performed, got_image, got_passthrough = result
    assert isinstance(summary, str) and isinstance(report, str)
    assert all(isinstance(value, float) for value in (ram, vram, freed))
    assert isinstance(performed, bool)
    assert got_image is image and got_passthrough is passthrough


@PROPERTY
@given(values=st.fixed_dictionaries(VALID_INPUTS))
def test_valid_node_inputs_always_give_eight_outputs(node_engine: Engine, values: dict[str, Any]) -> None:
    out = UnifiedMemoryManager().run(**values)
    assert len(out["result"]) == 8
    assert out["ui"]["text"] == [out["result"][0]]


# The settings file ------------------------------------------------------------------------------------------------

json_values = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False, allow_infinity=False), st.text()),
    lambda children: st.one_of(
        st.lists(children, max_size=4), st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=10,
)
settings_keys = sorted(AutoSettings().to_json())
settings_objects = st.dictionaries(st.sampled_from(settings_keys) | st.text(max_size=8), json_values, max_size=5)
file_bytes = st.one_of(
    st.binary(max_size=200),
    json_values.map(lambda value: json.dumps(value).encode()),
    settings_objects.map(lambda value: json.dumps(value).encode()),
    st.sampled_from([b"\xef\xbb\xbf{}", b"[" * 100_000, b'{"ram_threshold": NaN}', b"1" * 5000, b"\xff\xfe{}"]),
)


def _names_field(field: str, raw: object) -> bool:
    """``field`` is the body itself, one of its keys (any string, even ``""``), or a path into a known key."""
    if field in ("body", "settings", "mode") or (isinstance(raw, dict) and field in map(str, raw)):
        return True
    return any(field.startswith((f"{key}[", f"{key}.")) for key in settings_keys)


def _assert_valid(current: AutoSettings) -> None:
    assert AutoSettings.parse(current.to_json()) == current  # valid, and round-trips through the file format
    json.dumps(current.to_json(), allow_nan=False)


@settings(max_examples=120, deadline=None)
@given(data=file_bytes)
def test_any_settings_file_loads_and_nothing_written_is_lost(data: bytes) -> None:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "comfy_memhooks.json"
        path.write_bytes(data)
        store = SettingsStore(path)
        current = store.load()  # never raises
        _assert_valid(current)
        assert store.current == current
        on_disk = [file.read_bytes() for file in Path(folder).iterdir() if file.is_file()]
        assert data in on_disk  # the original bytes still exist somewhere
        if path.exists() and path.read_bytes() == data and store.load_warning is None:
            # Kept in place without a word: the file was valid, and it is what was loaded.
            assert current == AutoSettings.parse(json.loads(data.removeprefix(b"\xef\xbb\xbf").decode()))
        elif not path.exists():
            assert store.load_warning is not None and "kept as" in store.load_warning
        # A file that was set aside can be replaced by a save, and the set-aside copy survives it.
        store.update({"enabled": False})
        assert store.current.enabled is False
        assert data in [file.read_bytes() for file in Path(folder).iterdir() if file.is_file()] or path.exists()


@settings(max_examples=120, deadline=None)
@given(raw=json_values | settings_objects)
def test_any_json_value_parses_or_names_the_field(raw: Any) -> None:
    try:
        parsed = AutoSettings.parse(raw)
    except InvalidSetting as error:
        assert _names_field(error.field, raw), (error.field, raw)
        return
    _assert_valid(parsed)


# The panel's routes -----------------------------------------------------------------------------------------------

valid_rules = st.lists(
    st.fixed_dictionaries(
        {"pattern": st.text(min_size=1, max_size=10).filter(str.strip)},
        optional={
            "before_mode": st.sampled_from([mode.value for mode in Mode]),
            "after_mode": st.sampled_from([mode.value for mode in Mode]),
            "before_when": st.sampled_from([when.value for when in When]),
            "after_when": st.sampled_from([when.value for when in When]),
        },
    ),
    max_size=3,
)
valid_settings = st.fixed_dictionaries(
    {},
    optional={
        "enabled": st.booleans(),
        "oom_rescue": st.booleans(),
        "pressure_watchdog": st.booleans(),
        "node_profile": st.booleans(),
        "rules": valid_rules,
        "ram_threshold": percent,
        "vram_threshold": percent,
        "cooldown_seconds": st.floats(min_value=0.0, max_value=MAX_COOLDOWN_SECONDS, allow_nan=False),
        "sample_interval_seconds": st.floats(min_value=MIN_INTERVAL, max_value=MAX_INTERVAL, allow_nan=False),
    },
)


def _dumps(value: object) -> str:
    """JSON text for ``value``, NaN and Infinity included; an integer past the digit limit is spelled out."""
    try:
        return json.dumps(value)
    except ValueError:
        return '{"mode": ' + "9" * 5000 + "}"


bodies = st.one_of(
    valid_settings.map(json.dumps),
    settings_objects.map(json.dumps),
    json_values.map(json.dumps),
    st.dictionaries(st.sampled_from(["mode", "modes", ""]), junk, max_size=2).map(_dumps),
    st.sampled_from([json.dumps({"mode": mode.value}) for mode in MANUAL_MODES]),
    st.sampled_from(['{"ram_threshold": NaN}', '{"mode": Infinity}', "", "  ", "{", "[" * 5000, "1" * 5000]),
    st.text(max_size=30),
)
queries = st.dictionaries(st.text(max_size=10), st.text(max_size=10), max_size=4).map(urlencode) | st.text(max_size=40)


class PanelHarness:
    """A panel backend on a real aiohttp test server, driven from sync code through a loop this test owns."""

    def __init__(self, folder: Path):
        self.store = SettingsStore(folder / "comfy_memhooks.json")
        self.store.load()
        self.engine = no_gpu_engine()
        self.backend = PanelBackend(
            self.engine, self.store, RecordingPublisher(), interval=lambda: 3600.0, pipeline=current_runtime().pipeline
        )
        self.backend.start()
        self.loop = asyncio.new_event_loop()
        self.client: TestClient[Any, Any] = TestClient(TestServer(panel_app(self.backend)), loop=self.loop)
        self.loop.run_until_complete(self.client.start_server())

    def request(self, method: str, path: str, body: str | None = None) -> tuple[int, Any]:
        async def go() -> tuple[int, Any]:
            data = None if body is None else body.encode("utf-8", "surrogatepass")
            headers = {"Content-Type": "application/json"} if body is not None else {}
            async with self.client.request(method, path, data=data, headers=headers) as response:
                text = await response.text()
                return response.status, json.loads(text) if text else None

        return self.loop.run_until_complete(go())

    def state(self) -> tuple[Any, int, bytes | None]:
        path = self.store.path
        return self.backend.settings(), self.engine.history.total_recorded, path.read_bytes() if path.exists() else None

    def close(self) -> None:
        self.loop.run_until_complete(self.client.close())
        self.backend.close()
        self.loop.close()


@pytest.fixture
def harness(tmp_path: Path) -> Iterator[PanelHarness]:
    panel = PanelHarness(tmp_path)
    yield panel
    panel.close()


def _check_refusal(status: int, data: Any, body: str, before: Any, after: Any) -> None:
    assert status < 500, (status, data, body)
    if status >= 400:
        assert isinstance(data, dict) and isinstance(data.get("error"), str), data
        field = data.get("field")
        assert isinstance(field, str), data
        assert data["error"].startswith(f"{shown_field(field)}: ")
        try:
            raw = json.loads(body)
        except (ValueError, RecursionError):
            raw = None
        assert _names_field(field, raw), (field, body)
        assert after == before


@PROPERTY
@given(body=bodies)
def test_put_settings_any_body(harness: PanelHarness, body: str) -> None:
    before = harness.state()
    status, data = harness.request("PUT", "/memhooks/settings", body)
    _check_refusal(status, data, body, before, harness.state())
    if status == 200:
        assert data == harness.backend.settings()
        _assert_valid(harness.store.current)


@PROPERTY
@given(body=bodies)
def test_post_optimize_any_body(harness: PanelHarness, body: str) -> None:
    before = harness.state()
    status, data = harness.request("POST", "/memhooks/optimize", body)
    _check_refusal(status, data, body, before, harness.state())
    if status < 400:
        assert json.loads(body) in ({"mode": mode.value} for mode in MANUAL_MODES)


@PROPERTY
@given(route=st.sampled_from(["status", "history", "processes", "settings"]), query=queries)
def test_get_routes_ignore_any_query(harness: PanelHarness, route: str, query: str) -> None:
    before = harness.state()
    path = f"/memhooks/{route}"
    status, data = harness.request("GET", f"{path}?{query}" if query else path)
    assert status == 200, (status, data)
    assert isinstance(data, dict)
    assert harness.state() == before
