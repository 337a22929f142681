// The Memory panel's live chart: RAM and VRAM percentages over the last minutes, the thresholds, and marks
// where optimizations happened. Two stacked canvases: the background (grid, thresholds, labels) is drawn again
// only when the size or a threshold changes; the foreground only when a sample or an optimization arrives.
// Nothing animates and nothing is drawn while the panel is hidden. A library module: importing it does nothing.

export const RAM_COLOR = "#4aa3ff";
export const VRAM_COLOR = "#f5a623";
const MARK_COLOR = "#3ecf8e";
export const PRESSURE_COLOR = "#ff5c5c"; // a cleanup fired by RAM or VRAM at or above its threshold
const PAD = { left: 30, right: 6, top: 8, bottom: 16 };

/** Whether an optimization was fired by pressure (a reading at or above its threshold), not by routine. */
export function isPressure(record) {
  return Boolean(record?.trigger?.pressure?.length);
}

export class MemoryChart {
  constructor(doc) {
    this.element = doc.createElement("div");
    this.element.className = "memhooks-chart";
    this.background = doc.createElement("canvas");
    this.foreground = doc.createElement("canvas");
    this.foreground.dataset.role = "chart";
    this.foreground.dataset.draws = "0";
    this.foreground.dataset.samples = "0";
    this.element.append(this.background, this.foreground);
    this.windowSeconds = 300;
    this.maxGapSeconds = 5; // a longer gap (sampling paused while no browser watched) breaks the line
    this.thresholds = { ram: null, vram: null };
    this._size = { width: 0, height: 0, ratio: 1 };
    this._backgroundKey = "";
    this._draws = 0;
  }

  /** Draws what changed; the caller decides when (at most once per animation frame, only when visible). */
  draw(samples, records) {
    const width = Math.round(this.element.clientWidth);
    const height = Math.round(this.element.clientHeight);
    if (width <= 0 || height <= 0) return false;
    const ratio = globalThis.devicePixelRatio || 1;
    if (width !== this._size.width || height !== this._size.height || ratio !== this._size.ratio) {
      this._size = { width, height, ratio };
      for (const canvas of [this.background, this.foreground]) {
        canvas.width = Math.round(width * ratio);
        canvas.height = Math.round(height * ratio);
      }
      this._backgroundKey = "";
    }
    const key = `${width}x${height}@${ratio}|${this.thresholds.ram}|${this.thresholds.vram}|${this.windowSeconds}`;
    if (key !== this._backgroundKey) {
      this._drawBackground();
      this._backgroundKey = key;
    }
    this._drawForeground(samples, records);
    return true;
  }

  _area() {
    const { width, height } = this._size;
    return { x: PAD.left, y: PAD.top, w: width - PAD.left - PAD.right, h: height - PAD.top - PAD.bottom };
  }

  _context(canvas) {
    const context = canvas.getContext("2d");
    context.setTransform(this._size.ratio, 0, 0, this._size.ratio, 0, 0);
    context.clearRect(0, 0, this._size.width, this._size.height);
    return context;
  }

  _drawBackground() {
    const context = this._context(this.background);
    const area = this._area();
    const style = getComputedStyle(this.element);
    const muted = style.getPropertyValue("--memhooks-muted").trim() || "#888";
    const grid = style.getPropertyValue("--memhooks-grid").trim() || "rgba(128,128,128,0.25)";
    context.font = "10px sans-serif";
    context.lineWidth = 1;
    for (const percent of [0, 25, 50, 75, 100]) {
      const y = Math.round(area.y + area.h * (1 - percent / 100)) + 0.5;
      context.strokeStyle = grid;
      context.beginPath();
      context.moveTo(area.x, y);
      context.lineTo(area.x + area.w, y);
      context.stroke();
      context.fillStyle = muted;
      context.textAlign = "right";
      context.textBaseline = "middle";
      context.fillText(`${percent}%`, area.x - 4, y);
    }
    const minutes = this.windowSeconds / 60;
    context.textBaseline = "top";
    context.textAlign = "left";
    context.fillText(`-${minutes} min`, area.x, area.y + area.h + 3);
    context.textAlign = "right";
    context.fillText("now", area.x + area.w, area.y + area.h + 3);
    context.setLineDash([4, 3]);
    for (const [threshold, color] of [
      [this.thresholds.ram, RAM_COLOR],
      [this.thresholds.vram, VRAM_COLOR],
    ]) {
      if (!Number.isFinite(threshold)) continue;
      const y = Math.round(area.y + area.h * (1 - threshold / 100)) + 0.5;
      context.strokeStyle = color;
      context.globalAlpha = 0.7;
      context.beginPath();
      context.moveTo(area.x, y);
      context.lineTo(area.x + area.w, y);
      context.stroke();
    }
    context.setLineDash([]);
    context.globalAlpha = 1;
  }

  _drawForeground(samples, records) {
    const context = this._context(this.foreground);
    const area = this._area();
    const last = samples.length ? samples[samples.length - 1] : null;
    const end = last ? last.taken_at : Date.now() / 1000;
    const start = end - this.windowSeconds;
    const xOf = (t) => area.x + ((t - start) / this.windowSeconds) * area.w;
    const yOf = (percent) => area.y + area.h * (1 - Math.min(Math.max(percent, 0), 100) / 100);

    context.lineWidth = 1.5;
    for (const record of records) {
      if (record.started_at < start || record.started_at > end) continue;
      const x = Math.round(xOf(record.started_at)) + 0.5;
      const color = isPressure(record) ? PRESSURE_COLOR : MARK_COLOR;
      context.strokeStyle = color;
      context.globalAlpha = 0.8;
      context.beginPath();
      context.moveTo(x, area.y);
      context.lineTo(x, area.y + area.h);
      context.stroke();
      context.fillStyle = color;
      context.beginPath();
      context.moveTo(x - 4, area.y);
      context.lineTo(x + 4, area.y);
      context.lineTo(x, area.y + 6);
      context.fill();
    }
    context.globalAlpha = 1;
    context.lineWidth = 1.75;
    context.lineJoin = "round";
    const visible = samples.filter((sample) => sample.taken_at >= start);
    for (const [key, color] of [
      ["ram_percent", RAM_COLOR],
      ["vram_percent", VRAM_COLOR],
    ]) {
      context.strokeStyle = color;
      context.beginPath();
      let previousAt = null;
      for (const sample of visible) {
        const value = sample[key];
        if (value === null || value === undefined) {
          previousAt = null;
          continue;
        }
        const x = xOf(sample.taken_at);
        const y = yOf(value);
        if (previousAt !== null && sample.taken_at - previousAt <= this.maxGapSeconds) context.lineTo(x, y);
        else context.moveTo(x, y);
        previousAt = sample.taken_at;
      }
      context.stroke();
      // The latest reading as a dot: visible from the first sample on.
      const latest = visible[visible.length - 1];
      if (latest && latest[key] !== null && latest[key] !== undefined) {
        context.fillStyle = color;
        context.beginPath();
        context.arc(xOf(latest.taken_at) - 2, yOf(latest[key]), 2.5, 0, 2 * Math.PI);
        context.fill();
      }
    }
    this._draws += 1;
    this.foreground.dataset.draws = String(this._draws);
    this.foreground.dataset.pressureMarks = String(
      records.filter((record) => isPressure(record) && record.started_at >= start && record.started_at <= end).length,
    );
    this.foreground.dataset.samples = String(visible.length);
    this.foreground.dataset.lastSampleAt = last ? String(last.taken_at) : "";
  }
}
