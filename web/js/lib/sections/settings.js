// The Memory panel's "Automatic policy" form: the switches, thresholds, cooldown and sample interval, and the
// heavy-node rules, whose modes, "when" values and new-rule defaults come from the server
// (choices of GET /memhooks/settings). A bad field is named next to it and nothing is saved.
// A library module: importing it does nothing.

import { ApiError } from "../api_client.js";
import { element, options, section, setData, setText } from "../dom.js";

// [field, label, unit, step]
const NUMBER_FIELDS = [
  ["ram_threshold", "RAM threshold", "%", 1],
  ["vram_threshold", "VRAM threshold", "%", 1],
  ["cooldown_seconds", "Cooldown", "s", 1],
  ["sample_interval_seconds", "Live sample every", "s", 0.1],
];
// [field, which list of the server's choices it picks from]
const RULE_SELECTS = [
  ["before_mode", "modes"],
  ["before_when", "when"],
  ["after_mode", "modes"],
  ["after_when", "when"],
];

export class SettingsSection {
  /** @param {import("../panel_view.js").MemoryPanel} panel */
  constructor(panel) {
    this.panel = panel;
    /** Whether the form holds changes not saved yet: then settings pushed from elsewhere do not replace them. */
    this.dirty = false;
    this._rules = [];
    this.nodes = [section(panel.doc, "Automatic policy", "settings-section", false, this._build())];
  }

  /** Settings from the server: loaded unless the form holds unsaved changes (then `pushed` ones are announced). */
  receive(settings, pushed) {
    if (this.dirty) {
      if (pushed) setText(this.result, "The settings were changed elsewhere; Revert loads them.");
      return;
    }
    this.load(settings);
  }

  load(settings) {
    this.enabledInput.checked = settings.enabled;
    this.oomInput.checked = settings.oom_rescue;
    this.profileInput.checked = settings.node_profile;
    this.predictiveInput.checked = settings.predictive_cleanup;
    this.unloadInput.checked = settings.pressure_unloads_models;
    for (const [name] of NUMBER_FIELDS) this.numberInputs[name].value = String(settings[name]);
    this._rules = settings.rules.map((rule) => ({ ...rule }));
    this._renderRules();
    this._clearErrors();
    this.dirty = false;
  }

  // Rules -----------------------------------------------------------------------------------------------------------

  _renderRules() {
    const doc = this.panel.doc;
    const choices = this.panel.state.choices;
    this.addRuleButton.disabled = !choices;
    const rows = this._rules.map((rule, index) => {
      const field = (name) => `rules[${index}].${name}`;
      const pattern = element(doc, "input", {
        type: "text",
        field: field("pattern"),
        value: rule.pattern,
        placeholder: "ReActor*",
        "aria-label": "node class pattern",
      });
      const selects = RULE_SELECTS.map(([name, list]) => {
        const select = element(doc, "select", { field: field(name), "aria-label": name.replace("_", " ") });
        options(doc, select, choices?.[list] ?? [], rule[name]);
        return select;
      });
      const remove = element(doc, "button", {
        type: "button",
        class: "memhooks-link",
        title: "remove this rule",
        text: "✕",
        onclick: () => this._editRules(() => this._rules.splice(index, 1)),
      });
      const line = (label, ...controls) =>
        element(doc, "div", { class: "memhooks-rule-line" }, element(doc, "span", { text: label }), ...controls);
      return element(
        doc,
        "div",
        { class: "memhooks-rule", role: "rule" },
        element(doc, "div", { class: "memhooks-rule-head" }, pattern, remove),
        line("before", selects[0], selects[1]),
        line("after", selects[2], selects[3]),
        element(doc, "div", { class: "memhooks-error", "data-error-for": `rules[${index}]`, hidden: "" }),
      );
    });
    this.rulesList.replaceChildren(...rows);
  }

  /** Changes the rule list as typed so far (`change` edits `this._rules`), then draws it again. */
  _editRules(change) {
    this._readRules();
    change();
    this.dirty = true;
    this._renderRules();
  }

  _readRules() {
    this._rules = [...this.rulesList.children].map((row) => {
      const rule = {};
      for (const control of row.querySelectorAll("[data-field]")) {
        rule[control.dataset.field.split(".").pop()] = control.value;
      }
      return rule;
    });
  }

  _addRule() {
    const defaults = this.panel.state.choices?.rule_defaults;
    if (!defaults) return;
    this._editRules(() => this._rules.push({ pattern: "", ...defaults }));
  }

  // Saving ----------------------------------------------------------------------------------------------------------

  _collect() {
    this._readRules();
    const settings = {
      enabled: this.enabledInput.checked,
      oom_rescue: this.oomInput.checked,
      node_profile: this.profileInput.checked,
      predictive_cleanup: this.predictiveInput.checked,
      pressure_unloads_models: this.unloadInput.checked,
      rules: this._rules,
    };
    for (const [name] of NUMBER_FIELDS) {
      const raw = this.numberInputs[name].value.trim();
      const number = Number(raw);
      // An empty or unreadable box is sent as typed, so the server's error names the field.
      settings[name] = raw !== "" && Number.isFinite(number) ? number : raw;
    }
    return settings;
  }

  async _save() {
    this._clearErrors();
    this.saveButton.disabled = true;
    setText(this.result, "saving…");
    try {
      const saved = await this.panel.client.saveSettings(this._collect());
      this.load(saved.settings);
      setText(this.result, "Saved.");
      setData(this.result, "state", "saved");
    } catch (error) {
      this._showFieldError(error);
      setText(this.result, "Not saved: nothing changed.");
      setData(this.result, "state", "error");
    } finally {
      this.saveButton.disabled = false;
    }
  }

  async _revert() {
    this.dirty = false;
    try {
      this.panel.takeSettings(await this.panel.client.settings(), false);
      setText(this.result, "");
    } catch (error) {
      setText(this.result, error.message);
    }
  }

  _clearErrors() {
    for (const slot of this.form.querySelectorAll("[data-error-for]")) {
      slot.textContent = "";
      slot.hidden = true;
    }
    for (const control of this.form.querySelectorAll("[aria-invalid]")) control.removeAttribute("aria-invalid");
  }

  _showFieldError(error) {
    const field = error instanceof ApiError ? error.field : null;
    const message = error.message ?? String(error);
    let slot = null;
    if (field) {
      const control = this.form.querySelector(`[data-field="${CSS.escape(field)}"]`);
      control?.setAttribute("aria-invalid", "true");
      const rule = /^(rules\[\d+\])/.exec(field);
      slot =
        this.form.querySelector(`[data-error-for="${CSS.escape(field)}"]`) ??
        (rule ? this.form.querySelector(`[data-error-for="${CSS.escape(rule[1])}"]`) : null);
    }
    slot ??= this.form.querySelector('[data-error-for="form"]');
    slot.textContent = message;
    slot.hidden = false;
  }

  // Building --------------------------------------------------------------------------------------------------------

  _build() {
    const doc = this.panel.doc;
    const errorFor = (name) => element(doc, "div", { class: "memhooks-error", "data-error-for": name, hidden: "" });
    const check = (name, label) => {
      const input = element(doc, "input", { type: "checkbox", field: name });
      return [input, element(doc, "label", { class: "memhooks-check" }, input, ` ${label}`), errorFor(name)];
    };
    const [enabled, enabledRow, enabledError] = check("enabled", "Free memory around heavy nodes");
    const [oom, oomRow, oomError] = check(
      "oom_rescue",
      "OOM rescue: free memory and run a failed heavy node once more",
    );
    const [profile, profileRow, profileError] = check("node_profile", "Per-node profile: record each node's memory");
    this.enabledInput = enabled;
    this.oomInput = oom;
    const [predictive, predictiveRow, predictiveError] = check(
      "predictive_cleanup",
      "Predictive cleanup: before a node seen before, free just enough for its learned peak",
    );
    const [unload, unloadRow, unloadError] = check(
      "pressure_unloads_models",
      "Near the limit under pressure: unload ReActor's models, then ComfyUI's (they reload when next used)",
    );
    this.profileInput = profile;
    this.predictiveInput = predictive;
    this.unloadInput = unload;
    this.numberInputs = {};
    const numbers = NUMBER_FIELDS.map(([name, label, unit, step]) => {
      const input = element(doc, "input", { type: "number", step: String(step), field: name, "aria-label": label });
      this.numberInputs[name] = input;
      return element(
        doc,
        "div",
        { class: "memhooks-field" },
        element(
          doc,
          "label",
          {},
          element(doc, "span", { text: label }),
          input,
          element(doc, "span", { class: "memhooks-muted", text: unit }),
        ),
        errorFor(name),
      );
    });
    this.rulesList = element(doc, "div", { class: "memhooks-rules", role: "rules" });
    this.addRuleButton = element(doc, "button", {
      type: "button",
      class: "memhooks-link",
      text: "+ add rule",
      disabled: "",
      onclick: () => this._addRule(),
    });
    this.saveButton = element(doc, "button", {
      type: "submit",
      class: "memhooks-primary",
      role: "save-settings",
      text: "Save",
    });
    const revert = element(doc, "button", { type: "button", text: "Revert", onclick: () => this._revert() });
    this.result = element(doc, "span", { class: "memhooks-result", role: "settings-result" });
    this.form = element(
      doc,
      "form",
      {
        class: "memhooks-settings",
        role: "settings",
        novalidate: "",
        oninput: () => {
          this.dirty = true;
        },
        onsubmit: (event) => {
          event.preventDefault();
          this._save();
        },
      },
      enabledRow,
      enabledError,
      ...numbers,
      oomRow,
      oomError,
      profileRow,
      profileError,
      predictiveRow,
      predictiveError,
      unloadRow,
      unloadError,
      element(doc, "div", { class: "memhooks-subtitle", text: "Heavy nodes (first matching pattern wins)" }),
      this.rulesList,
      this.addRuleButton,
      errorFor("form"),
      element(doc, "div", { class: "memhooks-buttons" }, this.saveButton, revert, this.result),
    );
    return this.form;
  }
}
