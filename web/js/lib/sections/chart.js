// The Memory panel's chart block: the legend, the window select (1, 5 or 10 minutes, remembered in localStorage)
// and the live chart (chart.js), redrawn when its size, a sample, a record or a threshold changes.
// A library module: importing it does nothing.

import { MemoryChart, RAM_COLOR, VRAM_COLOR } from "../chart.js";
import { element, options } from "../dom.js";

const CHART_MINUTES_KEY = "memhooks.chartMinutes";
const WINDOW_MINUTES = ["1", "5", "10"];
const DEFAULT_MINUTES = 5;

export class ChartSection {
  /** @param {import("../panel_view.js").MemoryPanel} panel */
  constructor(panel) {
    this.panel = panel;
    const doc = panel.doc;
    this.chart = new MemoryChart(doc);
    const stored = Number(panel.storage?.getItem(CHART_MINUTES_KEY));
    const minutes = WINDOW_MINUTES.includes(String(stored)) ? stored : DEFAULT_MINUTES;
    this.chart.windowSeconds = minutes * 60;
    const windowSelect = element(doc, "select", {
      role: "chart-window",
      "aria-label": "chart window",
      onchange: (event) => {
        this.chart.windowSeconds = Number(event.target.value) * 60;
        panel.storage?.setItem(CHART_MINUTES_KEY, event.target.value);
        panel.invalidate("chart");
      },
    });
    options(doc, windowSelect, WINDOW_MINUTES, String(minutes));
    for (const option of windowSelect.options) option.textContent = `${option.value} min`;
    const legend = element(
      doc,
      "div",
      { class: "memhooks-legend" },
      element(doc, "span", { class: "memhooks-key", style: `--key:${RAM_COLOR}`, text: "RAM" }),
      element(doc, "span", { class: "memhooks-key", style: `--key:${VRAM_COLOR}`, text: "VRAM" }),
      element(doc, "span", { class: "memhooks-key memhooks-key-dashed", text: "threshold" }),
      element(doc, "span", { class: "memhooks-key memhooks-key-mark", text: "optimized" }),
      element(doc, "span", { class: "memhooks-key memhooks-key-mark memhooks-key-pressure", text: "under pressure" }),
      windowSelect,
    );
    this.nodes = [element(doc, "div", { class: "memhooks-block" }, legend, this.chart.element)];
    this._resize = typeof ResizeObserver === "function" ? new ResizeObserver(() => panel.invalidate("chart")) : null;
  }

  mount() {
    this._resize?.observe(this.chart.element);
  }

  unmount() {
    this._resize?.disconnect();
  }

  /** Follows the policy of a status: the thresholds' dashed lines, and how long a gap breaks the line. */
  follow(policy) {
    const { thresholds } = this.chart;
    if (thresholds.ram !== policy.ram_threshold || thresholds.vram !== policy.vram_threshold) {
      this.chart.thresholds = { ram: policy.ram_threshold, vram: policy.vram_threshold };
      this.panel.invalidate("chart");
    }
    this.chart.maxGapSeconds = Math.max(3 * (policy.sample_interval_seconds ?? 1), 3);
  }

  /** False while the chart has no size yet (not laid out): the resize observer asks again. */
  render() {
    return this.chart.draw(this.panel.state.samples, this.panel.state.records);
  }
}
