"""The engine on real memory: after a fragmenting node, gc alone returns almost nothing; Balanced returns it.

Each case runs in a fresh interpreter so the measurement is of that process's RSS alone.
"""

from __future__ import annotations

import ctypes
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
FRAGMENTING_NODE = Path(__file__).resolve().parents[2] / "benchmarks" / "fragmenting_node.py"

pytestmark = pytest.mark.skipif(
    not hasattr(ctypes.CDLL(None), "malloc_trim"), reason="the C library has no malloc_trim (not glibc)"
)


def run_case(cleanup: str) -> dict[str, float]:
    output = subprocess.run(
        [sys.executable, str(FRAGMENTING_NODE), "--cleanup", cleanup, "--frames", "200", "--json"],
        check=True,
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))},
    ).stdout
    result: dict[str, float] = json.loads(output)
    return result


def test_gc_alone_returns_almost_none_of_it() -> None:
    result = run_case("gc")
    left_behind = result["after_node_bytes"] - result["baseline_bytes"]
    assert left_behind > 500 * 1024**2  # the fragmenting node leaves ~800 MB of freed frames inside the process
    assert result["reclaimed_share"] < 0.10


@pytest.mark.parametrize("mode", ["Balanced", "Aggressive"])
def test_balanced_and_aggressive_return_it_to_the_system(mode: str) -> None:
    result = run_case(mode)
    assert result["reclaimed_share"] > 0.90
    assert result["after_cleanup_bytes"] - result["baseline_bytes"] < 100 * 1024**2
