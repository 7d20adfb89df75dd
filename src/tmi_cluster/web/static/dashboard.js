// The dashboard: polls the JSON API every 2 s (paths relative to the page, wherever the app
// is mounted) and draws what it says. No library, nothing loaded from elsewhere.
"use strict";

const POLL_MS = 2000;
const HISTORY_S = 300;
const PER_PAGE = 50;
const history = []; // [seconds, messages per second]
let page = 1;
let total = 0;

const $ = (id) => document.getElementById(id);

function text(tag, value, className) {
  const cell = document.createElement(tag);
  cell.textContent = value === null || value === undefined ? "" : String(value);
  if (className) cell.className = className;
  return cell;
}

function row(cells) {
  const tr = document.createElement("tr");
  for (const [value, className] of cells) tr.appendChild(text("td", value, className));
  return tr;
}

function ago(iso) {
  if (!iso) return "";
  const seconds = Math.max(0, (Date.now() - Date.parse(iso)) / 1000);
  if (seconds < 90) return `${seconds.toFixed(0)} s ago`;
  if (seconds < 5400) return `${(seconds / 60).toFixed(0)} min ago`;
  return `${(seconds / 3600).toFixed(1)} h ago`;
}

function soon(iso) {
  const seconds = (Date.parse(iso) - Date.now()) / 1000;
  if (seconds <= 0) return "now";
  if (seconds < 90) return `in ${seconds.toFixed(0)} s`;
  return `in ${(seconds / 60).toFixed(0)} min`;
}

function megabytes(bytes) {
  return bytes ? `${(bytes / 1048576).toFixed(1)} MiB` : "";
}

async function getJSON(path) {
  const response = await fetch(path, { credentials: "same-origin", cache: "no-store" });
  if (!response.ok) {
    let reason = `${response.status} ${response.statusText}`;
    try { reason = (await response.json()).error || reason; } catch (e) { /* not JSON */ }
    throw new Error(reason);
  }
  return response.json();
}

function showStatistics(s) {
  const status = $("status");
  status.textContent = s.status;
  status.className = `status ${s.status}`;
  $("reason").textContent = s.reason;
  $("messages_per_s").textContent = s.messages_per_s.toFixed(1);
  $("commands_per_s").textContent = s.commands_per_s.toFixed(1);
  for (const name of ["joined", "joining", "failed", "unauthorized", "wanted"]) {
    $(name).textContent = s.channels[name];
  }
  $("supervisors").textContent = s.supervisors;
  $("processes").textContent = s.processes;
  const scaling = s.scaling;
  $("scaling").textContent = scaling
    ? `${scaling.paused ? "paused" : "running"}; ${scaling.processes} processes wanted` +
      (scaling.cause ? `; last change: ${scaling.cause}` : "") +
      Object.entries(scaling.targets).map(([id, n]) => `; ${id}: ${n}`).join("")
    : "unknown (Redis cannot be asked)";
  $("scaled").querySelector("tbody").replaceChildren(...(s.scaled || []).map((e) => row([
    [ago(new Date(e.at * 1000).toISOString())], [e.supervisor], [`${e.before} → ${e.after}`],
    [e.cause],
  ])));
  history.push([s.taken, s.messages_per_s]);
  while (history.length && history[0][0] < s.taken - HISTORY_S) history.shift();
  drawChart();
}

function drawChart() {
  const canvas = $("chart");
  const ratio = window.devicePixelRatio || 1;
  const width = canvas.clientWidth * ratio;
  const height = canvas.clientHeight * ratio;
  canvas.width = width;
  canvas.height = height;
  const context = canvas.getContext("2d");
  context.clearRect(0, 0, width, height);
  if (history.length < 2) return;
  const now = history[history.length - 1][0];
  const top = Math.max(1, ...history.map(([, v]) => v)) * 1.15;
  const style = getComputedStyle(document.documentElement);
  context.strokeStyle = style.getPropertyValue("--accent") || "#6441a5";
  context.lineWidth = 2 * ratio;
  context.beginPath();
  history.forEach(([t, v], i) => {
    const x = width - ((now - t) / HISTORY_S) * width;
    const y = height - (v / top) * (height - 8 * ratio) - 4 * ratio;
    if (i === 0) context.moveTo(x, y); else context.lineTo(x, y);
  });
  context.stroke();
  context.fillStyle = style.getPropertyValue("--muted") || "#888";
  context.font = `${12 * ratio}px system-ui, sans-serif`;
  context.fillText(`${top.toFixed(0)}/s`, 4 * ratio, 14 * ratio);
}

function showSupervisors(listing) {
  const box = $("supervisor-tables");
  box.replaceChildren();
  if (!listing.supervisors.length) {
    box.appendChild(text("p", "No supervisor has ever run with this database."));
  }
  for (const s of listing.supervisors) {
    const section = document.createElement("div");
    section.className = "supervisor";
    section.appendChild(text("h3",
      `${s.id} on ${s.host}: ${s.state}, ${s.processes} processes, ` +
      `heartbeat ${ago(s.last_heartbeat)}` + (s.chat && s.chat !== "twitch" ? `, chat: ${s.chat}` : "")));
    if (s.problem) section.appendChild(text("p", s.problem, "problem"));
    const table = document.createElement("table");
    const head = table.appendChild(document.createElement("thead")).appendChild(
      document.createElement("tr"));
    for (const name of ["process", "state", "heartbeat", "channels", "connections", "memory",
      "messages/s", "problem"]) head.appendChild(text("th", name));
    const body = table.appendChild(document.createElement("tbody"));
    for (const p of listing.processes.filter((p) => p.supervisor === s.id)) {
      body.appendChild(row([
        [p.id], [p.state], [ago(p.last_heartbeat)], [p.channels], [p.connections],
        [megabytes(p.memory_bytes)], [Number(p.messages_per_s).toFixed(1)], [p.problem, "problem"],
      ]));
    }
    const scroll = document.createElement("div");
    scroll.className = "scroll";
    scroll.appendChild(table);
    section.appendChild(scroll);
    box.appendChild(section);
  }
}

function failureText(c) {
  if (!c.failure) return "";
  return `${c.failure} (${c.attempts} attempts` +
    (c.given_up ? ", given up)" : c.retry_at ? `, retried ${soon(c.retry_at)})` : ")");
}

async function showChannels() {
  const query = new URLSearchParams({
    search: $("search").value, state: $("state").value, page: String(page),
    per_page: String(PER_PAGE),
  });
  const answer = await getJSON(`api/channels?${query}`);
  total = answer.total;
  const body = $("channels").querySelector("tbody");
  body.replaceChildren(...answer.channels.map((c) => {
    const tr = row([
      [c.channel], [c.state], [c.process], [c.route, "route"], [ago(c.since)],
      [failureText(c), "failure"],
    ]);
    tr.children[3].title = c.route_reason || "";  // why this route: on hover
    return tr;
  }));
  const pages = Math.max(1, Math.ceil(total / PER_PAGE));
  $("page").textContent = `page ${page} of ${pages} (${total} channels)`;
  $("previous").disabled = page <= 1;
  $("next").disabled = page >= pages;
}

async function poll() {
  try {
    const [statistics, listing] = await Promise.all([
      getJSON("api/statistics"), getJSON("api/supervisors"),
    ]);
    showStatistics(statistics);
    showSupervisors(listing);
    await showChannels();
    $("updated").textContent = `updated ${new Date().toLocaleTimeString()}`;
    document.querySelector("main").classList.remove("stale");
  } catch (error) {
    const status = $("status");
    status.textContent = "error";
    status.className = "status error";
    $("reason").textContent = `the dashboard cannot read the cluster: ${error.message}`;
    document.querySelector("main").classList.add("stale");  // what is shown is old
  }
}

let searching = null;
function searchSoon() {
  page = 1;
  clearTimeout(searching);
  searching = setTimeout(() => showChannels().catch(() => {}), 250);
}

document.addEventListener("DOMContentLoaded", () => {
  $("search").addEventListener("input", searchSoon);
  $("state").addEventListener("change", searchSoon);
  $("search-form").addEventListener("submit", (event) => { event.preventDefault(); searchSoon(); });
  $("previous").addEventListener("click", () => { page = Math.max(1, page - 1); showChannels(); });
  $("next").addEventListener("click", () => { page += 1; showChannels(); });
  window.addEventListener("resize", drawChart);
  poll();
  setInterval(poll, POLL_MS);
});
