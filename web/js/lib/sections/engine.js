// The Memory panel's engine line: whether the executor hook is on, the cooldown, the watchdog, whether a prompt
// runs, the error count; below it the latest cleanup the guard held back and a settings file's warning.
// A library module: importing it does nothing.

import { element, setData, setText } from "../dom.js";
import { formatClock } from "../format.js";

export class EngineSection {
  /** @param {import("../panel_view.js").MemoryPanel} panel */
  constructor(panel) {
    this.panel = panel;
    const doc = panel.doc;
    this.hookText = element(doc, "span", { role: "hook" });
    this.cooldownText = element(doc, "span", { role: "cooldown" });
    this.runText = element(doc, "span", { role: "run" });
    this.errorsText = element(doc, "span", { role: "errors" });
    this.pressureText = element(doc, "span", { role: "watchdog" });
    this.warningText = element(doc, "div", { class: "memhooks-warning", role: "settings-warning", hidden: "" });
    this.heldText = element(doc, "div", { class: "memhooks-muted", role: "held-back", hidden: "" });
    const engine = element(
      doc,
      "div",
      { class: "memhooks-engine", role: "engine" },
      this.hookText,
      this.cooldownText,
      this.pressureText,
      this.runText,
      this.errorsText,
    );
    this.nodes = [engine, this.heldText, this.warningText];
  }

  render() {
    const status = this.panel.state.status;
    if (!status) return;
    const { engine, hook, errors } = status;
    setText(
      this.hookText,
      hook.installed ? `hook on (${hook.executor ?? "?"} executor)` : `hook off: ${hook.reason ?? "not installed"}`,
    );
    setData(this.hookText, "state", hook.installed ? "on" : "off");
    const remaining = engine.cooldown_remaining_seconds;
    setText(this.cooldownText, remaining > 0 ? `cooldown ${Math.ceil(remaining)} s` : "ready");
    let run = engine.prompt_running ? "prompt running" : "idle";
    if (engine.pending_manual_mode) run += ` · ${engine.pending_manual_mode} queued`;
    setText(this.runText, run);
    // Every part's contained failures: the receivers', the hook's, the actions', the panel's, predictive cleanup's
    // and the profile's (the probes' are shown with their readings).
    const parts = ["receiver", "hook", "action", "panel", "predictive", "profile"];
    const count = parts.reduce((total, part) => total + (errors[`${part}_failures`] ?? 0), 0);
    setText(this.errorsText, count ? `${count} error${count === 1 ? "" : "s"}` : "no errors");
    this.errorsText.title = parts
      .map((part) => errors[`last_${part}_error`])
      .filter(Boolean)
      .join("\n");
    setData(this.errorsText, "count", count);
    setText(this.warningText, errors.settings_warning ?? "");
    this.warningText.hidden = !errors.settings_warning;
    this._renderPressure(status.pressure ?? {});
  }

  _renderPressure(pressure) {
    const watchdog = pressure.watchdog;
    let watch = "no watchdog";
    if (watchdog) {
      watch = !watchdog.enabled ? "watchdog off" : watchdog.watching_fast ? "pressure: watching" : "watchdog on";
    }
    setText(this.pressureText, watch);
    setData(this.pressureText, "state", watchdog?.watching_fast ? "pressure" : watchdog?.enabled ? "on" : "off");
    const held = pressure.last_held_back;
    setText(this.heldText, held ? `Held back at ${formatClock(held.at)} (${held.kind}): ${held.reason}` : "");
    this.heldText.hidden = !held;
    setData(this.heldText, "count", pressure.held_back_total ?? 0);
  }
}
