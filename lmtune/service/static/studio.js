// The studio's behaviour, plain JavaScript (no build, no CDN): start a job, draw the live loss curves from the
// server-sent events, cancel, chat, log in with a key (kept in a cookie the server reads).
"use strict";

async function api(path, options) {
  const response = await fetch(path, options);
  const body = await response.json().catch(() => ({}));
  if (!response.ok) throw new Error((body.error && body.error.message) || response.statusText);
  return body;
}

function post(path, obj) {
  return api(path, {method: "POST", headers: {"Content-Type": "application/json"}, body: JSON.stringify(obj)});
}

function drawCurves(svg, rows) {
  const series = {train: [], validation: []};
  for (const r of rows) if (series[r.split] && Number.isFinite(r.loss)) series[r.split].push([r.step, r.loss]);
  const all = series.train.concat(series.validation);
  if (!all.length) return;
  const w = svg.width.baseVal.value, h = svg.height.baseVal.value, pad = 30;
  const xs = all.map(p => p[0]), ys = all.map(p => p[1]);
  const x0 = Math.min(...xs), x1 = Math.max(...xs, x0 + 1), y0 = Math.min(...ys), y1 = Math.max(...ys, y0 + 1e-6);
  const sx = x => pad + (x - x0) / (x1 - x0) * (w - 2 * pad), sy = y => h - pad - (y - y0) / (y1 - y0) * (h - 2 * pad);
  const line = (pts, color) => pts.length ? `<polyline fill="none" stroke="${color}" stroke-width="2" points="${
    pts.map(p => sx(p[0]).toFixed(1) + "," + sy(p[1]).toFixed(1)).join(" ")}"/>` : "";
  svg.innerHTML = line(series.train, "#4c72b0") + line(series.validation, "#dd8452") +
    `<text x="${pad}" y="14" font-size="11">loss ${y1.toFixed(3)}</text>` +
    `<text x="${pad}" y="${h - 8}" font-size="11">${y0.toFixed(3)} · steps ${x0}–${x1}</text>`;
  svg.dataset.points = String(series.train.length);
}

function liveCurve(svg) {
  const rows = [], source = new EventSource(`/studio/jobs/${svg.dataset.job}/stream`);
  source.addEventListener("metric", e => {
    const r = JSON.parse(e.data);
    rows.push(r);
    drawCurves(svg, rows);
    document.getElementById("last-step").textContent = `step ${r.step}`;
  });
  const shown = document.getElementById("status").textContent;
  source.addEventListener("status", e => {
    const status = JSON.parse(e.data);
    document.getElementById("status").textContent = status;
    // The job ended while the page was open: reload for its report and chat links (once: the page then shows it).
    if (status !== shown && ["succeeded", "failed", "cancelled"].includes(status)) setTimeout(() => location.reload(), 500);
  });
  source.onerror = () => source.close();  // the stream ends with the job
}

async function startJob(form, estimateOnly) {
  const out = document.getElementById("estimate-out");
  let file = form.training_file.value;
  if (!file) {
    if (!form.upload.files.length) { out.textContent = "choose a file to upload first"; return; }
    const data = new FormData();
    data.append("purpose", "fine-tune");
    data.append("file", form.upload.files[0]);
    file = (await api("/v1/files", {method: "POST", body: data})).id;
    form.training_file.insertAdjacentHTML("beforeend", `<option value="${file}">${file}</option>`);
    form.training_file.value = file;
  }
  const maxSteps = form.max_steps.value ? Number(form.max_steps.value) : null;
  if (estimateOnly) {
    out.textContent = "estimating...";
    const e = await post("/studio/estimate", {training_file: file, model: form.model.value, method: form.method.value,
      n_epochs: Number(form.n_epochs.value), batch_size: Number(form.batch_size.value), max_steps: maxSteps});
    out.textContent = `peak memory ${e.peak_memory_mb} MB · about ${e.time_s} s · ${e.steps} steps · ` +
      `${e.trainable_params.toLocaleString()} of ${e.total_params.toLocaleString()} parameters trained`;
    return;
  }
  const lmtune = {method: {name: form.method.value}, train: maxSteps ? {max_steps: maxSteps} : {}};
  const job = await post("/v1/fine_tuning/jobs", {model: form.model.value, training_file: file, lmtune,
    hyperparameters: {n_epochs: Number(form.n_epochs.value), batch_size: Number(form.batch_size.value),
                      learning_rate_multiplier: Number(form.lr_mult.value)}});
  location.href = `/studio/jobs/${job.id}`;
}

document.addEventListener("DOMContentLoaded", () => {
  const form = document.getElementById("new-job");
  const fail = e => { document.getElementById("estimate-out").textContent = "error: " + e.message; };
  if (form) {
    form.addEventListener("submit", e => { e.preventDefault(); startJob(form, false).catch(fail); });
    document.getElementById("estimate").addEventListener("click", () => startJob(form, true).catch(fail));
  }
  const svg = document.getElementById("curve");
  if (svg) liveCurve(svg);
  for (const s of document.querySelectorAll("svg.static-curve")) drawCurves(s, JSON.parse(s.dataset.metrics));
  const cancel = document.getElementById("cancel");
  if (cancel) cancel.addEventListener("click", () => post(`/v1/fine_tuning/jobs/${cancel.dataset.job}/cancel`, {}));
  const chat = document.getElementById("chat");
  if (chat) chat.addEventListener("submit", async e => {
    e.preventDefault();
    const answers = document.getElementById("answers");
    try {
      const r = await post("/v1/chat/completions", {model: chat.model.value, max_tokens: 64,
        messages: [{role: "user", content: chat.message.value}]});
      answers.insertAdjacentHTML("afterbegin", "<p class='answer'></p>");
      answers.firstChild.textContent = r.choices[0].message.content;
    } catch (err) { answers.insertAdjacentHTML("afterbegin", `<p class="error"></p>`); answers.firstChild.textContent = err.message; }
  });
  const login = document.getElementById("login");
  if (login) login.addEventListener("submit", e => {
    e.preventDefault();
    document.cookie = `lmtune_key=${encodeURIComponent(login.key.value)}; path=/; SameSite=Strict`;
    location.reload();
  });
});
