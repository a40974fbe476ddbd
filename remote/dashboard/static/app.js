// Pose Factory dashboard: live job status (polling JSON endpoints) and the
// estimate on the Generate form. No external scripts; text goes in as text.
"use strict";

const POLL_MS = 1000;

async function getJSON(url) {
  const response = await fetch(url, {headers: {"Accept": "application/json"}, credentials: "same-origin"});
  return [response.status, await response.json()];
}

function pollJob(section) {
  const url = section.dataset.poll;
  const tick = async () => {
    try {
      const [, job] = await getJSON(url);
      section.querySelector(".live-status").textContent = job.status;
      section.querySelector(".live-stage").textContent = job.stage;
      const items = section.querySelector(".live-items");
      if (items && job.items_total) items.textContent = `${job.items_done}/${job.items_total}`;
      const bar = section.querySelector(".live-progress");
      if (bar && job.fraction !== null) bar.value = job.fraction;
      const message = section.querySelector(".live-message");
      if (message && job.message !== null) message.textContent = job.message;
      if (job.status !== "running" && job.status !== "submitted") {
        window.location.reload();  // the finished page shows the images
        return;
      }
    } catch (error) {
      console.warn("poll failed", error);
    }
    setTimeout(tick, POLL_MS);
  };
  setTimeout(tick, POLL_MS);
}

function pollRunning(section) {
  const url = section.dataset.poll;
  const shown = new Set([...section.querySelectorAll("[data-job]")].map((li) => li.dataset.job));
  const tick = async () => {
    try {
      const [, data] = await getJSON(url);
      const running = new Set(data.running.map((job) => job.job_id));
      if ([...shown].some((id) => !running.has(id))) {
        window.location.reload();
        return;
      }
      for (const job of data.running) {
        const li = section.querySelector(`[data-job="${CSS.escape(job.job_id)}"] .live-stage`);
        if (li) {
          const items = job.items_total ? ` · ${job.items_done}/${job.items_total} items` : "";
          li.textContent = `${job.status} · ${job.stage}${items}`;
        }
      }
    } catch (error) {
      console.warn("poll failed", error);
    }
    setTimeout(tick, POLL_MS * 2);
  };
  setTimeout(tick, POLL_MS * 2);
}

function wireEstimate(form) {
  const output = document.getElementById("estimate");
  const update = async () => {
    const params = new URLSearchParams();
    for (const [key, value] of new FormData(form)) {
      if (typeof value === "string" && key !== "csrf_token" && key !== "prompt" && key !== "negative_prompt") {
        params.append(key, value);
      }
    }
    try {
      const [status, data] = await getJSON(`${form.dataset.estimate}?${params}`);
      output.textContent = status === 200
        ? `$${data.total_usd} (${data.images} image(s), ${data.pod_type})`
        : data.error;
    } catch (error) {
      output.textContent = "unavailable";
    }
  };
  form.addEventListener("change", update);
  update();
}

document.addEventListener("DOMContentLoaded", () => {
  const job = document.querySelector("section.job-status[data-poll]");
  if (job) pollJob(job);
  const running = document.querySelector("section.running[data-poll]");
  if (running) pollRunning(running);
  const generate = document.getElementById("generate-form");
  if (generate) wireEstimate(generate);
});
