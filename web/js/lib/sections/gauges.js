// The Memory panel's gauges: RAM (the container's limit or the host's RAM) and one per GPU, each a bar with the
// threshold as a tick. A library module: importing it does nothing.

import { element, setData, setText } from "../dom.js";
import { formatGb, formatPercent, formatSize } from "../format.js";

/** The bar's colour: "high" at or above the threshold, "warn" within 15 points of it. */
function level(percent, threshold) {
  if (!Number.isFinite(percent)) return "none";
  if (Number.isFinite(threshold) && percent >= threshold) return "high";
  if (Number.isFinite(threshold) && percent >= threshold - 15) return "warn";
  return "ok";
}

function usage(used, total) {
  if (!Number.isFinite(used) || !Number.isFinite(total)) return "n/a";
  return `${(used / 1024 ** 3).toFixed(1)} / ${formatGb(total)}`;
}

export class GaugesSection {
  /** @param {import("../panel_view.js").MemoryPanel} panel */
  constructor(panel) {
    this.panel = panel;
    const doc = panel.doc;
    this.ramGauge = this._gauge("RAM", "gauge-ram", "ram");
    this.gpuGauges = element(doc, "div", { role: "gpu-gauges" });
    this.nodes = [element(doc, "div", { class: "memhooks-gauges", role: "gauges" }, this.ramGauge, this.gpuGauges)];
  }

  render() {
    const status = this.panel.state.status;
    if (!status) return;
    const { ram, gpus, gpu_unavailable_reason: reason } = status.snapshot;
    const policy = status.policy ?? {};
    const limit = ram.container_limit ? `container limit (${ram.source})` : "host RAM";
    this._fill(this.ramGauge, {
      percent: ram.percent,
      used: ram.used_bytes,
      total: ram.total_bytes,
      threshold: policy.ram_threshold,
      note: `${limit} · this process ${formatSize(ram.process_rss_bytes)}`,
    });
    const wanted = gpus.length ? gpus.map((gpu) => `gpu-${gpu.index}`) : ["none"];
    if (this.gpuGauges.dataset.layout !== wanted.join(",")) {
      this.gpuGauges.replaceChildren(
        ...wanted.map((key, position) =>
          this._gauge(key === "none" ? "VRAM" : `GPU ${gpus[position].index}`, "gauge-gpu", key),
        ),
      );
      this.gpuGauges.dataset.layout = wanted.join(",");
    }
    if (!gpus.length) {
      this._fill(this.gpuGauges.firstChild, { percent: null, used: null, total: null, note: reason ?? "no GPU" });
      return;
    }
    gpus.forEach((gpu, position) => {
      const torch = Number.isFinite(gpu.torch_reserved_bytes)
        ? ` · torch ${formatSize(gpu.torch_allocated_bytes)} / ${formatSize(gpu.torch_reserved_bytes)} reserved`
        : "";
      // CUDA is what users assume; another backend (ROCm, XPU, MPS's unified memory) is named.
      const backend =
        gpu.backend && gpu.backend !== "cuda" ? ` · ${status.snapshot.gpu_backend_label ?? gpu.backend}` : "";
      this._fill(this.gpuGauges.children[position], {
        percent: gpu.percent,
        // Under dynamic VRAM the device looks full by design: the colour follows what cannot be evicted.
        pressure: gpu.pressure_percent,
        used: gpu.used_bytes,
        total: gpu.total_bytes,
        threshold: policy.vram_threshold,
        note: `${gpu.name ?? "GPU"}${backend}${torch}`,
      });
    });
  }

  _gauge(label, role, key) {
    const doc = this.panel.doc;
    const gauge = element(doc, "div", { class: "memhooks-gauge", role, "data-key": key });
    gauge._value = element(doc, "span", { class: "memhooks-gauge-value", role: "value" });
    gauge._fill = element(doc, "div", { class: "memhooks-fill" });
    gauge._tick = element(doc, "div", { class: "memhooks-tick" });
    gauge._note = element(doc, "div", { class: "memhooks-gauge-note", role: "note" });
    gauge.append(
      element(
        doc,
        "div",
        { class: "memhooks-gauge-head" },
        element(doc, "span", { class: "memhooks-gauge-label", text: label }),
        gauge._value,
      ),
      element(doc, "div", { class: "memhooks-bar" }, gauge._fill, gauge._tick),
      gauge._note,
    );
    return gauge;
  }

  _fill(gauge, { percent, pressure = percent, used, total, threshold = null, note }) {
    const known = Number.isFinite(percent);
    setText(gauge._value, known ? `${usage(used, total)} · ${formatPercent(percent)}` : "n/a");
    setText(gauge._note, note);
    if (gauge._note.title !== note) gauge._note.title = note;
    setData(gauge, "percent", known ? percent : "");
    setData(gauge, "usedBytes", used);
    setData(gauge, "totalBytes", total);
    setData(gauge, "level", level(Number.isFinite(pressure) ? pressure : percent, threshold));
    const width = `${known ? Math.min(Math.max(percent, 0), 100).toFixed(1) : 0}%`;
    if (gauge._fill.style.width !== width) gauge._fill.style.width = width;
    const tick = Number.isFinite(threshold) ? `${threshold}%` : "";
    if (gauge._tick.style.left !== tick) gauge._tick.style.left = tick;
    gauge._tick.hidden = !tick;
  }
}
