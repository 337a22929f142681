// The Memory panel's "GPU processes" table: who holds GPU memory (pid, the server's label for it, GPU, memory),
// loaded on each mount, after "Optimize now" and on "refresh". A library module: importing it does nothing.

import { element, section, setText } from "../dom.js";
import { formatSize } from "../format.js";

const COLUMNS = ["PID", "Name", "GPU", "Memory"];

export class ProcessesSection {
  /** @param {import("../panel_view.js").MemoryPanel} panel */
  constructor(panel) {
    this.panel = panel;
    const doc = panel.doc;
    this.body = element(doc, "tbody", {});
    this.table = element(
      doc,
      "table",
      { class: "memhooks-table", role: "processes", hidden: "" },
      element(doc, "thead", {}, element(doc, "tr", {}, ...COLUMNS.map((text) => element(doc, "th", { text })))),
      this.body,
    );
    this.note = element(doc, "div", { class: "memhooks-muted", role: "processes-note" });
    const refresh = element(doc, "button", {
      type: "button",
      class: "memhooks-link",
      text: "refresh",
      onclick: () => panel.refreshProcesses(),
    });
    this.nodes = [
      section(
        doc,
        "GPU processes",
        "processes-section",
        true,
        element(doc, "div", { class: "memhooks-right" }, refresh),
        this.note,
        this.table,
      ),
    ];
  }

  render() {
    const data = this.panel.state.processes;
    const doc = this.panel.doc;
    if (!data) return;
    if (data.processes === null || data.processes === undefined) {
      setText(this.note, `n/a: ${data.reason ?? "GPU processes cannot be listed here"}`);
      this.table.hidden = true;
      return;
    }
    this.table.hidden = data.processes.length === 0;
    setText(this.note, data.processes.length ? "" : "No process holds GPU memory.");
    this.body.replaceChildren(
      ...data.processes.map((process) =>
        element(
          doc,
          "tr",
          { role: "process-row" },
          element(doc, "td", { class: "memhooks-number", text: String(process.pid) }),
          element(doc, "td", { text: process.label }),
          element(doc, "td", { text: process.gpu_index === null ? "—" : String(process.gpu_index) }),
          element(doc, "td", { class: "memhooks-number", text: formatSize(process.used_bytes) }),
        ),
      ),
    );
  }
}
