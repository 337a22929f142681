// The Memory panel's "Optimize now": a mode among those the server offers (choices.manual_modes of
// GET /memhooks/settings), the button, and what came of it (freed, queued until the running prompt's next node
// boundary, or the cooldown). A library module: importing it does nothing.

import { element, options, setData, setText } from "../dom.js";
import { formatDuration } from "../format.js";

export class OptimizeSection {
  /** @param {import("../panel_view.js").MemoryPanel} panel */
  constructor(panel) {
    this.panel = panel;
    const doc = panel.doc;
    // Empty until the settings (and with them the modes) have loaded: a placeholder, and the button waits.
    this.select = element(
      doc,
      "select",
      { role: "optimize-mode", "aria-label": "mode" },
      element(doc, "option", { value: "", text: "…", disabled: "" }),
    );
    this.select.value = "";
    this.button = element(doc, "button", {
      type: "button",
      class: "memhooks-primary",
      role: "optimize",
      text: "Optimize now",
      disabled: "",
      onclick: () => this.optimize(),
    });
    this.result = element(doc, "div", { class: "memhooks-result", role: "optimize-result" });
    this._busy = false;
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

  /** Offers the server's manual modes; keeps the one chosen if it is still offered, else takes the middle one. */
  setChoices(choices) {
    const modes = choices?.manual_modes;
    if (!Array.isArray(modes) || !modes.length) return;
    const offered = [...this.select.options].map((option) => option.value);
    if (offered.join("\n") === modes.join("\n")) return;
    const chosen = modes.includes(this.select.value) ? this.select.value : modes[Math.floor(modes.length / 2)];
    options(this.panel.doc, this.select, modes, chosen);
    this._updateButton();
  }

  async optimize() {
    const { client } = this.panel;
    this._busy = true;
    this._updateButton();
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
      this._busy = false;
      this._updateButton();
    }
  }

  /** Shows an answer of POST /memhooks/optimize, or (`later`) a queued request's, pushed as memhooks.manual. */
  showAnswer(answer, later) {
    let text;
    if (answer.state === "performed") {
      const { freed_gib: freed, duration_seconds: took } = answer.record;
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

  _updateButton() {
    this.button.disabled = this._busy || !this.select.value;
  }
}
