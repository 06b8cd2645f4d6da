// llama-orchestrator web page: plain ES modules, fetch and EventSource; no build step.
import { h, clear, fmtDuration } from "./ui.js";
import { STATE, STATES, ApiError, api, setLive, showError, listeners, scheduleRefresh, refresh, report, onRedraw } from "./core.js";
import { instances, instance } from "./instances.js";
import { activity } from "./activity.js";
import { devices } from "./devices.js";
import { playground } from "./playground.js";

const view = document.getElementById("view");
const screens = { instances, instance, activity, devices, playground };
let current = { name: null, cleanup: null };

// -- the event stream ------------------------------------------------------------------

// The stream names every kind it sends in its first message (`hello`, asked for with
// ?hello=1); all are events for the screens but these: the endings (handled below) and
// log lines (only an instance's log view asks for them, on a stream of its own).
const NOT_EVENTS = ["dropped", "end", "log"];
let source = null;

function listen(src, kind) {
  src.addEventListener(kind, (msg) => {
    let ev;
    try { ev = JSON.parse(msg.data); } catch { return; }
    for (const fn of listeners) fn(ev);
    if (kind !== "request") scheduleRefresh();
    if (kind === "start_refused") showError(`${ev.instance}: start refused: ${ev.reason}`);
  });
}

function connect() {
  if (source) source.close();
  const src = new EventSource("/v1/events?hello=1");
  source = src;
  src.onopen = () => { setLive(true); refresh(); };
  // Listeners added while the first message is handled see every message after it.
  src.addEventListener("hello", (msg) => {
    let hello;
    try { hello = JSON.parse(msg.data); } catch { return; }
    Object.assign(STATES, hello.states || {});
    for (const kind of hello.kinds || []) if (!NOT_EVENTS.includes(kind)) listen(src, kind);
    scheduleRefresh();
  });
  src.addEventListener("dropped", () => { source.close(); setTimeout(connect, 500); });
  source.addEventListener("end", () => { source.close(); setLive(false); setTimeout(connect, 1000); });
  source.onerror = () => {
    setLive(false);
    if (source.readyState === EventSource.CLOSED) setTimeout(probe, 2000);
  };
}

async function probe() {
  try {
    await api("/v1/ui/session");
    connect();
  } catch (e) {
    if (!(e instanceof ApiError) || e.status !== 401) setTimeout(probe, 2000);
  }
}

// -- routing -------------------------------------------------------------------------------

function route() {
  const parts = (location.hash.replace(/^#\/?/, "") || "instances").split("/");
  const name = screens[parts[0]] ? parts[0] : "instances";
  const arg = parts[1] ? decodeURIComponent(parts[1]) : null;
  if (current.cleanup) current.cleanup();
  current = { name, arg, cleanup: null };
  for (const a of document.querySelectorAll(".tabs a")) {
    a.classList.toggle("active", a.dataset.tab === name || (name === "instance" && a.dataset.tab === "instances"));
  }
  const c = screens[name].enter && screens[name].enter(arg);
  current.cleanup = typeof c === "function" ? c : null;
  draw();
}

function draw() {
  const screen = screens[current.name];
  if (!screen) return;
  const focused = document.activeElement && document.activeElement.id;
  let nodes;
  try { nodes = screen.render(); } catch (e) { nodes = [h("div", { class: "panel" }, `This screen failed to draw: ${e.message}`)]; }
  const flat = [nodes].flat(2);
  if (!(flat.length === 1 && view.childNodes.length === 1 && view.firstChild === flat[0])) {
    clear(view);
    view.append(...flat);
  }
  if (screen.after) screen.after();
  if (focused) { const el = document.getElementById(focused); if (el) el.focus(); }
  document.title = `${current.arg || current.name[0].toUpperCase() + current.name.slice(1)} - llama-orchestrator`;
}

// the uptime cells tick without a fetch
setInterval(() => {
  for (const td of document.querySelectorAll("td.uptime[data-ready]")) {
    const ready = Number(td.dataset.ready);
    if (ready) td.textContent = fmtDuration(Date.now() / 1000 - ready);
  }
}, 1000);

document.getElementById("signout").addEventListener("click", async () => {
  try {
    await api("/v1/ui/logout", { method: "POST" });
    if (source) source.close();
    location.assign("/ui/");
  } catch (e) { report(e); }
});

onRedraw(draw);
window.addEventListener("hashchange", route);

async function main() {
  try {
    const s = await api("/v1/ui/session");
    STATE.csrf = s.csrf;
  } catch (e) { report(e); }
  route();
  connect();
}
main();
