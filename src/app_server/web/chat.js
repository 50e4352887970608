// The chat: conversations, timeline, receipts, typing, presence, groups and
// images, over the broker link (docs/PROTOCOL.md).

import { $, el, safeUrl } from "./dom.js";
import { clientId, randomId, store } from "./device.js";
import { http } from "./http.js";
import { Link } from "./link.js";
import { login } from "./login.js";

const clock = (ms) => new Date(ms).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });

const key = (conv) => conv.type + ":" + conv.target;

/** msgIds are `m` + a number that only grows, so they order messages. */
const msgNo = (id) => (typeof id === "string" && /^m\d+$/.test(id) ? Number(id.slice(1)) : NaN);

export const chat = {
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

  /** Chats as the login `creds` ({ userId, imToken, authToken, userName, portrait, routeUrl }). */
  start(creds) {
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
    $("login").hidden = true;
    $("chat").hidden = false;
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
