// The Memory panel's DOM: gauges, live chart, history, GPU processes, "Optimize now" and the automatic policy's
// settings. It is given an API client (api_client.js) and mounts into any element: ComfyUI's sidebar tab, a
// floating panel, or the standalone page. State and event listeners live in the panel object, not in the DOM, so a
// sidebar that mounts and unmounts it loses nothing. Each event marks the parts it changes; they are redrawn at most
// once per animation frame, and only while the panel is mounted and the page visible.
// A library module: importing it does nothing (ComfyUI imports every .js under web/ as an extension).

import { ApiError } from "./api_client.js";
import { MemoryChart, RAM_COLOR, VRAM_COLOR, isPressure } from "./chart.js";
import {
  formatClock,
  formatDuration,
  formatGb,
  formatPercent,
  formatPressure,
  formatSize,
  formatTrigger,
} from "./format.js";
import { PANEL_CSS } from "./panel_style.js";

export const MANUAL_MODES = Object.freeze(["Conservative", "Balanced", "Aggressive"]);
const ALL_MODES = Object.freeze(["Monitor Only", ...MANUAL_MODES]);
const WHEN = Object.freeze(["threshold", "always"]);
const MAX_RECORDS = 10;
const MAX_ACTIVITY = 8;
const STYLE_ID = "memhooks-panel-style";
const CHART_MINUTES_KEY = "memhooks.chartMinutes";
const SECTIONS = ["connection", "gauges", "engine", "chart", "history", "processes", "activity"];
const NUMBER_FIELDS = [
  ["ram_threshold", "RAM threshold", "%", 1],
  ["vram_threshold", "VRAM threshold", "%", 1],
  ["cooldown_seconds", "Cooldown", "s", 1],
  ["sample_interval_seconds", "Live sample every", "s", 0.1],
];

function element(doc, tag, props = {}, ...children) {
  const node = doc.createElement(tag);
  for (const [key, value] of Object.entries(props)) {
    if (value === undefined || value === null) continue;
    if (key === "class") node.className = value;
    else if (key === "text") node.textContent = value;
    else if (key === "role") node.dataset.role = value;
    else if (key === "field") node.dataset.field = value;
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value);
  }
  for (const child of children) if (child !== null && child !== undefined) node.append(child);
  return node;
}

function setText(node, text) {
  if (node.textContent !== text) node.textContent = text;
}

function setData(node, key, value) {
  const text = value === null || value === undefined ? "" : String(value);
  if (node.dataset[key] !== text) node.dataset[key] = text;
}

function options(doc, select, values, selected) {
  select.replaceChildren(...values.map((value) => element(doc, "option", { value, text: value })));
  select.value = selected;
}

function safeStorage() {
  try {
    return globalThis.localStorage ?? null;
  } catch {
    return null;
  }
}

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

export class MemoryPanel {
  /**
   * @param {import("./api_client.js").MemhooksClient} client
   * @param {{document?: Document, storage?: Storage | null}} [options]
   */
  constructor(client, { document: doc = globalThis.document, storage = safeStorage() } = {}) {
    this.client = client;
    this.doc = doc;
    this.storage = storage;
    this.state = {
      status: null,
      samples: [],
      records: [],
      processes: null,
      settings: null,
      activity: [],
      windowSeconds: 600,
      loadError: null,
    };
    this._dirty = new Set();
    this._frame = null;
    this._mounted = false;
    this._expanded = new Set();
    this._historyKey = "";
    this._settingsDirty = false;
    this._wasDisconnected = false;
    this._rules = [];
    this._ensureStyle();
    this._build();
    this._resize = typeof ResizeObserver === "function" ? new ResizeObserver(() => this._invalidate("chart")) : null;
    this._unsubscribe = [
      client.on("memhooks.status", (data) => this._onStatus(data)),
      client.on("memhooks.optimization", (data) => this._addRecord(data?.record)),
      client.on("memhooks.hook", (data) => this._onActivity(data, "hook")),
      client.on("memhooks.prompt", (data) => this._onActivity(data, "prompt")),
      client.on("memhooks.manual", (data) => this._onManual(data)),
      client.on("memhooks.settings", (data) => this._onSettings(data)),
      client.on("memhooks.connection", ({ connected }) => this._onConnection(connected)),
    ];
    this._onVisibility = () => this._schedule();
    doc.addEventListener("visibilitychange", this._onVisibility);
  }

  /** Shows the panel inside `container`; calling it again with the same container does nothing more. */
  mount(container) {
    if (this.root.parentNode !== container) container.append(this.root);
    if (this._mounted) return;
    this._mounted = true;
    this._resize?.observe(this.chart.element);
    this._invalidate(...SECTIONS);
    this.refresh();
  }

  unmount() {
    this._mounted = false;
    this._resize?.disconnect();
    if (this._frame !== null) cancelAnimationFrame(this._frame);
    this._frame = null;
    this.root.remove();
  }

  /** Stops listening for good (the panel can no longer be mounted). */
  dispose() {
    this.unmount();
    for (const unsubscribe of this._unsubscribe) unsubscribe();
    this.doc.removeEventListener("visibilitychange", this._onVisibility);
  }

  /** Loads everything from the server: on each mount, and after a reconnection. */
  async refresh() {
    const [status, history, settings] = await Promise.allSettled([
      this.client.status(),
      this.client.history(),
      this.client.settings(),
    ]);
    const failed = [status, history, settings].find((result) => result.status === "rejected");
    this.state.loadError = failed ? failed.reason?.message ?? String(failed.reason) : null;
    if (history.status === "fulfilled") {
      const data = history.value;
      this.state.windowSeconds = data.window_seconds ?? this.state.windowSeconds;
      const pushed = this.state.samples;
      const lastLoaded = data.samples.length ? data.samples[data.samples.length - 1].taken_at : -Infinity;
      this.state.samples = [...data.samples, ...pushed.filter((sample) => sample.taken_at > lastLoaded)];
      for (const record of data.records) this._addRecord(record, false);
    }
    if (status.status === "fulfilled") this._onStatus(status.value);
    if (settings.status === "fulfilled" && !this._settingsDirty) this._loadSettings(settings.value.settings);
    this._invalidate(...SECTIONS);
    await this.refreshProcesses();
  }

  async refreshProcesses() {
    try {
      this.state.processes = await this.client.processes();
    } catch (error) {
      this.state.processes = { processes: null, reason: error.message };
    }
    this._invalidate("processes");
  }

  // Events ---------------------------------------------------------------------------------------------------------

  _onStatus(data) {
    if (!data?.snapshot) return;
    this.state.status = data;
    const sample = data.sample;
    const samples = this.state.samples;
    if (sample && (!samples.length || sample.taken_at > samples[samples.length - 1].taken_at)) {
      samples.push(sample);
      const oldest = sample.taken_at - this.state.windowSeconds;
      let drop = 0;
      while (drop < samples.length && samples[drop].taken_at < oldest) drop += 1;
      if (drop) samples.splice(0, drop);
      this._invalidate("chart");
    }
    const policy = data.policy ?? {};
    if (this.chart.thresholds.ram !== policy.ram_threshold || this.chart.thresholds.vram !== policy.vram_threshold) {
      this.chart.thresholds = { ram: policy.ram_threshold, vram: policy.vram_threshold };
      this._invalidate("chart");
    }
    this.chart.maxGapSeconds = Math.max(3 * (policy.sample_interval_seconds ?? 1), 3);
    this._invalidate("gauges", "engine", "connection");
  }

  _addRecord(record, redraw = true) {
    if (!record || this.state.records.some((known) => known.sequence === record.sequence)) return;
    this.state.records.push(record);
    this.state.records.sort((a, b) => b.sequence - a.sequence);
    this.state.records.length = Math.min(this.state.records.length, MAX_RECORDS);
    if (redraw) this._invalidate("history", "chart");
  }

  _onActivity(data, kind) {
    if (!data) return;
    let text;
    if (kind === "prompt") {
      text = data.phase === "started" ? "prompt started" : `prompt ${data.success === false ? "failed" : "finished"}`;
      if (data.phase === "finished") text += ` in ${formatDuration(data.duration_seconds)}`;
    } else {
      text = `${data.node_class ?? "node"} #${data.node_id ?? "?"} ${data.phase}`;
      if (data.phase === "finished") {
        text += data.cached ? " (cached)" : ` in ${formatDuration(data.duration_seconds)}`;
        if (data.error) text += ` — ${data.error}`;
      }
    }
    this.state.activity.unshift({ at: Date.now() / 1000, text, error: Boolean(data.error) });
    this.state.activity.length = Math.min(this.state.activity.length, MAX_ACTIVITY);
    this._invalidate("activity");
  }

  _onManual(answer) {
    if (!answer) return;
    if (answer.record) this._addRecord(answer.record);
    this._showOptimizeAnswer(answer, true);
  }

  _onConnection(connected) {
    // Back after an outage: what was missed meanwhile (optimizations, settings) comes from the server again.
    if (connected === false) {
      this._wasDisconnected = true;
    } else if (this._wasDisconnected) {
      this._wasDisconnected = false;
      if (this._mounted) this.refresh();
    }
    this._invalidate("connection");
  }

  _onSettings(data) {
    if (!data?.settings) return;
    if (this._settingsDirty) {
      setText(this.settingsResult, "The settings were changed elsewhere; Revert loads them.");
      return;
    }
    this._loadSettings(data.settings);
  }

  // Scheduling -----------------------------------------------------------------------------------------------------

  _invalidate(...sections) {
    for (const section of sections) this._dirty.add(section);
    this._schedule();
  }

  _schedule() {
    if (!this._mounted || this._frame !== null || this.doc.hidden || !this._dirty.size) return;
    this._frame = requestAnimationFrame(() => {
      this._frame = null;
      this._render();
    });
  }

  _render() {
    const dirty = [...this._dirty];
    this._dirty.clear();
    for (const section of dirty) {
      if (section === "chart") {
        if (!this.chart.draw(this.state.samples, this.state.records)) this._dirty.add("chart");
      } else {
        this[`_render_${section}`]();
      }
    }
  }

  // Rendering ------------------------------------------------------------------------------------------------------

  _render_connection() {
    const connected = this.client.connected !== false;
    const taken = this.state.status?.snapshot?.taken_at;
    let text = connected ? "live" : "reconnecting…";
    if (this.state.loadError) text = `server unreachable: ${this.state.loadError}`;
    else if (Number.isFinite(taken)) text += ` · ${formatClock(taken)}`;
    setText(this.connectionText, text);
    setData(this.connection, "state", this.state.loadError ? "error" : connected ? "live" : "offline");
  }

  _render_gauges() {
    const status = this.state.status;
    if (!status) return;
    const { ram, gpus, gpu_unavailable_reason: reason } = status.snapshot;
    const policy = status.policy ?? {};
    const limit = ram.container_limit ? `container limit (${ram.source})` : "host RAM";
    this._fillGauge(this.ramGauge, {
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
      this._fillGauge(this.gpuGauges.firstChild, { percent: null, used: null, total: null, note: reason ?? "no GPU" });
      return;
    }
    gpus.forEach((gpu, position) => {
      const torch = Number.isFinite(gpu.torch_reserved_bytes)
        ? ` · torch ${formatSize(gpu.torch_allocated_bytes)} / ${formatSize(gpu.torch_reserved_bytes)} reserved`
        : "";
      this._fillGauge(this.gpuGauges.children[position], {
        percent: gpu.percent,
        used: gpu.used_bytes,
        total: gpu.total_bytes,
        threshold: policy.vram_threshold,
        note: `${gpu.name ?? "GPU"}${torch}`,
      });
    });
  }

  _gauge(label, role, key) {
    const doc = this.doc;
    const gauge = element(doc, "div", { class: "memhooks-gauge", role, "data-key": key });
    gauge._value = element(doc, "span", { class: "memhooks-gauge-value", role: "value" });
    gauge._fill = element(doc, "div", { class: "memhooks-fill" });
    gauge._tick = element(doc, "div", { class: "memhooks-tick" });
    gauge._note = element(doc, "div", { class: "memhooks-gauge-note", role: "note" });
    gauge.append(
      element(doc, "div", { class: "memhooks-gauge-head" }, element(doc, "span", { class: "memhooks-gauge-label", text: label }), gauge._value),
      element(doc, "div", { class: "memhooks-bar" }, gauge._fill, gauge._tick),
      gauge._note,
    );
    return gauge;
  }

  _fillGauge(gauge, { percent, used, total, threshold = null, note }) {
    const known = Number.isFinite(percent);
    setText(gauge._value, known ? `${usage(used, total)} · ${formatPercent(percent)}` : "n/a");
    setText(gauge._note, note);
    if (gauge._note.title !== note) gauge._note.title = note;
    setData(gauge, "percent", known ? percent : "");
    setData(gauge, "usedBytes", used);
    setData(gauge, "totalBytes", total);
    setData(gauge, "level", level(percent, threshold));
    const width = `${known ? Math.min(Math.max(percent, 0), 100).toFixed(1) : 0}%`;
    if (gauge._fill.style.width !== width) gauge._fill.style.width = width;
    const tick = Number.isFinite(threshold) ? `${threshold}%` : "";
    if (gauge._tick.style.left !== tick) gauge._tick.style.left = tick;
    gauge._tick.hidden = !tick;
  }

  _render_engine() {
    const status = this.state.status;
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
    const count = errors.receiver_failures + errors.action_failures + errors.panel_failures;
    setText(this.errorsText, count ? `${count} error${count === 1 ? "" : "s"}` : "no errors");
    this.errorsText.title = [errors.last_receiver_error, errors.last_panel_error].filter(Boolean).join("\n");
    setData(this.errorsText, "count", count);
    setText(this.warningText, errors.settings_warning ?? "");
    this.warningText.hidden = !errors.settings_warning;
    const pressure = status.pressure ?? {};
    const watchdog = pressure.watchdog;
    let watch = "no watchdog";
    if (watchdog) watch = !watchdog.enabled ? "watchdog off" : watchdog.watching_fast ? "pressure: watching" : "watchdog on";
    setText(this.pressureText, watch);
    setData(this.pressureText, "state", watchdog?.watching_fast ? "pressure" : watchdog?.enabled ? "on" : "off");
    const held = pressure.last_held_back;
    setText(this.heldText, held ? `Held back at ${formatClock(held.at)} (${held.kind}): ${held.reason}` : "");
    this.heldText.hidden = !held;
    setData(this.heldText, "count", pressure.held_back_total ?? 0);
  }

  _render_history() {
    const records = this.state.records;
    const key = `${records.map((record) => record.sequence).join(",")}|${[...this._expanded].join(",")}`;
    if (key === this._historyKey) return;
    this._historyKey = key;
    const doc = this.doc;
    const rows = [];
    for (const record of records) {
      const open = this._expanded.has(record.sequence);
      const toggle = element(doc, "button", {
        class: "memhooks-link",
        type: "button",
        "aria-expanded": String(open),
        title: "what each action did",
        text: open ? "▾" : "▸",
        onclick: () => {
          if (open) this._expanded.delete(record.sequence);
          else this._expanded.add(record.sequence);
          this._invalidate("history");
        },
      });
      rows.push(
        element(
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
          element(doc, "td", { class: "memhooks-number", text: `${record.freed_gb.toFixed(2)} GB` }),
          element(doc, "td", { class: "memhooks-number", text: formatDuration(record.duration_seconds) }),
          element(doc, "td", {}, toggle),
        ),
      );
      if (open) rows.push(this._actionsRow(record));
    }
    if (!records.length) {
      rows.push(element(doc, "tr", {}, element(doc, "td", { colspan: "6", class: "memhooks-empty", text: "No optimization yet." })));
    }
    this.historyBody.replaceChildren(...rows);
  }

  _actionsRow(record) {
    const doc = this.doc;
    const items = record.actions.map((action) => {
      let what = action.detail ?? "done";
      if (action.error) what = `failed: ${action.error}`;
      else if (action.skipped_reason) what = `skipped: ${action.skipped_reason}`;
      return element(
        doc,
        "li",
        { class: action.error ? "memhooks-failed" : "" },
        element(doc, "b", { text: action.escalation ? `${action.name} (escalation)` : action.name }),
        ` ${what} — RAM ${formatSize(action.ram_freed_bytes, true)}, VRAM ${formatSize(action.vram_freed_bytes, true)}, ${formatDuration(action.duration_seconds)}`,
      );
    });
    const list = element(doc, "ul", { class: "memhooks-actions" }, ...items);
    const levels = formatPressure(record.trigger?.pressure);
    const why = levels ? `${record.trigger?.reason ?? ""} (pressure: ${levels})` : (record.trigger?.reason ?? "");
    const reason = element(doc, "div", { class: "memhooks-muted", text: why });
    return element(doc, "tr", { role: "history-actions" }, element(doc, "td", { colspan: "6" }, reason, list));
  }

  _render_processes() {
    const data = this.state.processes;
    const doc = this.doc;
    if (!data) return;
    if (data.processes === null || data.processes === undefined) {
      setText(this.processesNote, `n/a: ${data.reason ?? "GPU processes cannot be listed here"}`);
      this.processesTable.hidden = true;
      return;
    }
    this.processesTable.hidden = data.processes.length === 0;
    setText(this.processesNote, data.processes.length ? "" : "No process holds GPU memory.");
    this.processesBody.replaceChildren(
      ...data.processes.map((process) => {
        let name = process.name ?? "?";
        if (process.is_current_process) name += " (this process)";
        else if (!process.in_this_container) name = "(outside this container)";
        return element(
          doc,
          "tr",
          { role: "process-row" },
          element(doc, "td", { class: "memhooks-number", text: String(process.pid) }),
          element(doc, "td", { text: name }),
          element(doc, "td", { text: process.gpu_index === null ? "—" : String(process.gpu_index) }),
          element(doc, "td", { class: "memhooks-number", text: formatSize(process.used_bytes) }),
        );
      }),
    );
  }

  _render_activity() {
    const doc = this.doc;
    const items = this.state.activity.map((entry) =>
      element(doc, "li", { class: entry.error ? "memhooks-failed" : "" }, element(doc, "span", { class: "memhooks-muted", text: formatClock(entry.at) }), ` ${entry.text}`),
    );
    if (!items.length) items.push(element(doc, "li", { class: "memhooks-muted", text: "No heavy node has run yet." }));
    this.activityList.replaceChildren(...items);
  }

  // Optimize now ---------------------------------------------------------------------------------------------------

  async _optimize() {
    this.optimizeButton.disabled = true;
    setText(this.optimizeResult, "…");
    try {
      const answer = await this.client.optimize(this.modeSelect.value);
      if (answer.record) this._addRecord(answer.record);
      this._showOptimizeAnswer(answer, false);
      if (answer.state === "performed") this.refreshProcesses();
    } catch (error) {
      setText(this.optimizeResult, error.message);
      setData(this.optimizeResult, "state", "error");
    } finally {
      this.optimizeButton.disabled = false;
    }
  }

  _showOptimizeAnswer(answer, later) {
    let text;
    if (answer.state === "performed") {
      text = `${answer.mode}: freed ${answer.record.freed_gb.toFixed(2)} GB in ${formatDuration(answer.record.duration_seconds)}`;
      if (later) text = `Queued request done. ${text}`;
    } else if (answer.state === "queued") {
      text = `${answer.mode} queued: it runs between two nodes of the running prompt.`;
    } else if (answer.state === "cooldown") {
      text = `Cooldown: ${Math.ceil(answer.cooldown_remaining_seconds ?? 0)} s left.`;
    } else {
      text = answer.reason;
    }
    setText(this.optimizeResult, text);
    setData(this.optimizeResult, "state", answer.state);
  }

  // Settings -------------------------------------------------------------------------------------------------------

  _loadSettings(settings) {
    this.state.settings = settings;
    this.enabledInput.checked = settings.enabled;
    this.oomInput.checked = settings.oom_rescue;
    for (const [name] of NUMBER_FIELDS) this.numberInputs[name].value = String(settings[name]);
    this._rules = settings.rules.map((rule) => ({ ...rule }));
    this._renderRules();
    this._clearErrors();
    this._settingsDirty = false;
  }

  _renderRules() {
    const doc = this.doc;
    const rows = this._rules.map((rule, index) => {
      const field = (name) => `rules[${index}].${name}`;
      const pattern = element(doc, "input", { type: "text", field: field("pattern"), value: rule.pattern, placeholder: "ReActor*", "aria-label": "node class pattern" });
      const selects = [
        ["before_mode", ALL_MODES],
        ["before_when", WHEN],
        ["after_mode", ALL_MODES],
        ["after_when", WHEN],
      ].map(([name, values]) => {
        const select = element(doc, "select", { field: field(name), "aria-label": name.replace("_", " ") });
        options(doc, select, values, rule[name]);
        return select;
      });
      const remove = element(doc, "button", {
        type: "button",
        class: "memhooks-link",
        title: "remove this rule",
        text: "✕",
        onclick: () => {
          this._readRules();
          this._rules.splice(index, 1);
          this._settingsDirty = true;
          this._renderRules();
        },
      });
      return element(
        doc,
        "div",
        { class: "memhooks-rule", role: "rule" },
        element(doc, "div", { class: "memhooks-rule-head" }, pattern, remove),
        element(doc, "div", { class: "memhooks-rule-line" }, element(doc, "span", { text: "before" }), selects[0], selects[1]),
        element(doc, "div", { class: "memhooks-rule-line" }, element(doc, "span", { text: "after" }), selects[2], selects[3]),
        element(doc, "div", { class: "memhooks-error", "data-error-for": `rules[${index}]`, hidden: "" }),
      );
    });
    this.rulesList.replaceChildren(...rows);
  }

  _readRules() {
    this._rules = [...this.rulesList.children].map((row) => {
      const rule = {};
      for (const control of row.querySelectorAll("[data-field]")) rule[control.dataset.field.split(".").pop()] = control.value;
      return rule;
    });
  }

  _collectSettings() {
    this._readRules();
    const settings = { enabled: this.enabledInput.checked, oom_rescue: this.oomInput.checked, rules: this._rules };
    for (const [name] of NUMBER_FIELDS) {
      const raw = this.numberInputs[name].value.trim();
      const number = Number(raw);
      // An empty or unreadable box is sent as typed, so the server's error names the field.
      settings[name] = raw !== "" && Number.isFinite(number) ? number : raw;
    }
    return settings;
  }

  async _saveSettings() {
    this._clearErrors();
    this.saveButton.disabled = true;
    setText(this.settingsResult, "saving…");
    try {
      const saved = await this.client.saveSettings(this._collectSettings());
      this._loadSettings(saved.settings);
      setText(this.settingsResult, "Saved.");
      setData(this.settingsResult, "state", "saved");
    } catch (error) {
      this._showFieldError(error);
      setText(this.settingsResult, "Not saved: nothing changed.");
      setData(this.settingsResult, "state", "error");
    } finally {
      this.saveButton.disabled = false;
    }
  }

  _clearErrors() {
    for (const slot of this.settingsForm.querySelectorAll("[data-error-for]")) {
      slot.textContent = "";
      slot.hidden = true;
    }
    for (const control of this.settingsForm.querySelectorAll("[aria-invalid]")) control.removeAttribute("aria-invalid");
  }

  _showFieldError(error) {
    const field = error instanceof ApiError ? error.field : null;
    const message = error.message ?? String(error);
    let slot = null;
    if (field) {
      const control = this.settingsForm.querySelector(`[data-field="${CSS.escape(field)}"]`);
      control?.setAttribute("aria-invalid", "true");
      const rule = /^(rules\[\d+\])/.exec(field);
      slot =
        this.settingsForm.querySelector(`[data-error-for="${CSS.escape(field)}"]`) ??
        (rule ? this.settingsForm.querySelector(`[data-error-for="${CSS.escape(rule[1])}"]`) : null);
    }
    slot ??= this.settingsForm.querySelector('[data-error-for="form"]');
    slot.textContent = message;
    slot.hidden = false;
  }

  // Building -------------------------------------------------------------------------------------------------------

  _ensureStyle() {
    if (this.doc.getElementById(STYLE_ID)) return;
    this.doc.head.append(element(this.doc, "style", { id: STYLE_ID, text: PANEL_CSS }));
  }

  _section(title, role, open, ...children) {
    const doc = this.doc;
    const details = element(doc, "details", { class: "memhooks-section", role }, element(doc, "summary", { text: title }), ...children);
    details.open = open;
    return details;
  }

  _build() {
    const doc = this.doc;
    this.connectionText = element(doc, "span", {});
    this.connection = element(doc, "span", { class: "memhooks-connection", role: "connection" }, element(doc, "i", { class: "memhooks-dot" }), this.connectionText);
    const header = element(doc, "div", { class: "memhooks-header" }, element(doc, "h3", { text: "Memory" }), this.connection);

    this.ramGauge = this._gauge("RAM", "gauge-ram", "ram");
    this.gpuGauges = element(doc, "div", { role: "gpu-gauges" });
    const gauges = element(doc, "div", { class: "memhooks-gauges", role: "gauges" }, this.ramGauge, this.gpuGauges);

    this.hookText = element(doc, "span", { role: "hook" });
    this.cooldownText = element(doc, "span", { role: "cooldown" });
    this.runText = element(doc, "span", { role: "run" });
    this.errorsText = element(doc, "span", { role: "errors" });
    this.warningText = element(doc, "div", { class: "memhooks-warning", role: "settings-warning", hidden: "" });
    this.pressureText = element(doc, "span", { role: "watchdog" });
    this.heldText = element(doc, "div", { class: "memhooks-muted", role: "held-back", hidden: "" });
    const engine = element(doc, "div", { class: "memhooks-engine", role: "engine" }, this.hookText, this.cooldownText, this.pressureText, this.runText, this.errorsText);

    this.chart = new MemoryChart(doc);
    const stored = Number(this.storage?.getItem(CHART_MINUTES_KEY));
    const minutes = [1, 5, 10].includes(stored) ? stored : 5;
    this.chart.windowSeconds = minutes * 60;
    const windowSelect = element(doc, "select", {
      role: "chart-window",
      "aria-label": "chart window",
      onchange: (event) => {
        this.chart.windowSeconds = Number(event.target.value) * 60;
        this.storage?.setItem(CHART_MINUTES_KEY, event.target.value);
        this._invalidate("chart");
      },
    });
    options(doc, windowSelect, ["1", "5", "10"], String(minutes));
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

    this.modeSelect = element(doc, "select", { role: "optimize-mode", "aria-label": "mode" });
    options(doc, this.modeSelect, MANUAL_MODES, "Balanced");
    this.optimizeButton = element(doc, "button", { type: "button", class: "memhooks-primary", role: "optimize", text: "Optimize now", onclick: () => this._optimize() });
    this.optimizeResult = element(doc, "div", { class: "memhooks-result", role: "optimize-result" });
    const optimize = element(doc, "div", { class: "memhooks-optimize" }, this.modeSelect, this.optimizeButton);

    this.historyBody = element(doc, "tbody", {});
    const history = element(
      doc,
      "table",
      { class: "memhooks-table", role: "history" },
      element(doc, "thead", {}, element(doc, "tr", {}, ...["Time", "Trigger", "Mode", "Freed", "Took", ""].map((text) => element(doc, "th", { text })))),
      this.historyBody,
    );

    this.activityList = element(doc, "ul", { class: "memhooks-activity", role: "activity" });

    this.processesBody = element(doc, "tbody", {});
    this.processesTable = element(
      doc,
      "table",
      { class: "memhooks-table", role: "processes", hidden: "" },
      element(doc, "thead", {}, element(doc, "tr", {}, ...["PID", "Name", "GPU", "Memory"].map((text) => element(doc, "th", { text })))),
      this.processesBody,
    );
    this.processesNote = element(doc, "div", { class: "memhooks-muted", role: "processes-note" });
    const refreshProcesses = element(doc, "button", { type: "button", class: "memhooks-link", text: "refresh", onclick: () => this.refreshProcesses() });

    this.root = element(
      doc,
      "div",
      { class: "memhooks-panel", role: "panel" },
      header,
      gauges,
      engine,
      this.heldText,
      this.warningText,
      element(doc, "div", { class: "memhooks-block" }, legend, this.chart.element),
      element(doc, "div", { class: "memhooks-block" }, optimize, this.optimizeResult),
      this._section("Last optimizations", "history-section", true, history),
      this._section("Heavy nodes", "activity-section", true, this.activityList),
      this._section("GPU processes", "processes-section", true, element(doc, "div", { class: "memhooks-right" }, refreshProcesses), this.processesNote, this.processesTable),
      this._section("Automatic policy", "settings-section", false, this._buildSettings()),
    );
  }

  _buildSettings() {
    const doc = this.doc;
    const check = (name, label) => {
      const input = element(doc, "input", { type: "checkbox", field: name });
      return [input, element(doc, "label", { class: "memhooks-check" }, input, ` ${label}`), element(doc, "div", { class: "memhooks-error", "data-error-for": name, hidden: "" })];
    };
    const [enabled, enabledRow, enabledError] = check("enabled", "Free memory around heavy nodes");
    const [oom, oomRow, oomError] = check("oom_rescue", "OOM rescue: free memory and run a failed heavy node once more");
    this.enabledInput = enabled;
    this.oomInput = oom;
    this.numberInputs = {};
    const numbers = NUMBER_FIELDS.map(([name, label, unit, step]) => {
      const input = element(doc, "input", { type: "number", step: String(step), field: name, "aria-label": label });
      this.numberInputs[name] = input;
      return element(
        doc,
        "div",
        { class: "memhooks-field" },
        element(doc, "label", {}, element(doc, "span", { text: label }), input, element(doc, "span", { class: "memhooks-muted", text: unit })),
        element(doc, "div", { class: "memhooks-error", "data-error-for": name, hidden: "" }),
      );
    });
    this.rulesList = element(doc, "div", { class: "memhooks-rules", role: "rules" });
    const addRule = element(doc, "button", {
      type: "button",
      class: "memhooks-link",
      text: "+ add rule",
      onclick: () => {
        this._readRules();
        this._rules.push({ pattern: "", before_mode: "Monitor Only", before_when: "threshold", after_mode: "Balanced", after_when: "always" });
        this._settingsDirty = true;
        this._renderRules();
      },
    });
    this.saveButton = element(doc, "button", { type: "submit", class: "memhooks-primary", role: "save-settings", text: "Save" });
    const revert = element(doc, "button", {
      type: "button",
      text: "Revert",
      onclick: async () => {
        this._settingsDirty = false;
        try {
          this._loadSettings((await this.client.settings()).settings);
          setText(this.settingsResult, "");
        } catch (error) {
          setText(this.settingsResult, error.message);
        }
      },
    });
    this.settingsResult = element(doc, "span", { class: "memhooks-result", role: "settings-result" });
    this.settingsForm = element(
      doc,
      "form",
      {
        class: "memhooks-settings",
        role: "settings",
        novalidate: "",
        oninput: () => {
          this._settingsDirty = true;
        },
        onsubmit: (event) => {
          event.preventDefault();
          this._saveSettings();
        },
      },
      enabledRow,
      enabledError,
      ...numbers,
      oomRow,
      oomError,
      element(doc, "div", { class: "memhooks-subtitle", text: "Heavy nodes (first matching pattern wins)" }),
      this.rulesList,
      addRule,
      element(doc, "div", { class: "memhooks-error", "data-error-for": "form", hidden: "" }),
      element(doc, "div", { class: "memhooks-buttons" }, this.saveButton, revert, this.settingsResult),
    );
    return this.settingsForm;
  }
}
