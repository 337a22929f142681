// The Memory panel's ComfyUI line: dynamic VRAM (its allocator fills VRAM by design, so the gauge is not pressure)
// and, inside a container, a warning when ComfyUI's own RAM cache reads the host's RAM rather than the limit.
// A library module: importing it does nothing.

import { element, setText } from "../dom.js";

export class ComfyuiSection {
  /** @param {import("../panel_view.js").MemoryPanel} panel */
  constructor(panel) {
    this.panel = panel;
    const doc = panel.doc;
    this.dynamicText = element(doc, "div", { class: "memhooks-muted", role: "dynamic-vram", hidden: "" });
    this.cacheText = element(doc, "div", { class: "memhooks-warning", role: "comfy-cache", hidden: "" });
    this.nodes = [this.dynamicText, this.cacheText];
  }

  render() {
    const comfyui = this.panel.state.status?.comfyui;
    if (!comfyui) return;
    const pressure = this.panel.state.status.snapshot.vram_pressure_percent;
    const dynamic = comfyui.dynamic_vram
      ? `${comfyui.dynamic_vram} · the VRAM threshold reads what cannot be evicted` +
        (Number.isFinite(pressure) ? `: ${pressure.toFixed(0)}%` : "")
      : "";
    setText(this.dynamicText, dynamic);
    this.dynamicText.hidden = !dynamic;
    const advice = comfyui.output_cache?.advice ?? "";
    setText(this.cacheText, advice);
    this.cacheText.hidden = !advice;
  }
}
