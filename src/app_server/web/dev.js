// The dev dashboard: live SMS outbox, QR sessions (with phone buttons),
// connections and recent messages from GET /_dev/feed (server-sent events),
// and the injected faults (/_dev/faults). Everything is inserted as text.

import { $, el } from "./dom.js";

const PLATFORMS = { 0: "robot", 1: "iOS", 2: "Android", 3: "Windows", 4: "macOS", 5: "Web", 6: "mini-program", 7: "Linux", 8: "iPad", 9: "Android pad" };

const time = (ms) => new Date(ms).toLocaleTimeString();
const secs = (ms) => `${Math.max(0, Math.round(ms / 1000))} s`;
let snap = null;
let received = 0; // when the last snapshot arrived, for countdowns
const chosen = new Map(); // session token → user picked in its row
// { rules, injected, at }: from each snapshot, or from GET /_dev/faults right
// after a change, so a click shows at once whatever the feed's pace.
let faults = null;

function rows(id, items, render, empty) {
  const body = $(id).tBodies[0];
  body.replaceChildren(...(items.length ? items.map(render) : [el("tr", {}, el("td", { colspan: "9", class: "muted", text: empty }))]));
}

function content(m) {
  const c = m.content;
  switch (c.type) {
    case "text": return c.text;
    case "notification": return `[${c.kind}${c.members ? " " + c.members.join(", ") : ""}${c.name ? " “" + c.name + "”" : ""}]`;
    case "image": return `[image ${c.w}×${c.h}]`;
    default: return `[${c.type}]`;
  }
}

/** The toast line: red for trouble, green (ok) for a done deed. */
function toast(text, ok = false) {
  $("toast").textContent = text;
  $("toast").classList.toggle("ok", ok);
}

/** A dev API call: { ok, body } or { ok: false, error } with the server's own words. */
async function call(method, path, body) {
  try {
    const r = await fetch(path, {
      method, headers: body ? { "Content-Type": "application/json" } : {}, body: body && JSON.stringify(body),
    });
    let parsed = null;
    try { parsed = await r.json(); } catch { /* not JSON, e.g. an imctl without this route */ }
    return r.ok ? { ok: true, body: parsed } : { ok: false, error: parsed?.error || `HTTP ${r.status}` };
  } catch (e) {
    return { ok: false, error: e.message };
  }
}

/** A phone action on a QR session; answers whether it worked. */
async function act(token, action) {
  const userId = chosen.get(token) || snap.users.find((u) => u.userId !== "robot")?.userId;
  toast("");
  const r = await call("POST", `/_dev/pc_sessions/${encodeURIComponent(token)}/${action}`, { userId });
  if (!r.ok) toast(`${action} as ${userId}: ${r.error}`);
  return r.ok;
}

// A quick-login request is bound to one user: only that user's phone answers it.
function quickRow(q, ago) {
  const user = q.scanner.userId;
  chosen.set(q.token, user);
  return el("tr", { "data-token": q.token, class: "quick" },
    el("td", {}, el("code", { text: q.token.slice(0, 12) + "…", title: q.token })),
    el("td", { class: "state-" + q.status },
      el("span", { class: "badge", text: "quick login" }), ` ${q.status} ${q.statusName} · asks ${user}`),
    el("td", { text: `${q.deviceName} (${PLATFORMS[q.platform] || q.platform})` }),
    el("td", { text: secs(q.expiresInMs - ago) }),
    el("td", {}, `${user}'s phone: `,
      el("button", { type: "button", "data-action": "approve", text: "approve", onclick: () => act(q.token, "approve") }),
      el("button", { type: "button", "data-action": "cancel", text: "deny", onclick: () => act(q.token, "cancel") })));
}

/** What a rule has left: fires, time, both, or nothing until it is cleared. */
function remains(f, ago) {
  if (f.spent) return "spent";
  const left = [];
  if (f.remaining !== null && f.remaining !== undefined) left.push(`${f.remaining} fire${f.remaining === 1 ? "" : "s"}`);
  if (f.remainingMs !== null && f.remainingMs !== undefined) left.push(secs(f.remainingMs - ago));
  return left.length ? left.join(", ") + " left" : "until cleared";
}

function renderFaults() {
  const rules = faults?.rules || [];
  const injected = faults?.injected || [];
  const ago = faults ? Date.now() - faults.at : 0;
  $("fault-count").textContent = rules.filter((f) => !f.spent).length;
  // Updated in place, not rebuilt: the countdown redraws every second, and
  // a button replaced between a click's press and release loses the click.
  const list = $("fault-rules");
  const have = new Map([...list.children].map((li) => [li.dataset.id, li]));
  const items = rules.map((f) => {
    const li = have.get(String(f.id)) || el("li", { "data-id": f.id },
      el("strong", { text: `#${f.id} ` }), el("code", { text: f.rule }), el("span", { class: "muted" }),
      el("button", { type: "button", "data-action": "clear", text: "clear", onclick: () => clearFaults(f.id) }));
    li.classList.toggle("spent", f.spent);
    li.querySelector("span.muted").textContent = ` · fired ${f.fired}× · ${remains(f, ago)} `;
    return li;
  });
  if (items.length !== list.children.length || items.some((li, i) => list.children[i] !== li)) {
    list.replaceChildren(...items);
  }
  $("fault-rules-none").hidden = rules.length > 0;
  // Marked (⚡, amber) so nobody takes an injected failure for a real bug.
  $("fault-injected").replaceChildren(...injected.map((i) => el("li", { class: "injected" },
    el("span", { class: "muted", text: `⚡ ${time(i.at)} ` }), el("strong", { text: `#${i.id} ${i.kind}` }), ` ${i.detail}`)));
  $("fault-injected-none").hidden = injected.length > 0;
}

/** The rules and injections now, without waiting for the next snapshot. */
async function refreshFaults() {
  const r = await call("GET", "/_dev/faults");
  if (!r.ok || !r.body) return;
  faults = { rules: r.body.rules, injected: r.body.injected, at: Date.now() };
  renderFaults();
}

async function addRule(rule) {
  const r = await call("POST", "/_dev/faults", { rule });
  if (!r.ok) { toast(r.error); return false; }
  toast(`added rule ${r.body.id}`, true);
  refreshFaults();
  return true;
}

/** DELETE one rule (by id) or all of them. */
async function clearFaults(id) {
  const r = await call("DELETE", id === undefined ? "/_dev/faults" : `/_dev/faults/${id}`);
  if (!r.ok) toast(`clear: ${r.error}`);
  else toast(id === undefined ? `cleared ${r.body.cleared} rule${r.body.cleared === 1 ? "" : "s"}` : `cleared rule ${id}`, true);
  refreshFaults();
}

/** Not a fault: the phone cancels the newest QR session, scanning it first if nobody has. */
async function cancelNewestQr() {
  const q = snap?.pcSessions.find((s) => !s.quickLogin);
  if (!q) { toast("no QR session to cancel — open the web client to make one"); return; }
  if (q.status === 0 && !(await act(q.token, "scan"))) return;
  if (await act(q.token, "cancel")) toast(`cancelled QR ${q.token.slice(0, 12)}… on the phone`, true);
}

/** The user the quick buttons aim at; one word, since it goes into a rule. */
function faultUser() {
  const user = $("fault-user").value.trim();
  if (/^[^\s=]+$/.test(user)) return user;
  toast("the user must be one word, like bob");
  return null;
}

const QUICK = {
  "expire-qr": () => addRule("qr.expire latest"),
  "cancel-qr": cancelNewestQr,
  "drop-conn": () => { const u = faultUser(); if (u) addRule(`ws.close user=${u} code=4009`); },
  "lose-pushes": () => { const u = faultUser(); if (u) addRule(`ws.drop-pushes user=${u} for=10s`); },
  "fail-503": () => addRule("api.http path=/pc_session status=503 times=3"),
};

/** The buttons name the user they aim at. */
function labelQuick() {
  const u = $("fault-user").value.trim() || "USER";
  document.querySelector('[data-fault="drop-conn"]').textContent = `Drop ${u}'s connection`;
  document.querySelector('[data-fault="lose-pushes"]').textContent = `Lose ${u}'s pushes for 10 s`;
}

function initFaults() {
  $("fault-form").addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const rule = $("fault-rule").value.trim();
    if (!rule) { toast("type a rule, e.g. api.code path=/session_login code=18"); return; }
    if (await addRule(rule)) $("fault-rule").value = "";
  });
  for (const b of document.querySelectorAll("[data-fault]")) b.addEventListener("click", () => QUICK[b.dataset.fault]());
  $("fault-user").addEventListener("input", labelQuick);
  $("fault-clear").addEventListener("click", () => clearFaults());
  labelQuick();
  renderFaults();
  refreshFaults();
}

function render() {
  renderFaults();
  if (!snap) return;
  const s = snap.status;
  const ago = Date.now() - received;
  // In a cluster: this node, every live node with its connections, and NATS trouble.
  const c = s.cluster;
  const cluster = c ? ` · node ${c.node} of ${c.nodes.map((n) => `${n.name} (${n.connections})`).join(", ")}${c.natsConnected ? "" : " · NATS unreachable"}` : "";
  $("status").textContent = `imctl ${s.version} · pid ${s.pid} · up ${secs(s.uptimeMs + ago)} · app-server ${s.appServer} · broker ${s.wsUrl} · ${s.database || "in memory"} · ${s.users} users${cluster}`;
  const users = snap.users.filter((u) => u.userId !== "robot");
  $("qr-count").textContent = s.qrSessions;
  rows("sessions", snap.pcSessions, (q) => {
    if (q.quickLogin) return quickRow(q, ago);
    const pick = el("select", { "data-token": q.token, onchange: (e) => chosen.set(q.token, e.target.value) },
      ...users.map((u) => el("option", { value: u.userId, text: u.userId, selected: (chosen.get(q.token) || q.scanner?.userId) === u.userId })));
    if (!chosen.has(q.token) && q.scanner) chosen.set(q.token, q.scanner.userId);
    return el("tr", { "data-token": q.token },
      el("td", {}, el("code", { text: q.token.slice(0, 12) + "…", title: q.token })),
      el("td", { class: "state-" + q.status, text: `${q.status} ${q.statusName}${q.scanner ? " by " + q.scanner.userId : ""}` }),
      el("td", { text: `${q.deviceName} (${PLATFORMS[q.platform] || q.platform})` }),
      el("td", { text: secs(q.expiresInMs - ago) }),
      el("td", {}, pick,
        el("button", { type: "button", "data-action": "scan", text: "scan", onclick: () => act(q.token, "scan") }),
        el("button", { type: "button", "data-action": "approve", text: "approve", onclick: () => act(q.token, "approve") }),
        el("button", { type: "button", "data-action": "cancel", text: "cancel", onclick: () => act(q.token, "cancel") })));
  }, "no live QR sessions — open the web client to make one");
  $("sms-count").textContent = snap.sms.length;
  rows("sms", snap.sms, (m) => el("tr", {},
    el("td", { text: time(m.sentAt) }), el("td", { text: m.mobile }),
    el("td", {}, el("strong", { class: "code", text: m.code }), m.fault ? el("div", { class: "injected", text: "⚡ " + m.fault }) : null),
    el("td", { text: m.expiresAt > Date.now() ? secs(m.expiresAt - Date.now()) : "expired" })), "no SMS sent yet");
  $("conn-count").textContent = s.connections;
  rows("conns", snap.connections, (c) => el("tr", {},
    el("td", { text: c.userId }), el("td", { text: c.node ? `${c.clientId} on ${c.node}` : c.clientId }),
    el("td", { text: PLATFORMS[c.platform] || String(c.platform) }), el("td", { text: time(c.since) })), "nobody is connected");
  rows("msgs", snap.messages, (m) => el("tr", {},
    el("td", { text: time(m.serverTime) }), el("td", { text: m.msgId }), el("td", { text: m.from }),
    el("td", { text: (m.conv.type === "group" ? "#" : "") + m.conv.target }),
    el("td", { class: "text", text: content(m) })), "no messages yet");
  rows("users", snap.users, (u) => el("tr", {},
    el("td", { text: u.userId }), el("td", { text: u.displayName }), el("td", { text: u.mobile || "—" })), "no users");
}

function connect() {
  const src = new EventSource("/_dev/feed");
  src.addEventListener("snapshot", (ev) => {
    snap = JSON.parse(ev.data);
    received = Date.now();
    // Absent when empty.
    faults = { rules: snap.faults || [], injected: snap.injected || [], at: received };
    $("live").textContent = "live";
    $("live").classList.add("up");
    render();
  });
  src.onerror = () => {
    $("live").textContent = "disconnected — retrying";
    $("live").classList.remove("up");
  };
}

initFaults();
connect();
setInterval(render, 1000); // countdowns between snapshots
