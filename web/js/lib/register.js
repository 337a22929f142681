// Registers the Memory panel with ComfyUI's frontend: a sidebar tab titled "Memory" where the frontend has the
// sidebar API, else a floating panel opened by a command and a small button. Given `app` and `api` rather than
// importing them, so it works with any frontend that has them. A library module: importing it does nothing.

import { comfyClient } from "./api_client.js";
import { comfyCanvas } from "./canvas_link.js";
import { MemoryPanel } from "./panel_view.js";

export const EXTENSION_NAME = "memhooks.MemoryPanel";
export const SIDEBAR_TAB_ID = "memhooks.memory";
export const TOGGLE_COMMAND_ID = "memhooks.ToggleMemoryPanel";
const ICON = "pi pi-microchip";

/** A panel fixed over the canvas, for frontends without the sidebar API. */
export class FloatingPanel {
  constructor(panel, doc = globalThis.document) {
    this.panel = panel;
    this.frame = doc.createElement("div");
    this.frame.dataset.role = "memhooks-floating";
    Object.assign(this.frame.style, {
      position: "fixed",
      right: "16px",
      bottom: "56px",
      width: "380px",
      maxHeight: "75vh",
      display: "none",
      zIndex: "1000",
      background: "var(--comfy-menu-bg, #202020)",
      border: "1px solid var(--border-color, #444)",
      borderRadius: "8px",
      boxShadow: "0 8px 24px rgba(0, 0, 0, 0.45)",
      overflow: "hidden",
    });
    this.button = doc.createElement("button");
    this.button.type = "button";
    this.button.textContent = "Memory";
    this.button.title = "Memory: RAM, VRAM and what comfy_memhooks did";
    this.button.dataset.role = "memhooks-floating-button";
    Object.assign(this.button.style, {
      position: "fixed",
      right: "16px",
      bottom: "16px",
      zIndex: "1000",
      padding: "5px 12px",
      borderRadius: "14px",
      border: "1px solid var(--border-color, #444)",
      background: "var(--comfy-menu-bg, #202020)",
      color: "var(--fg-color, #ddd)",
      cursor: "pointer",
    });
    this.button.addEventListener("click", () => this.toggle());
    doc.body.append(this.frame, this.button);
  }

  get open() {
    return this.frame.style.display !== "none";
  }

  toggle() {
    if (this.open) {
      this.panel.unmount();
      this.frame.style.display = "none";
    } else {
      this.frame.style.display = "block";
      this.panel.mount(this.frame);
    }
  }
}

/** Registers the extension; returns the panel (tests and other extensions may reach it through the return value). */
export function registerMemoryPanel(app, api) {
  // The client subscribes to the memhooks.* events now: the frontend rejects a message type nobody listens to.
  const panel = new MemoryPanel(comfyClient(api), { canvas: comfyCanvas(app) });
  let floating = null;
  const toggle = () => {
    if (floating) floating.toggle();
    else app.extensionManager?.command?.execute?.(`Workspace.ToggleSidebarTab.${SIDEBAR_TAB_ID}`);
  };
  app.registerExtension({
    name: EXTENSION_NAME,
    commands: [{ id: TOGGLE_COMMAND_ID, label: "Show or hide the Memory panel", icon: ICON, function: toggle }],
    menuCommands: [{ path: ["View"], commands: [TOGGLE_COMMAND_ID] }],
    setup() {
      const manager = app.extensionManager;
      if (typeof manager?.registerSidebarTab === "function") {
        manager.registerSidebarTab({
          id: SIDEBAR_TAB_ID,
          icon: ICON,
          title: "Memory",
          label: "Memory",
          tooltip: "Memory: RAM, VRAM and what comfy_memhooks did",
          type: "custom",
          render: (element) => panel.mount(element),
          destroy: () => panel.unmount(),
        });
        return;
      }
      floating = new FloatingPanel(panel);
      console.info("memhooks: this ComfyUI frontend has no sidebar tabs; the Memory panel opens from its button");
    },
  });
  return panel;
}
