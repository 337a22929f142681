// The Memory panel's "Per-node profile": the last prompt's nodes as a bar chart and a table, sorted by the RAM
// each needed while it ran (its peak) by default, or by what it left behind or its VRAM peak; the heaviest
// highlighted, each named by its title on the canvas; a peak that was only sampled is marked "≥", one read from the
// container's counter (an upper bound) "≤"; clicking a row
// selects the node where the frontend allows it; the profile downloads as CSV or JSON. Redrawn only when the
// profile or the order changed. A library module: importing it does nothing.

import { element, section, setText } from "../dom.js";
import { formatDuration, formatSize } from "../format.js";

const ORDERS = [
  ["ram_peak_bytes", "RAM peak"],
  ["ram_left_bytes", "Left behind"],
  ["vram_peak_bytes", "VRAM peak"],
];
const COLUMNS = ["Node", "RAM peak", "Left behind", "VRAM peak", "Took"];
// How a RAM peak was measured (the record's ram_peak_method), as the peak's tooltip says it.
const PEAK_METHODS = {
  hwm: "exact: this process's peak resident set while it ran (its high-water mark, reset before the node)",
  cgroup:
    "at most: this process's resident set at its start plus the container's growth while it ran (its counter, reset before the node, also counts page cache and other processes)",
  sampled: "sampled: the highest reading while it ran; a spike between readings is missed",
};
const NO_PEAK = "no peak reading: what it left behind";
const LEFT_TITLE = "left behind: what its resident set grew by from its start to its end";
const BARS = 8;
export const CSV_FIELDS = [
  "node_id",
  "title",
  "node_class",
  "cached",
  "success",
  "started_seconds",
  "duration_seconds",
  "ram_peak_bytes",
  "ram_peak_method",
  "ram_left_bytes",
  "rss_peak_bytes",
  "container_peak_added_bytes",
  "vram_peak_bytes",
  "vram_peak_source",
  "rss_before_bytes",
  "rss_after_bytes",
  "rss_delta_bytes",
  "ram_used_before_bytes",
  "ram_used_after_bytes",
  "torch_allocated_before_bytes",
  "torch_allocated_after_bytes",
  "torch_peak_allocated_bytes",
];

function csvCell(value) {
  const text = value === null || value === undefined ? "" : String(value);
  return /[",\n\r]/.test(text) ? `"${text.replaceAll('"', '""')}"` : text;
}

/** The profile's nodes as CSV, one row each, with the title the canvas gives (`titleOf(nodeId)`). */
export function profileCsv(profile, titleOf) {
  const rows = profile.nodes.map((node) => {
    const values = { ...node, title: titleOf(node.node_id) ?? "" };
    return CSV_FIELDS.map((name) => csvCell(values[name])).join(",");
  });
  return [CSV_FIELDS.join(","), ...rows].join("\n") + "\n";
}

const PEAK_BOUNDS = { sampled: "≥ ", cgroup: "≤ " };

/** A node's RAM peak as shown: "≥ 600 MB" when it was sampled (a lower bound), "≤ 600 MB" when read from the
 * container's counter (an upper bound), else "1.37 GB". */
export function peakText(node) {
  const size = formatSize(node.ram_peak_bytes);
  const bound = Number.isFinite(node.ram_peak_bytes) ? (PEAK_BOUNDS[node.ram_peak_method] ?? "") : "";
  return bound + size;
}

/** What the peak's tooltip says: how it was measured, and the container's peak where it could be read. */
export function peakTitle(node) {
  const method = PEAK_METHODS[node.ram_peak_method] ?? NO_PEAK;
  const container = node.container_peak_added_bytes;
  if (!Number.isFinite(container)) return method;
  return `${method}; the container: ${formatSize(container, true)} at its peak, as its OOM killer counts`;
}

/** `figure` of a node as the bars and the table show it. */
function figureText(node, figure) {
  return figure === "ram_peak_bytes" ? peakText(node) : formatSize(node[figure]);
}

/** The nodes sorted by `figure`, largest first; nodes without it last, in the order they ran. */
export function byPeak(nodes, figure) {
  const weight = (node) => (Number.isFinite(node[figure]) ? node[figure] : -1);
  return nodes
    .map((node, index) => ({ node, index }))
    .sort((a, b) => weight(b.node) - weight(a.node) || a.index - b.index)
    .map(({ node }) => node);
}

export class ProfileSection {
  /** @param {import("../panel_view.js").MemoryPanel} panel */
  constructor(panel) {
    this.panel = panel;
    const doc = panel.doc;
    this._key = "";
    this.order = ORDERS[0][0];
    this.summary = element(doc, "div", { class: "memhooks-muted", role: "profile-summary" });
    this.orderSelect = element(doc, "select", {
      "aria-label": "sort by",
      role: "profile-order",
      onchange: () => {
        this.order = this.orderSelect.value;
        this.panel.invalidate("profile");
      },
    });
    this.orderSelect.replaceChildren(...ORDERS.map(([value, text]) => element(doc, "option", { value, text })));
    const download = (format) =>
      element(doc, "button", {
        type: "button",
        role: `profile-${format}`,
        text: format.toUpperCase(),
        onclick: () => this.download(format),
      });
    this.exportButtons = [download("csv"), download("json")];
    this.bars = element(doc, "div", { class: "memhooks-profile-bars", role: "profile-bars" });
    this.body = element(doc, "tbody", {});
    this.table = element(
      doc,
      "table",
      { class: "memhooks-table", role: "profile" },
      element(doc, "thead", {}, element(doc, "tr", {}, ...COLUMNS.map((text) => element(doc, "th", { text })))),
      this.body,
    );
    const controls = element(
      doc,
      "div",
      { class: "memhooks-legend" },
      "sort by",
      this.orderSelect,
      ...this.exportButtons,
    );
    this.nodes = [
      section(doc, "Per-node profile", "profile-section", true, this.summary, controls, this.bars, this.table),
    ];
  }

  get profile() {
    return this.panel.state.profile?.profile ?? null;
  }

  titleOf(nodeId) {
    return this.panel.canvas?.title(nodeId) ?? null;
  }

  render() {
    const answer = this.panel.state.profile;
    const profile = this.profile;
    const key = profile
      ? `${profile.prompt_id}|${profile.nodes.length}|${profile.finished}|${this.order}`
      : `none|${answer?.reason ?? ""}`;
    if (key === this._key) return;
    this._key = key;
    for (const button of this.exportButtons) button.disabled = !profile;
    if (!profile) {
      setText(this.summary, answer ? `No profile: ${answer.reason ?? "nothing recorded"}.` : "Loading…");
      this.bars.replaceChildren();
      this.body.replaceChildren();
      this.table.hidden = true;
      return;
    }
    const state = profile.finished ? (profile.success ? "succeeded" : "failed") : "running";
    const dropped = profile.nodes_dropped ? `, ${profile.nodes_dropped} more not kept` : "";
    setText(
      this.summary,
      `Prompt ${profile.prompt_id.slice(0, 8)} · ${profile.nodes.length} nodes${dropped} · ${state}` +
        (profile.duration_seconds === null ? "" : ` in ${formatDuration(profile.duration_seconds)}`),
    );
    const sorted = byPeak(profile.nodes, this.order);
    const heaviest = sorted.find((node) => node[this.order] > 0) ?? null;
    this._renderBars(sorted, heaviest);
    this.table.hidden = false;
    this.body.replaceChildren(...sorted.map((node) => this._row(node, node === heaviest)));
    this.table.dataset.order = this.order; // what the rows are sorted by once drawn, for whoever waits on a redraw
  }

  _label(node) {
    return `${this.titleOf(node.node_id) ?? node.node_class} #${node.node_id}`;
  }

  _renderBars(sorted, heaviest) {
    const doc = this.panel.doc;
    const shown = sorted.filter((node) => Number.isFinite(node[this.order])).slice(0, BARS);
    const largest = Math.max(1, ...shown.map((node) => node[this.order]));
    if (!shown.length) {
      const what = this.order === "vram_peak_bytes" ? "VRAM (no GPU, or torch has not initialised CUDA)" : "RAM";
      this.bars.replaceChildren(element(doc, "div", { class: "memhooks-muted", text: `No ${what} figures.` }));
      return;
    }
    this.bars.replaceChildren(
      ...shown.map((node) => {
        const fill = element(doc, "div", { class: "memhooks-profile-fill" });
        fill.style.width = `${((Math.max(node[this.order], 0) / largest) * 100).toFixed(1)}%`;
        return element(
          doc,
          "div",
          {
            class: "memhooks-profile-bar",
            role: "profile-bar",
            "data-node-id": node.node_id,
            "data-heaviest": String(node === heaviest),
          },
          element(doc, "span", { class: "memhooks-profile-label", text: this._label(node) }),
          element(doc, "div", { class: "memhooks-bar" }, fill),
          element(doc, "span", { class: "memhooks-number", text: figureText(node, this.order) }),
        );
      }),
    );
  }

  _row(node, heaviest) {
    const doc = this.panel.doc;
    const title = this.titleOf(node.node_id);
    const name = element(doc, "td", { text: this._label(node) });
    if (title) name.append(element(doc, "div", { class: "memhooks-muted", text: node.node_class }));
    if (node.cached) name.append(element(doc, "div", { class: "memhooks-muted", text: "cached" }));
    return element(
      doc,
      "tr",
      {
        role: "profile-row",
        class: heaviest ? "memhooks-heaviest" : "",
        "data-node-id": node.node_id,
        "data-heaviest": String(heaviest),
        "data-cached": String(node.cached),
        title: "select this node on the canvas",
        onclick: () => this.panel.canvas?.select(node.node_id),
      },
      name,
      element(doc, "td", {
        class: "memhooks-number",
        role: "profile-peak",
        "data-method": node.ram_peak_method ?? "",
        title: peakTitle(node),
        text: peakText(node),
      }),
      element(doc, "td", {
        class: "memhooks-number",
        role: "profile-left",
        title: LEFT_TITLE,
        text: formatSize(node.ram_left_bytes),
      }),
      element(doc, "td", { class: "memhooks-number", text: formatSize(node.vram_peak_bytes) }),
      element(doc, "td", { class: "memhooks-number", text: formatDuration(node.duration_seconds) }),
    );
  }

  /** Downloads the shown profile as `memhooks-profile-<prompt id>.csv` or `.json`. */
  download(format) {
    const profile = this.profile;
    if (!profile) return;
    const withTitles = {
      ...profile,
      nodes: profile.nodes.map((node) => ({ ...node, title: this.titleOf(node.node_id) })),
    };
    const [text, type] =
      format === "csv"
        ? [profileCsv(profile, (id) => this.titleOf(id)), "text/csv"]
        : [JSON.stringify(withTitles, null, 2), "application/json"];
    const doc = this.panel.doc;
    const url = URL.createObjectURL(new Blob([text], { type }));
    const link = element(doc, "a", {
      href: url,
      download: `memhooks-profile-${profile.prompt_id}.${format}`,
      hidden: "",
    });
    doc.body.append(link);
    link.click();
    link.remove();
    setTimeout(() => URL.revokeObjectURL(url), 10_000);
  }
}
