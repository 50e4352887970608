// The inspector: every HTTP call, SSE event and WebSocket frame, with timings,
// and what an injected fault (imctl chaos) did, drawn apart from real failures.

import { $, el } from "./dom.js";

/** Every HTTP call, SSE event and WebSocket frame, with timings. */
export const inspector = {
  entries: [],
  max: 1000,
  t0: performance.now(),

  /** dir: "out" | "in" | "err" | "fault"; ch: HTTP | SSE | WS | FAULT. Returns the entry. */
  add(ch, dir, summary, detail, ms) {
    if ($("insp-pause").checked) return null;
    const entry = { at: performance.now() - this.t0, ch, dir, summary, detail, ms };
    this.entries.push(entry);
    if (this.entries.length > this.max) {
      this.entries.shift();
      $("insp-list").firstChild?.remove();
    }
    if (this.matches(entry)) this.show(entry);
    return entry;
  },

  matches(e) {
    const f = $("insp-filter").value.trim().toLowerCase();
    return !f || (e.ch + " " + e.summary + " " + this.text(e.detail)).toLowerCase().includes(f);
  },

  /** JSON with tokens shortened unless "tokens" is ticked. */
  text(detail) {
    if (detail === undefined) return "";
    const reveal = $("insp-secrets").checked;
    const s = typeof detail === "string" ? detail : JSON.stringify(detail, (k, v) =>
      !reveal && typeof v === "string" && /^(token|authToken|imToken)$/.test(k) && v.length > 12
        ? v.slice(0, 6) + "…" : v, 2);
    return reveal ? s : s.replace(/([?&]token=)([^&\s"]{6})[^&\s"]*/g, "$1$2…");
  },

  show(e) {
    const arrow = { out: "→", in: "←", err: "✕", fault: "⚡" }[e.dir] || "•";
    const li = el("li", { class: e.dir },
      el("span", { class: "t", text: (e.at / 1000).toFixed(3).padStart(8) + " " }),
      el("span", { class: "ch", text: e.ch }),
      el("span", { text: arrow + " " + e.summary }),
      e.ms !== undefined ? el("span", { class: "ms", text: e.ms.toFixed(1) + " ms" }) : null);
    li.addEventListener("click", (ev) => {
      if (ev.target.tagName === "PRE") return;
      const pre = li.querySelector("pre");
      if (pre) pre.remove();
      else li.append(el("pre", { text: this.text(e.detail) }));
    });
    const list = $("insp-list");
    const atBottom = list.scrollTop + list.clientHeight >= list.scrollHeight - 30;
    list.append(li);
    if (atBottom) list.scrollTop = list.scrollHeight;
  },

  redraw() {
    $("insp-list").replaceChildren();
    for (const e of this.entries) if (this.matches(e)) this.show(e);
  },

  init() {
    $("insp-filter").addEventListener("input", () => this.redraw());
    $("insp-secrets").addEventListener("change", () => this.redraw());
    $("insp-clear").addEventListener("click", () => { this.entries = []; this.redraw(); });
    $("insp-hide").addEventListener("click", () => { $("inspector").hidden = true; $("insp-show").hidden = false; });
    $("insp-show").addEventListener("click", () => { $("inspector").hidden = false; $("insp-show").hidden = true; });
  },
};
