// Number and time formatting for the Memory panel. A library module: importing it does nothing.
// ComfyUI lists every .js under web/ as an extension and imports it; this one only exports functions.

export const GIB = 1024 ** 3;

/** Bytes as GB with one decimal ("12.3 GB"), "n/a" when unknown; GB means GiB, as in the node's status line. */
export function formatGb(bytes, digits = 1) {
  if (bytes === null || bytes === undefined || !Number.isFinite(bytes)) return "n/a";
  return `${(bytes / GIB).toFixed(digits)} GB`;
}

/** "512 MB" under a gigabyte, "1.50 GB" above; signed ("+12 MB") when asked. */
export function formatSize(bytes, signed = false) {
  if (bytes === null || bytes === undefined || !Number.isFinite(bytes)) return "n/a";
  const sign = signed && bytes > 0 ? "+" : "";
  if (Math.abs(bytes) < GIB) return `${sign}${(bytes / 1024 ** 2).toFixed(0)} MB`;
  return `${sign}${(bytes / GIB).toFixed(2)} GB`;
}

export function formatPercent(value) {
  if (value === null || value === undefined || !Number.isFinite(value)) return "n/a";
  return `${value.toFixed(1)}%`;
}

/** A duration: "340 ms" under a second, "2.4 s" above. */
export function formatDuration(seconds) {
  if (seconds === null || seconds === undefined || !Number.isFinite(seconds)) return "n/a";
  if (seconds < 1) return `${Math.round(seconds * 1000)} ms`;
  return `${seconds.toFixed(1)} s`;
}

/** Wall-clock seconds (Python's time.time()) as local HH:MM:SS. */
export function formatClock(epochSeconds) {
  if (!Number.isFinite(epochSeconds)) return "n/a";
  const date = new Date(epochSeconds * 1000);
  return [date.getHours(), date.getMinutes(), date.getSeconds()].map((n) => String(n).padStart(2, "0")).join(":");
}

/** Who triggered an optimization, for the history table: "manual", "pressure · hook · ReActorFaceSwap #12 (before)". */
export function formatTrigger(trigger) {
  if (!trigger) return "n/a";
  let text = trigger.kind ?? "?";
  if (trigger.pressure?.length) text = `pressure · ${text}`;
  if (trigger.node_class) {
    text += ` · ${trigger.node_class}`;
    if (trigger.node_id) text += ` #${trigger.node_id}`;
  }
  if (trigger.phase) text += ` (${trigger.phase})`;
  return text;
}

/** The readings that fired a pressure cleanup: "RAM 91% >= 80%". */
export function formatPressure(levels) {
  return (levels ?? [])
    .map((level) => `${level.resource} ${Math.round(level.percent)}% >= ${level.threshold}%`)
    .join(", ");
}
