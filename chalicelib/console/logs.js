// A model's log lines as its owner may read them (GET /v1/models/NAME/logs; the API decides which): one
// request's, by the trace id its answer came with, or the newest. Lines reach CloudWatch Logs a moment
// after the answer, so a request's are asked for again, a few times, until the functions' lines are there.

import { json } from "./api.js";
import { clear, errorBox, h, say, table } from "./dom.js";

const enc = encodeURIComponent;
const ATTEMPTS = 8;
const SOURCES = { api: "API", fused: "function", pre: "pre", model: "model", post: "post" };

// The trace id of an answer (`X-Amzn-Trace-Id: Root=1-...`), or null.
export function traceIdOf(response) {
  const found = /Root=(1-[0-9a-f]{8}-[0-9a-f]{24})/.exec(response.headers.get("x-amzn-trace-id") || "");
  return found ? found[1] : null;
}

// One request's lines, behind a button under its answer.
export function requestLogs(name, trace) {
  const holder = h("div", { class: "log-lines", "aria-live": "polite" });
  const button = h("button", { type: "button", on: { click: () => load(name, `?trace=${enc(trace)}`, holder, button, true) } }, "Show its log lines");
  return h("div", { class: "request-logs" },
    h("p", { class: "trace" }, "Trace ", h("code", { class: "trace-id" }, trace), " ", button),
    holder);
}

// The model's newest lines (the owner's model page).
export function logsCard(name) {
  const holder = h("div", { class: "log-lines", "aria-live": "polite" });
  const button = h("button", { type: "button", on: { click: () => load(name, "?since=15", holder, button, false) } }, "Show the last 15 minutes");
  return h("section", { class: "card logs", "aria-labelledby": "logs-title" },
    h("h2", { id: "logs-title" }, "Log lines"),
    h("p", { class: "muted" }, "What the model's functions and the API wrote about it (CloudWatch Logs, ", h("code", {}, `modelport logs ${name}`), "). A shared pre/post function shows only this model's lines."),
    h("div", { class: "actions" }, button),
    holder);
}

async function load(name, query, holder, button, waitForFunctions) {
  button.disabled = true;
  say("reading log lines");
  clear(holder).append(h("p", { class: "muted" }, "Reading CloudWatch Logs…"));
  let doc;
  try {
    for (let attempt = 1; ; attempt += 1) {
      doc = await json(`/v1/models/${enc(name)}/logs${query}`);
      if (!waitForFunctions || doc.lines.some((l) => l.source !== "api") || attempt >= ATTEMPTS) break;
      await new Promise((resolve) => setTimeout(resolve, 1000));
    }
  } catch (error) {
    clear(holder).append(errorBox(error, "Could not read the log lines"));
    return;
  } finally {
    button.disabled = false;
  }
  clear(holder);
  if (!doc.lines.length) {
    holder.append(h("p", { class: "empty" }, "No log lines yet: they reach CloudWatch Logs within seconds of the call. Try again."));
    say("no log lines");
    return;
  }
  holder.append(table(`${doc.lines.length} log lines, oldest first`, ["Time (UTC)", "From", "Line"],
    doc.lines.map((l) => [
      h("time", { datetime: l.at }, l.at.slice(11, 23)),
      h("span", { title: l.function || "the API" }, SOURCES[l.source] || l.source),
      { cell: lineCell(l), class: l.level === "ERROR" ? "reason" : null },
    ])));
  say(`${doc.lines.length} log lines`);
}

// A structured line reads as its message and a few telling fields, the whole JSON one click away; any
// other line (Lambda's START/REPORT, a model's print) as it was written.
const TELLING = ["status", "duration_ms", "cold_start", "init_ms", "method", "route", "error_class", "deployment_id", "state", "reason"];

function lineCell(l) {
  let fields = null;
  try {
    fields = l.message.startsWith("{") ? JSON.parse(l.message) : null;
  } catch {
    fields = null;
  }
  if (!fields || typeof fields !== "object" || Array.isArray(fields)) {
    return h("code", { class: "log-line" }, l.message, l.truncated ? " …" : "");
  }
  const facts = TELLING.filter((k) => k in fields).map((k) => h("span", { class: "log-fact" }, `${k.replace(/_/g, " ")} `, h("strong", {}, String(fields[k]))));
  return h("div", {},
    h("span", { class: "log-message" }, String(fields.message ?? "")), " ", facts,
    h("details", { class: "log-json" }, h("summary", {}, "JSON"), h("code", { class: "log-line" }, l.message)));
}
