// The broker connection: route, WebSocket, requests matched by id, reconnect
// with backoff.

import { PLATFORM_WEB, clientId } from "./device.js";
import { http, sleep } from "./http.js";
import { inspector } from "./inspector.js";

/** The broker connection: route, connect, requests matched by id, reconnects. */
export class Link {
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
        // Jittered: the pages of a node that died must not all come back at once.
        const wait = this.backoff * (0.5 + Math.random() / 2);
        this.h.state(`offline — ${e.message}; retrying in ${(wait / 1000).toFixed(1)} s`, false);
        await sleep(wait);
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
    if (ev.reason?.startsWith("injected")) inspector.add("FAULT", "fault", `${ev.reason} (close ${ev.code})`, { code: ev.code, reason: ev.reason });
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
    // What an injected fault did to this connection: shown, never a push.
    if (f.op === "fault") { inspector.add("FAULT", "fault", "injected: " + f.kind + " — " + f.detail, f); return; }
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
    case "fault": return `fault rule ${f.rule} ${f.kind}`;
    default: return f.op + id;
  }
}
