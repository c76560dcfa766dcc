// hookdeploy dashboard: follow a running job's log, refresh the overview while jobs are active.
"use strict";

const POLL_MS = 1000;
const REFRESH_MS = 3000;

function render(event) {
  const took = event.duration === null ? "" : ` (${event.duration.toFixed(2)} s)`;
  return `${event.at} ${event.kind.padEnd(5)} ${event.message}${took}`;
}

function seconds(value) {
  if (value === null) return "—";
  if (value < 10) return `${value.toFixed(1)} s`;
  if (value < 60) return `${Math.round(value)} s`;
  return `${Math.floor(value / 60)} min ${String(Math.floor(value % 60)).padStart(2, "0")} s`;
}

async function followJob(body) {
  const log = document.getElementById("log");
  const steps = document.getElementById("steps");
  const state = document.getElementById("state");
  let last = Number(body.dataset.last);
  for (;;) {
    let reply;
    try {
      const response = await fetch(`${body.dataset.events}?after=${last}`, {credentials: "same-origin"});
      if (!response.ok) throw new Error(`HTTP ${response.status}`);
      reply = await response.json();
    } catch (error) {
      await new Promise((resolve) => setTimeout(resolve, POLL_MS * 3));
      continue;
    }
    for (const event of reply.events) {
      const line = document.createElement("span");
      line.className = `line kind-${event.kind}`;
      line.textContent = render(event);
      log.append(line, "\n");
      if (event.kind === "step") {
        const item = document.createElement("li");
        item.textContent = `${event.message} `;
        const took = document.createElement("span");
        took.className = "muted";
        took.textContent = seconds(event.duration);
        item.append(took);
        steps.append(item);
      }
      last = event.id;
    }
    if (reply.events.length) log.scrollTop = log.scrollHeight;
    state.textContent = reply.job.state;
    state.className = `state state-${reply.job.state}`;
    document.getElementById("took").textContent = seconds(reply.job.duration);
    document.getElementById("error").textContent = reply.job.error || "—";
    if (!reply.job.active) {
      body.dataset.active = "";
      return;
    }
    await new Promise((resolve) => setTimeout(resolve, POLL_MS));
  }
}

function refreshWhileActive() {
  setTimeout(() => {
    const typing = [...document.querySelectorAll("input[type=text]")].some((input) => input.value !== "");
    if (typing) refreshWhileActive();
    else window.location.reload();
  }, REFRESH_MS);
}

document.addEventListener("DOMContentLoaded", () => {
  const body = document.body;
  if (body.dataset.page === "job" && body.dataset.active) followJob(body);
  if (body.dataset.page === "index" && body.dataset.active) refreshWhileActive();
});
