// Models and versions the account can see: status, default version, mode, image size, and each version's
// deployment timeline (stage by stage, with durations and the failure reason); for its owner, its batch runs.
// What a grantee may not see (deployments, image, functions) the API leaves out, and the page shows a dash.

import { ApiError, json } from "./api.js";
import { append, badge, bytes, duration, errorBox, h, link, say, table, when } from "./dom.js";
import { invokePanel } from "./invoke.js";
import { batchesCard } from "./jobs.js";
import { logsCard } from "./logs.js";

const STAGES = ["RECEIVED", "INSPECTED", "CONFIG_GENERATED", "IMAGE_BUILT", "FUNCTIONS_READY", "READY"];
const CONFIGS_PER_MODEL = 10;
const DEPLOYMENTS_SHOWN = 5;

const enc = encodeURIComponent;

// A version's config file, or null when it has none yet (not READY) or the API refuses it.
async function config(name, version) {
  try {
    return await json(`/v1/models/${enc(name)}/versions/${version}/config`);
  } catch (error) {
    if (error instanceof ApiError && error.status !== 401) return null;
    throw error;
  }
}

function mode(cfg) {
  return cfg?.deployment?.mode ?? cfg?.pipeline_plan?.mode ?? "—";
}

function imageSize(cfg) {
  return bytes(cfg?.container?.size_bytes);
}

function newest(versions) {
  return versions.reduce((a, b) => (b.version > (a?.version ?? 0) ? b : a), null);
}

async function summary(model) {
  const versions = await json(`/v1/models/${enc(model.name)}/versions`);
  const shown = versions.find((v) => v.version === model.default_version) ?? newest(versions);
  const cfg = shown && shown.status === "READY" ? await config(model.name, shown.version) : null;
  return { model, versions, shown, cfg, latest: newest(versions) };
}

function statusCell({ shown, latest }) {
  if (!shown) return "no versions";
  const parts = [badge(shown.status)];
  if (latest && latest.version !== shown.version) parts.push(" ", h("span", { class: "muted" }, `v${latest.version} `), badge(latest.status));
  const failed = [shown, latest].find((v) => v && v.status === "FAILED" && v.reason);
  if (failed) parts.push(h("div", { class: "reason" }, failed.reason));
  return h("div", {}, parts);
}

export async function showModels(main) {
  main.append(
    h("h1", { tabindex: "-1" }, "Models"),
    h("p", { class: "muted" }, "The models this account owns or was granted. Choose one for its versions, deployments and invoke form."),
  );
  say("loading models");
  const models = await json("/v1/models");
  const summaries = await Promise.all(models.map(summary));
  if (!summaries.length) {
    main.append(h("p", { class: "empty card" }, "No models yet: deploy one with ", h("code", {}, "modelport deploy DIR"), "."));
  } else {
    const ready = summaries.filter((s) => s.shown?.status === "READY").length;
    main.append(
      h("p", { class: "counts" }, `${summaries.length} models · ${ready} ready`),
      table("Models, their default version and how it runs", ["Model", "Description", "Default", "Status", "Mode", "Image size", "Versions"],
        summaries.map((s) => [
          link(s.model.name, { model: s.model.name }),
          s.model.description || s.cfg?.description || "",
          s.model.default_version ? `v${s.model.default_version}` : "—",
          statusCell(s),
          mode(s.cfg),
          imageSize(s.cfg),
          String(s.versions.length),
        ]),
        { numeric: [5, 6] },
      ),
    );
  }
  main.append(await usagePanel());
  say(`${summaries.length} models`);
}

// Per-model usage over the last 30 days (GET /v1/usage): invocations, errors, p50/p99, cost.
async function usagePanel() {
  const panel = h("section", { class: "card usage", "aria-labelledby": "usage-title" });
  panel.append(h("h2", { id: "usage-title" }, "Usage, last 30 days"));
  let doc;
  try {
    doc = await json("/v1/usage");
  } catch (error) {
    panel.append(errorBox(error, "Usage is not available"));
    return panel;
  }
  const rows = usageRows(doc);
  const num = (v) => (typeof v === "number" && Number.isFinite(v) ? v.toLocaleString() : "—");
  const ms = (v) => (typeof v === "number" && Number.isFinite(v) ? duration(v) : "—");
  panel.append(
    rows.length
      ? table(null, ["Model", "Invocations", "Errors", "p50", "p99", "Cost (USD)"],
        rows.map((r) => [r.model, num(r.invocations), num(r.errors), ms(r.p50), ms(r.p99), r.usd]),
        { numeric: [1, 2, 3, 4, 5] })
      : h("p", { class: "empty" }, "No usage recorded yet."),
  );
  return panel;
}

/** The rows of GET /v1/usage's per-model summaries, as the table shows them. */
export function usageRows(doc) {
  const models = Array.isArray(doc?.models) ? doc.models : [];
  return models
    .filter((r) => r && typeof r === "object")
    .map((r) => ({
      model: String(r.model ?? "?"),
      invocations: r.invocations,
      errors: r.errors,
      p50: r.latency_ms?.p50,
      p99: r.latency_ms?.p99,
      usd: typeof r.cost?.usd === "string" ? r.cost.usd : "—",
    }));
}

export async function showModel(main, name) {
  say(`loading ${name}`);
  const model = await json(`/v1/models/${enc(name)}`);
  const versions = (await json(`/v1/models/${enc(name)}/versions`)).sort((a, b) => b.version - a.version);
  const configs = new Map();
  await Promise.all(
    versions.filter((v) => v.status === "READY").slice(0, CONFIGS_PER_MODEL)
      .map(async (v) => configs.set(v.version, await config(name, v.version))),
  );
  document.title = `${model.name} · Modelport console`;
  const description = model.description || [...configs.values()].find((c) => c?.description)?.description;
  const fact = (term, value) => h("div", {}, h("dt", {}, term), h("dd", {}, value));
  append(main, [
    h("p", { class: "crumbs" }, link("Models", { view: "models" }), " / "),
    h("h1", { tabindex: "-1" }, model.name),
    description ? h("p", { class: "lead" }, description) : null,
    h("dl", { class: "facts" },
      fact("Default version", model.default_version ? `v${model.default_version}` : "none yet"),
      model.latest_version ? fact("Latest version", `v${model.latest_version}`) : null,
      model.created_at ? fact("Created", when(model.created_at)) : null,
    ),
    invokePanel(model, versions, configs),
    versionsCard(versions, configs),
    await deploymentsCard(name),
    model.owner ? await batchesCard(name) : null,  // `owner` is only given to the owner and admins
    model.owner ? logsCard(name) : null,
  ]);
  say(`${model.name}: ${versions.length} versions`);
}

function versionsCard(versions, configs) {
  return h("section", { class: "card", "aria-labelledby": "versions-title" },
    h("h2", { id: "versions-title" }, "Versions"),
    versions.length
      ? table(null, ["Version", "Status", "Created", "Mode", "Image size", "Reason"],
        versions.map((v) => [
          `v${v.version}`, badge(v.status), when(v.created_at), mode(configs.get(v.version)),
          imageSize(configs.get(v.version)), v.reason ? { cell: v.reason, class: "reason" } : "",
        ]),
        { numeric: [4] })
      : h("p", { class: "empty" }, "No versions yet."),
  );
}

async function deploymentsCard(name) {
  const card = h("section", { class: "card", "aria-labelledby": "deployments-title" }, h("h2", { id: "deployments-title" }, "Deployments"));
  let deployments;
  try {
    deployments = await json(`/v1/models/${enc(name)}/deployments`);
  } catch (error) {
    if (error instanceof ApiError && error.status === 404) {
      card.append(h("p", { class: "muted" }, "Deployment records are shown to the model's owner."));
      return card;
    }
    throw error;
  }
  if (!deployments.length) card.append(h("p", { class: "empty" }, "No deployments."));
  for (const d of deployments.slice(0, DEPLOYMENTS_SHOWN)) card.append(timeline(d));
  if (deployments.length > DEPLOYMENTS_SHOWN) card.append(h("p", { class: "muted" }, `and ${deployments.length - DEPLOYMENTS_SHOWN} older deployments`));
  return card;
}

const ms = (a, b) => Math.max(0, new Date(b).getTime() - new Date(a).getTime());

// One deployment: a bar of its stages (widths by duration) and the same as a list, for every reader.
export function timeline(d) {
  const stages = (d.stages || []).map((s) => ({ name: s.stage, ms: ms(s.started_at, s.finished_at) }));
  const failed = d.state === "FAILED";
  if (failed) {
    const done = new Set(stages.map((s) => s.name));
    const at = STAGES.find((s) => !done.has(s)) ?? "?";
    const last = d.stages?.length ? d.stages[d.stages.length - 1].finished_at : d.created_at;
    stages.push({ name: at, ms: ms(last, d.updated_at), failed: true });
  }
  const total = ms(d.created_at, d.updated_at);
  const sum = stages.reduce((a, s) => a + s.ms, 0) || 1;
  return h("article", { class: `deployment${failed ? " deployment-failed" : ""}`, "aria-label": `deployment of v${d.version}` },
    h("h3", {}, `v${d.version} `, badge(d.state), h("span", { class: "muted" }, ` ${duration(total)} · `, when(d.created_at))),
    h("div", { class: "timeline-bar", "aria-hidden": "true" },
      stages.map((s, i) => {
        const seg = h("span", { class: `seg seg-${i % 6}${s.failed ? " seg-failed" : ""}`, title: `${s.name}: ${duration(s.ms)}` });
        seg.style.width = `${Math.max(1.5, (100 * s.ms) / sum)}%`;
        return seg;
      }),
    ),
    h("ol", { class: "stages" },
      stages.map((s) => h("li", { class: s.failed ? "failed" : null },
        h("span", { class: "stage" }, s.name), " ", h("span", { class: "dur" }, s.failed ? `failed after ${duration(s.ms)}` : duration(s.ms)))),
    ),
    d.reason ? h("p", { class: "reason-box" }, h("strong", {}, failed ? "Failed: " : "Note: "), d.reason) : null,
  );
}
