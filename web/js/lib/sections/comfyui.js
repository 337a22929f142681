// The Memory panel's ComfyUI line: dynamic VRAM (its allocator fills VRAM by design, so the gauge is not pressure),
// inside a container a warning when ComfyUI's own RAM cache reads the host's RAM rather than the limit, which
// reading of the container's RAM is used where ComfyUI has its own, and what ComfyUI's cache released in the latest
// prompt beside what comfy_memhooks freed. A library module: importing it does nothing.

import { element, setText } from "../dom.js";

export class ComfyuiSection {
  /** @param {import("../panel_view.js").MemoryPanel} panel */
  constructor(panel) {
    this.panel = panel;
    const doc = panel.doc;
    this.dynamicText = element(doc, "div", { class: "memhooks-muted", role: "dynamic-vram", hidden: "" });
    this.cacheText = element(doc, "div", { class: "memhooks-warning", role: "comfy-cache", hidden: "" });
    this.readerText = element(doc, "div", { class: "memhooks-muted", role: "ram-reader", hidden: "" });
    this.releaseText = element(doc, "div", { class: "memhooks-muted", role: "comfy-release", hidden: "" });
    this.nodes = [this.dynamicText, this.cacheText, this.readerText, this.releaseText];
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
    const reader = comfyui.ram_reader_text ?? "";
    setText(this.readerText, reader);
    this.readerText.hidden = !reader;
    this.readerText.classList.toggle("memhooks-warning", Boolean(comfyui.ram_check?.disagreement));
    const release = comfyui.prompt_release?.text ?? "";
    setText(this.releaseText, release);
    this.releaseText.hidden = !release;
  }
}
