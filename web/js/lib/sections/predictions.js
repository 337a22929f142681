// The Memory panel's "Predicted peaks": for each node class predictive cleanup learned, the RAM and VRAM peak it
// predicted before the class's last run beside what that run took, most recently seen first. Loaded on each mount
// and when a prompt has finished; redrawn only when the answer changed. A library module: importing it does nothing.

import { element, section, setText } from "../dom.js";
import { formatSize } from "../format.js";

const COLUMNS = ["Class", "Runs", "RAM predicted", "RAM actual", "VRAM predicted", "VRAM actual"];
const SHOWN = 20;

/** "—" for a figure not predicted or not measured; a size otherwise. */
function size(bytes) {
  return bytes === null || bytes === undefined ? "—" : formatSize(bytes);
}

export class PredictionsSection {
  /** @param {import("../panel_view.js").MemoryPanel} panel */
  constructor(panel) {
    this.panel = panel;
    const doc = panel.doc;
    this._key = "";
    this.summary = element(doc, "div", { class: "memhooks-muted", role: "predictions-summary" });
    this.body = element(doc, "tbody", {});
    this.table = element(
      doc,
      "table",
      { class: "memhooks-table", role: "predictions", hidden: "" },
      element(doc, "thead", {}, element(doc, "tr", {}, ...COLUMNS.map((text) => element(doc, "th", { text })))),
      this.body,
    );
    this.nodes = [section(doc, "Predicted peaks", "predictions-section", false, this.summary, this.table)];
  }

  render() {
    const answer = this.panel.state.predictions;
    const key = JSON.stringify(answer);
    if (key === this._key) return;
    this._key = key;
    if (!answer?.classes) {
      setText(this.summary, answer ? `n/a: ${answer.reason ?? "not available"}` : "Loading…");
      this.table.hidden = true;
      return;
    }
    const state = answer.enabled ? "on" : "off (predictive_cleanup)";
    const count = answer.classes.length;
    setText(
      this.summary,
      count
        ? `Predictive cleanup is ${state} · ${count} classes learned (at most ${answer.max_classes}), kept in ` +
            answer.path
        : `Predictive cleanup is ${state} · no class learned yet: each one is learned the first time it runs.`,
    );
    if (answer.load_warning) setText(this.summary, `${this.summary.textContent} · ${answer.load_warning}`);
    this.table.hidden = count === 0;
    this.body.replaceChildren(...answer.classes.slice(0, SHOWN).map((row) => this._row(row)));
  }

  _row(row) {
    const doc = this.panel.doc;
    const figures = [row.predicted_ram_bytes, row.actual_ram_bytes, row.predicted_vram_bytes, row.actual_vram_bytes];
    const workload = row.workload_kind ? `scaled by ${row.workload_kind}` : null;
    return element(
      doc,
      "tr",
      { role: "prediction-row", "data-node-class": row.node_class },
      element(doc, "td", { text: row.node_class, title: workload }),
      element(doc, "td", { class: "memhooks-number", text: String(row.runs) }),
      ...figures.map((bytes) => element(doc, "td", { class: "memhooks-number", text: size(bytes) })),
    );
  }
}
