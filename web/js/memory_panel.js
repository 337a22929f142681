// ComfyUI extension: the Memory panel in the sidebar (live RAM/VRAM, history and controls of comfy_memhooks).
import { app } from "../../../scripts/app.js";
import { api } from "../../../scripts/api.js";
import { registerMemoryPanel } from "./lib/register.js";

registerMemoryPanel(app, api);
