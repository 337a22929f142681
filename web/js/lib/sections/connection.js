// The Memory panel's header: its title and whether the live channel is up ("live · 12:00:01", "reconnecting…",
// or why the server could not be reached). A library module: importing it does nothing.

import { element, setData, setText } from "../dom.js";
import { formatClock } from "../format.js";

export class ConnectionSection {
  /** @param {import("../panel_view.js").MemoryPanel} panel */
  constructor(panel) {
    this.panel = panel;
    const doc = panel.doc;
    this.text = element(doc, "span", {});
    this.connection = element(
      doc,
      "span",
      { class: "memhooks-connection", role: "connection" },
      element(doc, "i", { class: "memhooks-dot" }),
      this.text,
    );
    this.nodes = [
      element(doc, "div", { class: "memhooks-header" }, element(doc, "h3", { text: "Memory" }), this.connection),
    ];
  }

  render() {
    const { state, client } = this.panel;
    const connected = client.connected !== false;
    const taken = state.status?.snapshot?.taken_at;
    let text = connected ? "live" : "reconnecting…";
    if (state.loadError) text = `server unreachable: ${state.loadError}`;
    else if (Number.isFinite(taken)) text += ` · ${formatClock(taken)}`;
    setText(this.text, text);
    setData(this.connection, "state", state.loadError ? "error" : connected ? "live" : "offline");
  }
}
