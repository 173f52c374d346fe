// This account's newest jobs (GET /v1/jobs) with their status; one job's answer on request; a queued job
// can be cancelled. Below them the event-driven batch runs of the models the account owns
// (GET /v1/models/{name}/batches), in one table, newest first.

import { ApiError, call, json } from "./api.js";
import { badge, clear, duration, errorBox, h, link, say, table, when } from "./dom.js";
import { renderDoc } from "./answer.js";

const enc = encodeURIComponent;

export async function showJobs(main) {
  const list = h("div", {});
  const detail = h("div", { class: "job-detail", "aria-live": "polite" });
  const runs = h("div", { class: "batch-runs", "aria-live": "polite" });
  const refresh = h("button", { type: "button", on: { click: () => Promise.all([load(list, detail), loadBatches(runs)]) } }, "Refresh");
  main.append(
    h("h1", { tabindex: "-1" }, "Jobs"),
    h("p", { class: "muted" }, "Asynchronous invocations of this account (", h("code", {}, "Prefer: respond-async"), ", ", h("code", {}, "modelport invoke --async"), "), newest first; kept 7 days."),
    h("div", { class: "actions" }, refresh),
    list,
    detail,
    h("section", { class: "batches", "aria-labelledby": "batches-title" },
      h("h2", { id: "batches-title" }, "Batch runs"),
      h("p", { class: "muted" }, "Event-driven runs of the models you own: a file under ", h("code", {}, "inputs/MODEL/"),
        " of the data bucket gives ", h("code", {}, "outputs/MODEL/NAME.jsonl"), " and its ", h("code", {}, ".summary.json"),
        "; newest first (", h("code", {}, "modelport batches MODEL"), ")."),
      runs),
  );
  document.title = "Jobs · Modelport console";
  await Promise.all([load(list, detail), loadBatches(runs)]);
}

const howToStart = (model = "MODEL") => ["No batch runs yet: put a CSV (or JSON Lines) file under ",
  h("code", {}, `inputs/${model}/`), " of the data bucket, or run ", h("code", {}, `modelport batch ${model} FILE`), "."];

// The batch runs of every model this account owns (GET /v1/models says whose each is), in one table.
async function loadBatches(target) {
  const [me, models] = await Promise.all([json("/v1/accounts/me"), json("/v1/models")]);
  const owned = models.filter((m) => m.owner === me.account_id);
  const answers = await Promise.allSettled(owned.map((m) => json(`/v1/models/${enc(m.name)}/batches`)));
  const runs = [];
  const problems = [];
  answers.forEach((answer, i) => {
    if (answer.status === "fulfilled") runs.push(...answer.value.batches.map((b) => ({ ...b, model: owned[i].name })));
    else problems.push(errorBox(answer.reason, `Could not list the batch runs of ${owned[i].name}`));
  });
  runs.sort((a, b) => (a.updated_at < b.updated_at ? 1 : a.updated_at > b.updated_at ? -1 : 0));
  clear(target).append(...problems);
  target.append(runs.length ? batchTable(runs) : h("p", { class: "empty card" }, howToStart()));
}

// Runs as GET /v1/models/{name}/batches gives them (each with its `model` when `withModel`).
export function batchTable(runs, { withModel = true } = {}) {
  const columns = [...(withModel ? ["Model"] : []), "Input", "Status", "Rows (ok / failed)", "Time", "Cost (USD)", "Updated", "Results", "Error"];
  return table(null, columns, runs.map((r) => [
    ...(withModel ? [link(r.model, { model: r.model })] : []),
    h("code", {}, r.input),
    badge(r.status),
    r.rows === null || r.rows === undefined ? "—" : h("span", {}, String(r.rows), h("span", { class: "muted" }, ` (${r.succeeded} / ${r.failed})`)),
    typeof r.seconds === "number" ? duration(r.seconds * 1000) : "—",
    typeof r.cost?.usd === "string" ? r.cost.usd : "—",
    when(r.updated_at),
    r.download_url
      ? h("a", { href: r.download_url, rel: "noreferrer noopener", target: "_blank", "aria-label": `download the results of ${r.input}` }, "Download")
      : "",
    r.error ? { cell: r.error, class: "reason" } : "",
  ]), { numeric: withModel ? [3, 4, 5] : [2, 3, 4] });
}

// A model page's card of its batch runs, for its owner (or an admin: the API gave the page `owner`).
export async function batchesCard(name) {
  const card = h("section", { class: "card", "aria-labelledby": "batches-title" }, h("h2", { id: "batches-title" }, "Batch runs"));
  let doc;
  try {
    doc = await json(`/v1/models/${enc(name)}/batches`);
  } catch (error) {
    if (error instanceof ApiError && error.status === 401) throw error;
    card.append(errorBox(error, "Could not list the batch runs"));
    return card;
  }
  card.append(doc.batches.length ? batchTable(doc.batches, { withModel: false }) : h("p", { class: "empty" }, howToStart(name)));
  return card;
}

async function load(list, detail) {
  say("loading jobs");
  const { jobs } = await json("/v1/jobs");
  clear(list);
  if (!jobs.length) {
    list.append(h("p", { class: "empty card" }, "No jobs yet: tick “Run as a job” on a model's invoke form."));
    say("no jobs");
    return;
  }
  list.append(table("Jobs", ["Job", "Model", "Status", "Created", "Started", "Finished", "Error", ""],
    jobs.map((j) => [
      h("code", {}, j.job_id),
      link(`${j.model} v${j.version}`, { model: j.model }),
      badge(j.status),
      when(j.created_at),
      when(j.started_at),
      when(j.finished_at),
      j.error ? { cell: j.error, class: "reason" } : "",
      h("span", { class: "row-actions" },
        h("button", { type: "button", "aria-label": `show job ${j.job_id}`, on: { click: () => show(j.job_id, detail) } }, "Show"),
        j.status === "QUEUED"
          ? h("button", { type: "button", "aria-label": `cancel job ${j.job_id}`, on: { click: () => cancel(j.job_id, list, detail) } }, "Cancel")
          : null),
    ])));
  say(`${jobs.length} jobs`);
}

async function show(id, detail) {
  clear(detail);
  let job;
  try {
    job = await json(`/v1/jobs/${enc(id)}`);
  } catch (error) {
    detail.append(errorBox(error));
    return;
  }
  const card = h("section", { class: "card", "aria-labelledby": "job-title" },
    h("h2", { id: "job-title", tabindex: "-1" }, "Job ", h("code", {}, job.job_id), " ", badge(job.status)),
    job.error ? h("p", { class: "reason-box" }, h("strong", {}, "Error: "), job.error) : null,
    job.webhook ? h("p", {}, "Webhook: ", badge(job.webhook.status), ` after ${job.webhook.attempts} attempts`, job.webhook.error ? ` (${job.webhook.error})` : "") : null,
  );
  const result = job.result;
  if (result) {
    card.append(h("p", {}, `Answer: ${result.status} ${result.content_type || ""}`));
    if (result.url) card.append(h("p", {}, h("a", { href: result.url, rel: "noreferrer noopener", target: "_blank" }, `Download the answer (${result.size_bytes} bytes)`)));
    else if (result.body !== undefined) renderDoc(card, result.body);
    else if (result.body_base64) card.append(h("p", { class: "muted" }, `${result.body_base64.length} characters of base64`));
  }
  detail.append(card);
  card.querySelector("h2").focus();
}

async function cancel(id, list, detail) {
  try {
    await call(`/v1/jobs/${enc(id)}`, { method: "DELETE" });
  } catch (error) {
    clear(detail).append(errorBox(error instanceof ApiError ? error : { message: String(error) }, "Could not cancel"));
    return;
  }
  await load(list, detail);
}
