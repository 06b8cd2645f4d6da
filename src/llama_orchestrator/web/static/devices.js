// Devices: each device's budget as a bar split by instance, and the fit verdicts.
import { h, pill, fmtBytes } from "./ui.js";
import { STATE, refreshDevices } from "./core.js";

const COLORS = ["#3b82f6", "#10b981", "#f59e0b", "#8b5cf6", "#ef4444", "#06b6d4", "#ec4899", "#84cc16"];

// What the count is made of: the estimate, and the measured figure once there is one
// (issue 18: a measured instance counts for its peak).
const truth = (i) => i.estimate_mib == null ? "" : i.peak_mib != null
  ? `; estimate ${fmtBytes(i.estimate_mib)}, measured ${fmtBytes(i.measured_mib ?? i.peak_mib)}, peak ${fmtBytes(i.peak_mib)}`
  : `; estimate ${fmtBytes(i.estimate_mib)} + per-process overhead`;

export const devices = {
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
          `${i.name} ${fmtBytes(i.mib)} (${i.running ? "holds it" : i.state}${truth(i)})`))));
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

