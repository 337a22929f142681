// The Memory panel's "Last optimizations" table: one row per cleanup (time, trigger, mode, freed, duration), and
// on demand what each action did, as the server summarised it. A library module: importing it does nothing.

import { isPressure } from "../chart.js";
import { element, section } from "../dom.js";
import { formatClock, formatDuration, formatPressure, formatTrigger } from "../format.js";

const COLUMNS = ["Time", "Trigger", "Mode", "Freed", "Took", ""];

export class HistorySection {
  /** @param {import("../panel_view.js").MemoryPanel} panel */
  constructor(panel) {
    this.panel = panel;
    const doc = panel.doc;
    this._expanded = new Set();
    this._key = "";
    this.body = element(doc, "tbody", {});
    const table = element(
      doc,
      "table",
      { class: "memhooks-table", role: "history" },
      element(doc, "thead", {}, element(doc, "tr", {}, ...COLUMNS.map((text) => element(doc, "th", { text })))),
      this.body,
    );
    this.nodes = [section(doc, "Last optimizations", "history-section", true, table)];
  }

  render() {
    const records = this.panel.state.records;
    const key = `${records.map((record) => record.sequence).join(",")}|${[...this._expanded].join(",")}`;
    if (key === this._key) return;
    this._key = key;
    const doc = this.panel.doc;
    const rows = [];
    for (const record of records) {
      const open = this._expanded.has(record.sequence);
      rows.push(this._row(record, open));
      if (record.notice) rows.push(this._noticeRow(record));
      if (open) rows.push(this._actionsRow(record));
    }
    if (!records.length) {
      rows.push(
        element(
          doc,
          "tr",
          {},
          element(doc, "td", {
            colspan: String(COLUMNS.length),
            class: "memhooks-empty",
            text: "No optimization yet.",
          }),
        ),
      );
    }
    this.body.replaceChildren(...rows);
  }

  _row(record, open) {
    const doc = this.panel.doc;
    const toggle = element(doc, "button", {
      class: "memhooks-link",
      type: "button",
      "aria-expanded": String(open),
      title: "what each action did",
      text: open ? "▾" : "▸",
      onclick: () => {
        if (open) this._expanded.delete(record.sequence);
        else this._expanded.add(record.sequence);
        this.panel.invalidate("history");
      },
    });
    return element(
      doc,
      "tr",
      {
        role: "history-row",
        "data-sequence": record.sequence,
        "data-pressure": isPressure(record) ? "true" : "false",
        title: record.trigger?.reason ?? "",
      },
      element(doc, "td", { text: formatClock(record.started_at) }),
      element(doc, "td", { text: formatTrigger(record.trigger) }),
      element(doc, "td", { text: record.escalated ? `${record.mode} ↑` : record.mode }),
      element(doc, "td", { class: "memhooks-number", text: `${record.freed_gib.toFixed(2)} GB` }),
      element(doc, "td", { class: "memhooks-number", text: formatDuration(record.duration_seconds) }),
      element(doc, "td", {}, toggle),
    );
  }

  // Always shown, not only when the actions are open: models that went under pressure will take time to reload.
  _noticeRow(record) {
    const doc = this.panel.doc;
    const cell = element(doc, "td", { colspan: String(COLUMNS.length), class: "memhooks-muted", text: record.notice });
    return element(doc, "tr", { role: "history-notice", "data-sequence": record.sequence }, cell);
  }

  _actionsRow(record) {
    const doc = this.panel.doc;
    const items = record.actions.map((action) =>
      element(
        doc,
        "li",
        { class: action.error ? "memhooks-failed" : "" },
        element(doc, "b", { text: action.escalation ? `${action.name} (escalation)` : action.name }),
        ` ${action.summary}`,
      ),
    );
    const list = element(doc, "ul", { class: "memhooks-actions" }, ...items);
    const levels = formatPressure(record.trigger?.pressure);
    const why = levels ? `${record.trigger?.reason ?? ""} (pressure: ${levels})` : (record.trigger?.reason ?? "");
    const reason = element(doc, "div", { class: "memhooks-muted", text: why });
    const kept = record.kept ? [element(doc, "div", { class: "memhooks-muted", text: `Kept: ${record.kept}` })] : [];
    return element(
      doc,
      "tr",
      { role: "history-actions" },
      element(doc, "td", { colspan: String(COLUMNS.length) }, reason, list, ...kept),
    );
  }
}
