"""The RAM peak while a node runs: the real process mark on this machine, fake /proc trees for the ways it fails,
and a node through the recorder that takes a block and gives it back before it returns."""

from __future__ import annotations

import errno
import logging
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from comfy_memhooks.comfy.runtime import current_runtime
from comfy_memhooks.failures import Failures
from comfy_memhooks.probe.readings import RamSource
from comfy_memhooks.profile import high_water
from comfy_memhooks.profile.high_water import ContainerHighWater, ProcessHighWater, parse_vm_hwm
from comfy_memhooks.profile.peaks import PeakMethod, RamPeaks
from comfy_memhooks.profile.recorder import ProfileRecorder
from comfy_memhooks.profile.store import ProfileStore
from tests.cgroups import enter_group_launcher, limited_v1_group
from tests.fake_marks import FakeProcessMark
from tests.pipeline_support import finish_node, start_node

MIB = 1024**2
STATUS = b"Name:\tpython\nVmPeak:\t  900000 kB\nVmSize:\t  800000 kB\nVmHWM:\t  204800 kB\nVmRSS:\t  102400 kB\n"
linux_only = pytest.mark.skipif(
    not Path("/proc/self/clear_refs").exists(), reason="needs Linux's /proc/self/clear_refs"
)


def failures() -> Failures:
    return Failures(logging.getLogger("comfy_memhooks.profile.recorder"), "the node profile failed while {kind}")


def fake_proc(tmp_path: Path, status: bytes = STATUS, clear_refs: bool = True) -> Path:
    proc = tmp_path / "proc-self"
    proc.mkdir()
    (proc / "status").write_bytes(status)
    if clear_refs:
        (proc / "clear_refs").write_bytes(b"")
    return proc


def test_vm_hwm_is_read_in_bytes_and_anything_else_is_none() -> None:
    assert parse_vm_hwm(STATUS) == 204800 * 1024
    assert parse_vm_hwm(b"Name:\tx\nVmRSS:\t 1 kB\n") is None
    assert parse_vm_hwm(b"Name:\tx\nVmHWM:\t lots kB\n") is None
    assert parse_vm_hwm(b"Name:\tx\nVmHWM:\t 12 MB\n") is None
    assert parse_vm_hwm(b"Name:\tx\nVmHWM:\t 12") is None


@linux_only
def test_the_real_mark_sees_a_block_taken_and_given_back() -> None:
    mark = ProcessHighWater(failures())
    assert mark.reset()
    start = mark.read()
    block = bytearray(200 * MIB)  # zero pages are not resident until written: touch every page
    block[:: os.sysconf("SC_PAGE_SIZE")] = b"\x01" * len(block[:: os.sysconf("SC_PAGE_SIZE")])
    del block
    peak = mark.read()
    assert start is not None and peak is not None
    assert peak - start >= 190 * MIB
    assert mark.reset() and (mark.read() or 0) < peak - 150 * MIB  # the reset brings it down to the resident set
    mark.close()
    assert mark.reset() and mark.read() is not None  # a closed mark opens again on its next use


@pytest.mark.parametrize(
    ("damage", "kind"),
    [
        ("missing", "opening"),
        ("EACCES", "EACCES"),
        ("EINVAL", "EINVAL"),
        ("no VmHWM", "VmHWM"),
        ("garbage VmHWM", "VmHWM"),
    ],
)
def test_a_broken_mark_leaves_the_node_sampled_logged_once_counted_and_silent_towards_comfyui(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, damage: str, kind: str
) -> None:
    status = {"no VmHWM": b"Name:\tx\nVmRSS:\t 1 kB\n", "garbage VmHWM": b"Name:\tx\nVmHWM:\t \xff\xfe kB\n"}
    proc = fake_proc(tmp_path, status.get(damage, STATUS), clear_refs=damage != "missing")
    monkeypatch.setattr(high_water, "PROC_SELF", proc)  # checked as the real /proc is, getrusage's check included
    if damage in ("EACCES", "EINVAL"):  # as root every file is writable: the kernel's refusal is what is faked
        real_write = os.write
        code = getattr(errno, damage)

        def refusing(descriptor: int, data: bytes) -> int:
            if os.readlink(f"/proc/self/fd/{descriptor}").endswith("clear_refs"):
                raise OSError(code, os.strerror(code))
            return real_write(descriptor, data)

        monkeypatch.setattr(os, "write", refusing)
    counted = failures()
    store = ProfileStore()
    samples = iter([150 * MIB, 400 * MIB, None, None, None, None])
    peaks = RamPeaks(ProcessHighWater(counted, proc), take_sampled=lambda: next(samples, None))
    recorder = ProfileRecorder(store, peaks=peaks, pipeline=current_runtime().pipeline)
    recorder.failures = counted
    recorder.connect()
    caplog.set_level(logging.ERROR, "comfy_memhooks")
    try:
        recorder.on_prompt_started("p-1", prompt_id="p-1")
        for node_id in ("1", "2"):
            start_node(node_id, "VAEDecode")
            finish_node(node_id, "VAEDecode")
        recorder.on_prompt_finished("p-1", prompt_id="p-1", success=True, duration_seconds=1.0)
    finally:
        recorder.disconnect()
    nodes = store.latest()
    assert nodes is not None and len(nodes.nodes) == 2
    assert {node.ram_peak_method for node in nodes.nodes} == {PeakMethod.SAMPLED}
    first = nodes.nodes[0]
    assert first.rss_peak_bytes is not None and first.rss_peak_bytes >= 400 * MIB  # the watchdog's reading
    assert counted.count == 1  # it gave up at once, and later nodes did not try again
    assert kind in (counted.last_error or "")
    logged = [record for record in caplog.records if "RAM peaks are sampled" in record.getMessage()]
    assert len(logged) == 1


def test_overlapping_spans_each_keep_their_peak(tmp_path: Path) -> None:
    """Two async nodes side by side: the second's reset must not erase the first's peak."""
    proc = fake_proc(tmp_path)
    status = proc / "status"
    peaks = RamPeaks(ProcessHighWater(failures(), proc))
    first = peaks.begin(100 * MIB)
    status.write_bytes(STATUS.replace(b"204800", b"921600"))  # the first reaches 900 MiB before the second starts
    second = peaks.begin(300 * MIB)
    status.write_bytes(STATUS.replace(b"204800", b"409600"))  # then 400 MiB since the reset
    assert peaks.end(second, 300 * MIB).rss_peak_bytes == 400 * MIB
    status.write_bytes(STATUS.replace(b"204800", b"102400"))
    measured = peaks.end(first, 100 * MIB)
    assert (measured.rss_peak_bytes, measured.method) == (900 * MIB, PeakMethod.HWM)


def test_a_platform_peak_that_rose_during_the_node_is_its_exact_peak() -> None:
    """Windows and macOS keep a peak that cannot be reset: it counts when it rose while the node ran."""
    readings = iter([700 * MIB, 700 * MIB, 700 * MIB, 1200 * MIB])
    peaks = RamPeaks(None, platform=lambda: next(readings))
    flat = peaks.begin(300 * MIB)
    assert peaks.end(flat, 310 * MIB).method is PeakMethod.SAMPLED  # the old peak says nothing of this node
    rising = peaks.begin(300 * MIB)
    measured = peaks.end(rising, 310 * MIB)
    assert (measured.rss_peak_bytes, measured.method) == (1200 * MIB, PeakMethod.HWM)


def test_a_real_cgroup_v1_peak_counter_sees_a_spike_that_is_gone_by_the_end() -> None:
    """A container of one's own (writable ``memory.max_usage_in_bytes``): a process in it takes 300 MiB and exits
    while the span is open; the container's usage is back down, its peak is not."""
    with limited_v1_group(2 * 1024**3) as group:
        if group is None:
            pytest.skip("needs root and a writable cgroup v1 memory hierarchy")
        container = ContainerHighWater(RamSource.CGROUP_V1, group, failures())
        assert container.available
        peaks = RamPeaks(None, container)
        span = peaks.begin(None)
        spike = "b = bytearray(300 * 1024**2); b[::4096] = b'\\1' * len(b[::4096])"
        subprocess.run([*enter_group_launcher(group), sys.executable, "-c", spike], check=True, timeout=60)
        measured = peaks.end(span, None)
        container.close()
    assert measured.container_before_bytes is not None and measured.container_peak_bytes is not None
    assert measured.container_peak_bytes - measured.container_before_bytes >= 300 * MIB


def test_a_read_only_container_counter_is_left_out_silently(tmp_path: Path) -> None:
    folder = tmp_path / "memory"
    folder.mkdir()  # memory.peak absent, as on a kernel before 6.12 or a read-only mount
    assert not ContainerHighWater(RamSource.CGROUP_V2, folder, failures()).available
    assert RamPeaks(None, ContainerHighWater(RamSource.CGROUP_V2, folder, failures())).container is None


def test_without_the_process_mark_a_resettable_container_counter_gives_the_peak(tmp_path: Path) -> None:
    """seccomp or gVisor refuse clear_refs; a container of one's own still counts its peak: method ``cgroup``."""
    with limited_v1_group(2 * 1024**3) as group:
        if group is None:
            pytest.skip("needs root and a writable cgroup v1 memory hierarchy")
        refused = ProcessHighWater(failures(), fake_proc(tmp_path, clear_refs=False))
        peaks = RamPeaks(refused, ContainerHighWater(RamSource.CGROUP_V1, group, failures()))
        span = peaks.begin(500 * MIB)
        spike = "b = bytearray(300 * 1024**2); b[::4096] = b'\\1' * len(b[::4096])"
        subprocess.run([*enter_group_launcher(group), sys.executable, "-c", spike], check=True, timeout=60)
        measured = peaks.end(span, 500 * MIB)
        peaks.close()
    assert measured.method is PeakMethod.CGROUP
    assert measured.rss_peak_bytes is not None and measured.rss_peak_bytes - 500 * MIB >= 300 * MIB


@linux_only
def test_the_real_mark_sees_a_block_another_thread_took_and_gave_back() -> None:
    """Read where it follows the mark from the calling thread's rusage (cheaper with many threads): still the
    process's mark, whichever thread allocated."""
    mark = ProcessHighWater(failures())
    assert mark.reset()
    start = mark.read()

    def allocate() -> None:
        block = bytearray(200 * MIB)
        block[:: os.sysconf("SC_PAGE_SIZE")] = b"\x01" * len(block[:: os.sysconf("SC_PAGE_SIZE")])

    worker = threading.Thread(target=allocate)
    worker.start()
    worker.join()
    peak = mark.read()
    mark.close()
    assert start is not None and peak is not None and peak - start >= 190 * MIB


@pytest.mark.parametrize("known", ["as it starts", "only at its end"])
def test_a_cached_node_gets_no_peak_span_and_says_its_peak_was_not_measured(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, known: str
) -> None:
    """ComfyUI answered the node from its cache: nothing ran to measure. Known as it starts (a heavy node, whose
    cache is looked up), the peak counters are not touched; found only at its end, its span is closed unread.
    Either way its record claims no peak (``None``), while the node that ran beside it keeps its exact one."""
    mark = FakeProcessMark(tmp_path / "proc-self", monkeypatch, rss=500 * MIB)
    store = ProfileStore()
    peaks = RamPeaks(ProcessHighWater(failures(), mark.proc))
    recorder = ProfileRecorder(store, peaks=peaks, pipeline=current_runtime().pipeline)
    recorder.connect()
    try:
        recorder.on_prompt_started("p-1", prompt_id="p-1")
        start_node("1", "VAEDecode", heavy=True)
        mark.allocate(1500 * MIB, rss_after=500 * MIB)
        finish_node("1", "VAEDecode", heavy=True)
        calls = mark.resets, mark.status_reads
        start_node("2", "VAEDecode", heavy=True, cached=True if known == "as it starts" else None)
        if known == "as it starts":
            assert (mark.resets, mark.status_reads) == calls
        finish_node("2", "VAEDecode", heavy=True, cached=True)
        recorder.on_prompt_finished("p-1", prompt_id="p-1", success=True, duration_seconds=1.0)
    finally:
        recorder.disconnect()
    prompt = store.latest()
    assert prompt is not None
    ran, cached = prompt.nodes
    assert ran.ram_peak_method is PeakMethod.HWM and ran.rss_peak_bytes == 1500 * MIB
    assert cached.cached and (cached.rss_peak_bytes, cached.ram_peak_method) == (None, None)
    assert mark.status_reads == calls[1]  # no read at its end either
    assert mark.resets == calls[0] + (0 if known == "as it starts" else 1)
    assert peaks._open == []
