// llama-orchestrator web page: plain ES modules, fetch and EventSource; no build step.
import { h, clear, pill, fmtBytes, fmtDuration, fmtTime, fmtMs, basename, sparkline } from "./ui.js";

const STATE = { csrf: null, instances: [], gateway: null, devices: null, live: false };
const view = document.getElementById("view");
let current = { name: null, cleanup: null };

// -- API --------------------------------------------------------------------------------

class ApiError extends Error {
  constructor(message, status) { super(message); this.status = status; }
}

function detailOf(data, text) {
  if (data && typeof data === "object") {
    const d = data.detail ?? data.message ?? (data.error && data.error.message);
    if (d !== undefined) return typeof d === "string" ? d : JSON.stringify(d);
  }
  return text || "no answer";
}

async function api(path, { method = "GET", body } = {}) {
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

function showError(message, { sticky = false, warn = false } = {}) {
  bannerText.textContent = message;
  banner.classList.toggle("warn", warn);
  banner.hidden = false;
  bannerSticky = sticky;
}
function clearSticky() {
  if (bannerSticky) { banner.hidden = true; bannerSticky = false; }
}
function signedOut() {
  showError("Signed out (the daemon restarted, or the session ended): run `llama-orch ui` for a new login link.", { sticky: true });
}

const conn = document.getElementById("conn");
const connText = document.getElementById("conn-text");
function setLive(live) {
  STATE.live = live;
  conn.classList.toggle("live", live);
  conn.classList.toggle("down", !live);
  connText.textContent = live ? "live" : "daemon unreachable, retrying";
  if (!live) showError("daemon unreachable, retrying", { sticky: true, warn: true });
  else clearSticky();
}

function report(e) {
  if (e instanceof ApiError && e.status === 0) return; // the banner says so already
  showError(e.message || String(e));
}

// -- the event stream ------------------------------------------------------------------

const KINDS = ["snapshot", "state", "health", "spawned", "exit", "adopted", "start_refused",
  "log_rotated", "autostart", "not_restarted", "config", "request", "daemon"];
const listeners = new Set();
let source = null;

function connect() {
  if (source) source.close();
  source = new EventSource("/v1/events");
  source.onopen = () => { setLive(true); refresh(); };
  for (const kind of KINDS) {
    source.addEventListener(kind, (msg) => {
      let ev;
      try { ev = JSON.parse(msg.data); } catch { return; }
      for (const fn of listeners) fn(ev);
      if (kind !== "request") scheduleRefresh();
      if (kind === "start_refused") showError(`${ev.instance}: start refused: ${ev.reason}`);
    });
  }
  source.addEventListener("dropped", () => { source.close(); setTimeout(connect, 500); });
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

let refreshTimer = null;
function scheduleRefresh() {
  if (refreshTimer) return;
  refreshTimer = setTimeout(() => { refreshTimer = null; refresh(); }, 80);
}

async function refresh() {
  try {
    const [instances, gateway] = await Promise.all([api("/v1/instances"), api("/v1/gateway")]);
    STATE.instances = instances;
    STATE.gateway = gateway;
    renderCurrent();
  } catch (e) { report(e); }
}

async function refreshDevices() {
  try { STATE.devices = await api("/v1/devices"); renderCurrent(); } catch (e) { report(e); }
}

// -- commands ----------------------------------------------------------------------------

async function command(name, verb, button) {
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

const CAN = {
  start: (s) => !["running", "starting", "stopping"].includes(s),
  stop: (s) => !["stopped", "exited", "fatal"].includes(s),
  restart: (s) => s !== "stopping",
};

function actionButtons(inst) {
  return ["start", "stop", "restart"].map((verb) => {
    const label = verb[0].toUpperCase() + verb.slice(1);
    const b = h("button", { type: "button", class: "btn" + (verb === "stop" ? " danger" : "") }, label);
    b.disabled = !CAN[verb](inst.status);
    b.addEventListener("click", () => command(inst.name, verb, b));
    return b;
  });
}

// -- screens -----------------------------------------------------------------------------

function memoryOf(name) {
  const d = STATE.devices;
  if (!d) return null;
  const held = d.fit.filter((v) => v.instance === name);
  return held.length ? held.reduce((n, v) => n + v.need_mib, 0) : null;
}

function uptimeOf(inst) {
  if (inst.status !== "running" || !inst.ready_time) return null;
  return Date.now() / 1000 - inst.ready_time;
}

const screens = {};

screens.instances = {
  enter() { refreshDevices(); },
  render() {
    const rows = STATE.instances;
    const inFlight = (STATE.gateway && STATE.gateway.in_flight) || {};
    const table = h("table", { class: "instances" },
      h("thead", {}, h("tr", {},
        h("th", {}, "Name"), h("th", {}, "State"), h("th", {}, "Health"), h("th", { class: "num" }, "Port"),
        h("th", {}, "Model"), h("th", { class: "num" }, "Memory"), h("th", { class: "num" }, "Uptime"),
        h("th", { class: "num" }, "Restarts"), h("th", { class: "num" }, "In flight"), h("th", { class: "actions" }, ""))),
      h("tbody", {}, rows.map((inst) => {
        const mem = memoryOf(inst.name);
        const up = uptimeOf(inst);
        return h("tr", { "data-instance": inst.name },
          h("td", {}, h("a", { href: `#/instance/${encodeURIComponent(inst.name)}` }, inst.name)),
          h("td", { class: "state" }, pill(inst.status)),
          h("td", {}, pill(inst.health)),
          h("td", { class: "num" }, inst.port ?? "-"),
          h("td", { class: "wrap", title: inst.model || "" }, basename(inst.model) || "-"),
          h("td", { class: "num" }, mem == null ? "-" : fmtBytes(mem)),
          h("td", { class: "num uptime", "data-ready": inst.status === "running" ? inst.ready_time ?? "" : "" }, up == null ? "-" : fmtDuration(up)),
          h("td", { class: "num" }, String(inst.restart_count ?? 0)),
          h("td", { class: "num" }, String(inFlight[inst.name] ?? 0)),
          h("td", { class: "actions" }, actionButtons(inst)));
      })));
    return [
      h("div", { class: "page-head" }, h("h1", {}, "Instances"), h("span", { class: "spacer" }),
        h("span", { class: "muted" }, `${rows.filter((i) => i.status === "running").length} of ${rows.length} running`)),
      h("div", { class: "panel flush table-wrap" }, rows.length ? table
        : h("div", { class: "empty" }, "No instances yet: create one with `llama-orch create NAME --model FILE.gguf`.")),
    ];
  },
};

screens.instance = {
  data: {},
  enter(name) {
    this.name = name;
    this.data = { describe: null, events: [], health: null, logs: [] };
    const load = async () => {
      const n = encodeURIComponent(name);
      try {
        const [describe, events, health] = await Promise.all([
          api(`/v1/instances/${n}/describe`), api(`/v1/instances/${n}/events?limit=30`), api(`/v1/instances/${n}/health`)]);
        Object.assign(this.data, { describe, events, health });
        renderCurrent();
      } catch (e) { report(e); }
    };
    const logs = async () => {
      try {
        const got = await api(`/v1/instances/${encodeURIComponent(name)}/logs?tail=300`);
        this.data.logs = got.lines;
        renderLogs(this.data.logs);
      } catch (e) { if (!(e instanceof ApiError && e.status === 0)) this.data.logError = e.message; }
    };
    const checks = async () => {
      try {
        this.data.health = await api(`/v1/instances/${encodeURIComponent(name)}/health`);
        renderCurrent();
      } catch (e) { report(e); }
    };
    load(); logs();
    const onEvent = (ev) => { if (ev.instance === name && ev.kind !== "request") load(); };
    listeners.add(onEvent);
    const timer = setInterval(logs, 1500);
    const healthTimer = setInterval(checks, 2000);
    return () => { listeners.delete(onEvent); clearInterval(timer); clearInterval(healthTimer); };
  },
  render() {
    const name = this.name;
    const inst = STATE.instances.find((i) => i.name === name);
    const { describe, events, health } = this.data;
    if (!inst) return [h("div", { class: "page-head" }, h("h1", {}, name)), h("div", { class: "panel empty" }, `No instance ${name}.`)];
    const up = uptimeOf(inst);
    const status = h("dl", { class: "kv" },
      ...kv("State", pill(inst.status)), ...kv("Health", pill(inst.health)), ...kv("Desired", inst.desired),
      ...kv("Address", inst.port ? `${inst.host || "127.0.0.1"}:${inst.port}` : "-"), ...kv("PID", inst.pid ?? "-"),
      ...kv("Uptime", up == null ? "-" : fmtDuration(up)), ...kv("Restarts", String(inst.restart_count)),
      ...kv("Backend", [inst.backend, inst.device].filter((v) => v && v !== "-").join(" ") || "-"),
      ...kv("Binary", [inst.binary, inst.binary_version].filter(Boolean).join(" ") || "-"),
      ...kv("Model", inst.model || "-"), ...kv("Last error", inst.last_error || "-"));
    const checks = (health && health.checks) || [];
    const lat = checks.map((c) => c.latency_ms);
    const healthPanel = h("div", { class: "panel" }, h("h2", {}, "Health checks"),
      checks.length ? [sparkline(checks),
        h("div", { class: "spark-caption" },
          h("span", {}, `${checks.length} checks, every ${health.interval ?? "?"} s (${health.probe ?? "health"})`),
          h("span", {}, `last ${fmtMs(lat[lat.length - 1])} · max ${fmtMs(Math.max(...lat))}`))]
        : h("div", { class: "empty" }, "No health checks yet."));
    const cmd = describe ? describe.command_line || (describe.binary && describe.binary.error) || "-" : "loading...";
    const source = describe && describe.command_source === "recorded" ? "the command line that ran" : "the command line a start would run";
    return [
      h("div", { class: "page-head" }, h("a", { href: "#/instances", class: "crumb" }, "Instances"), h("span", { class: "crumb" }, "/"),
        h("h1", {}, name), pill(inst.status), h("span", { class: "spacer" }), h("div", { class: "actions" }, actionButtons(inst))),
      h("div", { class: "grid" },
        h("div", { class: "panel" }, h("h2", {}, "Status"), status),
        healthPanel),
      h("div", { class: "panel" }, h("h2", {}, "Command line ", h("span", { class: "muted" }, `(${source})`)), h("pre", { class: "block" }, cmd)),
      h("div", { class: "grid" },
        h("div", { class: "panel" }, h("h2", {}, "Config ", h("span", { class: "muted" }, "(with defaults)")),
          h("pre", { class: "block" }, describe ? JSON.stringify(describe.config, null, 2) : "loading...")),
        h("div", { class: "panel flush" }, h("h2", {}, "Recent events"), eventsTable(events))),
      h("div", { class: "panel" }, h("h2", {}, "Log ", h("span", { class: "muted" }, "(stdout and stderr, live)")),
        h("pre", { class: "block logs", id: "logs" }, "loading...")),
    ];
  },
  after() { renderLogs(this.data.logs, true); },
};

function kv(key, value) { return [h("dt", {}, key), h("dd", {}, value)]; }

function eventsTable(events) {
  if (!events || !events.length) return h("div", { class: "empty" }, "No events recorded.");
  return h("div", { class: "table-wrap" }, h("table", {},
    h("thead", {}, h("tr", {}, h("th", {}, "Time"), h("th", {}, "Kind"), h("th", {}, "Change"), h("th", {}, "Reason"))),
    h("tbody", {}, events.slice(-15).reverse().map((e) => h("tr", {},
      h("td", {}, fmtTime(e.ts)), h("td", {}, e.kind),
      h("td", {}, e.old || e.new ? `${e.old || "-"} → ${e.new || "-"}` : ""),
      h("td", { class: "wrap" }, e.reason || ""))))));
}

function renderLogs(lines, force = false) {
  const pre = document.getElementById("logs");
  if (!pre || !lines) return;
  const atBottom = pre.scrollTop + pre.clientHeight >= pre.scrollHeight - 8;
  const key = lines.length + ":" + (lines.length ? lines[lines.length - 1].ts + lines[lines.length - 1].text : "");
  if (!force && pre.dataset.key === key) return;
  pre.dataset.key = key;
  clear(pre);
  if (!lines.length) pre.append("No log lines yet.");
  for (const line of lines) {
    pre.append(h("span", { class: line.stream === "stderr" ? "" : "out" }, line.text + "\n"));
  }
  if (atBottom || force) pre.scrollTop = pre.scrollHeight;
}

screens.activity = {
  enter() {
    this.data = { in_flight: [], recent: [] };
    const load = async () => {
      try { this.data = await api("/v1/requests"); renderCurrent(); } catch (e) { report(e); }
    };
    load();
    const timer = setInterval(load, 1000);
    const onEvent = (ev) => { if (ev.kind === "request") load(); };
    listeners.add(onEvent);
    return () => { clearInterval(timer); listeners.delete(onEvent); };
  },
  render() {
    const { in_flight: flying, recent } = this.data;
    const cancel = (id, b) => async () => {
      b.disabled = true;
      try { await api(`/v1/requests/${id}/cancel`, { method: "POST" }); } catch (e) { report(e); }
    };
    const inflight = flying.length ? h("table", { class: "inflight" },
      h("thead", {}, h("tr", {}, h("th", { class: "num" }, "#"), h("th", {}, "Model"), h("th", {}, "Instance"), h("th", {}, "State"),
        h("th", {}, "Kind"), h("th", { class: "num" }, "Elapsed"), h("th", { class: "actions" }, ""))),
      h("tbody", {}, flying.map((r) => {
        const b = h("button", { type: "button", class: "btn danger" }, "Cancel");
        b.addEventListener("click", cancel(r.id, b));
        return h("tr", { "data-request": String(r.id) }, h("td", { class: "num" }, String(r.id)), h("td", {}, r.model),
          h("td", {}, r.instance || "-"), h("td", {}, pill(r.state)), h("td", {}, r.stream ? "stream" : "single"),
          h("td", { class: "num" }, fmtDuration(r.elapsed_s, true)), h("td", { class: "actions" }, b));
      }))) : h("div", { class: "empty" }, "No request in flight.");
    const rows = recent.slice(-100).reverse();
    const recentTable = rows.length ? h("table", { class: "recent" },
      h("thead", {}, h("tr", {}, h("th", {}, "Time"), h("th", {}, "Model"), h("th", {}, "Instance"), h("th", {}, "Status"),
        h("th", { class: "num" }, "TTFB"), h("th", { class: "num" }, "Duration"), h("th", { class: "num" }, "Tokens"),
        h("th", { class: "num" }, "Tokens/s"), h("th", {}, "Path"))),
      h("tbody", {}, rows.map((r) => h("tr", {}, h("td", {}, fmtTime(r.ts)), h("td", {}, r.model || "-"), h("td", {}, r.instance || "-"),
        h("td", { title: r.error || "" }, pill(String(r.status), r.status >= 500 ? "s5xx" : r.status >= 400 ? "s4xx" : "ok")),
        h("td", { class: "num" }, r.ttfb_s == null ? "-" : fmtMs(r.ttfb_s * 1000)),
        h("td", { class: "num" }, fmtMs(r.duration_s * 1000)),
        h("td", { class: "num" }, r.completion_tokens == null ? "-" : String(r.completion_tokens)),
        h("td", { class: "num" }, r.tokens_per_s == null ? "-" : r.tokens_per_s.toFixed(1)),
        h("td", { class: "mono" }, r.path))))) : h("div", { class: "empty" }, "No requests since the daemon started.");
    return [
      h("div", { class: "page-head" }, h("h1", {}, "Activity"), h("span", { class: "spacer" }),
        h("span", { class: "muted" }, this.data.listening === false ? "the gateway is not listening" : "through the gateway")),
      h("div", { class: "panel flush table-wrap" }, h("h2", {}, "In flight"), inflight),
      h("div", { class: "panel flush table-wrap" }, h("h2", {}, "Recent"), recentTable),
    ];
  },
};

const COLORS = ["#3b82f6", "#10b981", "#f59e0b", "#8b5cf6", "#ef4444", "#06b6d4", "#ec4899", "#84cc16"];

screens.devices = {
  enter() {
    refreshDevices();
    const timer = setInterval(refreshDevices, 5000);
    return () => clearInterval(timer);
  },
  render() {
    const d = STATE.devices;
    if (!d) return [h("div", { class: "page-head" }, h("h1", {}, "Devices")), h("div", { class: "panel empty" }, "Loading...")];
    const names = [...new Set(d.devices.flatMap((dev) => dev.instances.map((i) => i.name)))].sort();
    const color = (n) => COLORS[names.indexOf(n) % COLORS.length];
    const cards = d.devices.map((dev) => {
      const held = dev.instances.filter((i) => i.running);
      const total = dev.budget_mib ?? (dev.free_mib != null ? dev.free_mib + dev.used_mib : Math.max(dev.used_mib, 1));
      const segs = held.map((i) => {
        const share = Math.min(100, (i.mib / total) * 100);
        return h("div", { class: "seg", style: `width:${share}%;background:${color(i.name)}`, title: `${i.name}: ${i.mib} MiB`, "data-name": i.name },
          share >= 8 ? i.name : "");
      });
      const left = Math.max(0, total - dev.used_mib);
      if (left > 0) segs.push(h("div", { class: "seg free", style: `width:${(left / total) * 100}%` }, `${fmtBytes(left)} left`));
      const figures = [dev.budget_mib != null ? `budget ${fmtBytes(dev.budget_mib)}` : "no budget set",
        `held ${fmtBytes(dev.used_mib)}`, dev.free_mib != null ? `free ${fmtBytes(dev.free_mib)}` : "free memory unknown"].join(" · ");
      return h("div", { class: "panel device", "data-device": dev.device },
        h("div", { class: "device-head" }, h("h2", {}, dev.device), h("span", { class: "figures" }, figures)),
        h("div", { class: "bar", role: "img", "aria-label": `${dev.device}: ${figures}` }, segs),
        h("div", { class: "legend" }, dev.instances.map((i) => h("span", {}, h("span", { class: "sw", style: `background:${color(i.name)}` }),
          `${i.name} ${fmtBytes(i.mib)} (${i.running ? "holds it" : i.state})`))));
    });
    const fit = d.fit.length ? h("table", {},
      h("thead", {}, h("tr", {}, h("th", {}, "Instance"), h("th", {}, "Device"), h("th", { class: "num" }, "Needs"), h("th", {}, "Verdict"), h("th", {}, "Why"))),
      h("tbody", {}, d.fit.map((v) => h("tr", {}, h("td", {}, v.instance), h("td", {}, v.device), h("td", { class: "num" }, fmtBytes(v.need_mib)),
        h("td", {}, pill(v.verdict, v.verdict.replace(/ /g, "-"))), h("td", { class: "wrap" }, v.reason)))))
      : h("div", { class: "empty" }, "No instance with a readable model.");
    return [
      h("div", { class: "page-head" }, h("h1", {}, "Devices"), h("span", { class: "spacer" }),
        h("span", { class: "muted" }, `${d.running} running` + (d.max_running != null ? ` of at most ${d.max_running}` : ""))),
      cards.length ? cards : h("div", { class: "panel empty" }, "No device budgets and no instance estimates."),
      h("div", { class: "panel flush table-wrap" }, h("h2", {}, "Fit"), fit),
    ];
  },
};

screens.playground = {
  built: null,
  enter() { return () => { if (this.abort) this.abort.abort(); }; },
  render() {
    if (!this.built) this.built = buildPlayground(this);
    const select = this.built.querySelector("#pg-model");
    const routes = Object.keys((STATE.gateway && STATE.gateway.routes) || {});
    const have = [...select.options].map((o) => o.value);
    if (have.join() !== routes.join()) {
      const keep = select.value;
      clear(select);
      for (const r of routes) select.append(h("option", { value: r }, r));
      if (routes.includes(keep)) select.value = keep;
    }
    const note = this.built.querySelector("#pg-note");
    note.textContent = STATE.gateway && !STATE.gateway.listening ? `The gateway is not listening: ${STATE.gateway.reason || STATE.gateway.error || "see llama-orch gateway status"}` : "";
    return [this.built];
  },
};

function buildPlayground(screen) {
  const output = h("pre", { class: "block output", id: "pg-output", "aria-label": "Output" });
  const stats = h("span", { class: "stats", id: "pg-stats" });
  const send = h("button", { type: "button", class: "btn primary", id: "pg-send" }, "Send");
  const stop = h("button", { type: "button", class: "btn", id: "pg-stop", disabled: "" }, "Stop");
  const root = h("div", {},
    h("div", { class: "page-head" }, h("h1", {}, "Playground"), h("span", { class: "spacer" }), h("span", { class: "muted", id: "pg-note" })),
    h("div", { class: "panel" },
      h("div", { class: "form-row" },
        h("div", {}, h("label", { for: "pg-model" }, "Model"), h("select", { id: "pg-model" })),
        h("div", {}, h("label", { for: "pg-max" }, "Max tokens"), h("input", { id: "pg-max", type: "number", min: "1", max: "32768", value: "128" })),
        h("div", {}, h("label", { for: "pg-temp" }, "Temperature"), h("input", { id: "pg-temp", type: "number", min: "0", max: "10", step: "0.1", placeholder: "server default" }))),
      h("label", { for: "pg-prompt" }, "Prompt"),
      h("textarea", { id: "pg-prompt", rows: "4", placeholder: "Once upon a time" }),
      h("details", {}, h("summary", { class: "muted" }, "Extra parameters (JSON)"),
        h("textarea", { id: "pg-extra", rows: "2", placeholder: '{"top_k": 40}' })),
      h("div", { class: "form-actions" }, send, stop, h("label", { class: "muted" }, h("input", { id: "pg-chat", type: "checkbox", style: "width:auto;margin-right:6px" }), "chat"), stats)),
    h("div", { class: "panel" }, h("h2", {}, "Output"), output));
  send.addEventListener("click", () => runPlayground(screen, root, send, stop, output, stats));
  stop.addEventListener("click", () => { if (screen.abort) screen.abort.abort(); });
  return root;
}

async function runPlayground(screen, root, send, stop, output, stats) {
  const model = root.querySelector("#pg-model").value;
  const prompt = root.querySelector("#pg-prompt").value;
  const temp = root.querySelector("#pg-temp").value;
  let extra = {};
  const extraText = root.querySelector("#pg-extra").value.trim();
  if (extraText) {
    try { extra = JSON.parse(extraText); } catch (e) { showError(`Extra parameters are not valid JSON: ${e.message}`); return; }
  }
  if (!model) { showError("No model to send to: create an instance first."); return; }
  const body = { model, prompt, max_tokens: Number(root.querySelector("#pg-max").value) || 128, extra, chat: root.querySelector("#pg-chat").checked };
  if (temp !== "") body.temperature = Number(temp);
  screen.abort = new AbortController();
  send.disabled = true; stop.disabled = false;
  clear(output); output.dataset.done = "";
  const started = performance.now();
  let first = null, pieces = 0;
  const tick = () => {
    const secs = (performance.now() - started) / 1000;
    const rate = first != null && pieces > 1 ? ` · ${(pieces / ((performance.now() - first) / 1000)).toFixed(1)} tokens/s` : "";
    stats.textContent = `${pieces} tokens · ${secs.toFixed(1)} s` + (first != null ? ` · first token ${fmtMs(first - started)}` : "") + rate;
  };
  try {
    const resp = await fetch("/v1/playground", { method: "POST", credentials: "same-origin", signal: screen.abort.signal,
      headers: { "Content-Type": "application/json", "X-CSRF-Token": STATE.csrf || "" }, body: JSON.stringify(body) });
    if (!resp.ok) {
      const text = await resp.text();
      let data = null; try { data = JSON.parse(text); } catch { /* text */ }
      throw new ApiError(`${detailOf(data, text)} (HTTP ${resp.status})`, resp.status);
    }
    const reader = resp.body.getReader();
    const decoder = new TextDecoder();
    let buf = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buf += decoder.decode(value, { stream: true });
      let cut;
      while ((cut = buf.indexOf("\n\n")) >= 0) {
        const block = buf.slice(0, cut); buf = buf.slice(cut + 2);
        for (const line of block.split("\n")) {
          if (!line.startsWith("data:")) continue;
          const data = line.slice(5).trim();
          if (data === "[DONE]") continue;
          let chunk; try { chunk = JSON.parse(data); } catch { continue; }
          if (chunk.error) throw new ApiError(chunk.error.message || JSON.stringify(chunk.error), 502);
          const c = chunk.choices && chunk.choices[0];
          const text = c ? (c.text ?? (c.delta && c.delta.content) ?? "") : "";
          if (text) { if (first == null) first = performance.now(); pieces += 1; output.append(text); output.scrollTop = output.scrollHeight; }
        }
      }
      tick();
    }
    output.dataset.done = "1";
    tick();
  } catch (e) {
    if (e.name === "AbortError") stats.textContent += " · stopped";
    else report(e instanceof TypeError ? new ApiError("daemon unreachable, retrying", 0) : e);
  } finally {
    send.disabled = false; stop.disabled = true; screen.abort = null;
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
  renderCurrent();
}

function renderCurrent() {
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
