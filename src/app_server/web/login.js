// The QR login, as a web or desktop client does it: POST /pc_session, then
// wait for a phone by server-sent events (a long poll as the fallback), and a
// fresh QR shortly before the old one expires.

import { $, el, safeUrl } from "./dom.js";
import { PLATFORM_WEB, clientId, store } from "./device.js";
import { http, sleep } from "./http.js";
import { inspector } from "./inspector.js";

export const login = {
  gen: 0, // bumps whenever a new QR replaces the old one; stale waiters stop
  token: null,
  expiresAt: 0,
  refreshTimer: null,
  tickTimer: null,
  source: null,
  scanned: false,
  abort: null, // cancels the abandoned QR's long poll, so polls never pile up
  onLogin: null, // (creds) => …, set by app.js: what a confirmed login starts

  say(text) { $("login-state").textContent = text; },

  async start(note) {
    $("login").hidden = false;
    $("chat").hidden = true;
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
      this.retryStart(gen, note, "the app-server does not answer");
      return;
    }
    if (gen !== this.gen) return;
    const trouble = unusable(r);
    if (trouble) { this.retryStart(gen, note, trouble); return; }
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

  /** A new QR in 2 s, unless one came meanwhile. */
  async retryStart(gen, note, why) {
    this.say(why + "; retrying…");
    await sleep(2000);
    if (gen === this.gen) this.start(note);
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
        await this.pause(gen, "the app-server does not answer");
        continue;
      }
      if (gen !== this.gen) return;
      const trouble = unusable(r);
      if (trouble) { await this.pause(gen, trouble); continue; }
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

  /** Says why, waits 2 s, then says again what the page waits for. */
  async pause(gen, why) {
    this.say(why + "; retrying…");
    await sleep(2000);
    if (gen === this.gen) this.say(this.scanned ? "scanned — confirm on your phone" : "waiting for scan");
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
    const creds = {
      userId: result.userId, imToken: result.token, authToken: authToken || "",
      userName: result.userName || result.userId, portrait: result.portrait, routeUrl: result.routeUrl,
    };
    store.set("creds", creds);
    this.onLogin(creds);
  },
};

/**
 * Why an answer is no answer, or null: a 5xx, or a body without a numeric
 * code (an injected fault's {"error"}, a proxy's page). Worth another try.
 */
function unusable(r) {
  if (r.status >= 500) return `the app-server answered ${r.status}`;
  if (typeof r.body?.code !== "number") return `the app-server answered ${r.status} without a code`;
  return null;
}

function browserName() {
  const ua = navigator.userAgent;
  const name = /Edg\//.test(ua) ? "Edge" : /Chrome\//.test(ua) ? "Chrome" : /Firefox\//.test(ua) ? "Firefox" : /Safari\//.test(ua) ? "Safari" : "Browser";
  return `${name} (imctl web client)`;
}
