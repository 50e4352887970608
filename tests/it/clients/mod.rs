//! Conformance of the official Wildfire clients (vue-chat, android-chat,
//! ios-chat): each sequence of app-server requests they make, written byte by
//! byte onto a TCP socket the way their HTTP stacks send them, with the
//! fields and headers each one reads from the answers asserted.
//!
//! No HTTP client library sits in between: it would add, drop or "fix"
//! exactly what these tests pin (an empty body with a JSON content type, no
//! body at all, the header name's case).
//!
//! Where each client behaviour of `shared/reference/wildfire-login-api.md`
//! is pinned (`vue_chat::`, `android::`, `ios::` tests; `cors_browser` is
//! the same page in a real Chromium):
//!
//! | behaviour | where |
//! |---|---|
//! | HTTP 200 + `code` on every answer, never 401 | `Answer::code`, every test |
//! | `authToken` header after `/login`, `/login_pwd`, the QR 0 | `*_sms_login`, `*_password_login_and_reset`, `vue_chat::assert_logged_in` |
//! | origin reflected, `Allow-Credentials: true`, preflight allows `content-type` + `authtoken`, `authToken` exposed, `Vary: Origin` | `VueChat::post` (every `vue_chat` call), `cors_browser` |
//! | current vue-chat without credentials | `vue_chat_current_client_logs_in_without_credentials` |
//! | HttpOnly `SameSite=Lax` cookie as the session when no header | `vue_chat_old_client_rides_on_the_session_cookie` |
//! | `/pc_session` with `flag: 1, userId: null` is an ordinary QR | `VueChat::pc_session`, every QR test |
//! | quick login: `flag: 1` + session → status 1, without → 0; phone confirms without scanning | `vue_chat_quick_login_*`, `*_confirms_a_quick_login_without_scanning` |
//! | 9 (`userName`, `portrait`) before 0, even when scan and confirm land between polls | `*_qr_login_*`, `*_scan_and_confirm_between_polls_*`, `cors_browser` |
//! | cancel → 18, the page starts over | `*_cancel_*` |
//! | expiry → 8 for the poll and the phone | `*_expired_qr_*`, `*_scanning_an_expired_qr_fails_with_8` |
//! | vue-chat `/session_login` and `/fav/del` with no body, form content type (axios 1.6.7) | `VueChat::session_login`, `vue_chat_favorites_delete_with_an_empty_body` |
//! | Android: empty body with `application/json; charset=utf-8`; success only with a non-null `result` | `Android::post`, `android::success` |
//! | Android: `status == 1` after `/scan_pc`, `== 2` after `/confirm_pc` | `android_scans_and_confirms_a_web_login` |
//! | Android: `/fav/list` items with every key, strings present | `android_favorites_have_every_key_and_delete_with_an_empty_json_body` |
//! | iOS: no body, no content type; `application/json` answers only | `Ios::post` (every call), `ios_scans_with_no_body_and_confirms`, `ios_favorites_delete_with_no_body` |
//! | iOS: `authToken` in its exact case | `ios_login_answer_names_the_header_authtoken_in_exact_case` |
//! | `GET /` answers `Ok` (vue-chat, iOS) / 2xx (Android) | `vue_chat_probes_*`, `ios_probes_*`, `android_startup_probe_and_version_check` |
//! | `resetCode` → `/reset_pwd` → `/login_pwd`, `/change_pwd`, `/send_reset_code {}` | `*_password_login_and_reset` |
//! | `/version/check` says no update | `android_startup_probe_and_version_check` |
//!
//! Android's refusal of `127.0.0.1` addresses is about the URLs the server
//! hands out, not a request: the LAN-mode tests pin those.

mod android;
mod ios;
mod vue_chat;

use std::net::SocketAddr;
use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::common::{TestServer, start};

/// The flags of every conformance stack: a short long poll, so a test that
/// waits on one never waits long.
const FAST: &[&str] = &["--poll-timeout", "3s"];

/// A stack for the conformance tests, with `extra` flags.
pub async fn stack(extra: &[&str]) -> TestServer {
    let mut flags = FAST.to_vec();
    flags.extend_from_slice(extra);
    start(&flags).await
}

/// One request as the client puts it on the wire.
pub struct Request {
    pub method: &'static str,
    pub path: String,
    /// In the client's order and case.
    pub headers: Vec<(String, String)>,
    /// `None`: no body and no `Content-Length` at all.
    pub body: Option<Vec<u8>>,
}

impl Request {
    pub fn new(method: &'static str, path: impl Into<String>) -> Self {
        Self {
            method,
            path: path.into(),
            headers: Vec::new(),
            body: None,
        }
    }

    pub fn header(mut self, name: &str, value: impl Into<String>) -> Self {
        self.headers.push((name.to_owned(), value.into()));
        self
    }

    /// The exact bytes: request line, headers as given, blank line, body.
    pub fn bytes(&self) -> Vec<u8> {
        let mut out = format!("{} {} HTTP/1.1\r\n", self.method, self.path);
        for (n, v) in &self.headers {
            out.push_str(&format!("{n}: {v}\r\n"));
        }
        out.push_str("\r\n");
        let mut out = out.into_bytes();
        if let Some(body) = &self.body {
            out.extend_from_slice(body);
        }
        out
    }
}

/// An answer as it came off the socket: header names in the case sent.
#[derive(Clone)]
pub struct Answer {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl std::fmt::Debug for Answer {
    /// The body as text, cut short: a failing test shows what came back.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let text = self.text();
        let cut: String = text.chars().take(400).collect();
        f.debug_struct("Answer")
            .field("status", &self.status)
            .field("headers", &self.headers)
            .field("body", &cut)
            .finish()
    }
}

impl Answer {
    /// A header's value, looked up as HTTP says (any case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// All values of a header, comma lists split and trimmed.
    pub fn header_list(&self, name: &str) -> Vec<String> {
        self.headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .flat_map(|(_, v)| v.split(','))
            .map(|v| v.trim().to_owned())
            .filter(|v| !v.is_empty())
            .collect()
    }

    /// Whether the header was sent with exactly this name (Swift
    /// dictionaries and some Objective-C lookups are case-sensitive).
    pub fn sent_exactly(&self, name: &str) -> bool {
        self.headers.iter().any(|(n, _)| n == name)
    }

    /// The media type without parameters, lower-cased
    /// (`application/json; charset=utf-8` → `application/json`).
    pub fn mime(&self) -> Option<String> {
        self.header("content-type")
            .map(|v| v.split(';').next().unwrap().trim().to_ascii_lowercase())
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {:?}\n{self:?}", self.text()))
    }

    /// The envelope's `code`, after checking the envelope itself: HTTP 200
    /// (OkHttp, axios and AFNetworking all fail anything else) with a
    /// numeric code.
    pub fn code(&self) -> i64 {
        assert_eq!(
            self.status, 200,
            "the envelope is always HTTP 200: {self:?}"
        );
        let body = self.json();
        body["code"]
            .as_i64()
            .unwrap_or_else(|| panic!("no numeric code in {body}"))
    }

    pub fn result(&self) -> Value {
        self.json()["result"].clone()
    }
}

/// Writes `request` on a fresh connection to `addr` and reads one answer
/// (by `Content-Length`, chunked, or to the end of the stream).
pub async fn exchange(addr: SocketAddr, request: &Request) -> Answer {
    let bytes = request.bytes();
    tokio::time::timeout(Duration::from_secs(20), async move {
        let mut stream = TcpStream::connect(addr).await.expect("connects");
        stream.write_all(&bytes).await.expect("request written");
        read_answer(&mut stream).await
    })
    .await
    .unwrap_or_else(|_| {
        panic!(
            "no answer within 20 s to {} {}",
            request.method, request.path
        )
    })
}

async fn read_answer(stream: &mut TcpStream) -> Answer {
    let mut buf = Vec::new();
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i;
        }
        let mut chunk = [0u8; 4096];
        let n = stream.read(&mut chunk).await.expect("answer readable");
        assert!(n > 0, "connection closed before the answer's head: {buf:?}");
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = std::str::from_utf8(&buf[..head_end]).expect("ASCII head");
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap();
    let status: u16 = status_line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("bad status line {status_line:?}"));
    let headers: Vec<(String, String)> = lines
        .map(|l| {
            let (n, v) = l.split_once(':').expect("header line");
            (n.to_owned(), v.trim().to_owned())
        })
        .collect();
    let mut answer = Answer {
        status,
        headers,
        body: Vec::new(),
    };
    // The clients' stacks would decode it; none of these answers needs it.
    assert!(
        answer.header("content-encoding").is_none(),
        "unexpected content-encoding: {answer:?}"
    );
    let mut rest = buf[head_end + 4..].to_vec();
    if answer
        .header("transfer-encoding")
        .is_some_and(|t| t.eq_ignore_ascii_case("chunked"))
    {
        answer.body = read_chunked(stream, rest).await;
    } else if let Some(len) = answer.header("content-length") {
        let len: usize = len.parse().expect("numeric content-length");
        while rest.len() < len {
            let mut chunk = [0u8; 4096];
            let n = stream.read(&mut chunk).await.expect("body readable");
            assert!(n > 0, "connection closed inside the body");
            rest.extend_from_slice(&chunk[..n]);
        }
        rest.truncate(len);
        answer.body = rest;
    } else if status != 204 && status != 304 && !(100..200).contains(&status) {
        stream.read_to_end(&mut rest).await.expect("body readable");
        answer.body = rest;
    }
    answer
}

async fn read_chunked(stream: &mut TcpStream, mut buf: Vec<u8>) -> Vec<u8> {
    let mut body = Vec::new();
    loop {
        while !buf.windows(2).any(|w| w == b"\r\n") {
            fill(stream, &mut buf).await;
        }
        let eol = buf.windows(2).position(|w| w == b"\r\n").unwrap();
        let size_text = std::str::from_utf8(&buf[..eol]).unwrap();
        let size = usize::from_str_radix(size_text.split(';').next().unwrap().trim(), 16)
            .expect("chunk size");
        buf.drain(..eol + 2);
        if size == 0 {
            return body;
        }
        while buf.len() < size + 2 {
            fill(stream, &mut buf).await;
        }
        body.extend_from_slice(&buf[..size]);
        buf.drain(..size + 2);
    }
}

async fn fill(stream: &mut TcpStream, buf: &mut Vec<u8>) {
    let mut chunk = [0u8; 4096];
    let n = stream.read(&mut chunk).await.expect("chunk readable");
    assert!(n > 0, "connection closed inside a chunked body");
    buf.extend_from_slice(&chunk[..n]);
}

/// The latest SMS code sent to `mobile`, from the dev outbox (what the user
/// reads on their phone; not a client request).
pub async fn sms_code(s: &TestServer, mobile: &str) -> String {
    s.client
        .dev_sms(mobile, None, None)
        .await
        .expect("dev outbox")
        .first()
        .unwrap_or_else(|| panic!("no SMS to {mobile}"))
        .code
        .clone()
}

/// Asserts `value` is a JSON number or a numeric string: what Android's
/// `JSONObject.getInt`/`getLong` and iOS's `intValue` both accept.
pub fn assert_numeric(item: &Value, key: &str) {
    let v = &item[key];
    let ok = v.is_i64()
        || v.is_u64()
        || v.as_str()
            .is_some_and(|s| !s.is_empty() && s.parse::<i64>().is_ok());
    assert!(ok, "{key} is not numeric in {item}");
}
