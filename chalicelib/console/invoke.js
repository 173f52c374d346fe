// The invoke form, generated from the version's protocol (its config file's `protocol`): one field per
// tabular feature (name, type and bounds from the JSON Schema, the generated example prefilled), a file
// drop for an image, a text area for text, a raw JSON editor for anything else (and on request).

import { ApiError, call } from "./api.js";
import { clear, errorBox, h, link, say } from "./dom.js";
import { renderAnswer } from "./answer.js";
import { requestLogs, traceIdOf } from "./logs.js";

const enc = encodeURIComponent;
const IMAGE_TYPES = { png: "image/png", jpg: "image/jpeg", jpeg: "image/jpeg", webp: "image/webp" };
let ids = 0;
const nextId = (stem) => `${stem}-${++ids}`;

export function invokePanel(model, versions, configs) {
  const card = h("section", { class: "card invoke", id: "invoke", "aria-labelledby": "invoke-title" }, h("h2", { id: "invoke-title" }, "Invoke"));
  const ready = versions.filter((v) => v.status === "READY" && configs.get(v.version)?.protocol);
  if (!ready.length) {
    card.append(h("p", { class: "empty" }, "No READY version to invoke."));
    return card;
  }
  const chosen = ready.find((v) => v.version === model.default_version) ?? ready[0];
  const formHolder = h("div", { class: "invoke-form" });
  const answer = h("div", { class: "answer", "aria-live": "polite" });
  const show = (version) => {
    clear(answer);
    clear(formHolder).append(invokeForm(model.name, version, configs.get(version), answer, Boolean(model.owner)));
  };
  if (ready.length > 1) {
    const id = nextId("version");
    const select = h("select", { id, on: { change: () => show(Number(select.value)) } },
      ready.map((v) => h("option", { value: String(v.version), selected: v === chosen }, `v${v.version}${v.version === model.default_version ? " (default)" : ""}`)));
    card.append(h("div", { class: "field inline" }, h("label", { for: id }, "Version"), select));
  }
  card.append(h("div", { class: "invoke-grid" }, formHolder, answer));
  show(chosen.version);
  return card;
}

// What kind of form the protocol gets: "records", "image", "fields" (an object of scalars; strings as
// text areas) or "raw" (a JSON editor).
export function formKind(protocol) {
  const value = protocol?.request_value ?? {};
  const schema = protocol?.request?.json_schema ?? {};
  if (value.kind === "records" && recordSchema(schema) && !(value.rows > 1)) return "records";
  if (value.kind === "image" && (protocol.request.content_types || []).some((t) => t.startsWith("image/"))) return "image";
  if (scalarObject(schema)) return "fields";
  return "raw";
}

function recordSchema(schema) {
  const options = Array.isArray(schema.oneOf) ? schema.oneOf : [schema];
  const records = options.find((s) => s?.properties?.records)?.properties.records;
  return records?.items?.properties ? records.items : null;
}

function scalarObject(schema) {
  const props = schema?.type === "object" ? schema.properties : null;
  if (!props || !Object.keys(props).length) return false;
  return Object.values(props).every((p) => ["string", "number", "integer", "boolean"].includes(p?.type) && !p.contentEncoding);
}

// `owner`: the account may read the model's log lines (the API says so: owners see `owner`).
function invokeForm(name, version, cfg, answer, owner) {
  const protocol = cfg.protocol;
  const kind = formKind(protocol);
  const example = protocol.request?.example;
  const body = h("div", { class: "fields" });
  const asJob = h("input", { type: "checkbox", id: nextId("as-job") });
  const submit = h("button", { type: "submit", class: "primary" }, "Invoke");
  let editor = null; // the generated form's reader, or null while the raw JSON editor is shown
  let reader = null;
  const toggle = h("button", { type: "button", class: "link-button" });
  const showForm = () => {
    reader = kind === "records" ? recordsFields(body, protocol, example)
      : kind === "image" ? imageDrop(body, protocol.request_value)
        : kind === "fields" ? objectFields(body, protocol.request.json_schema, example)
          : rawEditor(body, example);
    editor = kind === "raw" ? null : reader;
    toggle.textContent = "Edit as JSON";
    toggle.hidden = kind === "raw";
  };
  toggle.addEventListener("click", async () => {
    if (editor) {
      let seed = example;
      if (kind !== "image") {
        try {
          seed = JSON.parse(await (await editor()).body);
        } catch {
          seed = example;
        }
      }
      reader = rawEditor(body, seed);
      editor = null;
      toggle.textContent = "Back to the form";
    } else {
      showForm();
    }
  });
  showForm();
  const form = h("form", { "aria-label": `invoke ${name} v${version}`, novalidate: true },
    h("p", { class: "muted" }, `v${version} takes `, (protocol.request.content_types || []).join(", ") || "JSON", ". ", toggle),
    body,
    h("div", { class: "actions" }, submit, h("label", { class: "check" }, asJob, " Run as a job")),
  );
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    if (!form.reportValidity()) return;
    let request;
    try {
      request = await reader();
    } catch (problem) {
      clear(answer).append(errorBox({ message: problem.message }, "The form is not complete"));
      return;
    }
    submit.disabled = true;
    say(`invoking ${name}`);
    clear(answer).append(h("p", { class: "muted" }, "Invoking…"));
    const began = performance.now();
    try {
      const response = await call(`/v1/models/${enc(name)}/versions/${version}/invoke`, {
        method: "POST", body: request.body, contentType: request.contentType, redirect: "manual",
        headers: asJob.checked ? { Prefer: "respond-async" } : {},
      });
      const elapsed = performance.now() - began;
      if (response.status === 202) {
        const job = await response.json();
        clear(answer).append(h("p", { class: "ok" }, `Job ${job.job_id} is ${job.status}. `, link("See the jobs", { view: "jobs" })));
      } else {
        await renderAnswer(clear(answer), response, elapsed);
        const trace = traceIdOf(response);
        if (owner && trace) answer.append(requestLogs(name, trace));
      }
      say(`${name} answered ${response.status}`);
    } catch (error) {
      clear(answer).append(errorBox(error instanceof ApiError ? error : { message: String(error) }, "The invocation failed"));
      say(`${name}: ${error.message}`);
    } finally {
      submit.disabled = false;
    }
  });
  return form;
}

// --------------------------------------------------------------------------- fields from a JSON Schema

const compact = (n) => (Math.abs(n) >= 1e6 ? n.toExponential(1) : String(n));

function describe(schema) {
  const parts = [];
  if (Array.isArray(schema.enum)) parts.push(`one of ${schema.enum.length}`);
  else parts.push(schema.format || schema.type || "value");
  const low = schema.minimum ?? schema.exclusiveMinimum;
  const high = schema.maximum ?? schema.exclusiveMaximum;
  if (typeof low === "number" && low === -high) parts.push(`±${compact(high)}`);
  else if (typeof low === "number" || typeof high === "number") parts.push(`${typeof low === "number" ? compact(low) : "…"} to ${typeof high === "number" ? compact(high) : "…"}`);
  if (typeof schema.minLength === "number" || typeof schema.maxLength === "number") parts.push(`${schema.minLength ?? 0}–${schema.maxLength ?? "∞"} characters`);
  if (schema.description) parts.push(schema.description);
  return parts.join(" · ");
}

// One input for one property; `read()` gives its JSON value (undefined: left out).
function field(name, schema, { required, value, long }) {
  const id = nextId(`f-${name.replace(/[^A-Za-z0-9_-]/g, "_")}`);
  const help = nextId("help");
  const common = { id, name, required, "aria-describedby": help };
  const initial = value ?? schema.default;
  let input;
  let read;
  if (Array.isArray(schema.enum)) {
    input = h("select", common, schema.enum.map((v, i) => h("option", { value: String(i), selected: v === initial }, String(v))));
    read = () => schema.enum[Number(input.value)];
  } else if (schema.type === "boolean") {
    input = h("input", { ...common, type: "checkbox", checked: Boolean(initial), required: false });
    read = () => input.checked;
  } else if (schema.type === "number" || schema.type === "integer") {
    const integer = schema.type === "integer";
    input = h("input", {
      ...common, type: "number", inputmode: integer ? "numeric" : "decimal", step: integer ? "1" : "any",
      min: schema.minimum ?? null, max: schema.maximum ?? null, value: initial === undefined ? "" : String(initial),
    });
    read = () => (input.value === "" ? undefined : integer ? Number.parseInt(input.value, 10) : Number(input.value));
  } else {
    const attrs = { ...common, minlength: schema.minLength ?? null, maxlength: schema.maxLength ?? null, value: initial === undefined ? "" : String(initial), spellcheck: long ? "true" : "false" };
    input = long ? h("textarea", { ...attrs, rows: 5 }) : h("input", { ...attrs, type: "text" });
    read = () => (input.value === "" && !required ? undefined : input.value);
  }
  const el = h("div", { class: `field${long ? " wide" : ""}` },
    h("label", { for: id }, name, required ? null : h("span", { class: "muted" }, " (optional)")),
    input,
    h("small", { id: help, class: "help" }, describe(schema)),
  );
  return { el, read, input };
}

function recordsFields(body, protocol, example) {
  const record = recordSchema(protocol.request.json_schema);
  const order = (protocol.request_value.features || []).map((f) => f.name).filter((n) => n in record.properties);
  const names = order.length ? order : Object.keys(record.properties);
  const required = new Set(record.required || []);
  const first = Array.isArray(example?.records) ? example.records[0] ?? {} : {};
  const fields = names.map((n) => [n, field(n, record.properties[n], { required: required.has(n), value: first[n] })]);
  clear(body).append(h("div", { class: "grid" }, fields.map(([, f]) => f.el)));
  return async () => {
    const row = {};
    for (const [n, f] of fields) {
      const v = f.read();
      if (v !== undefined) row[n] = v;
    }
    return { body: JSON.stringify({ records: [row] }), contentType: "application/json" };
  };
}

function objectFields(body, schema, example) {
  const required = new Set(schema.required || []);
  const fields = Object.entries(schema.properties).map(([n, s]) => {
    const long = s.type === "string" && !s.enum && !(s.maxLength <= 120);
    return [n, field(n, s, { required: required.has(n), value: example?.[n], long })];
  });
  clear(body).append(h("div", { class: "grid" }, fields.map(([, f]) => f.el)));
  return async () => {
    const doc = {};
    for (const [n, f] of fields) {
      const v = f.read();
      if (v !== undefined) doc[n] = v;
    }
    return { body: JSON.stringify(doc), contentType: "application/json" };
  };
}

function rawEditor(body, seed) {
  const id = nextId("raw");
  const area = h("textarea", { id, class: "code", rows: 12, spellcheck: "false", required: true, value: JSON.stringify(seed ?? {}, null, 2) });
  clear(body).append(h("div", { class: "field wide" }, h("label", { for: id }, "Request body (JSON)"), area));
  return async () => {
    try {
      JSON.parse(area.value);
    } catch (error) {
      throw new Error(`the request body is not JSON: ${error.message}`);
    }
    return { body: area.value, contentType: "application/json" };
  };
}

// A drop zone that is also a file input (keyboard: Tab to it, Enter or Space opens the chooser).
function imageDrop(body, value) {
  const formats = value.formats || ["png", "jpeg", "webp"];
  const accept = formats.map((f) => IMAGE_TYPES[f] || `image/${f}`).join(",");
  const id = nextId("image");
  const input = h("input", { id, type: "file", accept, class: "visually-hidden", "aria-describedby": `${id}-help` });
  const preview = h("img", { class: "preview", alt: "", hidden: true });
  const chosenText = h("span", { class: "chosen" }, "No image chosen");
  let chosen = null;
  let objectUrl = null;
  const choose = (file) => {
    if (!file) return;
    chosen = file;
    if (objectUrl) URL.revokeObjectURL(objectUrl);
    objectUrl = URL.createObjectURL(file);
    preview.src = objectUrl;
    preview.alt = `the chosen image, ${file.name}`;
    preview.hidden = false;
    chosenText.textContent = `${file.name} (${file.size.toLocaleString()} bytes)`;
  };
  const zone = h("label", {
    for: id, class: "drop",
    on: {
      dragover: (e) => { e.preventDefault(); zone.classList.add("over"); },
      dragleave: () => zone.classList.remove("over"),
      drop: (e) => { e.preventDefault(); zone.classList.remove("over"); choose(e.dataTransfer?.files?.[0]); },
    },
  },
  h("strong", {}, "Drop an image here, or choose a file"),
  h("span", { id: `${id}-help`, class: "help" }, `${formats.join(", ").toUpperCase()}${value.width ? ` · resized to ${value.width}×${value.height}` : ""}`),
  chosenText, preview);
  input.addEventListener("change", () => choose(input.files?.[0]));
  clear(body).append(input, zone);
  return async () => {
    if (!chosen) throw new Error("choose or drop an image first");
    const ext = chosen.name.split(".").pop().toLowerCase();
    return { body: chosen, contentType: chosen.type || IMAGE_TYPES[ext] || "application/octet-stream" };
  };
}
