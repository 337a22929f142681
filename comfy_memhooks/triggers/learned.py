"""What predictive cleanup learned: each node class's recent RAM and VRAM peaks, and their workloads.

The peak is what a node needed while it ran (the profile's RAM peak, :mod:`..profile.peaks`), not what it left
behind: the node a container dies in is often one that frees its working memory before it returns. It is learned
per unit of its workload where one is visible (frames x pixels for a video node), so a video twice as long predicts
twice the peak; without a workload the class's recent maximum stands. Either way a safety margin is added. The table
is bounded (least recently used classes go first) and turns into, and back from, the small JSON object kept on
disk (:mod:`.learned_file`).

Files written before peaks were measured (version 1) hold what each run left behind: they are read, their runs
kept as lower bounds ("growth"), and a class's growth runs give way to its first measured peak. Saving writes
version 2.
"""

from __future__ import annotations

import threading
from collections import OrderedDict, deque
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ..errors import InvalidSetting

MAX_CLASSES = 500
"""Classes remembered; the least recently seen goes when a new one comes (about 200 bytes each on disk)."""
SAMPLES_PER_CLASS = 8
"""Each class's latest runs that predictions are made from."""
SAFETY_MARGIN = 1.1
"""A prediction is the learned peak plus 10%: runs differ, and a sampled peak (where the process's own mark cannot
be reset) may miss a spike between readings."""
FILE_VERSION = 2
"""The version :meth:`LearnedPeaks.to_json` writes; version 1 (RAM left behind, not peaks) is read and upgraded."""
MAX_NAME_LENGTH = 200
NEGLIGIBLE_BYTES = 1024**2
"""Peaks under this are noise (the resident set moves by a few pages around any node)."""


@dataclass(frozen=True, slots=True)
class Workload:
    """A node's workload: what its memory grows with (frames x pixels), as visible before it runs.

    Attributes:
        kind: what is counted: ``frame_pixels``, ``frames`` or ``pixels``; per-unit figures are only compared
            between runs of the same kind.
        units: how many (frames x width x height for ``frame_pixels``).
    """

    kind: str
    units: int


@dataclass(frozen=True, slots=True)
class Sample:
    """One run of a class: its RAM and VRAM peaks (``None`` when not measured) and its workload, if any.

    ``ram_is_peak`` is ``False`` for a run whose RAM figure is only what it left behind (a version 1 file, or a
    record without a peak reading): a lower bound of its peak, replaced by the class's first measured peak.
    """

    ram_peak_bytes: int | None
    vram_peak_bytes: int | None
    workload: Workload | None
    ram_is_peak: bool = True


class _SampleSlots:
    __slots__ = Sample.__slots__


def new_sample(
    ram_peak_bytes: int | None, vram_peak_bytes: int | None, workload: Workload | None, ram_is_peak: bool
) -> Sample:
    """``Sample(...)`` of the same arguments at a third of the cost, for the run learned after every node: plainly
    assigned slots, then the class (as :func:`..profile.records.new_node_profile` does, which says why)."""
    sample: Any = _SampleSlots()
    sample.ram_peak_bytes = ram_peak_bytes
    sample.vram_peak_bytes = vram_peak_bytes
    sample.workload = workload
    sample.ram_is_peak = ram_is_peak
    sample.__class__ = Sample
    made: Sample = sample
    return made


@dataclass(frozen=True, slots=True)
class Prediction:
    """A class's predicted peaks for one run of it.

    Attributes:
        node_class: the class.
        ram_bytes, vram_bytes: the predicted peaks, margin included; ``None`` when nothing was learned for one.
        basis: how it was made, in words ("scaled to 240 frames", "recent maximum").
    """

    node_class: str
    ram_bytes: int | None
    vram_bytes: int | None
    basis: str


@dataclass(frozen=True, slots=True)
class ClassSummary:
    """One class for the panel: how many runs were learned, the last prediction and what the run then took."""

    node_class: str
    runs: int
    workload_kind: str | None
    predicted_ram_bytes: int | None
    actual_ram_bytes: int | None
    predicted_vram_bytes: int | None
    actual_vram_bytes: int | None


Line = tuple[float, float]
"""A peak as ``fixed + per_unit * units``: what a class's runs of one workload kind say of one resource."""


def fit_line(points: list[tuple[int, int]]) -> Line | None:
    """The line through ``(units, peak)`` points that no seen run exceeds, ``None`` without points.

    With runs of one size only, the peak is taken as proportional to the workload (a video twice as long, twice the
    frames). With several sizes, the least-squares slope (never negative) is kept and the fixed part raised until
    every run lies on or under the line: a node that loads a model and then decodes frames is not predicted to
    need ten models for ten times the frames.
    """
    if not points:
        return None
    distinct = {units for units, _ in points}
    if len(distinct) == 1:
        return 0.0, max(peak / units for units, peak in points)
    count = len(points)
    mean_units = sum(units for units, _ in points) / count
    mean_peak = sum(peak for _, peak in points) / count
    spread = sum((units - mean_units) ** 2 for units, _ in points)
    slope = max(sum((units - mean_units) * (peak - mean_peak) for units, peak in points) / spread, 0.0)
    return max(0.0, *(peak - slope * units for units, peak in points)), slope


class _Entry:
    __slots__ = ("actual", "lines", "lower_bounds", "peaks", "predicted", "runs", "samples")

    def __init__(self) -> None:
        self.samples: deque[Sample] = deque(maxlen=SAMPLES_PER_CLASS)
        self.runs = 0
        self.predicted: tuple[int | None, int | None] = (None, None)
        self.actual: tuple[int | None, int | None] = (None, None)
        # What predictions are made from, worked out when a run is learned so that a prediction is two lookups.
        self.peaks: tuple[int | None, int | None] = (None, None)
        self.lines: dict[str, tuple[Line | None, Line | None]] = {}
        self.lower_bounds = False  # a sample may be a lower bound ("growth"): checked only then, not on every run

    def add(self, sample: Sample) -> bool:
        """Adds one run; ``True`` when what predictions are made from (the peaks, the lines) changed."""
        superseded = False
        if self.lower_bounds and sample.ram_is_peak and sample.ram_peak_bytes is not None:
            if any(not s.ram_is_peak for s in self.samples):
                # A measured peak supersedes what earlier runs left behind (lower bounds of the same thing).
                kept = [
                    each if each.ram_is_peak else Sample(None, each.vram_peak_bytes, each.workload)
                    for each in self.samples
                    if each.ram_is_peak or each.vram_peak_bytes is not None
                ]
                self.samples = deque(kept, maxlen=SAMPLES_PER_CLASS)
                superseded = self.peaks != (None, None)
                self.peaks = (None, None)
            self.lower_bounds = False
        self.samples.append(sample)
        if not sample.ram_is_peak:
            self.lower_bounds = True
        ram, vram = self.peaks
        if (
            (sample.ram_peak_bytes or 0) < NEGLIGIBLE_BYTES
            and (sample.vram_peak_bytes or 0) < NEGLIGIBLE_BYTES
            and (ram or 0) < NEGLIGIBLE_BYTES
            and (vram or 0) < NEGLIGIBLE_BYTES
        ):
            return superseded  # a class that never took memory (most nodes): nothing to work out again, on every node
        peaks: list[int | None] = [None, None]
        points: dict[str, tuple[list[tuple[int, int]], list[tuple[int, int]]]] = {}
        for each in self.samples:
            for resource, peak in enumerate((each.ram_peak_bytes, each.vram_peak_bytes)):
                if peak is None:
                    continue
                peaks[resource] = max(peak, peaks[resource] or 0)
                if each.workload is not None and each.workload.units > 0:
                    points.setdefault(each.workload.kind, ([], []))[resource].append((each.workload.units, peak))
        lines = {kind: (fit_line(ram), fit_line(vram)) for kind, (ram, vram) in points.items()}
        changed = (peaks[0], peaks[1]) != self.peaks or lines != self.lines
        self.peaks = (peaks[0], peaks[1])
        self.lines = lines
        return changed


def _scale(peak: int | None, line: Line | None, workload: Workload | None) -> tuple[int | None, bool]:
    if line is not None and workload is not None:
        return int(line[0] + line[1] * workload.units), True
    return peak, False


class LearnedPeaks:
    """The classes' learned peaks; thread-safe (learned in ComfyUI's worker thread, read by the panel's)."""

    def __init__(self, max_classes: int = MAX_CLASSES, margin: float = SAFETY_MARGIN):
        self.max_classes = max_classes
        self.margin = margin
        self._entries: OrderedDict[str, _Entry] = OrderedDict()
        self._lock = threading.Lock()
        self.changed = False
        """What predictions are made from changed since the last save (a class was added, a peak moved)."""
        self.unsaved = False
        """Anything was learned since the last save, if only another run's count and figures."""

    def __contains__(self, node_class: object) -> bool:
        return node_class in self._entries

    def __len__(self) -> int:
        return len(self._entries)

    def learn(self, node_class: str, sample: Sample, predicted: Prediction | None = None) -> None:
        """Adds one run of ``node_class``; ``predicted``: what was predicted before it, shown beside it.

        The table is marked :attr:`changed` (to be saved) only when the class is new or what its predictions are
        made from changed: another run of an image inversion that took nothing, as most runs are, changes only its
        count and last figures, which :attr:`unsaved` keeps for the next save.
        """
        with self._lock:
            entries = self._entries
            entry = entries.get(node_class)
            if entry is None:
                entry = entries[node_class] = _Entry()
                while len(entries) > self.max_classes:
                    entries.popitem(last=False)
                changed = True
            else:
                entries.move_to_end(node_class)  # the least recently seen goes first
                changed = False
            if entry.add(sample):
                changed = True
            entry.runs += 1
            entry.actual = (sample.ram_peak_bytes, sample.vram_peak_bytes)
            entry.predicted = (None, None) if predicted is None else (predicted.ram_bytes, predicted.vram_bytes)
            self.unsaved = True
            if changed:
                self.changed = True

    def never_reaches(self, node_class: str, floor_bytes: int) -> bool:
        """Whether no prediction for the class can reach ``floor_bytes``: no workload scales it and its peaks, margin
        included, stay under. Most classes (an image inversion, a text encode) are such: asked before every node of
        theirs, this saves working out a prediction nothing would act on."""
        entry = self._entries.get(node_class)
        if entry is None or entry.lines:
            return False
        ram, vram = entry.peaks
        return max(ram or 0, vram or 0) * self.margin < floor_bytes

    def predict(self, node_class: str, workload: Workload | None = None) -> Prediction | None:
        """The class's predicted peaks for a run with ``workload``; ``None`` for a class never seen."""
        entry = self._entries.get(node_class)
        if entry is None:
            return None
        ram_peak, vram_peak = entry.peaks
        ram_line: Line | None = None
        vram_line: Line | None = None
        if workload is not None and workload.units > 0:
            ram_line, vram_line = entry.lines.get(workload.kind, (None, None))
        ram, ram_scaled = _scale(ram_peak, ram_line, workload)
        vram, vram_scaled = _scale(vram_peak, vram_line, workload)
        if ram is None and vram is None:
            return None
        scaled = (ram_scaled or vram_scaled) and workload is not None
        basis = f"scaled to {workload.units} {workload.kind}" if scaled and workload else "recent maximum"
        return Prediction(node_class, self._with_margin(ram), self._with_margin(vram), basis)

    def _with_margin(self, peak: int | None) -> int | None:
        return None if peak is None else int(peak * self.margin)

    def summary(self) -> list[ClassSummary]:
        """Every class, the most recently seen first."""
        with self._lock:
            entries = list(self._entries.items())
        rows = []
        for name, entry in reversed(entries):
            workloads = [sample.workload.kind for sample in entry.samples if sample.workload is not None]
            rows.append(
                ClassSummary(
                    name, entry.runs, workloads[-1] if workloads else None, *_pair(entry.predicted, entry.actual)
                )
            )
        return rows

    # The file's JSON ----------------------------------------------------------------------------------------------

    def to_json(self) -> dict[str, object]:
        """``{"version": 2, "classes": {name: {...}}}``, least recently seen first (the order is the LRU's)."""
        with self._lock:
            classes = {name: _entry_json(entry) for name, entry in self._entries.items()}
        return {"version": FILE_VERSION, "classes": classes}

    def load_json(self, raw: object) -> None:
        """Replaces the table with a file's JSON object; raises :class:`InvalidSetting` naming the bad field.

        A version 1 object is upgraded: its RAM figures are read as what each run left behind. The table is then
        marked changed, so the next save writes version 2.
        """
        version = raw.get("version") if isinstance(raw, Mapping) else None
        if not isinstance(raw, Mapping) or isinstance(version, bool) or version not in (1, FILE_VERSION):
            raise InvalidSetting("version", f"expected a JSON object with version 1 or {FILE_VERSION}")
        classes = raw.get("classes")
        if not isinstance(classes, Mapping):
            raise InvalidSetting("classes", "expected an object of node classes")
        entries: OrderedDict[str, _Entry] = OrderedDict()
        for name, value in list(classes.items())[-self.max_classes :]:
            if not isinstance(name, str) or not name or len(name) > MAX_NAME_LENGTH:
                raise InvalidSetting("classes", f"a class name must be 1 to {MAX_NAME_LENGTH} characters")
            entries[name] = _parse_entry(value, f"classes[{name!r}]", upgrading=version == 1)
        with self._lock:
            self._entries = entries
            self.changed = self.unsaved = version == 1


def _pair(
    predicted: tuple[int | None, int | None], actual: tuple[int | None, int | None]
) -> tuple[int | None, int | None, int | None, int | None]:
    return predicted[0], actual[0], predicted[1], actual[1]


def _entry_json(entry: _Entry) -> dict[str, object]:
    return {
        "runs": entry.runs,
        "samples": [
            [
                sample.ram_peak_bytes,
                sample.vram_peak_bytes,
                None if sample.workload is None else sample.workload.kind,
                None if sample.workload is None else sample.workload.units,
                "peak" if sample.ram_is_peak else "growth",
            ]
            for sample in entry.samples
        ],
        "predicted": list(entry.predicted),
        "actual": list(entry.actual),
    }


def _bytes(value: object, field_name: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 2**62:
        raise InvalidSetting(field_name, "expected a number of bytes (a non-negative integer) or null")
    return value


def _two(value: object, field_name: str) -> tuple[int | None, int | None]:
    if not isinstance(value, list) or len(value) != 2:
        raise InvalidSetting(field_name, "expected [ram_bytes, vram_bytes]")
    return _bytes(value[0], f"{field_name}[0]"), _bytes(value[1], f"{field_name}[1]")


def _parse_sample(value: object, field_name: str, upgrading: bool) -> Sample:
    if upgrading:
        if not isinstance(value, list) or len(value) != 4:
            raise InvalidSetting(field_name, "expected [ram_bytes, vram_bytes, workload_kind, workload_units]")
        ram_is_peak = False
    else:
        if not isinstance(value, list) or len(value) != 5:
            raise InvalidSetting(
                field_name, "expected [ram_bytes, vram_bytes, workload_kind, workload_units, measured]"
            )
        if value[4] not in ("peak", "growth"):
            raise InvalidSetting(f"{field_name}[4]", "expected 'peak' or 'growth'")
        ram_is_peak = value[4] == "peak"
    ram, vram = _two(value[:2], field_name)
    kind, units = value[2], value[3]
    if kind is None and units is None:
        return Sample(ram, vram, None, ram_is_peak)
    if not isinstance(kind, str) or not 0 < len(kind) <= 40:
        raise InvalidSetting(f"{field_name}[2]", "expected a workload kind such as 'frames' or null")
    count = _bytes(units, f"{field_name}[3]")
    return Sample(ram, vram, None if count is None else Workload(kind, count), ram_is_peak)


def _parse_entry(value: object, field_name: str, upgrading: bool) -> _Entry:
    if not isinstance(value, Mapping):
        raise InvalidSetting(field_name, "expected an object with runs, samples, predicted and actual")
    entry = _Entry()
    runs = value.get("runs")
    if isinstance(runs, bool) or not isinstance(runs, int) or runs < 0:
        raise InvalidSetting(f"{field_name}.runs", "expected a non-negative integer")
    entry.runs = runs
    samples = value.get("samples")
    if not isinstance(samples, list):
        raise InvalidSetting(f"{field_name}.samples", "expected a list")
    for index, sample in enumerate(samples[-SAMPLES_PER_CLASS:]):
        entry.add(_parse_sample(sample, f"{field_name}.samples[{index}]", upgrading))
    entry.predicted = _two(value.get("predicted"), f"{field_name}.predicted")
    entry.actual = _two(value.get("actual"), f"{field_name}.actual")
    return entry
