"""GPU process names never carry a command line's arguments, whatever the process did to its own."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from comfy_memhooks.probe.gpu import GpuProbe
from comfy_memhooks.probe.nvml import Nvml
from tests.fake_nvml import GIB, FakeGpu, make_fake_pynvml

NAME = "longprocessname"  # 15 characters: the kernel's limit for comm, where psutil reads cmdline instead
SECRET = "--token=SECRET123"


@pytest.fixture
def secret_process(tmp_path: Path) -> Iterator[subprocess.Popen[bytes]]:
    """A real process named ``longprocessname`` whose argv[0] carries a secret, as a rewritten title would."""
    sleep = shutil.which("sleep")
    assert sleep is not None
    executable = tmp_path / NAME
    shutil.copy(sleep, executable)
    process = subprocess.Popen(["bash", "-c", f'exec -a "{NAME} {SECRET}" {executable} 60'])
    try:
        for _ in range(200):
            comm = Path(f"/proc/{process.pid}/comm").read_text().strip()
            if comm == NAME:
                break
            subprocess.run(["sleep", "0.01"], check=True)
        assert SECRET in Path(f"/proc/{process.pid}/cmdline").read_bytes().decode()
        yield process
    finally:
        process.kill()
        process.wait()


def test_a_fifteen_character_name_never_includes_arguments(secret_process: subprocess.Popen[bytes]) -> None:
    gpu = FakeGpu(
        "GPU A", "GPU-aaaa", "00000000:01:00.0", 24 * GIB, 4 * GIB, compute_processes=[(secret_process.pid, GIB)]
    )
    fake = make_fake_pynvml([gpu])
    processes = GpuProbe(nvml=Nvml(loader=lambda: fake), environ={}).processes()
    assert processes is not None
    (listed,) = processes
    assert listed.pid == secret_process.pid and listed.in_this_container
    assert listed.name == NAME
    assert "SECRET" not in repr(processes)


def test_a_pid_that_is_not_here_has_no_name(tmp_path: Path) -> None:
    gpu = FakeGpu("GPU A", "GPU-aaaa", "00000000:01:00.0", 24 * GIB, 4 * GIB, compute_processes=[(4_000_000, GIB)])
    fake = make_fake_pynvml([gpu])
    processes = GpuProbe(nvml=Nvml(loader=lambda: fake), environ={}).processes()
    assert processes is not None and processes[0].name is None and not processes[0].in_this_container
