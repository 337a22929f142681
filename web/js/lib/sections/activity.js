// The Memory panel's "Heavy nodes" list: the latest prompts and heavy nodes the executor hook saw start and
// finish, newest first. A library module: importing it does nothing.

import { element, section } from "../dom.js";
import { formatClock, formatDuration } from "../format.js";

const MAX_ACTIVITY = 8;

/** One line of activity from a memhooks.prompt or memhooks.hook event. */
function activityText(data, kind) {
  if (kind === "prompt") {
    let text = data.phase === "started" ? "prompt started" : `prompt ${data.success === false ? "failed" : "finished"}`;
    if (data.phase === "finished") text += ` in ${formatDuration(data.duration_seconds)}`;
    return text;
  }
  let text = `${data.node_class ?? "node"} #${data.node_id ?? "?"} ${data.phase}`;
  if (data.phase === "finished") {
    text += data.cached ? " (cached)" : ` in ${formatDuration(data.duration_seconds)}`;
    if (data.error) text += ` — ${data.error}`;
  }
  return text;
}

export class ActivitySection {
  /** @param {import("../panel_view.js").MemoryPanel} panel */
  constructor(panel) {
    this.panel = panel;
    this.entries = [];
    this.list = element(panel.doc, "ul", { class: "memhooks-activity", role: "activity" });
    this.nodes = [section(panel.doc, "Heavy nodes", "activity-section", true, this.list)];
  }

  /** Adds a memhooks.hook (`kind` "hook") or memhooks.prompt ("prompt") event. */
  add(data, kind) {
    if (!data) return;
    this.entries.unshift({ at: Date.now() / 1000, text: activityText(data, kind), error: Boolean(data.error) });
    this.entries.length = Math.min(this.entries.length, MAX_ACTIVITY);
    this.panel.invalidate("activity");
  }

  render() {
    const doc = this.panel.doc;
    const items = this.entries.map((entry) =>
      element(
        doc,
        "li",
        { class: entry.error ? "memhooks-failed" : "" },
        element(doc, "span", { class: "memhooks-muted", text: formatClock(entry.at) }),
        ` ${entry.text}`,
      ),
    );
    if (!items.length) items.push(element(doc, "li", { class: "memhooks-muted", text: "No heavy node has run yet." }));
    this.list.replaceChildren(...items);
  }
}
