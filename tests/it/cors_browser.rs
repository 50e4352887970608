//! A page on another origin logs in through imctl's login API in a real
//! headless Chromium: `fetch(…, {credentials: 'include'})` as Wildfire's web
//! clients did until late 2025, the exposed `authToken` read from the
//! answer, then a QR login approved by the real `imctl simulate`.
//!
//! Chromium enforces what the raw conformance tests only describe: the
//! preflight, `Access-Control-Allow-Credentials`, the exposed header.
//! Without Chromium it skips like `browser.rs` (fails with
//! `IMCTL_REQUIRE_BROWSER=1`).

use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use crate::browser::Browser;
use crate::common::{simulate, start, stderr, stdout, until_polling};

/// The page: everything it does is in `run`, its outcome in `window.result`
/// or `window.failure`, each answer's code in `window.codes`.
const PAGE: &str = r#"<!doctype html>
<html><head><meta charset="utf-8"><title>another origin</title></head><body>
<script>
window.codes = [];
async function call(app, path, body, auth) {
  const headers = {};
  if (body !== null) headers['Content-Type'] = 'application/json';
  if (auth) headers['authToken'] = auth;
  const r = await fetch(app + path, {
    method: 'POST', credentials: 'include', headers,
    body: body === null ? undefined : JSON.stringify(body),
  });
  const j = await r.json();
  window.codes.push(path.split('/')[1] + ' ' + j.code);
  return [r, j];
}
window.run = async function (app, mobile) {
  try {
    let [r, j] = await call(app, '/login', {mobile, code: '66666', clientId: 'other-origin', platform: 5}, null);
    if (j.code !== 0) throw new Error('login: ' + JSON.stringify(j));
    const auth = r.headers.get('authToken');
    if (!auth) throw new Error('the login answer does not expose authToken');
    window.loginAuth = auth;
    [r, j] = await call(app, '/pc_session', {clientId: 'other-origin-pc', platform: 5, device_name: 'pc'}, auth);
    if (j.code !== 0) throw new Error('pc_session: ' + JSON.stringify(j));
    window.qrToken = j.result.token;
    for (let i = 0; i < 10; i++) {
      [r, j] = await call(app, '/session_login/' + window.qrToken, null, auth);
      if (j.code === 9) continue;
      if (j.code === 0) {
        window.result = {userId: j.result.userId, imToken: !!j.result.token, authToken: r.headers.get('authToken')};
        return;
      }
      throw new Error('session_login answered ' + JSON.stringify(j));
    }
    throw new Error('no login after 10 polls');
  } catch (e) {
    window.failure = String(e);
  }
};
</script></body></html>"#;

/// A one-page static server on a free loopback port: the other origin.
async fn serve_page() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 2048];
                while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                    match socket.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                }
                let head = format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: text/html; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                    PAGE.len()
                );
                let _ = socket.write_all(head.as_bytes()).await;
                let _ = socket.write_all(PAGE.as_bytes()).await;
            });
        }
    });
    port
}

/// Fails with the page's error and the answers it had by then.
async fn page_ok(b: &Browser) {
    let seen = b.js("return [window.failure || null, window.codes]").await;
    assert_eq!(seen[0], Value::Null, "the page failed after {}", seen[1]);
}

#[tokio::test]
async fn a_page_on_another_origin_logs_in_with_credentials_and_a_qr() {
    let Some(b) =
        Browser::start("a_page_on_another_origin_logs_in_with_credentials_and_a_qr").await
    else {
        return;
    };
    let s = start(&["--poll-timeout", "5s"]).await;
    let page_port = serve_page().await;
    // Same host, another port: another origin (the same site, so the
    // session cookie would travel too).
    let app = format!("http://localhost:{}", s.running.app_addr.port());
    b.client
        .goto(&format!("http://localhost:{page_port}/"))
        .await
        .unwrap();
    b.js(&format!("window.run({app:?}, '13800000001'); return null"))
        .await;

    let token = b
        .until("the QR token", "window.qrToken || window.failure")
        .await;
    page_ok(&b).await;
    let token = token.as_str().unwrap().to_owned();
    until_polling(&s, &token).await;

    let dir = tempfile::tempdir().unwrap();
    let approved = simulate(dir.path(), &s.url, &["approve", &token, "--as", "alice"]).await;
    assert!(
        approved.status.success(),
        "{}\n{}",
        stdout(&approved),
        stderr(&approved)
    );

    b.until("the page logged in", "window.result || window.failure")
        .await;
    page_ok(&b).await;
    let result = b.js("return window.result").await;
    assert_eq!(result["userId"], "alice", "{result}");
    assert_eq!(result["imToken"], true, "{result}");
    let codes = b.js("return window.codes").await;
    assert_eq!(
        codes,
        json!([
            "login 0",
            "pc_session 0",
            "session_login 9",
            "session_login 0"
        ]),
        "9 before 0"
    );

    // Both sessions the page read are real ones.
    let login_auth = b.js("return window.loginAuth").await;
    let qr_auth = result["authToken"]
        .as_str()
        .expect("authToken read from the answer");
    assert_ne!(login_auth, json!(qr_auth));
    for auth in [login_auth.as_str().unwrap(), qr_auth] {
        let other = s.pc_session().await;
        let r = s
            .post(&format!("/scan_pc/{other}"), json!({}), Some(auth))
            .await;
        assert_eq!(r.code(), 0, "{}", r.body);
    }
    b.close().await;
}
