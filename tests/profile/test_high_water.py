"""The high-water marks a node's RAM peak is read from, where the kernel's behaviour is faked: cgroup v2's
``memory.peak`` reset per open file (and refused by older kernels), a container counter that fails mid-run, a long
``/proc/self/status``, a mark opened again mid-span, and the platforms' non-resettable peaks."""

from __future__ import annotations

import errno
import logging
import os
import resource
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import psutil
import pytest

from comfy_memhooks.failures import Failures
from comfy_memhooks.probe.readings import RamSource
from comfy_memhooks.profile import high_water
from comfy_memhooks.profile.high_water import ContainerHighWater, ProcessHighWater, platform_peak
from comfy_memhooks.profile.peaks import PeakMethod, RamPeaks
from tests.fake_marks import FakeCgroupV2Peak, FakeProcessMark

MIB = 1024**2
ROOT = Path(__file__).resolve().parents[2]


def failures() -> Failures:
    return Failures(logging.getLogger("comfy_memhooks.profile.recorder"), "the node profile failed while {kind}")


# --- cgroup v2 memory.peak -----------------------------------------------------------------------------------------


def test_a_cgroup_v2_peak_is_reset_per_open_file_and_read_back_through_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Linux 6.12 resets ``memory.peak`` only for reads through the file that wrote to it: the counter keeps one
    file open, writes ``reset`` into it before each node, and reads the peak back through it."""
    cgroup = FakeCgroupV2Peak(tmp_path / "cgroup", monkeypatch, usage=1000 * MIB)
    cgroup.use(2500 * MIB)  # before comfy_memhooks started: the cgroup's highest ever stays at 2.5 GB
    cgroup.use(1000 * MIB)
    counted = failures()
    container = ContainerHighWater(RamSource.CGROUP_V2, tmp_path / "cgroup", counted)
    assert container.available and cgroup.open_files() == 1
    peaks = RamPeaks(None, container)

    first = peaks.begin(None)
    cgroup.use(1800 * MIB)  # the node's spike
    cgroup.use(1100 * MIB)  # given back before it returns
    spiked = peaks.end(first, None)
    second = peaks.begin(None)
    cgroup.use(1300 * MIB)
    calm = peaks.end(second, None)

    assert (spiked.container_before_bytes, spiked.container_peak_bytes) == (1000 * MIB, 1800 * MIB)
    assert (calm.container_before_bytes, calm.container_peak_bytes) == (1100 * MIB, 1300 * MIB)  # not 1.8 nor 2.5
    assert set(cgroup.writes) == {b"reset\n"} and len(cgroup.writes) == 3  # at open, then before each node
    assert cgroup.open_files() == 1  # the same file all along
    assert counted.count == 0
    peaks.close()
    assert cgroup.open_files() == 0


@pytest.mark.parametrize("refusal", ["EINVAL", "EACCES"])
def test_an_older_kernel_refusing_the_reset_leaves_the_container_peak_out(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, refusal: str
) -> None:
    """Before 6.12 ``memory.peak`` takes no write: its all-time peak says nothing of one node, so it is not used;
    that is the machine, not a failure (one line at INFO, nothing counted), and no file is left open."""
    cgroup = FakeCgroupV2Peak(tmp_path / "cgroup", monkeypatch, usage=1000 * MIB, refuse=getattr(errno, refusal))
    counted = failures()
    caplog.set_level(logging.INFO, "comfy_memhooks")
    container = ContainerHighWater(RamSource.CGROUP_V2, tmp_path / "cgroup", counted)
    samples = iter([None, 1400 * MIB])
    peaks = RamPeaks(None, container, take_sampled=lambda: next(samples, None))

    span = peaks.begin(1000 * MIB)
    cgroup.use(3000 * MIB)
    measured = peaks.end(span, 1000 * MIB)

    assert not container.available and peaks.container is None and cgroup.open_files() == 0
    assert (measured.container_before_bytes, measured.container_peak_bytes) == (None, None)
    assert (measured.rss_peak_bytes, measured.method) == (1400 * MIB, PeakMethod.SAMPLED)  # not cgroup
    assert cgroup.reads == 0 and len(cgroup.writes) == 1  # the one refused write, never asked again
    assert counted.count == 0
    [line] = [record for record in caplog.records if "cannot be reset" in record.getMessage()]
    assert line.levelno == logging.INFO and os.strerror(getattr(errno, refusal)) in line.getMessage()


@pytest.mark.parametrize("fault", ["reset", "read"])
def test_a_container_counter_failing_mid_run_is_counted_logged_once_and_left_out(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, fault: str
) -> None:
    """The cgroup removed under a running ComfyUI: the node whose counter failed gets no container peak (not the
    usage it started with as its peak), the failure is counted and logged once, and later nodes do not ask."""
    cgroup = FakeCgroupV2Peak(tmp_path / "cgroup", monkeypatch, usage=1000 * MIB)
    counted = failures()
    caplog.set_level(logging.ERROR, "comfy_memhooks")
    peaks = RamPeaks(None, ContainerHighWater(RamSource.CGROUP_V2, tmp_path / "cgroup", counted))
    span = peaks.begin(500 * MIB)
    cgroup.use(1200 * MIB)
    assert peaks.end(span, 500 * MIB).container_peak_bytes == 1200 * MIB

    if fault == "reset":
        cgroup.refuse = errno.ENODEV
    broken = peaks.begin(500 * MIB)
    if fault == "read":
        cgroup.fail_reads = errno.ENODEV
    measured = peaks.end(broken, 500 * MIB)
    asked = len(cgroup.writes), cgroup.reads
    later = [peaks.end(peaks.begin(500 * MIB), 500 * MIB) for _ in range(3)]

    assert measured.container_peak_bytes is None and measured.method is not PeakMethod.CGROUP
    assert all(node.container_before_bytes is None and node.container_peak_bytes is None for node in later)
    assert peaks.container is None and (len(cgroup.writes), cgroup.reads) == asked and cgroup.open_files() == 0
    assert counted.count == 1 and "container's peak" in (counted.last_error or "")
    logged = [record for record in caplog.records if "container's peak" in record.getMessage()]
    assert len(logged) == 1 and logged[0].levelno == logging.ERROR


# --- /proc/self: the process's mark --------------------------------------------------------------------------------


def test_vm_hwm_beyond_the_first_4_kb_of_status_is_read(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A user in many groups has a ``Groups:`` line long enough to push ``VmHWM`` past 4 KB: the mark is read,
    not given up, and the next read asks for the right size at once."""
    mark = FakeProcessMark(tmp_path / "proc-self", monkeypatch, rss=500 * MIB, groups=3000)
    assert mark.text().index(b"\nVmHWM:") > 4 * 4096  # past the first read, and past four times as much
    counted = failures()
    peaks = RamPeaks(ProcessHighWater(counted, mark.proc))

    span = peaks.begin(500 * MIB)
    mark.allocate(1700 * MIB, rss_after=500 * MIB)
    first = peaks.end(span, 500 * MIB)
    reads = mark.status_reads
    span = peaks.begin(500 * MIB)
    mark.allocate(900 * MIB)
    second = peaks.end(span, 500 * MIB)

    assert (first.rss_peak_bytes, first.method) == (1700 * MIB, PeakMethod.HWM)
    assert (second.rss_peak_bytes, second.method) == (900 * MIB, PeakMethod.HWM)
    assert mark.status_reads == reads + 1  # one read a node once the size is known
    assert counted.count == 0


def test_a_mark_opened_again_mid_span_keeps_the_spans_peak(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Closed while a node runs (a disconnect, a fork), the mark is opened again by the read at the node's end:
    that read must not reset it (checking whether ``getrusage`` follows the mark does), or the peak is lost."""
    mark = FakeProcessMark(tmp_path / "proc-self", monkeypatch, rss=7000 * MIB)
    monkeypatch.setattr(high_water, "PROC_SELF", mark.proc)  # so the getrusage check runs, as on the real /proc
    process = ProcessHighWater(failures(), mark.proc)
    peaks = RamPeaks(process)

    span = peaks.begin(7000 * MIB)
    resets = mark.resets
    assert resets == 2  # the check's own reset, then the node's
    mark.allocate(8400 * MIB, rss_after=7000 * MIB)
    process.close()
    measured = peaks.end(span, 7000 * MIB)

    assert (measured.rss_peak_bytes, measured.method) == (8400 * MIB, PeakMethod.HWM)
    assert mark.resets == resets
    peaks.end(peaks.begin(7000 * MIB), 7000 * MIB)
    assert mark.resets == resets + 2  # the next node's reset checks again


# --- the platforms' non-resettable peaks ---------------------------------------------------------------------------


def test_windows_peak_is_the_peak_working_set(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "platform", "win32")
    monkeypatch.setattr(
        psutil, "Process", lambda: SimpleNamespace(memory_info=lambda: SimpleNamespace(peak_wset=3 * 10**9))
    )
    assert platform_peak() == 3 * 10**9


def test_windows_peak_unreadable_is_none(monkeypatch: pytest.MonkeyPatch) -> None:
    def denied() -> Any:
        raise psutil.AccessDenied(os.getpid())

    monkeypatch.setattr(sys, "platform", "win32")
    monkeypatch.setattr(psutil, "Process", denied)
    assert platform_peak() is None


@pytest.mark.parametrize(("platform", "unit"), [("darwin", 1), ("linux", 1024)])
def test_ru_maxrss_is_given_in_bytes_whatever_unit_the_platform_keeps(
    monkeypatch: pytest.MonkeyPatch, platform: str, unit: int
) -> None:
    """macOS gives ``ru_maxrss`` in bytes, Linux in KiB."""
    monkeypatch.setattr(sys, "platform", platform)
    monkeypatch.setattr(resource, "getrusage", lambda who: SimpleNamespace(ru_maxrss=2_000_000))
    assert platform_peak() == 2_000_000 * unit


def test_a_platform_without_a_known_peak_has_none(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "platform", "freebsd14")
    monkeypatch.setattr(resource, "getrusage", lambda who: SimpleNamespace(ru_maxrss=2_000_000))
    assert platform_peak() is None


def test_the_marks_load_without_the_resource_module_as_on_windows() -> None:
    """Windows has no ``resource`` module: the profile must load all the same, its peak from psutil."""
    script = (
        "import sys, types, psutil\n"
        "sys.modules['resource'] = None\n"
        "from comfy_memhooks.profile import high_water, peaks\n"
        "sys.platform = 'win32'\n"
        "psutil.Process = lambda: types.SimpleNamespace(memory_info=lambda: types.SimpleNamespace(peak_wset=7))\n"
        "print(high_water.platform_peak(), high_water.ProcessHighWater(None).broken)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["7", "True"]


def test_on_linux_where_clear_refs_is_refused_ru_maxrss_gives_the_peak_when_it_rose(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """seccomp or gVisor refuse the reset: ``ru_maxrss`` (the same mark, never reset) names a node's exact peak
    when it rose during the node; a flat one says nothing of the node, whose peak is then sampled."""
    mark = FakeProcessMark(tmp_path / "proc-self", monkeypatch, rss=500 * MIB, refuse=errno.EPERM)
    monkeypatch.setattr(sys, "platform", "linux")
    maxrss_kib = iter([700 * 1024, 700 * 1024, 700 * 1024, 1200 * 1024])
    monkeypatch.setattr(resource, "getrusage", lambda who: SimpleNamespace(ru_maxrss=next(maxrss_kib)))
    counted = failures()
    samples = iter([None, 600 * MIB, None, 650 * MIB])
    peaks = RamPeaks(
        ProcessHighWater(counted, mark.proc), take_sampled=lambda: next(samples, None), platform=platform_peak
    )

    flat = peaks.end(peaks.begin(500 * MIB), 500 * MIB)
    rising = peaks.end(peaks.begin(500 * MIB), 500 * MIB)

    assert (flat.rss_peak_bytes, flat.method) == (600 * MIB, PeakMethod.SAMPLED)
    assert (rising.rss_peak_bytes, rising.method) == (1200 * MIB, PeakMethod.HWM)
    assert counted.count == 1 and "EPERM" in (counted.last_error or "")
