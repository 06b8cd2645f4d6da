// The Instances table and the Instance screen.
import { h, clear, pill, fmtBytes, fmtDuration, fmtTime, fmtMs, basename, sparkline } from "./ui.js";
import { STATE, ApiError, api, report, renderCurrent, listeners, refreshDevices, actionButtons, memoryOf, uptimeOf } from "./core.js";

export const instances = {
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

const LOG_TAIL = 300; // lines shown at first
const LOG_KEPT = 1000; // lines kept as more arrive
const REMOTE_LOG = "a remote instance: its server's log is on the machine that runs it";

export const instance = {
  data: {},
  enter(name) {
    this.name = name;
    this.data = { describe: null, events: [], health: null, logs: [], logSeq: 0 };
    const load = async () => {
      const n = encodeURIComponent(name);
      try {
        const [describe, events, health] = await Promise.all([
          api(`/v1/instances/${n}/describe`), api(`/v1/instances/${n}/events?limit=30`), api(`/v1/instances/${n}/health`)]);
        Object.assign(this.data, { describe, events, health });
        renderCurrent();
      } catch (e) { report(e); }
    };
    // the log tail: the last lines, then each line as it is written (GET /v1/events?logs=)
    const n = encodeURIComponent(name);
    const logSource = new EventSource(`/v1/events?logs=${n}&tail=${LOG_TAIL}&kinds=log&instance=${n}`);
    let pending = false;
    logSource.addEventListener("log", (msg) => {
      let ev;
      try { ev = JSON.parse(msg.data); } catch { return; }
      const lines = this.data.logs;
      lines.push({ stream: ev.stream, text: ev.line });
      if (lines.length > LOG_KEPT) lines.splice(0, lines.length - LOG_KEPT);
      this.data.logSeq += 1;
      if (!pending) {
        pending = true;
        requestAnimationFrame(() => { pending = false; renderLogs(this.data); });
      }
    });
    const checks = async () => {
      try {
        this.data.health = await api(`/v1/instances/${encodeURIComponent(name)}/health`);
        renderCurrent();
      } catch (e) { report(e); }
    };
    load();
    const onEvent = (ev) => { if (ev.instance === name && ev.kind !== "request") load(); };
    listeners.add(onEvent);
    const healthTimer = setInterval(checks, 2000);
    return () => { listeners.delete(onEvent); logSource.close(); clearInterval(healthTimer); };
  },
  render() {
    const name = this.name;
    const inst = STATE.instances.find((i) => i.name === name);
    const { describe, events, health } = this.data;
    // a remote instance's server runs elsewhere: its log is not the daemon's to show
    this.data.remote = inst ? inst.backend === "remote" || Boolean(describe && describe.remote) : false;
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
    const remote = describe && describe.remote;
    if (remote) {  // where it routes, and its key's variable (never the key)
      const key = remote.api_key_env ? `${remote.api_key_env} (${remote.api_key_set ? "set" : "not set"} in the daemon's environment)` : "none";
      status.append(...kv("Remote", remote.url), ...kv("API key", key));
    }
    const cmd = remote ? `nothing runs here: requests go to ${remote.url}`
      : describe ? describe.command_line || (describe.binary && describe.binary.error) || "-" : "loading...";
    const source = remote ? "remote" : describe && describe.command_source === "recorded" ? "the command line that ran" : "the command line a start would run";
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
      h("div", { class: "panel" }, h("h2", {}, "Log ", h("span", { class: "muted" }, this.data.remote ? "(remote)" : "(stdout and stderr, live)")),
        h("pre", { class: "block logs", id: "logs" }, "loading...")),
    ];
  },
  after() { renderLogs(this.data, true); },
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

// The log panel is drawn again with the screen; where the reader had scrolled is kept.
function renderLogs(data, fresh = false) {
  const pre = document.getElementById("logs");
  if (!pre) return;
  if (fresh) {
    pre.addEventListener("scroll", () => {
      data.stick = pre.scrollTop + pre.clientHeight >= pre.scrollHeight - 8;
      data.scroll = pre.scrollTop;
    });
  } else if (pre.dataset.seq === String(data.logSeq)) return;
  pre.dataset.seq = String(data.logSeq);
  clear(pre);
  if (data.remote) pre.append(REMOTE_LOG + (data.logs.length ? "\n" : ""));
  else if (!data.logs.length) pre.append("No log lines yet.");
  for (const line of data.logs) {
    pre.append(h("span", { class: line.stream }, line.text + "\n"));
  }
  if (data.stick === false) pre.scrollTop = data.scroll;
  else pre.scrollTop = pre.scrollHeight;
}
