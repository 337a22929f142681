// DOM helpers shared by the Memory panel's view and its sections: build an element in one call, and change text,
// data attributes and select options only when they differ (the panel redraws only what changed).
// A library module: importing it does nothing (ComfyUI imports every .js under web/ as an extension).

/**
 * A new element: `props` sets the class ("class"), text ("text"), data-role ("role"), data-field ("field"),
 * event listeners ("onclick", "oninput", ...) and any other attribute; null and undefined are skipped, as are
 * null and undefined children.
 */
export function element(doc, tag, props = {}, ...children) {
  const node = doc.createElement(tag);
  for (const [key, value] of Object.entries(props)) {
    if (value === undefined || value === null) continue;
    if (key === "class") node.className = value;
    else if (key === "text") node.textContent = value;
    else if (key === "role") node.dataset.role = value;
    else if (key === "field") node.dataset.field = value;
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value);
  }
  for (const child of children) if (child !== null && child !== undefined) node.append(child);
  return node;
}

export function setText(node, text) {
  if (node.textContent !== text) node.textContent = text;
}

/** Sets `data-<key>`; null and undefined become "" so that a selector such as `[data-percent=""]` sees them. */
export function setData(node, key, value) {
  const text = value === null || value === undefined ? "" : String(value);
  if (node.dataset[key] !== text) node.dataset[key] = text;
}

/** Replaces a select's options by `values` (each its own label) and selects `selected`. */
export function options(doc, select, values, selected) {
  select.replaceChildren(...values.map((value) => element(doc, "option", { value, text: value })));
  select.value = selected;
}

/** A collapsible section of the panel: a `<details>` with its title as the summary. */
export function section(doc, title, role, open, ...children) {
  const details = element(
    doc,
    "details",
    { class: "memhooks-section", role },
    element(doc, "summary", { text: title }),
    ...children,
  );
  details.open = open;
  return details;
}
