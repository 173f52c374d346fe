// Building the page from data: elements, attributes and text nodes only. Nothing here parses HTML, so a
// model name, a label or a failure reason (tenant text) is always shown as text.

const PROPERTIES = new Set(["value", "checked", "disabled", "hidden", "selected", "required", "multiple"]);

// h("td", {class: "num"}, "3.2 s") -> <td class="num">3.2 s</td>. Children: strings (as text), nodes,
// arrays of them, or null/undefined/false (skipped). Attributes: `on` maps event names to handlers;
// value/checked/... are set as properties; anything else with setAttribute (never an event attribute).
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (name === "on") {
      for (const [event, handler] of Object.entries(value)) el.addEventListener(event, handler);
    } else if (PROPERTIES.has(name)) {
      el[name] = value;
    } else if (name.toLowerCase().startsWith("on")) {
      throw new Error(`h(): use {on: {...}} for ${name}`);
    } else {
      el.setAttribute(name, value === true ? "" : String(value));
    }
  }
  append(el, children);
  return el;
}

export function append(parent, children) {
  for (const child of [children].flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    parent.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return parent;
}

export function clear(el) {
  el.replaceChildren();
  return el;
}

// A table: `columns` are header texts; `rows` are arrays of cells (text, nodes, or {cell, class}).
export function table(caption, columns, rows, { numeric = [] } = {}) {
  const head = h("tr", {}, columns.map((c, i) => h("th", { scope: "col", class: numeric.includes(i) ? "num" : null }, c)));
  const body = rows.map((row) =>
    h("tr", {}, row.map((cell, i) => {
      const cls = [numeric.includes(i) ? "num" : null, cell?.class].filter(Boolean).join(" ") || null;
      const content = cell && typeof cell === "object" && "cell" in cell ? cell.cell : cell;
      return i === 0 ? h("th", { scope: "row", class: cls }, content) : h("td", { class: cls }, content);
    })),
  );
  return h("div", { class: "scroll" }, h("table", {}, caption ? h("caption", {}, caption) : null, h("thead", {}, head), h("tbody", {}, body)));
}

export function badge(status) {
  const text = String(status ?? "—");
  return h("span", { class: `badge badge-${text.toLowerCase().replace(/[^a-z_]/g, "")}` }, text);
}

export function bytes(n) {
  if (typeof n !== "number" || !Number.isFinite(n)) return "—";
  const units = ["B", "KB", "MB", "GB", "TB"];
  let value = n;
  let unit = 0;
  while (value >= 1000 && unit < units.length - 1) {
    value /= 1000;
    unit += 1;
  }
  return `${value.toFixed(unit === 0 ? 0 : value < 10 ? 2 : value < 100 ? 1 : 0)} ${units[unit]}`;
}

export function duration(ms) {
  if (typeof ms !== "number" || !Number.isFinite(ms)) return "—";
  if (ms < 1) return `${ms.toFixed(2)} ms`;
  if (ms < 1000) return `${ms.toFixed(ms < 10 ? 1 : 0)} ms`;
  if (ms < 60_000) return `${(ms / 1000).toFixed(ms < 10_000 ? 2 : 1)} s`;
  return `${Math.floor(ms / 60_000)} min ${Math.round((ms % 60_000) / 1000)} s`;
}

export function when(iso) {
  if (!iso) return "—";
  const date = new Date(iso);
  if (Number.isNaN(date.getTime())) return String(iso);
  return h("time", { datetime: date.toISOString(), title: date.toISOString() }, date.toLocaleString());
}

// The hash is the console's address bar: `#view=jobs`, `#model=iris-onnx` (URLSearchParams syntax).
export function link(text, params, attrs = {}) {
  return h("a", { href: `#${new URLSearchParams(params)}`, ...attrs }, text);
}

// An error from the API (or the network) as the page shows it: its message, its hint, its JSON pointers.
export function errorBox(error, title = "The API answered an error") {
  const items = Array.isArray(error?.errors) ? error.errors.slice(0, 20) : [];
  return h("div", { class: "error", role: "alert" },
    h("p", { class: "error-title" }, title, error?.status ? ` (${error.status}${error.code ? ` ${error.code}` : ""})` : ""),
    h("p", { class: "error-message" }, error?.message || String(error)),
    error?.hint ? h("p", { class: "error-hint" }, "Hint: ", error.hint) : null,
    items.length
      ? h("ul", { class: "error-list" }, items.map((e) => h("li", {}, h("code", {}, e.pointer || "/"), " ", e.message || "")))
      : null,
  );
}

export function say(text) {
  const status = document.getElementById("status");
  if (status) status.textContent = text;
}
