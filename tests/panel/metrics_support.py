"""Reading ``/memhooks/metrics`` back with prometheus_client's own parser."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

# Every family the route exposes, as the parser names them (a counter's family drops its ``_total``).
FAMILIES = {
    "comfy_memhooks_ram_total_bytes": "gauge",
    "comfy_memhooks_ram_used_bytes": "gauge",
    "comfy_memhooks_process_rss_bytes": "gauge",
    "comfy_memhooks_vram_total_bytes": "gauge",
    "comfy_memhooks_vram_used_bytes": "gauge",
    "comfy_memhooks_optimizations": "counter",
    "comfy_memhooks_freed_bytes": "counter",
    "comfy_memhooks_optimization_duration_seconds": "histogram",
    "comfy_memhooks_pressure_held_back": "counter",
    "comfy_memhooks_oom_rescues": "counter",
    "comfy_memhooks_node_duration_seconds": "histogram",
    "comfy_memhooks_node_peak_vram_bytes": "gauge",
    "comfy_memhooks_node_peak_ram_bytes": "gauge",
    "comfy_memhooks_hook_installed": "gauge",
    "comfy_memhooks_errors": "counter",
}


class Scrape:
    """One scrape, parsed: samples by name, looked up by their labels."""

    def __init__(self, text: str):
        self.text = text
        self.families = {family.name: family for family in text_string_to_metric_families(text)}
        self.samples: list[Sample] = [sample for family in self.families.values() for sample in family.samples]

    def types(self) -> dict[str, str]:
        return {name: family.type for name, family in self.families.items()}

    def all(self, name: str, /) -> list[Sample]:
        return [sample for sample in self.samples if sample.name == name]

    def value(self, name: str, /, **labels: str) -> float:
        found = [sample.value for sample in self.all(name) if sample.labels == labels]
        assert len(found) == 1, f"{name}{labels}: {len(found)} samples in\n{self.text}"
        return found[0]

    def by(self, name: str, label: str) -> dict[str, float]:
        """``{label value: value}`` over the samples named ``name`` (other labels summed)."""
        result: dict[str, float] = {}
        for sample in self.all(name):
            result[sample.labels[label]] = result.get(sample.labels[label], 0.0) + sample.value
        return result

    def names(self) -> set[str]:
        return {sample.name for sample in self.samples}
