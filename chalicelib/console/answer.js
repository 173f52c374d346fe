// An invocation's answer: labels and scores as a table, the picture inline (PNG), the Server-Timing
// stages as a small bar, and the raw answer for everything else.

import { append, duration, h } from "./dom.js";

export async function renderAnswer(container, response, elapsedMs) {
  if (response.type === "opaqueredirect") {
    container.append(h("p", { class: "ok" }, "The answer is larger than a synchronous call carries back: it was stored. Fetch it with ", h("code", {}, "modelport invoke … --out FILE"), "."));
    return;
  }
  const type = (response.headers.get("content-type") || "").split(";")[0].trim();
  container.append(h("p", { class: "answer-status" }, h("span", { class: "badge badge-ready" }, String(response.status)), ` ${type} · ${duration(elapsedMs)} round trip`));
  const timing = response.headers.get("server-timing");
  if (timing) container.append(timingBar(parseServerTiming(timing)));
  if (type.startsWith("image/")) {
    container.append(picture(await response.blob(), "the model's picture"));
    return;
  }
  const text = await response.text();
  let doc;
  try {
    doc = JSON.parse(text);
  } catch {
    container.append(h("pre", { class: "code" }, text.slice(0, 100_000)));
    return;
  }
  renderDoc(container, doc);
}

export function renderDoc(container, doc) {
  if (doc && typeof doc === "object" && !Array.isArray(doc)) {
    if (Array.isArray(doc.predictions)) doc.predictions.forEach((row, i) => append(container, rowTable(row, i, doc.predictions.length)));
    if (doc.output && typeof doc.output === "object" && "label" in doc.output) {
      append(container, [rowTable([doc.output], 0, 1), otherFields(doc.output)]);
    }
    const fig = doc.figure;
    if (fig && typeof fig.data === "string" && String(fig.media_type).startsWith("image/")) {
      container.append(picture(base64Blob(fig.data, fig.media_type), "the model's chart"));
    }
  }
  container.append(h("details", { class: "raw" }, h("summary", {}, "Raw answer"), h("pre", { class: "code" }, JSON.stringify(shortened(doc), null, 2))));
}

// One row's results: [{label, score}], [{prediction, unit}] or [{box, label, score}] (a single result
// object is a row of one).
function rowTable(row, index, rows) {
  const items = (Array.isArray(row) ? row : [row]).filter((r) => r && typeof r === "object");
  const caption = rows > 1 ? `Row ${index + 1}` : "Result";
  if (items.some((r) => "label" in r)) {
    const boxes = items.some((r) => Array.isArray(r.box));
    const head = ["Label", "Score", ...(boxes ? ["Box"] : [])];
    return h("div", { class: "scroll" }, h("table", { class: "labels" },
      h("caption", {}, caption),
      h("thead", {}, h("tr", {}, head.map((c, i) => h("th", { scope: "col", class: i === 1 ? "num" : null }, c)))),
      h("tbody", {}, items.map((r) => h("tr", {},
        h("th", { scope: "row" }, String(r.label)),
        h("td", { class: "num score" }, scoreCell(r.score)),
        boxes ? h("td", {}, Array.isArray(r.box) ? r.box.map((v) => Number(v).toFixed(1)).join(", ") : "") : null,
      ))),
    ));
  }
  if (items.some((r) => "prediction" in r)) {
    return h("div", { class: "scroll" }, h("table", {},
      h("caption", {}, caption),
      h("thead", {}, h("tr", {}, h("th", { scope: "col", class: "num" }, "Prediction"), h("th", { scope: "col" }, "Unit"))),
      h("tbody", {}, items.map((r) => h("tr", {}, h("td", { class: "num" }, String(r.prediction)), h("td", {}, r.unit ? String(r.unit) : "")))),
    ));
  }
  return null;
}

// A score, with a small bar when it is a probability (0 to 1).
function scoreCell(score) {
  if (typeof score !== "number") return String(score ?? "");
  const text = h("span", {}, score.toFixed(4));
  if (score < 0 || score > 1) return h("span", { class: "score-cell" }, text);
  const meter = h("span", { class: "meter", "aria-hidden": "true" }, h("span", {}));
  meter.firstChild.style.width = `${score * 100}%`;
  return h("span", { class: "score-cell" }, meter, text);
}

// The rest of a predictor's result object (beside its label and score).
function otherFields(output) {
  const rest = Object.entries(output).filter(([k]) => k !== "label" && k !== "score");
  if (!rest.length) return null;
  const show = (v) => (typeof v === "number" ? String(Number(v.toFixed(6))) : Array.isArray(v) ? v.map(String).join(", ") : typeof v === "object" ? JSON.stringify(v) : String(v));
  return h("dl", { class: "facts" }, rest.map(([k, v]) => h("div", {}, h("dt", {}, k), h("dd", {}, show(v)))));
}

function base64Blob(data, type) {
  const raw = atob(data);
  const bytes = new Uint8Array(raw.length);
  for (let i = 0; i < raw.length; i += 1) bytes[i] = raw.charCodeAt(i);
  return new Blob([bytes], { type });
}

function picture(blob, alt) {
  const img = h("img", { class: "figure", alt });
  img.src = URL.createObjectURL(blob);
  return h("figure", {}, img);
}

// The answer without its pictures' base64 (shown above), so the raw view stays readable.
function shortened(doc) {
  if (!doc || typeof doc !== "object") return doc;
  if (Array.isArray(doc)) return doc.map(shortened);
  return Object.fromEntries(Object.entries(doc).map(([k, v]) => [k, k === "data" && typeof v === "string" && v.length > 200 ? `<${v.length} characters of base64>` : shortened(v)]));
}

// --------------------------------------------------------------------------- Server-Timing

export function parseServerTiming(header) {
  return header.split(",").map((s) => s.trim()).filter(Boolean).map((entry) => {
    const [name, ...params] = entry.split(";").map((p) => p.trim());
    let dur = null;
    let desc = null;
    for (const p of params) {
      const [k, v = ""] = p.split("=");
      if (k.toLowerCase() === "dur") dur = Number(v);
      if (k.toLowerCase() === "desc") desc = v.replace(/^"|"$/g, "");
    }
    return { name, dur: Number.isFinite(dur) ? dur : null, desc };
  });
}

// The stages (decode, pre, model, post, encode, init) as one bar; each stage's steps listed under it;
// what the call was billed (Lambda ms, and its price) beside them, not as a stage.
const BILLING = new Set(["billed", "cost"]);

function timingBar(metrics) {
  const stages = metrics.filter((m) => !m.name.includes(".") && m.dur !== null && !BILLING.has(m.name));
  const billed = metrics.find((m) => m.name === "billed" && m.dur !== null);
  const cost = metrics.find((m) => m.name === "cost" && m.desc);
  const total = stages.reduce((a, m) => a + m.dur, 0);
  const init = stages.find((m) => m.name === "init");
  const serving = total - (init?.dur ?? 0);
  const bar = h("div", { class: "timing-bar", "aria-hidden": "true" },
    stages.map((m, i) => {
      const seg = h("span", { class: `seg seg-${i % 6}`, title: `${m.name}: ${duration(m.dur)}` });
      seg.style.width = `${total > 0 ? Math.max(1, (100 * m.dur) / total) : 100 / stages.length}%`;
      return seg;
    }));
  const legend = h("ul", { class: "timing-legend" }, stages.map((m, i) => h("li", {},
    h("span", { class: `swatch seg-${i % 6}`, "aria-hidden": "true" }), `${m.name} ${duration(m.dur)}`,
    ...metrics.filter((s) => s.name.startsWith(`${m.name}.`) && s.dur !== null).map((s) => h("span", { class: "muted" }, ` · ${s.name.slice(m.name.length + 1)} ${duration(s.dur)}`)),
  )));
  return h("figure", { class: "timing", "aria-label": "Server-Timing of the model service" },
    h("figcaption", {}, `Server-Timing: ${duration(serving)} in the model service`,
      init ? `, after a cold start (init ${duration(init.dur)})` : "",
      billed ? `; billed ${duration(billed.dur)}` : "", cost ? `, $${cost.desc}` : ""),
    bar, legend);
}
