// This browser as an IM client: its client id and platform, and what it keeps
// in localStorage (under "imctl.").

export const PLATFORM_WEB = 5;

export function randomId() {
  if (crypto.randomUUID) return crypto.randomUUID();
  const b = crypto.getRandomValues(new Uint8Array(16));
  return Array.from(b, (x) => x.toString(16).padStart(2, "0")).join("");
}

export const store = {
  get(key) { try { return JSON.parse(localStorage.getItem("imctl." + key)); } catch { return null; } },
  set(key, value) { localStorage.setItem("imctl." + key, JSON.stringify(value)); },
  del(key) { localStorage.removeItem("imctl." + key); },
};

export const clientId = store.get("clientId") || "web-" + randomId().slice(0, 12);
store.set("clientId", clientId);
