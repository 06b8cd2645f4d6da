// Activity: the gateway's requests in flight (with Cancel) and the recent ones.
import { h, pill, fmtDuration, fmtTime, fmtMs } from "./ui.js";
import { api, report, renderCurrent, listeners } from "./core.js";

export const activity = {
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

