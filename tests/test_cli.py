"""``python -m comfy_memhooks`` as a user runs it, in a fresh interpreter."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def cli(*arguments: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "comfy_memhooks", *arguments],
        check=False,
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))},
    )


def test_status_prints_the_status_line() -> None:
    done = cli("status")
    assert done.returncode == 0, done.stderr
    assert re.fullmatch(r"RAM: \S+/\S+ \(\d+%\) \| VRAM: .+\n", done.stdout)


def test_status_detailed() -> None:
    done = cli("status", "--detailed")
    assert done.returncode == 0, done.stderr
    assert "RAM:" in done.stdout and "this process:" in done.stdout
    assert ("VRAM: n/a" in done.stdout) or ("GPU 0" in done.stdout)


def test_status_json_is_a_snapshot() -> None:
    done = cli("status", "--json")
    assert done.returncode == 0, done.stderr
    snapshot = json.loads(done.stdout)
    assert set(snapshot) >= {"taken_at", "ram", "gpus", "gpu_source", "vram_percent"}
    assert snapshot["ram"]["source"] in {"host", "cgroup v1", "cgroup v2"}
    assert 0 < snapshot["ram"]["percent"] <= 100


def test_optimize_prints_what_it_freed() -> None:
    done = cli("optimize", "--mode", "Balanced")
    assert done.returncode == 0, done.stderr
    assert "Optimization #1: Balanced, manual" in done.stdout
    assert "malloc_trim" in done.stdout


def test_optimize_json() -> None:
    record = json.loads(cli("optimize", "--mode", "Aggressive", "--json").stdout)
    assert record["mode"] == "Aggressive" and record["trigger"]["kind"] == "manual"
    first, second = record["actions"][:2]
    # ComfyUI's cache is asked before any model is unloaded; outside ComfyUI that step says why it did nothing.
    assert first["name"] == "comfy_cache_release" and "ComfyUI is not loaded" in first["skipped_reason"]
    assert second["name"] == "release_reactor_caches"


def test_watch_prints_live_lines() -> None:
    done = cli("watch", "--interval", "0.1", "--count", "3")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert len(lines) == 3 and all("| VRAM:" in line for line in lines)


def test_bad_arguments_give_usage_and_fail() -> None:
    for arguments in (("optimize", "--mode", "Turbo"), ("watch", "--interval", "-1"), ("explode",), ()):
        done = cli(*arguments)
        assert done.returncode == 2, arguments
        assert "usage:" in done.stderr
    assert "'Turbo' is not a mode" in cli("optimize", "--mode", "Turbo").stderr


def test_optimize_reports_freed_as_positive_and_the_parts_add_up() -> None:
    done = cli("optimize", "--mode", "Balanced", "--json")
    assert done.returncode == 0, done.stderr
    record = json.loads(done.stdout)
    measured = [action for action in record["actions"] if action["skipped_reason"] is None]
    skipped = [action for action in record["actions"] if action["skipped_reason"] is not None]
    assert skipped, "outside ComfyUI, the ComfyUI actions skip"
    assert all(action["ram_freed_bytes"] is None and action["vram_freed_bytes"] is None for action in skipped)
    assert record["ram_freed_bytes"] == sum(action["ram_freed_bytes"] for action in measured)

    text = cli("optimize", "--mode", "Balanced").stdout
    lines = text.splitlines()
    total = r"  freed \d+\.\d\dGB in all \(RAM (freed|grew) \d+MB, VRAM .+\) in \d+ ms; each action:"
    assert re.fullmatch(total, lines[2])
    for line in lines[3:]:
        if ": skipped: " in line:
            assert "RAM" not in line.split(": skipped: ", 1)[1]  # nothing measured for an action that did nothing
        else:
            assert re.search(r"\(RAM (freed|grew) \d+MB, VRAM (n/a|freed \S+|grew \S+), \d+ ms\)$", line), line
    assert "+" not in text and "RAM -" not in text


def test_serve_help_describes_every_option() -> None:
    text = " ".join(cli("serve", "--help").stdout.split())  # argparse wraps to the terminal's width
    assert "--host HOST address to bind (default: 127.0.0.1, loopback only;" in text
    assert "--port PORT TCP port to listen on, 0 for any free one (default: 8189)" in text
    assert "--interval INTERVAL seconds between live samples pushed to the page (default: 1)" in text
