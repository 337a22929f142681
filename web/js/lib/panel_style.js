// The Memory panel's stylesheet, injected once by panel_view.js. It follows ComfyUI's theme through the
// frontend's CSS variables and falls back to a dark theme elsewhere (the standalone page).
// A library module: importing it does nothing.

export const PANEL_CSS = `
.memhooks-panel {
  --memhooks-fg: var(--fg-color, #e6e6e6);
  --memhooks-muted: var(--descrip-text, #9a9a9a);
  --memhooks-border: var(--border-color, #3a3a3a);
  --memhooks-input-bg: var(--comfy-input-bg, #1f1f1f);
  --memhooks-input-fg: var(--input-text, #e6e6e6);
  --memhooks-grid: rgba(128, 128, 128, 0.22);
  --memhooks-ok: #3ecf8e;
  --memhooks-warn: #f5a623;
  --memhooks-high: #ff5c5c;
  box-sizing: border-box;
  height: 100%;
  overflow-y: auto;
  padding: 10px 12px 16px;
  color: var(--memhooks-fg);
  font: 12px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif;
}
.memhooks-panel *, .memhooks-panel *::before, .memhooks-panel *::after { box-sizing: border-box; }
.memhooks-header { display: flex; align-items: baseline; justify-content: space-between; gap: 8px; margin-bottom: 8px; }
.memhooks-header h3 { margin: 0; font-size: 15px; font-weight: 600; letter-spacing: 0.02em; }
.memhooks-connection { color: var(--memhooks-muted); font-size: 11px; white-space: nowrap; overflow: hidden; text-overflow: ellipsis; }
.memhooks-dot { display: inline-block; width: 7px; height: 7px; border-radius: 50%; margin-right: 5px; background: var(--memhooks-muted); }
.memhooks-connection[data-state="live"] .memhooks-dot { background: var(--memhooks-ok); }
.memhooks-connection[data-state="error"] .memhooks-dot { background: var(--memhooks-high); }
.memhooks-gauges { display: flex; flex-direction: column; gap: 8px; }
.memhooks-gauge-head { display: flex; justify-content: space-between; gap: 8px; }
.memhooks-gauge-label { font-weight: 600; }
.memhooks-gauge-value { font-variant-numeric: tabular-nums; }
.memhooks-bar { position: relative; height: 8px; margin: 3px 0 2px; border-radius: 4px; background: var(--memhooks-grid); overflow: hidden; }
.memhooks-fill { height: 100%; width: 0; border-radius: 4px; background: var(--memhooks-ok); transition: width 0.3s ease-out; }
.memhooks-gauge[data-level="warn"] .memhooks-fill { background: var(--memhooks-warn); }
.memhooks-gauge[data-level="high"] .memhooks-fill { background: var(--memhooks-high); }
.memhooks-gauge[data-level="none"] .memhooks-gauge-value { color: var(--memhooks-muted); }
.memhooks-tick { position: absolute; top: 0; bottom: 0; width: 2px; margin-left: -1px; background: var(--memhooks-fg); opacity: 0.55; }
.memhooks-gauge-note, .memhooks-muted { color: var(--memhooks-muted); font-size: 11px; }
.memhooks-gauge-note { white-space: nowrap; overflow: hidden; text-overflow: ellipsis; }
.memhooks-engine { display: flex; flex-wrap: wrap; gap: 4px 6px; margin: 10px 0 4px; }
.memhooks-engine span { padding: 1px 7px; border-radius: 9px; border: 1px solid var(--memhooks-border); color: var(--memhooks-muted); font-size: 11px; }
.memhooks-engine [data-role="hook"][data-state="on"] { color: var(--memhooks-ok); border-color: currentColor; }
.memhooks-engine [data-role="errors"]:not([data-count="0"]) { color: var(--memhooks-high); border-color: currentColor; }
.memhooks-warning { color: var(--memhooks-warn); font-size: 11px; margin: 4px 0; }
.memhooks-block { margin-top: 10px; }
.memhooks-legend { display: flex; align-items: center; flex-wrap: wrap; gap: 4px 10px; font-size: 11px; color: var(--memhooks-muted); }
.memhooks-legend select { margin-left: auto; }
.memhooks-key::before { content: ""; display: inline-block; width: 12px; height: 3px; margin: 0 4px 2px 0; vertical-align: middle; background: var(--key, var(--memhooks-muted)); }
.memhooks-key-dashed::before { height: 0; border-top: 2px dashed var(--memhooks-muted); background: none; }
.memhooks-key-mark::before { width: 2px; height: 10px; background: var(--memhooks-ok); }
.memhooks-key-pressure::before { background: #ff5c5c; }
.memhooks-engine [data-role="watchdog"][data-state="pressure"] { color: #ff5c5c; border-color: currentColor; }
[data-role="history-row"][data-pressure="true"] td:nth-child(2) { color: #ff5c5c; }
.memhooks-chart { position: relative; height: 140px; margin-top: 4px; border: 1px solid var(--memhooks-border); border-radius: 6px; }
.memhooks-chart canvas { position: absolute; inset: 0; width: 100%; height: 100%; }
.memhooks-optimize { display: flex; gap: 6px; }
.memhooks-optimize select { flex: 1; min-width: 0; }
.memhooks-result { display: block; min-height: 1.45em; margin-top: 4px; color: var(--memhooks-muted); font-size: 11px; }
.memhooks-result[data-state="performed"], .memhooks-result[data-state="saved"] { color: var(--memhooks-ok); }
.memhooks-result[data-state="queued"], .memhooks-result[data-state="cooldown"] { color: var(--memhooks-warn); }
.memhooks-result[data-state="error"] { color: var(--memhooks-high); }
.memhooks-panel select, .memhooks-panel input[type="text"], .memhooks-panel input[type="number"] {
  padding: 3px 5px; border: 1px solid var(--memhooks-border); border-radius: 4px;
  background: var(--memhooks-input-bg); color: var(--memhooks-input-fg); font: inherit;
}
.memhooks-panel button { padding: 3px 10px; border: 1px solid var(--memhooks-border); border-radius: 4px; background: var(--memhooks-input-bg); color: var(--memhooks-fg); font: inherit; cursor: pointer; }
.memhooks-panel button:disabled { opacity: 0.6; cursor: progress; }
.memhooks-panel button.memhooks-primary { background: #2f6fdb; border-color: #2f6fdb; color: #fff; font-weight: 600; }
.memhooks-panel button.memhooks-link { padding: 0 4px; border: none; background: none; color: var(--memhooks-muted); }
.memhooks-panel button.memhooks-link:hover { color: var(--memhooks-fg); }
.memhooks-section { margin-top: 12px; border-top: 1px solid var(--memhooks-border); padding-top: 6px; }
.memhooks-section > summary { cursor: pointer; font-weight: 600; margin-bottom: 4px; }
.memhooks-table { width: 100%; border-collapse: collapse; font-size: 11px; }
.memhooks-table th { text-align: left; font-weight: 500; color: var(--memhooks-muted); border-bottom: 1px solid var(--memhooks-border); padding: 2px 3px; }
.memhooks-table td { padding: 3px; border-bottom: 1px solid var(--memhooks-grid); vertical-align: top; }
.memhooks-number { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
.memhooks-empty { color: var(--memhooks-muted); text-align: center; }
.memhooks-actions { margin: 2px 0 0; padding-left: 16px; }
.memhooks-failed { color: var(--memhooks-high); }
.memhooks-activity { list-style: none; margin: 0; padding: 0; font-size: 11px; }
.memhooks-right { text-align: right; }
.memhooks-settings { display: flex; flex-direction: column; gap: 5px; }
.memhooks-field label { display: flex; align-items: center; gap: 6px; }
.memhooks-field label span:first-child { flex: 1; }
.memhooks-field input { width: 80px; text-align: right; }
.memhooks-field label span:last-child { width: 12px; }
.memhooks-subtitle { margin-top: 6px; font-weight: 600; }
.memhooks-rule { padding: 5px; border: 1px solid var(--memhooks-border); border-radius: 5px; display: flex; flex-direction: column; gap: 3px; }
.memhooks-rule-head { display: flex; gap: 4px; }
.memhooks-rule-head input { flex: 1; min-width: 0; }
.memhooks-rule-line { display: grid; grid-template-columns: 42px 1fr 1fr; gap: 4px; align-items: center; }
.memhooks-rule-line select { min-width: 0; }
.memhooks-rules { display: flex; flex-direction: column; gap: 5px; }
.memhooks-error { color: var(--memhooks-high); font-size: 11px; }
.memhooks-panel [aria-invalid="true"] { border-color: var(--memhooks-high) !important; }
.memhooks-buttons { display: flex; align-items: center; gap: 6px; margin-top: 4px; }
.memhooks-buttons .memhooks-result { margin: 0; }
.memhooks-profile-bars { display: flex; flex-direction: column; gap: 3px; margin: 6px 0; }
.memhooks-profile-bar { display: grid; grid-template-columns: minmax(0, 2fr) 3fr auto; align-items: center; gap: 6px; font-size: 11px; }
.memhooks-profile-label { white-space: nowrap; overflow: hidden; text-overflow: ellipsis; }
.memhooks-profile-fill { height: 100%; border-radius: 4px; background: #2f6fdb; }
.memhooks-profile-bar[data-heaviest="true"] .memhooks-profile-fill { background: var(--memhooks-high); }
.memhooks-profile-bar[data-heaviest="true"] .memhooks-profile-label, .memhooks-heaviest td:first-child { color: var(--memhooks-high); font-weight: 600; }
[data-role="profile-row"] { cursor: pointer; }
[data-role="profile-row"]:hover td { background: var(--memhooks-grid); }
`;
