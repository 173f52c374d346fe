// This account's newest jobs (GET /v1/jobs) with their status; one job's answer on request; a queued job
// can be cancelled.

import { ApiError, call, json } from "./api.js";
import { badge, clear, errorBox, h, link, say, table, when } from "./dom.js";
import { renderDoc } from "./answer.js";

const enc = encodeURIComponent;

export async function showJobs(main) {
  const list = h("div", {});
  const detail = h("div", { class: "job-detail", "aria-live": "polite" });
  const refresh = h("button", { type: "button", on: { click: () => load(list, detail) } }, "Refresh");
  main.append(
    h("h1", { tabindex: "-1" }, "Jobs"),
    h("p", { class: "muted" }, "Asynchronous invocations of this account (", h("code", {}, "Prefer: respond-async"), ", ", h("code", {}, "modelport invoke --async"), "), newest first; kept 7 days."),
    h("div", { class: "actions" }, refresh),
    list,
    detail,
    h("p", { class: "muted" }, "Event-driven batch runs write ", h("code", {}, "outputs/MODEL/NAME.jsonl"), " and ",
      h("code", {}, ".summary.json"), " to the data bucket (", h("code", {}, "modelport batch"), "); the API has no route that lists them yet."),
  );
  document.title = "Jobs · Modelport console";
  await load(list, detail);
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
