// imctl's built-in web client: the Wildfire-style web QR login, then chat over
// imctl's WebSocket protocol (docs/PROTOCOL.md). Only public APIs are used, so
// this file doubles as an example to copy. Everything a peer controls (text,
// names, URLs) is inserted with textContent or checked attributes, never HTML.
"use strict";

const PLATFORM_WEB = 5;
const PHONE_PLATFORM = 2; // the simulated phone is an Android

// ---------------------------------------------------------------- helpers

/** Only http(s) and same-origin paths may become src/href. */
function safeUrl(url) {
  if (typeof url !== "string") return null;
  if (/^https?:\/\//i.test(url)) return url;
  if (url.startsWith("/") && !url.startsWith("//")) return url;
  return null;
}

function randomId() {
  if (crypto.randomUUID) return crypto.randomUUID();
  const b = crypto.getRandomValues(new Uint8Array(16));
  return Array.from(b, (x) => x.toString(16).padStart(2, "0")).join("");
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const clock = (ms) => new Date(ms).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });

const store = {
  get(key) { try { return JSON.parse(localStorage.getItem("imctl." + key)); } catch { return null; } },
  set(key, value) { localStorage.setItem("imctl." + key, JSON.stringify(value)); },
  del(key) { localStorage.removeItem("imctl." + key); },
};

// ---------------------------------------------------------------- inspector

/** Every HTTP call, SSE event and WebSocket frame, with timings. */
const inspector = {
  entries: [],
  max: 1000,
  t0: performance.now(),

  /** dir: "out" | "in" | "err"; ch: HTTP | SSE | WS. Returns the entry. */
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
    const arrow = { out: "→", in: "←", err: "✕" }[e.dir] || "•";
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

/**
 * One HTTP call, recorded in the inspector (and in `log` if given).
 * Answers { status, body, authToken, ms }; throws only when the network fails.
 */
async function http(method, path, { body, auth, raw, contentType, log, signal } = {}) {
  const headers = {};
  if (auth) headers.authToken = auth;
  let payload;
  if (raw !== undefined) { payload = raw; headers["Content-Type"] = contentType; }
  else if (body !== undefined) { payload = JSON.stringify(body); headers["Content-Type"] = "application/json"; }
  const shown = raw !== undefined ? `<${raw.size} bytes of ${contentType}>` : body;
  inspector.add("HTTP", "out", `${method} ${path}`, { headers: auth ? { authToken: auth } : undefined, body: shown });
  const started = performance.now();
  let r;
  try {
    r = await fetch(path, { method, headers, body: payload, signal });
  } catch (e) {
    const ms = performance.now() - started;
    if (e.name === "AbortError") { inspector.add("HTTP", "err", `${method} ${path}: abandoned (new QR)`, undefined, ms); throw e; }
    inspector.add("HTTP", "err", `${method} ${path}: ${e.message}`, undefined, ms);
    log?.(`${method} ${path} → network error: ${e.message}`, true);
    throw e;
  }
  const text = await r.text();
  const ms = performance.now() - started;
  let parsed = text;
  try { parsed = JSON.parse(text); } catch { /* not JSON: keep the text */ }
  const authToken = r.headers.get("authToken") || undefined;
  const code = parsed && typeof parsed === "object" && "code" in parsed ? ` code ${parsed.code}` : "";
  const bad = !r.ok || (code && parsed.code !== 0 && parsed.code !== 9);
  inspector.add("HTTP", bad ? "err" : "in", `${r.status}${code} ${method} ${path}`,
    { headers: authToken ? { authToken } : undefined, body: parsed }, ms);
  log?.(`${method} ${path} ${body ? JSON.stringify(body) : ""} → HTTP ${r.status}${code} (${ms.toFixed(0)} ms)`, bad);
  return { status: r.status, body: parsed, authToken, ms };
}

// ---------------------------------------------------------------- session

const clientId = store.get("clientId") || "web-" + randomId().slice(0, 12);
store.set("clientId", clientId);

/** What a login leaves behind: { userId, imToken, authToken, userName, portrait, routeUrl }. */
let creds = store.get("creds");

function show(view) {
  $("login").hidden = view !== "login";
  $("chat").hidden = view !== "chat";
}

// ---------------------------------------------------------------- QR login

const login = {
  gen: 0, // bumps whenever a new QR replaces the old one; stale waiters stop
  token: null,
  expiresAt: 0,
  refreshTimer: null,
  tickTimer: null,
  source: null,
  scanned: false,
  abort: null, // cancels the abandoned QR's long poll, so polls never pile up

  say(text) { $("login-state").textContent = text; },

  async start(note) {
    show("login");
    const gen = ++this.gen;
    this.stopWatching();
    this.scanned = false;
    $("scanner").replaceChildren();
    $("qr").classList.add("stale");
    $("phone-decide").hidden = true;
    this.say(note || "asking for a QR code…");
    let r;
    try {
      r = await http("POST", "/pc_session", {
        body: { clientId, platform: PLATFORM_WEB, device_name: browserName() },
      });
    } catch {
      this.say("the app-server does not answer; retrying…");
      await sleep(2000);
      if (gen === this.gen) this.start(note);
      return;
    }
    if (gen !== this.gen) return;
    if (r.body.code !== 0) { this.say("could not create a QR session: " + r.body.message); return; }
    const s = r.body.result;
    this.token = s.token;
    this.expiresAt = Date.now() + s.expired;
    const img = el("img", { alt: "login QR code", src: `/pc_session/${encodeURIComponent(s.token)}/qr.svg` });
    $("qr").replaceChildren(img);
    $("qr").classList.remove("stale");
    $("qr").dataset.token = s.token;
    $("qr").dataset.qrText = s.qrText || "";
    $("qr-token").textContent = s.token;
    $("simulate-cmd").textContent = `imctl simulate approve ${s.token} --as alice`;
    this.say(note ? note + " — waiting for scan" : "waiting for scan");
    // A fresh QR shortly before this one expires, unless someone is confirming.
    const refreshIn = Math.max(5000, s.expired - 30000);
    this.refreshTimer = setTimeout(() => { if (!this.scanned && gen === this.gen) this.start("QR refreshed"); }, refreshIn);
    this.tickTimer = setInterval(() => this.tick(), 1000);
    this.tick();
    if (window.EventSource && !new URLSearchParams(location.search).has("longpoll")) this.watchEvents(gen, s.token);
    else this.longPoll(gen, s.token);
  },

  tick() {
    const left = Math.max(0, Math.round((this.expiresAt - Date.now()) / 1000));
    const how = this.source ? "server-sent events" : "long poll";
    $("qr-meta").textContent = `expires in ${Math.floor(left / 60)}:${String(left % 60).padStart(2, "0")} · waiting by ${how}`;
  },

  stopWatching() {
    clearTimeout(this.refreshTimer);
    clearInterval(this.tickTimer);
    if (this.source) { this.source.close(); this.source = null; }
    this.abort?.abort();
    this.abort = new AbortController();
  },

  /** GET /pc_session/{token}/events; falls back to the long poll if it fails. */
  watchEvents(gen, token) {
    const path = `/pc_session/${encodeURIComponent(token)}/events`;
    inspector.add("SSE", "out", `GET ${path}`);
    const src = new EventSource(path);
    this.source = src;
    let ended = false;
    const on = (name, fn) => src.addEventListener(name, (ev) => {
      if (gen !== this.gen) { src.close(); return; }
      let data;
      try { data = JSON.parse(ev.data); } catch { data = ev.data; }
      inspector.add("SSE", name === "error" ? "err" : "in", `event: ${name}`, data);
      fn(data);
    });
    const end = () => { ended = true; src.close(); if (this.source === src) this.source = null; };
    on("status", (d) => { if (d.scanner) this.onScanned(d.scanner); });
    on("scanned", (d) => this.onScanned(d.result));
    on("confirmed", (d) => { end(); this.onConfirmed(gen, d.result, d.authToken); });
    on("cancelled", () => { end(); this.start("cancelled on the phone — new QR"); });
    on("expired", () => { end(); this.start("QR expired — new QR"); });
    on("shutdown", () => { end(); this.retryLater(gen, token, "the server is restarting"); });
    on("failed", (d) => { end(); this.failed(d.message); });
    src.onerror = () => {
      // A plain error (no event data): the stream broke or never opened.
      if (ended || gen !== this.gen) return;
      end();
      inspector.add("SSE", "err", "stream failed; falling back to the long poll");
      this.longPoll(gen, token);
    };
    this.tick();
  },

  async retryLater(gen, token, why) {
    this.say(why + "; retrying…");
    await sleep(2000);
    if (gen === this.gen) this.longPoll(gen, token);
  },

  /** POST /session_login/{token}, again after each answer. */
  async longPoll(gen, token) {
    this.tick();
    while (gen === this.gen) {
      let r;
      try {
        r = await http("POST", "/session_login/" + encodeURIComponent(token), { signal: this.abort.signal });
      } catch (e) {
        if (e.name === "AbortError" || gen !== this.gen) return;
        this.say("the app-server does not answer; retrying…");
        await sleep(2000);
        continue;
      }
      if (gen !== this.gen) return;
      const { code, result } = r.body;
      if (code === 9) this.onScanned(result);
      else if (code === 0) return this.onConfirmed(gen, result, r.authToken);
      else if (code === 8 && result) continue; // only the poll timed out
      else if (code === 15) await sleep(1000); // another waiter still holds the slot
      else if (code === 18) return this.start("cancelled on the phone — new QR");
      else if (code === 8) return this.start("QR expired — new QR");
      else return this.failed(r.body.message); // e.g. 13: the scanning user is banned
    }
  },

  /** The login was refused after the confirm: say why, and let a person retry. */
  failed(message) {
    this.stopWatching();
    $("qr").classList.add("stale");
    this.say("login failed: " + message + " — press New QR to try again");
  },

  onScanned(who) {
    this.scanned = true;
    this.say("scanned — confirm on your phone");
    const pic = safeUrl(who.portrait);
    $("scanner").replaceChildren(
      pic ? el("img", { src: pic, alt: "" }) : "",
      el("span", {}, el("strong", { text: who.userName || who.userId }), " scanned this code"));
  },

  onConfirmed(gen, result, authToken) {
    if (gen !== this.gen) return;
    this.stopWatching();
    this.say("confirmed — connecting…");
    creds = {
      userId: result.userId, imToken: result.token, authToken: authToken || "",
      userName: result.userName || result.userId, portrait: result.portrait, routeUrl: result.routeUrl,
    };
    store.set("creds", creds);
    chat.start();
  },
};

function browserName() {
  const ua = navigator.userAgent;
  const name = /Edg\//.test(ua) ? "Edge" : /Chrome\//.test(ua) ? "Chrome" : /Firefox\//.test(ua) ? "Firefox" : /Safari\//.test(ua) ? "Safari" : "Browser";
  return `${name} (imctl web client)`;
}

// ---------------------------------------------------------------- simulated phone

/** The mobile app, played by HTTP calls: SMS login, then scan and confirm. */
const phone = {
  users: [],
  pending: null, // { user, authToken } after a scan-only

  log(text, bad) {
    $("phone-log").append(el("li", { class: bad ? "bad" : undefined, text }));
  },

  async loadUsers() {
    let r;
    try { r = await http("GET", "/_dev/users"); } catch { return; }
    if (!Array.isArray(r.body)) return;
    this.users = r.body.filter((u) => u.mobile);
    $("phone-users").replaceChildren(...this.users.map((u) => {
      const pic = safeUrl(u.portrait);
      return el("button", { type: "button", "data-user": u.userId, title: `approve as ${u.userId} (${u.mobile})`, onclick: () => this.approve(u) },
        pic ? el("img", { src: pic, alt: "" }) : null, el("span", { text: u.displayName }), el("span", { class: "muted", text: u.userId }));
    }));
  },

  /** The phone's own login (an authToken), kept per user like the real app keeps it. */
  async authToken(user, log, fresh) {
    const saved = store.get("phone." + user.userId);
    if (saved && !fresh) return saved;
    const since = Date.now() - 1000;
    const sent = await http("POST", "/send_code", { body: { mobile: user.mobile }, log });
    let code;
    if (sent.body.code === 0 || sent.body.code === 3) {
      // Code 3: one was sent moments ago; the outbox still has it.
      const q = sent.body.code === 0 ? `&wait=10&since=${since}` : "";
      const box = await http("GET", `/_dev/sms?mobile=${encodeURIComponent(user.mobile)}${q}`, { log });
      const sms = Array.isArray(box.body) ? box.body.find((s) => s.expiresAt > Date.now()) : null;
      code = sms?.code;
    }
    if (!code) throw new Error("no SMS code arrived for " + user.mobile);
    const r = await http("POST", "/login", {
      body: { mobile: user.mobile, code, clientId: "imctl-web-phone-" + user.userId, platform: PHONE_PLATFORM }, log,
    });
    if (r.body.code !== 0 || !r.authToken) throw new Error("phone login failed: " + r.body.message);
    store.set("phone." + user.userId, r.authToken);
    return r.authToken;
  },

  /** Scan (and unless "stop after the scan", confirm) the QR on screen. */
  async approve(user) {
    const token = login.token;
    $("phone-log").replaceChildren();
    const log = (t, bad) => this.log(t, bad);
    this.log(`as ${user.userId}: imctl simulate approve ${token} --as ${user.userId}`);
    try {
      let auth = await this.authToken(user, log, false);
      let scan = await http("POST", "/scan_pc/" + encodeURIComponent(token), { auth, log });
      if (scan.body.code === 13) { // the saved phone login expired
        auth = await this.authToken(user, log, true);
        scan = await http("POST", "/scan_pc/" + encodeURIComponent(token), { auth, log });
      }
      if (scan.body.code !== 0) throw new Error(scan.body.message);
      if ($("scan-only").checked) {
        this.pending = { user, auth, token };
        $("phone-decide").hidden = false;
        return;
      }
      await this.decide("/confirm_pc", { user, auth, token });
    } catch (e) {
      this.log("stopped: " + e.message, true);
    }
  },

  async decide(path, p) {
    $("phone-decide").hidden = true;
    const body = path === "/confirm_pc" ? { token: p.token, user_id: p.user.userId, quick_login: 1 } : { token: p.token };
    const r = await http("POST", path, { body, auth: p.auth, log: (t, bad) => this.log(t, bad) });
    if (r.body.code !== 0) this.log("refused: " + r.body.message, true);
  },

  init() {
    $("phone-confirm").addEventListener("click", () => this.pending && this.decide("/confirm_pc", this.pending));
    $("phone-cancel").addEventListener("click", () => this.pending && this.decide("/cancel_pc", this.pending));
    this.loadUsers();
  },
};

// ---------------------------------------------------------------- WebSocket link

/** The broker connection: route, connect, requests matched by id, reconnects. */
class Link {
  constructor(handlers) {
    this.h = handlers;
    this.ws = null;
    this.nextId = 1;
    this.waiting = new Map(); // id → { resolve, reject, op, at }
    this.backoff = 500;
    this.closed = false;
    this.up = false; // connected, not just open
  }

  async open() {
    while (!this.closed) {
      try {
        await this.once();
        return;
      } catch (e) {
        if (e.quiet) return;
        if (e.fatal) { this.h.fatal(e); return; }
        this.h.state(`offline — ${e.message}; retrying in ${(this.backoff / 1000).toFixed(1)} s`, false);
        await sleep(this.backoff);
        this.backoff = Math.min(this.backoff * 2, 10000);
      }
    }
  }

  async once() {
    const stopped = () => Object.assign(new Error("logged out"), { fatal: true, quiet: true });
    this.h.state("routing…", false);
    const { creds } = this.h;
    const routeUrl = creds.routeUrl || (await http("GET", "/config")).body.routeUrl;
    const r = await http("POST", routeUrl, { body: { userId: creds.userId, clientId, token: creds.imToken } });
    if (this.closed) throw stopped();
    if (r.body.code === 13) throw Object.assign(new Error(r.body.message), { fatal: true, relogin: true });
    if (r.body.code !== 0) throw new Error("route failed: " + r.body.message);
    const url = r.body.result.wsUrl;
    this.h.state("connecting…", false);
    const ws = new WebSocket(url);
    this.ws = ws;
    await new Promise((resolve, reject) => {
      ws.onopen = resolve;
      ws.onerror = () => reject(new Error("cannot open " + url));
    });
    if (this.closed) { ws.close(1000); throw stopped(); }
    inspector.add("WS", "in", `open ${url}`);
    ws.onmessage = (ev) => this.receive(ev.data);
    ws.onclose = (ev) => this.onClose(ws, ev);
    let hello;
    try {
      hello = await this.request("connect", { token: creds.imToken, clientId, platform: PLATFORM_WEB }, true);
    } catch (e) {
      if (ws.readyState === WebSocket.OPEN) ws.close(1000);
      if (this.closed) throw stopped();
      // 419 expired, 498 invalid, 404 user gone: only a new login helps.
      if ([404, 419, 498].includes(e.code)) throw Object.assign(new Error(e.message), { fatal: true, relogin: true });
      if (e.code === 403) throw Object.assign(new Error(e.message), { fatal: true });
      throw e;
    }
    this.up = true;
    this.backoff = 500;
    this.h.connected(hello);
  }

  onClose(ws, ev) {
    inspector.add("WS", "err", `close ${ev.code}${ev.reason ? " " + ev.reason : ""}`);
    for (const [id, w] of this.waiting) {
      if (w.ws !== ws) continue;
      this.waiting.delete(id);
      // 1009: the frame itself was too big; sending it again would only repeat this.
      w.reject(ev.code === 1009 ? Object.assign(new Error("the message is larger than the broker accepts (--max-frame)"), { code: 1009 }) : new Error("connection closed"));
    }
    if (ws !== this.ws || this.closed) return;
    this.ws = null;
    if (!this.up) return; // still connecting: once() sees its request fail and decides
    this.up = false;
    if (ev.code === 4001) return this.h.fatal(Object.assign(new Error("the saved login is no longer valid"), { relogin: true }));
    if (ev.code === 4003) return this.h.fatal(new Error("this user is banned by an administrator"));
    this.h.state("connection lost — reconnecting", false);
    this.open();
  }

  /** Sends a frame once connected (or, for `connect` itself, once open). */
  frame(obj, handshake) {
    if (!this.ws || this.ws.readyState !== WebSocket.OPEN || !(this.up || handshake)) return false;
    const text = JSON.stringify(obj);
    this.ws.send(text);
    inspector.add("WS", "out", describe(obj), obj);
    return true;
  }

  /** A request; resolves with the reply, rejects with an `error` frame's { code, message }. */
  request(op, fields = {}, handshake = false) {
    const id = this.nextId++;
    return new Promise((resolve, reject) => {
      if (!this.frame({ id, op, ...fields }, handshake)) { reject(new Error("not connected")); return; }
      this.waiting.set(id, { resolve, reject, op, at: performance.now(), ws: this.ws });
    });
  }

  receive(text) {
    let f;
    try { f = JSON.parse(text); } catch { inspector.add("WS", "err", "unreadable frame", text); return; }
    const w = f.id !== undefined && f.id !== null ? this.waiting.get(f.id) : null;
    const ms = w ? performance.now() - w.at : undefined;
    inspector.add("WS", f.op === "error" ? "err" : "in", describe(f), f, ms);
    if (w) {
      this.waiting.delete(f.id);
      if (f.op === "error") w.reject(Object.assign(new Error(f.message), { code: f.code }));
      else w.resolve(f);
      return;
    }
    this.h.push(f);
  }

  close() {
    this.closed = true;
    this.up = false;
    if (this.ws) this.ws.close(1000, "logged out");
  }
}

/** A frame in a few words for the inspector: op, id and what matters. */
function describe(f) {
  const id = f.id !== undefined && f.id !== null ? " #" + f.id : "";
  const conv = (c) => (c ? ` ${c.type === "group" ? "#" : ""}${c.target}` : "");
  switch (f.op) {
    case "send": return `send${id} to${conv(f.conv)}: ${f.content?.type}`;
    case "ack": return `ack${id} ${f.msgId} seq ${f.seq}${f.duplicate ? " (duplicate)" : ""}`;
    case "msg": return `msg seq ${f.seq} ${f.message?.msgId} from ${f.message?.from}`;
    case "sync": return `sync${id} since ${f.since}`;
    case "synced": return `synced${id} ${f.entries?.length} entries, head ${f.head}${f.more ? ", more" : ""}`;
    case "recv": return `recv up to ${f.upTo}`;
    case "receipt": return `receipt ${f.kind} by ${f.by} in${conv(f.conv)} up to ${f.upTo}`;
    case "read": return `read${id} in${conv(f.conv)} up to ${f.upTo}`;
    case "presence": return f.userId ? `presence ${f.userId} ${f.online ? "online" : "offline"}` : `presence${id}`;
    case "typing": return `typing in${conv(f.conv)}${f.from ? " from " + f.from : ""}`;
    case "connected": return `connected${id} as ${f.userId}, head ${f.head}`;
    case "error": return `error${id} ${f.code} ${f.message}`;
    default: return f.op + id;
  }
}

// ---------------------------------------------------------------- chat

const key = (conv) => conv.type + ":" + conv.target;

/** msgIds are `m` + a number that only grows, so they order messages. */
const msgNo = (id) => (typeof id === "string" && /^m\d+$/.test(id) ? Number(id.slice(1)) : NaN);

const chat = {
  link: null,
  creds: null, // the login this chat belongs to
  me: null,
  seq: 0, // the inbox position up to which everything is here (saved)
  syncing: false,
  held: [], // pushes that arrived while a sync was paging
  seen: new Set(), // every msgId taken, so a push and a sync never count twice
  convs: new Map(), // key → { conv, lastMessage, unread, messages: [], ids, loaded, more, typingUntil }
  users: new Map(), // userId → { displayName, portrait, online }
  asking: new Set(), // profiles requested and not answered yet
  groups: new Map(), // groupId → { name, gone }
  current: null,
  outbox: [], // sends waiting for a connection
  recvTimer: null,
  lastTyping: 0,
  readSent: new Map(), // conv key → msgId the server was told
  maxFrame: 65536,

  start() {
    this.link?.close();
    this.creds = creds;
    this.me = creds.userId;
    this.seq = store.get(this.seqKey()) ?? null;
    this.convs.clear();
    this.users.clear();
    this.asking.clear();
    this.groups.clear();
    this.readSent.clear();
    this.seen.clear();
    this.held = [];
    this.outbox = [];
    this.current = null;
    show("chat");
    $("me-name").textContent = creds.userName || creds.userId;
    $("me-id").textContent = creds.userId;
    const pic = safeUrl(creds.portrait);
    if (pic) $("me-avatar").src = pic; else $("me-avatar").removeAttribute("src");
    $("chat").dataset.user = creds.userId;
    $("conv-title").textContent = "Pick a conversation, or start one on the left";
    $("conv-sub").textContent = "";
    $("chat-error").textContent = "";
    this.setComposer(false);
    this.renderConvs();
    this.renderTimeline();
    http("GET", "/config").then((r) => { if (r.body.maxFrame) this.maxFrame = r.body.maxFrame; }).catch(() => {});
    const link = new Link({
      creds: this.creds,
      state: (text, up) => this.link === link && this.linkState(text, up),
      connected: (hello) => this.link === link && this.onConnected(hello),
      push: (f) => this.link === link && this.onPush(f),
      fatal: (e) => this.link === link && this.onFatal(e),
    });
    this.link = link;
    link.open();
  },

  seqKey() { return `seq.${this.me}.${clientId}`; },

  saveSeq(seq) {
    this.seq = seq;
    store.set(this.seqKey(), seq);
  },

  setComposer(on) {
    $("composer").disabled = !on;
    $("send").disabled = !on;
    $("attach").disabled = !on;
  },

  linkState(text, up) {
    $("link").textContent = text;
    $("link").classList.toggle("up", up);
  },

  onFatal(e) {
    this.linkState(e.message, false);
    if (e.relogin) { this.logout(); login.start("your saved login ended (" + e.message + ") — scan again"); }
    else $("chat-error").textContent = e.message;
  },

  logout() {
    this.link?.close();
    this.link = null;
    store.del("creds");
    if (this.me) store.del(this.seqKey());
    creds = null;
    this.outbox = [];
  },

  async onConnected(hello) {
    const link = this.link;
    this.linkState("connected", true);
    $("chat-error").textContent = "";
    // A new device starts near the head; the conversation list covers the rest.
    if (this.seq === null || this.seq > hello.head) this.saveSeq(Math.max(0, hello.head - 200));
    try {
      await this.syncAll();
      await Promise.all([this.loadGroups(), this.loadConvs()]);
      await this.loadPresence();
      if (this.current) await this.loadHistory(this.convs.get(this.current), true);
    } catch (e) {
      if (link === this.link) $("chat-error").textContent = "loading failed: " + e.message;
    }
    if (link !== this.link) return;
    this.markRead();
    const queued = this.outbox.splice(0);
    for (const m of queued) this.transmit(m);
  },

  /** Pages through the inbox from the saved position; pushes wait meanwhile. */
  async syncAll() {
    this.syncing = true;
    try {
      let since = this.seq;
      for (;;) {
        const r = await this.link.request("sync", { since, limit: 500 });
        for (const e of r.entries) this.take(e.seq, e.message, false);
        if (r.entries.length) since = r.entries[r.entries.length - 1].seq;
        this.saveSeq(Math.max(this.seq, since));
        if (!r.more || r.entries.length === 0) break;
      }
    } finally {
      this.syncing = false;
      const held = this.held.splice(0);
      for (const f of held) this.take(f.seq, f.message, true);
    }
    this.ackRecv();
  },

  async loadGroups() {
    const r = await this.link.request("group.list");
    for (const g of r.groups) this.groups.set(g.id, { name: g.name, role: g.role });
  },

  async loadConvs() {
    // A page stops at 1 MiB even below its limit; `more` pages on from the last one.
    let before;
    for (let loaded = 0; loaded < 200;) {
      const r = await this.link.request("conversations", { limit: 200 - loaded, ...(before ? { before } : {}) });
      for (const c of r.conversations) {
        const conv = this.conv(c.conv);
        conv.lastMessage = c.lastMessage;
        conv.unread = this.current === key(c.conv) ? 0 : c.unread;
      }
      loaded += r.conversations.length;
      if (!r.more || r.conversations.length === 0) break;
      before = r.conversations[r.conversations.length - 1].lastMessage.msgId;
    }
    await this.loadProfiles([...this.convs.values()].filter((c) => c.conv.type === "single").map((c) => c.conv.target));
    this.renderConvs();
  },

  async loadProfiles(ids) {
    const missing = [...new Set(ids)].filter((id) => !this.users.get(id)?.displayName && !this.asking.has(id));
    if (!missing.length || !this.link?.up) return;
    for (const id of missing) this.asking.add(id);
    try {
      const r = await this.link.request("profile.get", { users: missing.slice(0, 500) });
      for (const u of r.users) this.users.set(u.userId, { ...this.users.get(u.userId), ...u });
      $("known-users").replaceChildren(...[...this.users.keys()].map((id) => el("option", { value: id })));
      this.renderConvs();
      this.renderHead();
    } catch { /* names fall back to ids */ } finally {
      for (const id of missing) this.asking.delete(id);
    }
  },

  async loadPresence() {
    const ids = [...this.convs.values()].filter((c) => c.conv.type === "single").map((c) => c.conv.target);
    if (!ids.length) return;
    const r = await this.link.request("presence", { users: ids.slice(0, 1000) });
    for (const p of r.users) this.users.set(p.userId, { ...this.users.get(p.userId), online: p.online });
    this.renderConvs();
    this.renderHead();
  },

  /** The conversation entry for conv (as this user sees it), created if new. */
  conv(conv) {
    const k = key(conv);
    let c = this.convs.get(k);
    if (!c) {
      c = { conv, lastMessage: null, unread: 0, messages: [], ids: new Set(), loaded: false, more: true, typingUntil: 0, typingWho: "" };
      this.convs.set(k, c);
    }
    return c;
  },

  /** The conversation a message belongs to, seen from here. */
  convOf(m) {
    if (m.conv.type === "single" && m.from !== this.me) return { type: "single", target: m.from };
    return m.conv;
  },

  /** A stored message, from a push or a sync; each msgId is taken once. */
  take(seq, m, live) {
    if (!this.syncing && seq > this.seq) this.saveSeq(seq);
    if (this.seen.has(m.msgId)) return;
    this.seen.add(m.msgId);
    const c = this.conv(this.convOf(m));
    const mine = m.from === this.me;
    // Our own send whose ack has not come back yet: merge by clientMsgId.
    const pending = mine && m.clientMsgId && c.messages.find((x) => x.clientMsgId === m.clientMsgId && !x.msgId);
    if (pending) { Object.assign(pending, m, { state: "sent" }); c.ids.add(m.msgId); }
    else if (c.loaded && !c.ids.has(m.msgId)) { c.messages.push({ ...m, state: mine ? "sent" : undefined }); c.ids.add(m.msgId); }
    if (!c.lastMessage || m.serverTime >= c.lastMessage.serverTime) c.lastMessage = m;
    if (!mine) {
      // As the server counts: every message from someone else, notifications too.
      if (key(c.conv) !== this.current || document.hidden) c.unread += 1;
      c.typingUntil = 0;
    }
    if (m.conv.type === "group" && m.content.type === "notification") this.groupChanged(m);
    if (live) {
      this.renderConvs();
      if (key(c.conv) === this.current) { this.renderTimeline(); this.markRead(); }
    }
    if (m.conv.type === "single") this.loadProfiles([c.conv.target]);
  },

  groupChanged(m) {
    const id = m.conv.target;
    const g = this.groups.get(id) || {};
    const n = m.content;
    if (n.name) g.name = n.name;
    const gone = n.kind === "dissolved" || n.dissolved
      || (n.kind === "member_removed" && (n.members || []).includes(this.me))
      || (n.kind === "left" && n.actor === this.me);
    if (gone) g.gone = true;
    else if (n.kind === "member_added" && (n.members || []).includes(this.me)) g.gone = false;
    this.groups.set(id, g);
    // Added to a group we know nothing of: ask for its name.
    if (!g.name && this.link?.up) {
      this.link.request("group.info", { group: id }).then((r) => { g.name = r.group.name; this.renderConvs(); this.renderHead(); }).catch(() => {});
    }
    if (key(m.conv) === this.current) { this.setComposer(!g.gone); this.renderHead(); }
  },

  ackRecv() {
    clearTimeout(this.recvTimer);
    this.recvTimer = setTimeout(() => this.link?.frame({ op: "recv", upTo: this.seq }), 50);
  },

  onPush(f) {
    switch (f.op) {
      case "msg":
        if (this.syncing) { this.held.push(f); break; }
        this.take(f.seq, f.message, true);
        this.ackRecv();
        break;
      case "receipt": this.onReceipt(f); break;
      case "typing": {
        const c = this.conv(f.conv);
        c.typingUntil = Date.now() + 4000;
        c.typingWho = f.from;
        this.renderConvs();
        this.renderHead();
        setTimeout(() => { this.renderConvs(); this.renderHead(); }, 4100);
        break;
      }
      case "presence":
        this.users.set(f.userId, { ...this.users.get(f.userId), online: f.online });
        this.renderConvs();
        this.renderHead();
        break;
      case "profile":
        this.users.set(f.user.userId, { ...this.users.get(f.user.userId), ...f.user });
        this.renderConvs();
        break;
      case "notify":
        this.note(this.current, `${f.from}: ${f.kind.replace("_", " ")}${f.remark ? " — " + f.remark : ""}`);
        break;
      default: break;
    }
  },

  /** Delivered/read up to a message: every earlier message of ours gets it. */
  onReceipt(f) {
    const c = this.convs.get(key(f.conv));
    if (!c) return;
    if (f.by === this.me) {
      // Read on another of my devices: nothing of mine changed, my unread did.
      if (f.kind === "read") { c.unread = 0; this.readSent.set(key(f.conv), f.upTo); this.renderConvs(); }
      return;
    }
    const upTo = msgNo(f.upTo);
    const rank = { sending: 0, sent: 1, delivered: 2, read: 3 };
    for (const m of c.messages) {
      if (m.from !== this.me || !(msgNo(m.msgId) <= upTo)) continue;
      if (f.conv.type === "group") {
        const set = f.kind === "read" ? (m.readBy ??= new Set()) : (m.deliveredBy ??= new Set());
        set.add(f.by);
        if (f.kind === "read") (m.deliveredBy ??= new Set()).add(f.by);
      } else if ((rank[f.kind] ?? 0) > (rank[m.state] ?? 0)) {
        m.state = f.kind;
      }
    }
    if (key(f.conv) === this.current) this.renderTimeline(true);
  },

  async open(conv) {
    const c = this.conv(conv);
    this.current = key(conv);
    c.unread = 0;
    this.setComposer(!(conv.type === "group" && this.groups.get(conv.target)?.gone));
    this.renderConvs();
    this.renderHead();
    this.renderTimeline();
    $("composer").focus();
    if (conv.type === "single") this.loadProfiles([conv.target]);
    if (!c.loaded && this.link?.up) await this.loadHistory(c, true);
    this.markRead();
  },

  async loadHistory(c, fresh) {
    if (!this.link?.up) return;
    const before = fresh ? undefined : c.messages.find((m) => m.msgId)?.msgId;
    let r;
    try {
      r = await this.link.request("history", { conv: c.conv, limit: 50, ...(before ? { before } : {}) });
    } catch (e) {
      this.note(key(c.conv), e.message);
      return;
    }
    const older = r.messages.filter((m) => !c.ids.has(m.msgId)).reverse();
    for (const m of older) { c.ids.add(m.msgId); this.seen.add(m.msgId); }
    const mine = (m) => ({ ...m, state: m.from === this.me ? "sent" : undefined });
    c.messages = [...older.map(mine), ...c.messages];
    // Unsent messages (no serverTime yet) stay last.
    c.messages.sort((a, b) => (a.serverTime ?? Infinity) - (b.serverTime ?? Infinity));
    c.loaded = true;
    c.more = r.more;
    if (key(c.conv) === this.current) { this.renderTimeline(!fresh); this.markRead(); }
  },

  /** Tells the server (and the sender) how far this conversation is read. */
  markRead() {
    const c = this.convs.get(this.current);
    if (!c || document.hidden || !this.link?.up) return;
    const last = [...c.messages].reverse().find((m) => m.msgId && m.from !== this.me);
    if (!last || this.readSent.get(this.current) === last.msgId) return;
    if (!this.link.frame({ op: "read", conv: c.conv, upTo: last.msgId })) return;
    this.readSent.set(this.current, last.msgId);
    c.unread = 0;
    this.renderConvs();
  },

  /** A new message to the conversation `convKey` (the open one by default). */
  send(content, convKey = this.current) {
    const c = this.convs.get(convKey);
    if (!c) return false;
    const m = {
      clientMsgId: randomId(), conv: c.conv, from: this.me, content, state: "sending", serverTime: undefined,
    };
    c.messages.push(m);
    c.lastMessage = m;
    const size = new TextEncoder().encode(JSON.stringify({ id: 1e9, op: "send", conv: m.conv, content, clientMsgId: m.clientMsgId })).length;
    if (size > this.maxFrame) {
      m.state = "failed";
      m.error = `too long: ${size} bytes, the broker takes frames up to ${this.maxFrame} (--max-frame)`;
    }
    this.renderTimeline();
    this.renderConvs();
    if (m.state !== "failed") this.transmit(m);
    return true;
  },

  async transmit(m) {
    const link = this.link;
    if (!link?.up) { this.outbox.push(m); return; }
    try {
      const ack = await link.request("send", { conv: m.conv, content: m.content, clientMsgId: m.clientMsgId });
      if (link !== this.link) return;
      Object.assign(m, { msgId: ack.msgId, serverTime: ack.serverTime, state: m.state === "sending" ? "sent" : m.state });
      this.convs.get(key(m.conv))?.ids.add(ack.msgId);
      this.seen.add(ack.msgId);
    } catch (e) {
      if (link !== this.link) return; // logged out meanwhile: never resend as someone else
      if (e.code) { m.state = "failed"; m.error = `${e.code}: ${e.message}`; }
      else { this.outbox.push(m); return; } // the link dropped: resent after reconnecting
    }
    if (key(m.conv) === this.current) this.renderTimeline();
  },

  typing() {
    const c = this.convs.get(this.current);
    if (!c || Date.now() - this.lastTyping < 3000 || !$("composer").value) return;
    this.lastTyping = Date.now();
    if (this.link?.up) this.link.frame({ op: "typing", conv: c.conv });
  },

  async sendImage(file) {
    if (!file) return;
    const target = this.current; // where it goes, even if another chat is opened meanwhile
    const auth = this.creds.authToken;
    $("chat-error").textContent = "";
    try {
      const dims = await new Promise((resolve, reject) => {
        const img = new Image();
        const u = URL.createObjectURL(file);
        img.onload = () => { URL.revokeObjectURL(u); resolve({ w: img.naturalWidth, h: img.naturalHeight }); };
        img.onerror = () => { URL.revokeObjectURL(u); reject(new Error(`${file.name} is not a picture this browser can read`)); };
        img.src = u;
      });
      const r = await http("POST", "/media", { raw: file, contentType: file.type || "application/octet-stream", auth });
      if (r.status !== 201) throw new Error(r.body.error || `upload failed (HTTP ${r.status})`);
      if (auth !== this.creds?.authToken) return;
      this.send({ type: "image", url: r.body.url, w: dims.w, h: dims.h, size: r.body.size }, target);
    } catch (e) {
      $("chat-error").textContent = e.message;
    }
  },

  note(convKey, text) {
    if (!convKey || convKey !== this.current) { $("chat-error").textContent = text; return; }
    $("timeline").append(el("div", { class: "note", text }));
  },

  // ------------------------------------------------------------ rendering

  name(userId) { return this.users.get(userId)?.displayName || userId; },

  title(conv) {
    return conv.type === "group" ? "#" + (this.groups.get(conv.target)?.name || conv.target) : this.name(conv.target);
  },

  /** A message's content in words, for previews and notifications. */
  summary(m) {
    const c = m.content;
    switch (c.type) {
      case "text": return c.text;
      case "image": return `[image ${c.w}×${c.h}]`;
      case "file": return `[file ${c.name}]`;
      case "video": return `[video ${c.duration}s]`;
      case "location": return `[location ${c.title}]`;
      case "sticker": return "[sticker]";
      case "custom": return "[custom data]";
      case "notification": return this.notification(c);
      default: return `[${c.type}]`;
    }
  },

  notification(c) {
    const who = (ids) => (ids || []).map((u) => this.name(u)).join(", ");
    const actor = this.name(c.actor);
    switch (c.kind) {
      case "created": return `${actor} created the group “${c.name}” with ${who(c.members)}`;
      case "member_added": return `${actor} added ${who(c.members)}`;
      case "member_removed": return `${actor} removed ${who(c.members)}`;
      case "left": return `${actor} left${c.owner ? `; ${this.name(c.owner)} is the owner now` : ""}`;
      case "dissolved": return `${actor} dissolved the group`;
      case "renamed": return `${actor} renamed the group “${c.name}”`;
      case "admin_added": return `${actor} made ${who(c.members)} an admin`;
      case "admin_removed": return `${actor} dismissed ${who(c.members)} as admin`;
      default: return `${actor}: ${c.kind}`;
    }
  },

  avatarFor(conv) {
    const pic = conv.type === "single" ? safeUrl(this.users.get(conv.target)?.portrait) : null;
    const wrap = el("span", { class: "pic" }, pic ? el("img", { class: "avatar", src: pic, alt: "" }) : el("span", { class: "avatar", text: "" }));
    if (conv.type === "single") wrap.append(el("span", { class: "dot" + (this.users.get(conv.target)?.online ? " on" : ""), title: this.users.get(conv.target)?.online ? "online" : "offline" }));
    return wrap;
  },

  renderConvs() {
    const list = [...this.convs.values()].sort((a, b) => (b.lastMessage?.serverTime ?? Infinity) - (a.lastMessage?.serverTime ?? Infinity));
    $("convs").replaceChildren(...list.map((c) => {
      const k = key(c.conv);
      const typing = c.typingUntil > Date.now();
      const preview = typing ? `${this.name(c.typingWho)} is typing…` : c.lastMessage ? this.summary(c.lastMessage) : "";
      return el("li", { class: k === this.current ? "current" : undefined, "data-conv": k, onclick: () => this.open(c.conv) },
        this.avatarFor(c.conv),
        el("div", { class: "body" }, el("div", { class: "name", text: this.title(c.conv) }), el("div", { class: "preview", text: preview })),
        c.unread > 0 ? el("span", { class: "unread", text: String(c.unread) }) : null);
    }));
  },

  renderHead() {
    const c = this.convs.get(this.current);
    if (!c) return;
    $("conv-title").textContent = this.title(c.conv);
    let sub = "";
    if (c.typingUntil > Date.now()) sub = `${this.name(c.typingWho)} is typing…`;
    else if (c.conv.type === "single") sub = this.users.get(c.conv.target)?.online ? "online" : "offline";
    else sub = "group";
    $("conv-sub").textContent = sub;
  },

  renderTimeline(keepScroll) {
    const tl = $("timeline");
    const c = this.convs.get(this.current);
    if (!c) { tl.replaceChildren(); return; }
    const atBottom = tl.scrollTop + tl.clientHeight >= tl.scrollHeight - 40;
    const rows = [];
    if (c.loaded && c.more) rows.push(el("button", { type: "button", class: "older", text: "older messages", onclick: () => this.loadHistory(c, false) }));
    for (const m of c.messages) rows.push(this.renderMessage(c, m));
    tl.replaceChildren(...rows);
    if (!keepScroll || atBottom) tl.scrollTop = tl.scrollHeight;
  },

  renderMessage(c, m) {
    if (m.content.type === "notification") return el("div", { class: "note", "data-msg-id": m.msgId, text: this.notification(m.content) });
    const mine = m.from === this.me;
    const box = el("div", { class: "msg" + (mine ? " mine" : "") + (m.state === "failed" ? " failed" : ""), "data-msg-id": m.msgId || "", "data-client-msg-id": m.clientMsgId || "" });
    if (!mine && c.conv.type === "group") box.append(el("div", { class: "from", text: this.name(m.from) }));
    box.append(this.renderContent(m.content));
    const time = m.serverTime ? clock(m.serverTime) : "";
    box.append(el("div", { class: "meta" }, time, mine ? " " : "", mine ? this.stateOf(c, m) : null));
    return box;
  },

  stateOf(c, m) {
    if (m.state === "failed") return el("span", { class: "mstate", "data-state": "failed", text: "✕ not sent — " + m.error });
    if (c.conv.type === "group" && m.state !== "sending") {
      const read = m.readBy?.size || 0;
      const got = m.deliveredBy?.size || 0;
      if (read) return el("span", { class: "mstate read", "data-state": "read", text: `✓✓ read by ${read}` });
      if (got) return el("span", { class: "mstate", "data-state": "delivered", text: `✓✓ delivered to ${got}` });
    }
    const text = { sending: "⋯ sending", sent: "✓ sent", delivered: "✓✓ delivered", read: "✓✓ read" }[m.state] || "";
    return el("span", { class: "mstate" + (m.state === "read" ? " read" : ""), "data-state": m.state, text });
  },

  renderContent(content) {
    switch (content.type) {
      case "text": return el("div", { class: "text", text: content.text });
      case "image": {
        const src = safeUrl(content.url);
        return src ? el("a", { href: src, target: "_blank", rel: "noopener" }, el("img", { class: "inline", src, alt: `image ${content.w}×${content.h}`, width: content.w > 260 ? 260 : content.w }))
          : el("div", { class: "text", text: `[image ${content.url}]` });
      }
      case "sticker": {
        const src = safeUrl(content.url);
        return src ? el("img", { class: "inline", src, alt: "sticker" }) : el("div", { class: "text", text: "[sticker]" });
      }
      case "file":
      case "video": {
        const href = safeUrl(content.url);
        const label = content.type === "file" ? `📄 ${content.name} (${content.size} bytes)` : `🎞 video ${content.duration}s`;
        return href ? el("a", { href, target: "_blank", rel: "noopener", text: label }) : el("div", { class: "text", text: label });
      }
      case "location": return el("div", { class: "text", text: `📍 ${content.title} (${content.lat}, ${content.lng})` });
      default: return el("div", { class: "text", text: this.summary({ content }) });
    }
  },

  /** "bob", "#team" or a group id → a conversation. */
  async target(text) {
    const t = text.trim();
    if (t && !this.link?.up) throw new Error("not connected yet");
    if (!t) return null;
    if (t.startsWith("#")) {
      const name = t.slice(1);
      for (const [id, g] of this.groups) if (id === name || g.name === name) return { type: "group", target: id };
      throw new Error(`no group named ${name}; create it under “New group”`);
    }
    if (this.groups.has(t)) return { type: "group", target: t };
    const r = await this.link.request("profile.get", { users: [t] });
    const found = r.users.find((u) => u.userId.toLowerCase() === t.toLowerCase());
    if (!found) throw new Error(`no user ${t}`);
    this.users.set(found.userId, { ...this.users.get(found.userId), ...found });
    return { type: "single", target: found.userId };
  },

  init() {
    $("logout").addEventListener("click", () => { this.logout(); login.start(); });
    $("new-chat-form").addEventListener("submit", async (ev) => {
      ev.preventDefault();
      $("chat-error").textContent = "";
      try {
        const conv = await this.target($("new-chat").value);
        if (!conv) return;
        $("new-chat").value = "";
        await this.open(conv);
        this.loadPresence().catch(() => {});
      } catch (e) { $("chat-error").textContent = e.message; }
    });
    $("new-group-form").addEventListener("submit", async (ev) => {
      ev.preventDefault();
      $("chat-error").textContent = "";
      const members = $("group-members").value.split(/[\s,]+/).filter(Boolean);
      try {
        const r = await this.link.request("group.create", { name: $("group-name").value.trim(), members });
        this.groups.set(r.group.id, { name: r.group.name });
        $("group-name").value = "";
        $("group-members").value = "";
        $("new-group").open = false;
        await this.open({ type: "group", target: r.group.id });
      } catch (e) { $("chat-error").textContent = e.message; }
    });
    $("composer-form").addEventListener("submit", (ev) => {
      ev.preventDefault();
      const text = $("composer").value;
      if (!text.trim()) return;
      if (this.send({ type: "text", text })) $("composer").value = "";
    });
    $("composer").addEventListener("keydown", (ev) => {
      if (ev.key === "Enter" && !ev.shiftKey && !ev.isComposing) { ev.preventDefault(); $("composer-form").requestSubmit(); }
    });
    $("composer").addEventListener("input", () => this.typing());
    $("attach").addEventListener("click", () => $("file").click());
    $("file").addEventListener("change", () => { this.sendImage($("file").files[0]); $("file").value = ""; });
    document.addEventListener("visibilitychange", () => { if (!document.hidden) this.markRead(); });
  },
};

// ---------------------------------------------------------------- start

inspector.init();
phone.init();
chat.init();
$("new-qr").addEventListener("click", () => login.start());
if (creds && creds.imToken) chat.start();
else login.start();
