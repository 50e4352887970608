// The "Simulate phone" panel: the mobile app, played by HTTP calls (SMS login,
// then scan_pc and confirm_pc or cancel_pc on the QR on screen).

import { $, el, safeUrl } from "./dom.js";
import { store } from "./device.js";
import { http } from "./http.js";
import { login } from "./login.js";

const PHONE_PLATFORM = 2; // the simulated phone is an Android

/** The mobile app, played by HTTP calls: SMS login, then scan and confirm. */
export const phone = {
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
