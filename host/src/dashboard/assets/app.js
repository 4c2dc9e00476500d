// jobbox dashboard. Every string from the server is put into the page with
// textContent (through `el` and `text` below), never innerHTML: payloads, logs and
// errors are tenant input.
"use strict";

const $ = (sel) => document.querySelector(sel);

// Builds an element; string children become text nodes.
function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (key === "class") node.className = value;
    else if (key === "onclick") node.addEventListener("click", value);
    else node.setAttribute(key, String(value));
  }
  for (const child of children) {
    if (child === null || child === undefined) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

function text(node, value) {
  node.textContent = value === null || value === undefined ? "" : String(value);
}

function notice(message) {
  const box = $("#notice");
  text(box, message);
  box.hidden = !message;
}

async function getJson(path) {
  const response = await fetch(path, { headers: { Accept: "application/json" } });
  const body = await response.json().catch(() => ({}));
  if (!response.ok) throw new Error(body.error || response.statusText);
  return body;
}

async function act(path) {
  const token = $("#token").value;
  const response = await fetch(path, {
    method: "POST",
    headers: { Authorization: "Bearer " + token },
  });
  const body = await response.json().catch(() => ({}));
  if (!response.ok) throw new Error(body.error || response.statusText);
  return body;
}

function jobLink(id) {
  return el("a", { href: "#job/" + encodeURIComponent(id), class: "job-link", "data-job": id }, id);
}

function time(value) {
  if (!value) return "";
  const date = new Date(value);
  return isNaN(date) ? String(value) : date.toISOString().replace("T", " ").replace("Z", "");
}

const BARS = "▁▂▃▄▅▆▇█";
function sparkline(minutes) {
  if (!minutes || minutes.length === 0) return "";
  const max = Math.max(1, ...minutes.map((m) => m.completed + m.failed));
  return minutes.map((m) => BARS[Math.min(7, Math.floor(((m.completed + m.failed) / max) * 7))]).join("") +
    " " + minutes.map((m) => m.completed + m.failed).join(",");
}

// ---- pages ----

async function showQueues() {
  const data = await getJson("/api/overview");
  const body = $("#queues-table tbody");
  const rows = data.queues.map((q) =>
    el("tr", { "data-queue": q.queue },
      el("td", { "data-field": "queue" }, q.queue),
      ...["pending", "running", "completed", "failed", "dead_letter"].map((field) =>
        el("td", { class: "num", "data-field": field }, q[field])),
      el("td", { class: "spark", "data-field": "throughput" }, sparkline((data.throughput.queues || {})[q.queue]))));
  body.replaceChildren(...rows);
  return data;
}

async function showWorkers() {
  const data = await getJson("/api/overview");
  const body = $("#workers-table tbody");
  body.replaceChildren(...data.workers.map((w) =>
    el("tr", { "data-worker": w.worker_id },
      el("td", {}, w.worker_id),
      el("td", { "data-field": "state" }, w.state),
      el("td", { class: "num", "data-field": "slots" }, w.concurrency),
      el("td", { class: "num", "data-field": "running" }, (w.current_jobs || []).length),
      el("td", {}, (w.queues || []).join(", ")),
      el("td", {}, el("ul", {}, ...Object.entries(w.handlers || {}).map(([t, d]) => el("li", {}, t + " → " + d.slice(0, 19))))),
      el("td", { class: "num" }, w.jobs_done),
      el("td", { class: "num" }, w.jobs_failed),
      el("td", {}, time(w.heartbeat_at)))));
}

async function showJobs() {
  const data = await getJson("/api/failures");
  $("#failures-table tbody").replaceChildren(...data.failures.map((e) =>
    el("tr", {},
      el("td", {}, time(e.timestamp)),
      el("td", {}, jobLink(e.job_id)),
      el("td", {}, e.queue),
      el("td", {}, e.job_type),
      el("td", { class: "status-FAILED" }, e.event_type),
      el("td", {}, (e.error_type ? e.error_type + ": " : "") + (e.error_message || "")))));
}

let currentJob = null;

async function showJob(id) {
  currentJob = id;
  text($("#job-title"), id);
  const data = await getJson("/api/jobs/" + encodeURIComponent(id));
  const state = data.state || {};
  const result = data.result;
  const summary = [
    ["status", state.status], ["queue", state.queue], ["type", state.job_type],
    ["attempts", state.attempts], ["created", time(state.created_at)],
    ["started", time(state.started_at)], ["finished", time(state.finished_at)],
    ["worker", result && result.worker_id], ["handler", result && result.handler_digest],
  ];
  $("#job-summary").replaceChildren(...summary.flatMap(([k, v]) =>
    [el("dt", {}, k), el("dd", { "data-field": k, class: k === "status" ? "status-" + v : "" }, v)]));
  $("#job-trail").replaceChildren(...data.events.map((e) =>
    el("li", { "data-event": e.event_type },
      time(e.timestamp) + "  " + e.event_type +
      (e.worker_id ? "  on " + e.worker_id : "") +
      (e.attempt ? "  attempt " + e.attempt : "") +
      (e.duration_ms !== undefined ? "  " + e.duration_ms + " ms" : "") +
      (e.error_message ? "  " + (e.error_type || "") + ": " + e.error_message : "") +
      (e.progress ? "  " + e.progress.percent + "% " + (e.progress.step || "") + " " + (e.progress.message || "") : ""))));
  const progress = data.events.filter((e) => e.progress).pop();
  text($("#job-progress"), progress
    ? progress.progress.percent + "% " + (progress.progress.step || "") + " " + (progress.progress.message || "")
    : "none reported");
  const usage = (result && result.usage) || {};
  $("#job-usage").replaceChildren(...Object.entries(usage).flatMap(([k, v]) =>
    [el("dt", {}, k), el("dd", { "data-field": k }, v)]));
  text($("#job-output"), result ? result.output : "(no result yet)");
  text($("#job-error"), result && result.error
    ? (result.error_type || "") + ": " + result.error + (result.traceback ? "\n" + result.traceback : "")
    : "");
  $("#job-logs").replaceChildren(...((result && result.logs) || []).map((l) =>
    el("li", {}, time(l.timestamp) + " " + l.level + " " + l.message)));
}

function batchLink(id) {
  return el("a", { href: "#batch/" + encodeURIComponent(id), class: "batch-link", "data-batch": id }, id);
}

function progressBar(share) {
  const percent = Math.round(Math.max(0, Math.min(1, Number(share) || 0)) * 100);
  return el("span", { class: "progress" }, el("progress", { max: 100, value: percent }), " " + percent + "%");
}

async function showBatches() {
  const data = await getJson("/api/batches");
  text($("#batches-total"), data.total > data.batches.length
    ? "(" + data.batches.length + " of " + data.total + ": active, then newest)" : "");
  $("#batches-table tbody").replaceChildren(...data.batches.map((b) =>
    el("tr", { "data-batch": b.batch_id },
      el("td", {}, batchLink(b.batch_id)),
      el("td", { "data-field": "name" }, b.batch_name),
      el("td", { "data-field": "status", class: "status-" + b.status }, b.status + (b.cancel_requested && b.active ? " (cancelling)" : "")),
      el("td", { class: "num", "data-field": "jobs" }, b.jobs),
      ...["completed", "failed", "dead_letter", "cancelled"].map((field) =>
        el("td", { class: "num", "data-field": field }, b.counts[field])),
      el("td", { "data-field": "progress" }, progressBar(b.progress)),
      el("td", {}, time(b.created_at)),
      el("td", {}, time(b.updated_at)))));
}

let currentBatch = null;
let batchFrom = 0;

async function showBatch(id, from) {
  currentBatch = id;
  batchFrom = from || 0;
  text($("#batch-title"), id);
  const data = await getJson("/api/batches/" + encodeURIComponent(id) + "?from=" + batchFrom);
  const b = data.batch;
  const summary = [
    ["name", b.batch_name], ["status", b.status], ["jobs", b.jobs],
    ["completed", b.counts.completed], ["failed", b.counts.failed],
    ["dead_letter", b.counts.dead_letter], ["cancelled", b.counts.cancelled],
    ["progress", progressBar(b.progress)], ["active", b.active ? "yes" : "no"],
    ["cancel requested", b.cancel_requested ? "yes" : "no"],
    ["enqueue abandoned", b.abandoned ? "yes" : "no"],
    ["created", time(b.created_at)], ["updated", time(b.updated_at)],
  ];
  $("#batch-summary").replaceChildren(...summary.flatMap(([k, v]) =>
    [el("dt", {}, k), el("dd", { "data-field": k, class: k === "status" ? "status-" + v : "" }, v)]));
  $("#batch-cancel").disabled = !b.active || b.cancel_requested;
  $("#batch-callbacks").replaceChildren(...(b.callbacks.length ? b.callbacks.map((c) =>
    el("li", { "data-callback": c.kind }, c.kind + ": ", jobLink(c.job_id), " (" + c.job_type + " on " + c.queue + ")"))
    : [el("li", { class: "muted" }, "none")]));
  const to = data.from + data.members.length;
  text($("#batch-range"), data.members.length ? (data.from + 1) + "–" + to + " of " + b.jobs : "none");
  $("#batch-prev").disabled = data.from === 0;
  $("#batch-next").disabled = to >= b.jobs;
  $("#batch-jobs tbody").replaceChildren(...data.members.map((m) =>
    el("tr", { "data-job": m.job_id },
      el("td", {}, jobLink(m.job_id)),
      el("td", { "data-field": "status", class: m.status ? "status-" + m.status : "muted" }, m.status || "not ended"),
      el("td", {}, m.error || ""))));
}

async function showHandlers() {
  const data = await getJson("/api/handlers");
  $("#handlers-list").replaceChildren(...data.handlers.map((h) =>
    el("div", { class: "handler", "data-job-type": h.job_type },
      el("h3", {}, h.job_type + " ",
        el("button", { type: "button", onclick: () => run(async () => {
          const done = await act("/api/handlers/" + encodeURIComponent(h.job_type) + "/rollback");
          notice("rolled back " + h.job_type + " to " + done.digest);
          await showHandlers();
        }) }, "Roll back")),
      el("table", {},
        el("thead", {}, el("tr", {}, ...["revision", "written", "current", "digest", "version", "deployed by"].map((t) => el("th", {}, t)))),
        el("tbody", {}, ...h.versions.slice().reverse().map((v) =>
          el("tr", {},
            el("td", { class: "num" }, v.revision),
            el("td", {}, time(v.written_at)),
            el("td", {}, v.current ? "●" : ""),
            el("td", {}, v.route ? v.route.digest : "(removed)"),
            el("td", {}, v.route ? v.route.version : ""),
            el("td", {}, v.route ? v.route.deployed_by : ""))))))));
}

async function showDlq() {
  const data = await getJson("/api/dlq");
  $("#dlq-table tbody").replaceChildren(...data.dead_letters.map((d) =>
    el("tr", { "data-sequence": d.sequence },
      el("td", { class: "num" }, d.sequence),
      el("td", {}, jobLink(d.job_id)),
      el("td", {}, d.queue),
      el("td", {}, d.job_type),
      el("td", { class: "num" }, d.attempts),
      el("td", {}, (d.error_type ? d.error_type + ": " : "") + (d.error || "")),
      el("td", {}, el("code", {}, d.payload)),
      el("td", {}, time(d.failed_at)),
      el("td", {}, el("button", { type: "button", class: "replay", onclick: () => run(async () => {
        const done = await act("/api/dlq/" + d.sequence + "/replay");
        notice("replayed " + done.replayed);
        await showDlq();
      }) }, "Replay")))));
}

// ---- routing and live updates ----

async function run(work) {
  try {
    notice("");
    await work();
  } catch (error) {
    notice(String(error.message || error));
  }
}

function route() {
  const hash = decodeURIComponent(location.hash.slice(1)) || "queues";
  const [page, ...rest] = hash.split("/");
  const id = rest.join("/");
  const name = ["queues", "workers", "jobs", "job", "batches", "batch", "handlers", "dlq"].includes(page) ? page : "queues";
  const tab = { job: "jobs", batch: "batches" }[name] || name;
  for (const section of document.querySelectorAll(".page")) section.hidden = section.id !== "page-" + name;
  for (const link of document.querySelectorAll("nav a")) link.classList.toggle("active", link.dataset.page === tab);
  if (name !== "job") currentJob = null;
  if (name !== "batch") currentBatch = null;
  const show = {
    queues: showQueues, workers: showWorkers, jobs: showJobs, job: () => showJob(id),
    batches: showBatches, batch: () => showBatch(id, 0), handlers: showHandlers, dlq: showDlq,
  }[name];
  document.body.dataset.page = name;
  document.body.dataset.loaded = "";
  return run(show).then(() => { document.body.dataset.loaded = name; });
}

let refreshTimer = null;
function refreshSoon() {
  if (refreshTimer) return;
  refreshTimer = setTimeout(() => {
    refreshTimer = null;
    const page = document.body.dataset.page;
    if (page === "queues") run(showQueues);
    else if (page === "workers") run(showWorkers);
    else if (page === "jobs") run(showJobs);
    else if (page === "job" && currentJob) run(() => showJob(currentJob));
    else if (page === "batches") run(showBatches);
    else if (page === "batch" && currentBatch) run(() => showBatch(currentBatch, batchFrom));
  }, 1000);
}

function live() {
  const source = new EventSource("/api/live");
  source.addEventListener("open", () => text($("#live-state"), "live"));
  source.addEventListener("error", () => text($("#live-state"), "reconnecting…"));
  source.addEventListener("job", (message) => {
    let event;
    try { event = JSON.parse(message.data); } catch (_) { return; }
    const feed = $("#live-feed");
    feed.prepend(el("li", {}, time(event.timestamp) + " " + event.event_type + " " + event.queue + " " + event.job_type + " ", jobLink(event.job_id)));
    while (feed.children.length > 50) feed.lastChild.remove();
    if (document.body.dataset.page !== "job" || event.job_id === currentJob) refreshSoon();
  });
}

window.addEventListener("hashchange", route);
window.addEventListener("DOMContentLoaded", () => {
  $("#token").value = sessionStorage.getItem("jobbox-token") || "";
  $("#token").addEventListener("change", () => sessionStorage.setItem("jobbox-token", $("#token").value));
  $("#job-search").addEventListener("submit", (e) => {
    e.preventDefault();
    location.hash = "job/" + encodeURIComponent($("#job-id").value.trim());
  });
  $("#job-cancel").addEventListener("click", () => run(async () => {
    const done = await act("/api/jobs/" + encodeURIComponent(currentJob) + "/cancel");
    notice("cancel: " + done.outcome);
    await showJob(currentJob);
  }));
  $("#batch-cancel").addEventListener("click", () => run(async () => {
    const done = await act("/api/batches/" + encodeURIComponent(currentBatch) + "/cancel");
    notice("cancel batch: " + done.outcome);
    await showBatch(currentBatch, batchFrom);
  }));
  $("#batch-prev").addEventListener("click", () => run(() => showBatch(currentBatch, Math.max(0, batchFrom - 50))));
  $("#batch-next").addEventListener("click", () => run(() => showBatch(currentBatch, batchFrom + 50)));
  setInterval(refreshSoon, 5000);
  live();
  route();
});
