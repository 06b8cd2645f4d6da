// Playground: a completion through the gateway, streamed as it comes.
import { h, clear, fmtMs } from "./ui.js";
import { STATE, ApiError, report, showError, detailOf } from "./core.js";

export const playground = {
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

