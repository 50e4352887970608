// The one fetch wrapper: every HTTP call goes through it and is recorded.

import { inspector } from "./inspector.js";

/** Waits between retries. */
export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/**
 * One HTTP call, recorded in the inspector (and in `log` if given).
 * Answers { status, body, authToken, ms }; throws only when the network fails.
 */
export async function http(method, path, { body, auth, raw, contentType, log, signal } = {}) {
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
  // Shaped by an injected fault (imctl chaos): said so, lest it pass for a bug.
  const fault = r.headers.get("X-Imctl-Fault");
  if (fault) {
    inspector.add("FAULT", "fault", "injected: " + fault, { request: `${method} ${path}`, status: r.status, fault });
    log?.(`⚡ injected: ${fault}`, true);
  }
  return { status: r.status, body: parsed, authToken, ms };
}
