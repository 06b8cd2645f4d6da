// Shared state, the API client, the error banner and the instance commands.
import { h } from "./ui.js";

export const STATE = { csrf: null, instances: [], gateway: null, devices: null, live: false };
export const listeners = new Set(); // called with each event of the stream
let redraw = () => {};
export function onRedraw(fn) { redraw = fn; }
export function renderCurrent() { redraw(); }

// -- API --------------------------------------------------------------------------------

export class ApiError extends Error {
  constructor(message, status) { super(message); this.status = status; }
}

export function detailOf(data, text) {
  if (data && typeof data === "object") {
    const d = data.detail ?? data.message ?? (data.error && data.error.message);
    if (d !== undefined) return typeof d === "string" ? d : JSON.stringify(d);
  }
  return text || "no answer";
}

export async function api(path, { method = "GET", body } = {}) {
  const init = { method, headers: {}, credentials: "same-origin" };
  if (method !== "GET") init.headers["X-CSRF-Token"] = STATE.csrf || "";
  if (body !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  let resp;
  try {
    resp = await fetch(path, init);
  } catch (e) {
    setLive(false);
    throw new ApiError("daemon unreachable, retrying", 0);
  }
  const text = await resp.text();
  let data = null;
  try { data = text ? JSON.parse(text) : null; } catch { data = text; }
  if (resp.status === 401) signedOut();
  if (!resp.ok && !(data && typeof data === "object" && "ok" in data)) {
    throw new ApiError(`${detailOf(data, text)} (HTTP ${resp.status})`, resp.status);
  }
  return data;
}

// -- banner and connection --------------------------------------------------------------

const banner = document.getElementById("banner");
const bannerText = document.getElementById("banner-text");
let bannerSticky = false;
document.getElementById("banner-close").addEventListener("click", () => { banner.hidden = true; });

export function showError(message, { sticky = false, warn = false } = {}) {
  bannerText.textContent = message;
  banner.classList.toggle("warn", warn);
  banner.hidden = false;
  bannerSticky = sticky;
}
function clearSticky() {
  if (bannerSticky) { banner.hidden = true; bannerSticky = false; }
}
export function signedOut() {
  showError("Signed out (the daemon restarted, or the session ended): run `llama-orch ui` for a new login link.", { sticky: true });
}

const conn = document.getElementById("conn");
const connText = document.getElementById("conn-text");
export function setLive(live) {
  STATE.live = live;
  conn.classList.toggle("live", live);
  conn.classList.toggle("down", !live);
  connText.textContent = live ? "live" : "daemon unreachable, retrying";
  if (!live) showError("daemon unreachable, retrying", { sticky: true, warn: true });
  else clearSticky();
}

export function report(e) {
  if (e instanceof ApiError && e.status === 0) return; // the banner says so already
  showError(e.message || String(e));
}

let refreshTimer = null;
export function scheduleRefresh() {
  if (refreshTimer) return;
  refreshTimer = setTimeout(() => { refreshTimer = null; refresh(); }, 80);
}

export async function refresh() {
  try {
    const [instances, gateway] = await Promise.all([api("/v1/instances"), api("/v1/gateway")]);
    STATE.instances = instances;
    STATE.gateway = gateway;
    renderCurrent();
  } catch (e) { report(e); }
}

export async function refreshDevices() {
  try { STATE.devices = await api("/v1/devices"); renderCurrent(); } catch (e) { report(e); }
}

// -- commands ----------------------------------------------------------------------------

export async function command(name, verb, button) {
  const path = `/v1/instances/${encodeURIComponent(name)}/${verb}` + (verb === "start" ? "?wait=false" : "");
  button.classList.add("busy");
  button.disabled = true;
  try {
    const result = await api(path, { method: "POST" });
    if (result && result.ok === false) showError(`${name}: ${result.message}`);
  } catch (e) {
    report(e);
  } finally {
    button.classList.remove("busy");
    scheduleRefresh();
  }
}

// The daemon's groups of states, from the event stream's first message (app.js); until it
// comes every action is offered, and the daemon answers one that does not apply.
export const STATES = { alive: [], at_rest: [] };

const CAN = {
  start: (s) => !STATES.alive.includes(s),
  stop: (s) => !STATES.at_rest.includes(s),
  restart: (s) => s !== "stopping",
};

export function actionButtons(inst) {
  return ["start", "stop", "restart"].map((verb) => {
    const label = verb[0].toUpperCase() + verb.slice(1);
    const b = h("button", { type: "button", class: "btn" + (verb === "stop" ? " danger" : "") }, label);
    b.disabled = !CAN[verb](inst.status);
    b.addEventListener("click", () => command(inst.name, verb, b));
    return b;
  });
}

// -- screens -----------------------------------------------------------------------------

export function memoryOf(name) {
  const d = STATE.devices;
  if (!d) return null;
  const held = d.fit.filter((v) => v.instance === name);
  return held.length ? held.reduce((n, v) => n + v.need_mib, 0) : null;
}

export function uptimeOf(inst) {
  if (inst.status !== "running" || !inst.ready_time) return null;
  return Date.now() / 1000 - inst.ready_time;
}

