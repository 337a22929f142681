// The Memory panel: one small view that holds the state, listens to the API client (api_client.js) and mounts the
// sections, one module each under sections/ (header, gauges, engine line, chart, "Optimize now", history, heavy
// nodes, GPU processes, settings). It mounts into any element: ComfyUI's sidebar tab, a floating panel, or the
// standalone page. State and event listeners live in the panel object, not in the DOM, so a sidebar that mounts
// and unmounts it loses nothing. Each event marks the sections it changes; they are redrawn at most once per
// animation frame, and only while the panel is mounted and the page visible.
// A library module: importing it does nothing (ComfyUI imports every .js under web/ as an extension).

import { element } from "./dom.js";
import { PANEL_CSS } from "./panel_style.js";
import { ActivitySection } from "./sections/activity.js";
import { ChartSection } from "./sections/chart.js";
import { ComfyuiSection } from "./sections/comfyui.js";
import { ConnectionSection } from "./sections/connection.js";
import { EngineSection } from "./sections/engine.js";
import { GaugesSection } from "./sections/gauges.js";
import { HistorySection } from "./sections/history.js";
import { OptimizeSection } from "./sections/optimize.js";
import { ProcessesSection } from "./sections/processes.js";
import { PredictionsSection } from "./sections/predictions.js";
import { ProfileSection } from "./sections/profile.js";
import { SettingsSection } from "./sections/settings.js";

const MAX_RECORDS = 10;
const STYLE_ID = "memhooks-panel-style";
// The sections, in the panel's order. Each has `nodes` (what it adds to the panel) and may have `render()` (redraws
// from the state when marked; false asks again at the next mark), `mount()` and `unmount()`.
const SECTIONS = [
  ["connection", ConnectionSection],
  ["gauges", GaugesSection],
  ["comfyui", ComfyuiSection],
  ["engine", EngineSection],
  ["chart", ChartSection],
  ["optimize", OptimizeSection],
  ["history", HistorySection],
  ["profile", ProfileSection],
  ["predictions", PredictionsSection],
  ["activity", ActivitySection],
  ["processes", ProcessesSection],
  ["settings", SettingsSection],
];

function safeStorage() {
  try {
    return globalThis.localStorage ?? null;
  } catch {
    return null;
  }
}

export class MemoryPanel {
  /**
   * @param {import("./api_client.js").MemhooksClient} client
   * @param {{document?: Document, storage?: Storage | null, canvas?: {title: Function, select: Function} | null}}
   *   [options] `canvas` names the profile's nodes by their titles and selects them (canvas_link.js)
   */
  constructor(client, { document: doc = globalThis.document, storage = safeStorage(), canvas = null } = {}) {
    this.client = client;
    this.canvas = canvas;
    this.doc = doc;
    this.storage = storage;
    this.state = {
      status: null,
      samples: [],
      records: [],
      processes: null,
      /** The answer of GET /memhooks/profile: the last prompt's per-node profile, or why there is none. */
      profile: null,
      /** The answer of GET /memhooks/predictions: each learned class's predicted and actual peaks. */
      predictions: null,
      /** What the settings form and "Optimize now" offer, from GET /memhooks/settings; null until it answers. */
      choices: null,
      windowSeconds: 600,
      loadError: null,
    };
    this._dirty = new Set();
    this._frame = null;
    this._mounted = false;
    this._wasDisconnected = false;
    this._ensureStyle();
    this.sections = Object.fromEntries(SECTIONS.map(([name, Section]) => [name, new Section(this)]));
    this.root = element(
      doc,
      "div",
      { class: "memhooks-panel", role: "panel" },
      ...Object.values(this.sections).flatMap((section) => section.nodes),
    );
    this._unsubscribe = [
      client.on("memhooks.status", (data) => this._onStatus(data)),
      client.on("memhooks.optimization", (data) => this.addRecord(data?.record)),
      client.on("memhooks.hook", (data) => this.sections.activity.add(data, "hook")),
      client.on("memhooks.prompt", (data) => this._onPrompt(data)),
      client.on("memhooks.manual", (data) => this._onManual(data)),
      client.on("memhooks.settings", (data) => this.takeSettings(data, true)),
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
    for (const section of Object.values(this.sections)) section.mount?.();
    this.invalidate(...this._renderable());
    this.refresh();
  }

  unmount() {
    this._mounted = false;
    for (const section of Object.values(this.sections)) section.unmount?.();
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
    this.state.loadError = failed ? (failed.reason?.message ?? String(failed.reason)) : null;
    if (history.status === "fulfilled") {
      const data = history.value;
      this.state.windowSeconds = data.window_seconds ?? this.state.windowSeconds;
      const pushed = this.state.samples;
      const lastLoaded = data.samples.length ? data.samples[data.samples.length - 1].taken_at : -Infinity;
      this.state.samples = [...data.samples, ...pushed.filter((sample) => sample.taken_at > lastLoaded)];
      for (const record of data.records) this.addRecord(record, false);
    }
    if (status.status === "fulfilled") this._onStatus(status.value);
    if (settings.status === "fulfilled") this.takeSettings(settings.value, false);
    this.invalidate(...this._renderable());
    await Promise.all([this.refreshProcesses(), this.refreshProfile(), this.refreshPredictions()]);
  }

  /** Loads the last prompt's profile: on each mount and when a prompt has finished. */
  async refreshProfile() {
    try {
      this.state.profile = await this.client.profile();
    } catch (error) {
      this.state.profile = { profile: null, reason: error.message };
    }
    this.invalidate("profile");
  }

  /** Loads what predictive cleanup learned: on each mount and when a prompt has finished. */
  async refreshPredictions() {
    try {
      this.state.predictions = await this.client.predictions();
    } catch (error) {
      this.state.predictions = { classes: null, reason: error.message };
    }
    this.invalidate("predictions");
  }

  async refreshProcesses() {
    try {
      this.state.processes = await this.client.processes();
    } catch (error) {
      this.state.processes = { processes: null, reason: error.message };
    }
    this.invalidate("processes");
  }

  /** Marks sections to redraw at the next animation frame. */
  invalidate(...names) {
    for (const name of names) this._dirty.add(name);
    this._schedule();
  }

  /** Adds an optimization to the history (newest first, at most MAX_RECORDS) and to the chart's marks. */
  addRecord(record, redraw = true) {
    if (!record || this.state.records.some((known) => known.sequence === record.sequence)) return;
    this.state.records.push(record);
    this.state.records.sort((a, b) => b.sequence - a.sequence);
    this.state.records.length = Math.min(this.state.records.length, MAX_RECORDS);
    if (redraw) this.invalidate("history", "chart");
  }

  /**
   * An answer of GET or PUT /memhooks/settings, or a pushed memhooks.settings (`pushed`): the choices go to
   * "Optimize now" and the form, the settings to the form unless it holds unsaved changes.
   */
  takeSettings(data, pushed) {
    if (!data?.settings) return;
    if (data.choices) this.state.choices = data.choices;
    this.sections.optimize.setChoices(this.state.choices);
    this.sections.settings.receive(data.settings, pushed);
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
      this.invalidate("chart");
    }
    this.sections.chart.follow(data.policy ?? {});
    // The ComfyUI lines too: what its cache released is known only once a prompt has run, after the panel loaded.
    this.invalidate("gauges", "comfyui", "engine", "connection");
  }

  _onPrompt(data) {
    this.sections.activity.add(data, "prompt");
    if (data?.phase === "finished" && this._mounted) {
      this.refreshProfile();
      this.refreshPredictions();
    }
  }

  _onManual(answer) {
    if (!answer) return;
    if (answer.record) this.addRecord(answer.record);
    this.sections.optimize.showAnswer(answer, true);
  }

  _onConnection(connected) {
    // Back after an outage: what was missed meanwhile (optimizations, settings) comes from the server again.
    if (connected === false) {
      this._wasDisconnected = true;
    } else if (this._wasDisconnected) {
      this._wasDisconnected = false;
      if (this._mounted) this.refresh();
    }
    this.invalidate("connection");
  }

  // Scheduling -----------------------------------------------------------------------------------------------------

  _renderable() {
    return Object.keys(this.sections).filter((name) => typeof this.sections[name].render === "function");
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
    for (const name of dirty) {
      if (this.sections[name]?.render?.() === false) this._dirty.add(name);
    }
  }

  _ensureStyle() {
    if (this.doc.getElementById(STYLE_ID)) return;
    this.doc.head.append(element(this.doc, "style", { id: STYLE_ID, text: PANEL_CSS }));
  }
}
