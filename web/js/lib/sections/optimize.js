// The Memory panel's "Optimize now": a mode, the button, and what came of it (freed, queued until the running
// prompt's next node boundary, or the cooldown). A library module: importing it does nothing.

import { element, options, setData, setText } from "../dom.js";
import { formatDuration } from "../format.js";

export const MANUAL_MODES = Object.freeze(["Conservative", "Balanced", "Aggressive"]);

export class OptimizeSection {
  /** @param {import("../panel_view.js").MemoryPanel} panel */
  constructor(panel) {
    this.panel = panel;
    const doc = panel.doc;
    this.select = element(doc, "select", { role: "optimize-mode", "aria-label": "mode" });
    options(doc, this.select, MANUAL_MODES, "Balanced");
    this.button = element(doc, "button", {
      type: "button",
      class: "memhooks-primary",
      role: "optimize",
      text: "Optimize now",
      onclick: () => this.optimize(),
    });
    this.result = element(doc, "div", { class: "memhooks-result", role: "optimize-result" });
    this.nodes = [
      element(
        doc,
        "div",
        { class: "memhooks-block" },
        element(doc, "div", { class: "memhooks-optimize" }, this.select, this.button),
        this.result,
      ),
    ];
  }

  async optimize() {
    const { client } = this.panel;
    this.button.disabled = true;
    setText(this.result, "…");
    try {
      const answer = await client.optimize(this.select.value);
      if (answer.record) this.panel.addRecord(answer.record);
      this.showAnswer(answer, false);
      if (answer.state === "performed") this.panel.refreshProcesses();
    } catch (error) {
      setText(this.result, error.message);
      setData(this.result, "state", "error");
    } finally {
      this.button.disabled = false;
    }
  }

  /** Shows an answer of POST /memhooks/optimize, or (`later`) a queued request's, pushed as memhooks.manual. */
  showAnswer(answer, later) {
    let text;
    if (answer.state === "performed") {
      const { freed_gb: freed, duration_seconds: took } = answer.record;
      text = `${answer.mode}: freed ${freed.toFixed(2)} GB in ${formatDuration(took)}`;
      if (later) text = `Queued request done. ${text}`;
    } else if (answer.state === "queued") {
      text = `${answer.mode} queued: it runs between two nodes of the running prompt.`;
    } else if (answer.state === "cooldown") {
      text = `Cooldown: ${Math.ceil(answer.cooldown_remaining_seconds ?? 0)} s left.`;
    } else {
      text = answer.reason;
    }
    setText(this.result, text);
    setData(this.result, "state", answer.state);
  }
}
