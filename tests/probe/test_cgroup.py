"""The container-aware RAM probe on fake cgroup trees, and on this machine's real one."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import psutil
import pytest

from comfy_memhooks.probe.cgroup import CgroupReader
from comfy_memhooks.probe.ram import RamProbe
from comfy_memhooks.probe.readings import RamSource
from tests.cgroups import enter_group_launcher, limited_v1_group

GIB = 1024**3
HOST_TOTAL = psutil.virtual_memory().total
UNLIMITED_V1 = 9223372036854771712  # what v1 reports for "no limit": 2**63 rounded down to a page


def write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def v2_tree(
    tmp_path: Path, cgroup: str = "/", max_: str = str(4 * GIB), current: int = 3 * GIB, inactive_file: int = GIB
) -> tuple[Path, Path]:
    root = tmp_path / "sys-fs-cgroup"
    write(root / "cgroup.controllers", "cpu memory pids\n")
    group = root / cgroup.strip("/") if cgroup.strip("/") else root
    write(group / "memory.max", max_ + "\n")
    write(group / "memory.current", f"{current}\n")
    write(group / "memory.stat", f"anon 123\nfile 456\ninactive_file {inactive_file}\nactive_file 7\n")
    proc = tmp_path / "proc-self-cgroup"
    write(proc, f"0::{cgroup}\n")
    return root, proc


def v1_tree(
    tmp_path: Path,
    cgroup: str = "/",
    limit: int = 2 * GIB,
    usage: int = GIB + GIB // 2,
    inactive_file: int = GIB // 2,
    hierarchical: int | None = None,
) -> tuple[Path, Path]:
    root = tmp_path / "sys-fs-cgroup"
    group = root / "memory" / cgroup.strip("/")
    write(group / "memory.limit_in_bytes", f"{limit}\n")
    write(group / "memory.usage_in_bytes", f"{usage}\n")
    stat = f"cache 1\nrss 2\ntotal_inactive_file {inactive_file}\n"
    if hierarchical is not None:
        stat += f"hierarchical_memory_limit {hierarchical}\n"
    write(group / "memory.stat", stat)
    proc = tmp_path / "proc-self-cgroup"
    write(proc, f"12:pids:/x\n4:memory:{cgroup}\n3:cpu,cpuacct:/y\n0::/\n")
    return root, proc


def probe(root: Path, proc: Path) -> RamProbe:
    return RamProbe(CgroupReader(root=root, proc_self_cgroup=proc))


def test_v2_limit_is_used_and_inactive_file_is_not_counted(tmp_path: Path) -> None:
    reading = probe(*v2_tree(tmp_path)).read()
    assert reading.source is RamSource.CGROUP_V2
    assert reading.total_bytes == 4 * GIB
    assert reading.used_bytes == 2 * GIB  # 3 GiB current minus 1 GiB inactive file cache
    assert reading.available_bytes == 2 * GIB
    assert reading.percent == pytest.approx(50.0)
    assert reading.host_total_bytes == HOST_TOTAL
    assert reading.process_rss_bytes is not None and reading.process_rss_bytes > 0


def test_v2_max_means_no_limit_so_host_figures_are_used(tmp_path: Path) -> None:
    reading = probe(*v2_tree(tmp_path, max_="max")).read()
    assert reading.source is RamSource.HOST
    assert reading.total_bytes == HOST_TOTAL
    assert reading.cgroup_path is not None  # the cgroup was found, it just sets no limit


def test_v2_limit_above_host_ram_means_no_limit(tmp_path: Path) -> None:
    reading = probe(*v2_tree(tmp_path, max_=str(HOST_TOTAL * 4))).read()
    assert reading.source is RamSource.HOST


def test_v2_a_parent_limit_applies_to_a_child_without_one(tmp_path: Path) -> None:
    root, proc = v2_tree(tmp_path, cgroup="/kubepods/pod1/ctr", max_="max")
    write(root / "kubepods" / "pod1" / "memory.max", f"{3 * GIB}\n")
    reading = probe(root, proc).read()
    assert reading.source is RamSource.CGROUP_V2
    assert reading.total_bytes == 3 * GIB


def test_v2_a_parent_limit_is_read_with_the_parents_usage_which_counts_its_other_groups(tmp_path: Path) -> None:
    # A Kubernetes pod: 6 GiB for the pod, 4 GiB for this container, 5 GiB used by the pod's containers together.
    root, proc = v2_tree(tmp_path, cgroup="/kubepods/pod1/ctr", max_=str(4 * GIB), current=2 * GIB, inactive_file=0)
    pod = root / "kubepods" / "pod1"
    write(pod / "memory.max", f"{6 * GIB}\n")
    write(pod / "memory.current", f"{5 * GIB}\n")
    write(pod / "memory.stat", "inactive_file 0\n")
    reading = probe(root, proc).read()
    assert reading.source is RamSource.CGROUP_V2
    assert (reading.total_bytes, reading.used_bytes) == (6 * GIB, 5 * GIB)  # 1 GiB of room, not this group's 2
    assert reading.cgroup_path == str(pod)

    write(pod / "memory.current", f"{3 * GIB}\n")  # the pod has room again: this container's own limit binds
    reading = probe(root, proc).read()
    assert (reading.total_bytes, reading.used_bytes) == (4 * GIB, 2 * GIB)
    assert reading.cgroup_path == str(root / "kubepods" / "pod1" / "ctr")


def test_v2_host_path_without_cgroup_namespace_uses_the_mounted_group(tmp_path: Path) -> None:
    # /proc/self/cgroup names the host's path while the container's own group is mounted at the root.
    root, _ = v2_tree(tmp_path, cgroup="/")
    proc = tmp_path / "proc-self-cgroup"
    write(proc, "0::/system.slice/docker-0123abcd.scope\n")
    reading = probe(root, proc).read()
    assert reading.source is RamSource.CGROUP_V2
    assert reading.cgroup_path == str(root)


def test_v1_limit_and_usage_minus_total_inactive_file(tmp_path: Path) -> None:
    reading = probe(*v1_tree(tmp_path, cgroup="/docker/abc")).read()
    assert reading.source is RamSource.CGROUP_V1
    assert reading.total_bytes == 2 * GIB
    assert reading.used_bytes == GIB
    assert reading.percent == pytest.approx(50.0)


def test_v1_unlimited_is_a_huge_number_and_means_host(tmp_path: Path) -> None:
    reading = probe(*v1_tree(tmp_path, limit=UNLIMITED_V1)).read()
    assert reading.source is RamSource.HOST
    assert reading.total_bytes == HOST_TOTAL


def test_v1_hierarchical_limit_of_a_parent_is_the_effective_one(tmp_path: Path) -> None:
    reading = probe(*v1_tree(tmp_path, limit=UNLIMITED_V1, hierarchical=3 * GIB)).read()
    assert reading.source is RamSource.CGROUP_V1
    assert reading.total_bytes == 3 * GIB


def test_v1_a_visible_parents_limit_is_read_with_the_parents_usage(tmp_path: Path) -> None:
    root, proc = v1_tree(
        tmp_path, cgroup="/kubepods/pod1/ctr", limit=UNLIMITED_V1, usage=GIB, inactive_file=0, hierarchical=3 * GIB
    )
    pod = root / "memory" / "kubepods" / "pod1"
    write(pod / "memory.limit_in_bytes", f"{3 * GIB}\n")
    write(pod / "memory.usage_in_bytes", f"{2 * GIB + GIB // 2}\n")
    write(pod / "memory.stat", f"total_inactive_file {GIB // 2}\n")
    reading = probe(root, proc).read()
    assert reading.source is RamSource.CGROUP_V1
    assert (reading.total_bytes, reading.used_bytes) == (3 * GIB, 2 * GIB)
    assert reading.cgroup_path == str(pod)


def test_hybrid_host_reads_the_v1_memory_controller(tmp_path: Path) -> None:
    root, proc = v1_tree(tmp_path)
    write(root / "unified" / "cgroup.controllers", "")
    write(proc, "4:memory:/\n0::/\n")
    assert probe(root, proc).read().source is RamSource.CGROUP_V1


@pytest.mark.parametrize(
    "broken",
    [
        "no proc file",
        "empty proc file",
        "garbage proc file",
        "no cgroup files",
        "malformed limit",
        "malformed usage",
        "malformed stat",
    ],
)
def test_missing_and_malformed_files_never_raise(tmp_path: Path, broken: str) -> None:
    root, proc = v2_tree(tmp_path)
    if broken == "no proc file":
        proc.unlink()
    elif broken == "empty proc file":
        proc.write_text("")
    elif broken == "garbage proc file":
        proc.write_text("this is not\na cgroup file::::\n")
    elif broken == "no cgroup files":
        for name in ("memory.max", "memory.current", "memory.stat"):
            (root / name).unlink()
    elif broken == "malformed limit":
        (root / "memory.max").write_text("lots\n")
    elif broken == "malformed usage":
        (root / "memory.current").write_text("\x00\x01\n")
    elif broken == "malformed stat":
        (root / "memory.stat").write_text("inactive_file\nnonsense here\n=\n")
    reading = probe(root, proc).read()
    assert reading.total_bytes is not None and reading.total_bytes > 0
    if broken == "malformed usage":
        assert reading.source is RamSource.CGROUP_V2
        assert reading.used_bytes is None and reading.percent is None
    elif broken == "malformed stat":
        assert reading.used_bytes == 3 * GIB  # no inactive_file to subtract
    elif broken in {"malformed limit", "no proc file", "empty proc file", "garbage proc file", "no cgroup files"}:
        assert reading.source is RamSource.HOST


def test_this_machines_real_cgroup_is_read() -> None:
    reading = RamProbe().read()
    assert reading.total_bytes is not None and reading.used_bytes is not None
    assert 0 < reading.used_bytes <= reading.total_bytes
    assert reading.process_rss_bytes is not None and reading.process_rss_bytes > 0
    if reading.source is RamSource.HOST:
        assert reading.total_bytes == HOST_TOTAL
    else:
        assert reading.total_bytes < HOST_TOTAL


def test_a_process_in_a_real_memory_limited_cgroup_sees_the_limit() -> None:
    limit = 1536 * 1024 * 1024
    script = (
        "import json\n"
        "from comfy_memhooks.probe.ram import RamProbe\n"
        "r = RamProbe().read()\n"
        "print(json.dumps({'source': r.source.value, 'total': r.total_bytes, 'used': r.used_bytes}))\n"
    )
    with limited_v1_group(limit) as group:
        if group is None:
            pytest.skip("cannot create a v1 memory cgroup here (needs root and a writable v1 memory hierarchy)")
        output = subprocess.run(
            [*enter_group_launcher(group), sys.executable, "-c", script],
            check=True,
            capture_output=True,
            text=True,
            timeout=60,
            cwd=Path(__file__).resolve().parents[2],
            env={**os.environ, "PYTHONPATH": "."},
        ).stdout
    reading = json.loads(output)
    assert reading["source"] == "cgroup v1"
    assert reading["total"] == limit
    assert 0 < reading["used"] < limit


def test_host_figures_come_from_proc_meminfo_and_statm(tmp_path: Path) -> None:
    procfs = tmp_path / "proc"
    write(procfs / "meminfo", "MemTotal:  16384000 kB\nMemFree:  1 kB\nMemAvailable:  4096000 kB\nBuffers: 2 kB\n")
    write(procfs / "self" / "statm", "1000 2500 300 4 0 600 0\n")
    root, proc = v2_tree(tmp_path, max_="max")
    reading = RamProbe(CgroupReader(root=root, proc_self_cgroup=proc), procfs=procfs).read()
    assert reading.source is RamSource.HOST
    assert reading.total_bytes == 16384000 * 1024
    assert reading.available_bytes == 4096000 * 1024
    assert reading.used_bytes == (16384000 - 4096000) * 1024
    assert reading.process_rss_bytes == 2500 * os.sysconf("SC_PAGE_SIZE")


def test_without_proc_the_probe_falls_back_to_psutil(tmp_path: Path) -> None:
    root, proc = v2_tree(tmp_path, max_="max")
    reading = RamProbe(CgroupReader(root=root, proc_self_cgroup=proc), procfs=tmp_path / "no-proc").read()
    assert reading.total_bytes == HOST_TOTAL
    assert reading.process_rss_bytes is not None and reading.process_rss_bytes > 0
