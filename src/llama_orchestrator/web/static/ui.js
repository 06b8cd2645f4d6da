// Small DOM and formatting functions. Text always goes in as text nodes, never as HTML:
// instance names, log lines and model output are shown, not interpreted.

const SVG = "http://www.w3.org/2000/svg";

export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k === "style") { el.style.cssText = v; continue; } // CSSOM: allowed by the page's CSP
    el.setAttribute(k, v === true ? "" : String(v));
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const c of children.flat(3)) {
    if (c === null || c === undefined || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
}

export function clear(el) {
  while (el.firstChild) el.removeChild(el.firstChild);
}

export function pill(text, cls) {
  const value = String(text ?? "unknown");
  return h("span", { class: `pill ${cls || value.toLowerCase()}` }, value);
}

export function fmtBytes(mib) {
  if (mib == null) return "-";
  return mib >= 1024 ? `${(mib / 1024).toFixed(1)} GiB` : `${Math.round(mib)} MiB`;
}

export function fmtDuration(s, fine = false) {
  if (s == null || !isFinite(s)) return "-";
  if (s < 0) s = 0;
  if (fine && s < 60) return `${s.toFixed(1)} s`;
  if (s < 60) return `${Math.floor(s)}s`;
  if (s < 3600) return `${Math.floor(s / 60)}m ${Math.floor(s % 60)}s`;
  if (s < 86400) return `${Math.floor(s / 3600)}h ${Math.floor((s % 3600) / 60)}m`;
  return `${Math.floor(s / 86400)}d ${Math.floor((s % 86400) / 3600)}h`;
}

export function fmtMs(ms) {
  if (ms == null || !isFinite(ms)) return "-";
  return ms >= 1000 ? `${(ms / 1000).toFixed(2)} s` : `${ms < 10 ? ms.toFixed(1) : Math.round(ms)} ms`;
}

export function fmtTime(ts) {
  if (!ts) return "-";
  const d = new Date(ts * 1000);
  const pad = (n) => String(n).padStart(2, "0");
  return `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
}

export function basename(path) {
  if (!path) return "";
  const parts = String(path).split(/[\\/]/);
  return parts[parts.length - 1];
}

function svg(tag, attrs) {
  const el = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, String(v));
  return el;
}

// The health checks' latencies as an inline SVG line; failed checks are red dots.
export function sparkline(checks) {
  const w = 300, hgt = 60, pad = 4;
  const lat = checks.map((c) => Number(c.latency_ms) || 0);
  const max = Math.max(...lat, 1) * 1.25; // headroom: the line never sits on the top edge
  const step = lat.length > 1 ? (w - 2 * pad) / (lat.length - 1) : 0;
  const pts = lat.map((v, i) => [pad + i * step, hgt - pad - (v / max) * (hgt - 2 * pad)]);
  const root = svg("svg", { class: "spark", viewBox: `0 0 ${w} ${hgt}`, preserveAspectRatio: "none", role: "img",
    "aria-label": `health check latency, last ${lat.length} checks, max ${Math.max(...lat).toFixed(1)} ms` });
  const line = pts.map(([x, y]) => `${x.toFixed(1)},${y.toFixed(1)}`).join(" ");
  if (pts.length > 1) {
    root.append(svg("polygon", { class: "area", points: `${pad},${hgt - pad} ${line} ${pts[pts.length - 1][0]},${hgt - pad}` }));
  }
  root.append(svg("polyline", { points: pts.length > 1 ? line : `${pad},${pts[0][1]} ${w - pad},${pts[0][1]}` }));
  checks.forEach((c, i) => {
    if (!c.ok) root.append(svg("circle", { class: "bad", cx: pts[i][0], cy: pts[i][1], r: 2.5 }));
  });
  return root;
}
