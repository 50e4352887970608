//! vue-chat, Wildfire's web client, as Chromium sends its axios 1.6.7 calls.
//!
//! Mirrors wildfirechat/vue-chat `src/api/appServerApi.js` (requests, and
//! `_interceptLoginResponse`: the token from the `authtoken` response header)
//! and `src/ui/main/LoginPage.vue` (the QR loop: poll again after 9, act on 0
//! only after a 9, start over on 18, stop on anything else), with axios
//! 1.6.7's `lib/core/dispatchRequest.js` + `lib/adapters/xhr.js`: a `null` or
//! `''` body goes out as no body with `Content-Type:
//! application/x-www-form-urlencoded`. Until late 2025 (vue-chat e76843f)
//! every call went `withCredentials: true`; these tests play that older
//! client, the stricter one for CORS.

use std::net::SocketAddr;

use serde_json::{Value, json};

use super::{Answer, Request, exchange, sms_code, stack};
use crate::common::{TestServer, until_polling};

/// Where the page is served from: vue-chat's dev server.
pub const ORIGIN: &str = "http://localhost:8080";
const UA: &str = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36";

/// What axios was given as `data`.
#[derive(Clone, Copy)]
pub enum Data<'a> {
    /// An object: JSON with `Content-Type: application/json`.
    Json(&'a Value),
    /// `null` (`/session_login/{t}`) or `''` (`/fav/del/{id}`): no body,
    /// axios's default form content type.
    Nothing,
}

/// The page: its stored `authToken-<host>` and the browser's cookie jar.
#[derive(Clone)]
pub struct VueChat {
    addr: SocketAddr,
    /// `localhost:PORT`: same site as the page, another origin.
    host: String,
    /// `withCredentials` (vue-chat before late 2025).
    credentials: bool,
    pub auth: Option<String>,
    cookies: Vec<(String, String)>,
}

impl VueChat {
    pub fn new(s: &TestServer) -> Self {
        Self {
            addr: s.running.app_addr,
            host: format!("localhost:{}", s.running.app_addr.port()),
            credentials: true,
            auth: None,
            cookies: Vec::new(),
        }
    }

    /// vue-chat since e76843f (November 2025): `withCredentials: false`,
    /// the session in the `authToken` header only.
    pub fn current(s: &TestServer) -> Self {
        Self {
            credentials: false,
            ..Self::new(s)
        }
    }

    /// The browser's fetch of one axios call: a preflight when the call is
    /// not "simple" (JSON, or the `authToken` header), then the call; both
    /// answers checked the way Chromium checks them before the page may
    /// read anything.
    pub async fn post(&self, path: &str, data: Data<'_>) -> Answer {
        let (content_type, body) = match data {
            Data::Json(v) => ("application/json", serde_json::to_vec(v).unwrap()),
            Data::Nothing => ("application/x-www-form-urlencoded", Vec::new()),
        };
        let mut custom: Vec<&str> = Vec::new();
        if self.auth.is_some() {
            custom.push("authtoken");
        }
        if content_type == "application/json" {
            custom.push("content-type");
        }
        if !custom.is_empty() {
            custom.sort_unstable();
            self.preflight(path, &custom.join(",")).await;
        }
        let mut req = Request::new("POST", path)
            .header("Host", &self.host)
            .header("Connection", "keep-alive")
            .header("Content-Length", body.len().to_string())
            .header("Accept", "application/json, text/plain, */*");
        if let Some(a) = &self.auth {
            // axios keeps the name as the page wrote it.
            req = req.header("authToken", a);
        }
        req = req
            .header("Content-Type", content_type)
            .header("User-Agent", UA)
            .header("Origin", ORIGIN);
        req = self.fetch_metadata(req);
        if self.credentials && !self.cookies.is_empty() {
            let jar: Vec<String> = self
                .cookies
                .iter()
                .map(|(n, v)| format!("{n}={v}"))
                .collect();
            req = req.header("Cookie", jar.join("; "));
        }
        req.body = Some(body);
        let answer = exchange(self.addr, &req).await;
        self.cors_readable(&answer, path);
        answer
    }

    fn fetch_metadata(&self, req: Request) -> Request {
        req.header("Sec-Fetch-Site", "same-site")
            .header("Sec-Fetch-Mode", "cors")
            .header("Sec-Fetch-Dest", "empty")
            .header("Referer", format!("{ORIGIN}/"))
            .header("Accept-Encoding", "gzip, deflate, br, zstd")
            .header("Accept-Language", "en-US,en;q=0.9")
    }

    async fn preflight(&self, path: &str, headers: &str) {
        let req = Request::new("OPTIONS", path)
            .header("Host", &self.host)
            .header("Connection", "keep-alive")
            .header("Accept", "*/*")
            .header("Access-Control-Request-Method", "POST")
            .header("Access-Control-Request-Headers", headers)
            .header("Origin", ORIGIN)
            .header("User-Agent", UA);
        let answer = exchange(self.addr, &self.fetch_metadata(req)).await;
        assert!(
            (200..300).contains(&answer.status),
            "preflight of {path} not 2xx: {answer:?}"
        );
        assert_eq!(
            answer.header("access-control-allow-origin"),
            Some(ORIGIN),
            "preflight of {path} must reflect the origin: {answer:?}"
        );
        if self.credentials {
            assert_eq!(
                answer.header("access-control-allow-credentials"),
                Some("true"),
                "credentialed preflight of {path}: {answer:?}"
            );
        }
        let allowed = answer.header_list("access-control-allow-headers");
        for h in headers.split(',') {
            let ok = allowed.iter().any(|a| a.eq_ignore_ascii_case(h))
                || (!self.credentials && allowed.iter().any(|a| a == "*"));
            assert!(ok, "preflight of {path} does not allow {h}: {answer:?}");
        }
        let methods = answer.header_list("access-control-allow-methods");
        assert!(
            methods.is_empty() || methods.iter().any(|m| m == "POST" || m == "*"),
            "preflight of {path} refuses POST: {answer:?}"
        );
    }

    /// What Chromium requires before handing a cross-origin answer to the page.
    fn cors_readable(&self, answer: &Answer, path: &str) {
        let acao = answer.header("access-control-allow-origin");
        if self.credentials {
            assert_eq!(
                acao,
                Some(ORIGIN),
                "{path}: origin not reflected exactly: {answer:?}"
            );
            assert_eq!(
                answer.header("access-control-allow-credentials"),
                Some("true"),
                "{path}: a credentialed answer without Allow-Credentials is dropped: {answer:?}"
            );
        } else {
            assert!(
                acao == Some(ORIGIN) || acao == Some("*"),
                "{path}: not readable from {ORIGIN}: {answer:?}"
            );
        }
        assert!(
            answer
                .header_list("vary")
                .iter()
                .any(|v| v.eq_ignore_ascii_case("origin"))
                || acao == Some("*"),
            "{path}: a reflected origin needs Vary: Origin: {answer:?}"
        );
    }

    /// The page reads `response.headers['authtoken']`: only what the answer
    /// exposes reaches it.
    pub fn read_auth_token(&self, answer: &Answer) -> String {
        let exposed = answer.header_list("access-control-expose-headers");
        assert!(
            exposed.iter().any(|h| h.eq_ignore_ascii_case("authtoken"))
                || (!self.credentials && exposed.iter().any(|h| h == "*")),
            "authToken is not exposed to the page: {answer:?}"
        );
        answer
            .header("authtoken")
            .unwrap_or_else(|| panic!("no authToken header: {answer:?}"))
            .to_owned()
    }

    /// What the browser and the page keep from an answer: its cookies (the
    /// CORS checks already passed), and after a login (`code == 0` on
    /// `/login`, `/login_pwd`, `/session_login`) the `authToken`.
    pub fn keep(&mut self, answer: &Answer, is_login: bool) {
        if self.credentials {
            for (n, v) in &answer.headers {
                if n.eq_ignore_ascii_case("set-cookie")
                    && let Some((name, value)) = v.split(';').next().unwrap().split_once('=')
                {
                    self.cookies.retain(|(c, _)| c != name.trim());
                    self.cookies
                        .push((name.trim().to_owned(), value.trim().to_owned()));
                }
            }
        }
        if is_login && answer.code() == 0 {
            self.auth = Some(self.read_auth_token(answer));
        }
    }

    /// `createPCSession(userId)`: `flag: 1` always, `userId` null unless
    /// the page remembers a user (quick login).
    pub async fn pc_session(&mut self, user_id: Option<&str>) -> Value {
        let body = json!({"flag": 1, "device_name": "pc", "userId": user_id, "clientId": "vue-chat-client-id", "platform": 5});
        let a = self.post("/pc_session", Data::Json(&body)).await;
        self.keep(&a, false);
        assert_eq!(a.code(), 0, "{}", a.text());
        let session = a.result();
        assert!(
            session["token"].as_str().is_some_and(|t| !t.is_empty()),
            "{session}"
        );
        assert!(session["status"].is_i64(), "{session}");
        session
    }

    /// `loginWithPCSession(token)` (`_post(path, null, true)`) in the
    /// background: a long poll the test acts during.
    pub fn session_login(&self, token: &str) -> tokio::task::JoinHandle<Answer> {
        let (page, path) = (self.clone(), format!("/session_login/{token}"));
        tokio::spawn(async move { page.post(&path, Data::Nothing).await })
    }
}

/// 9 as vue-chat reads it: the scanner's portrait and name.
pub fn assert_scanned(a: &Answer, name: &str) {
    assert_eq!(a.code(), 9, "{}", a.text());
    let r = a.result();
    assert_eq!(r["userName"], name, "{r}");
    assert!(
        r["portrait"]
            .as_str()
            .is_some_and(|p| p.starts_with("http")),
        "{r}"
    );
}

/// 0 as vue-chat reads it: `userId`, `token` for `wfc.connect`.
pub fn assert_logged_in(page: &mut VueChat, a: &Answer, user: &str) {
    assert_eq!(a.code(), 0, "{}", a.text());
    let r = a.result();
    assert_eq!(r["userId"], user, "{r}");
    assert!(r["token"].as_str().is_some_and(|t| !t.is_empty()), "{r}");
    page.keep(a, true);
}

#[tokio::test]
async fn vue_chat_sms_login() {
    let s = stack(&[]).await;
    let mut page = VueChat::new(&s);
    let a = page
        .post("/send_code", Data::Json(&json!({"mobile": "13900000001"})))
        .await;
    assert_eq!(a.code(), 0, "{}", a.text());
    let code = sms_code(&s, "13900000001").await;
    let a = page
        .post(
            "/login",
            Data::Json(&json!({"mobile": "13900000001", "code": code, "platform": 5, "clientId": "vue-chat-client-id"})),
        )
        .await;
    page.keep(&a, true);
    let r = a.result();
    assert!(r["userId"].is_string() && r["token"].is_string(), "{r}");
    assert_eq!(r["register"], true, "a first login registers: {r}");
    assert!(page.auth.as_deref().is_some_and(|t| !t.is_empty()));
}

#[tokio::test]
async fn vue_chat_current_client_logs_in_without_credentials() {
    let s = stack(&[]).await;
    let mut page = VueChat::current(&s);
    let a = page
        .post(
            "/login",
            Data::Json(&json!({"mobile": "13800000003", "code": "66666", "platform": 5, "clientId": "vue-chat-client-id"})),
        )
        .await;
    page.keep(&a, true);
    assert_eq!(a.result()["userId"], "carol");
    // The header alone carries the session: a quick login as carol.
    let session = page.pc_session(Some("carol")).await;
    assert_eq!(session["status"], 1, "{session}");
}

#[tokio::test]
async fn vue_chat_qr_login_polls_through_9_to_0() {
    let s = stack(&[]).await;
    let (alice, _) = s.login("13800000001").await;
    let mut page = VueChat::new(&s);
    let session = page.pc_session(None).await;
    assert_eq!(session["status"], 0, "no login yet: an ordinary QR session");
    let token = session["token"].as_str().unwrap().to_owned();

    let poll = page.session_login(&token);
    until_polling(&s, &token).await;
    assert_eq!(
        s.post(&format!("/scan_pc/{token}"), json!({}), Some(&alice))
            .await
            .code(),
        0
    );
    assert_scanned(&poll.await.unwrap(), "Alice Liu");

    let poll = page.session_login(&token);
    until_polling(&s, &token).await;
    let c = s
        .post("/confirm_pc", json!({"token": token}), Some(&alice))
        .await;
    assert_eq!(c.code(), 0, "{}", c.body);
    let done = poll.await.unwrap();
    assert_logged_in(&mut page, &done, "alice");
    assert_ne!(
        page.auth.as_deref(),
        Some(alice.as_str()),
        "the page has its own session"
    );
}

#[tokio::test]
async fn vue_chat_scan_and_confirm_between_polls_still_sees_9_before_0() {
    let s = stack(&[]).await;
    let (bob, _) = s.login("13800000002").await;
    let mut page = VueChat::new(&s);
    let token = page.pc_session(None).await["token"]
        .as_str()
        .unwrap()
        .to_owned();
    // The phone is quicker than the page's next poll.
    assert_eq!(
        s.post(&format!("/scan_pc/{token}"), json!({}), Some(&bob))
            .await
            .code(),
        0
    );
    assert_eq!(
        s.post("/confirm_pc", json!({"token": token}), Some(&bob))
            .await
            .code(),
        0
    );
    // LoginPage.vue ignores a 0 it has not seen a 9 before: the page would hang.
    assert_scanned(&page.session_login(&token).await.unwrap(), "Bob Chen");
    let done = page.session_login(&token).await.unwrap();
    assert_logged_in(&mut page, &done, "bob");
}

#[tokio::test]
async fn vue_chat_cancel_answers_18_and_the_page_starts_over() {
    let s = stack(&[]).await;
    let (carol, _) = s.login("13800000003").await;
    let mut page = VueChat::new(&s);
    let token = page.pc_session(None).await["token"]
        .as_str()
        .unwrap()
        .to_owned();
    let poll = page.session_login(&token);
    until_polling(&s, &token).await;
    s.post(&format!("/scan_pc/{token}"), json!({}), Some(&carol))
        .await;
    assert_scanned(&poll.await.unwrap(), "Carol Wang");
    let poll = page.session_login(&token);
    until_polling(&s, &token).await;
    assert_eq!(
        s.post("/cancel_pc", json!({"token": token}), Some(&carol))
            .await
            .code(),
        0
    );
    assert_eq!(poll.await.unwrap().code(), 18);
    // cancel() → refreshQrCode(): a new session.
    let next = page.pc_session(None).await;
    assert_ne!(next["token"], json!(token));
    assert_eq!(next["status"], 0);
}

#[tokio::test]
async fn vue_chat_expired_qr_answers_8() {
    let s = stack(&["--qr-ttl", "300ms"]).await;
    let mut page = VueChat::new(&s);
    let token = page.pc_session(None).await["token"]
        .as_str()
        .unwrap()
        .to_owned();
    // Answered at expiry, not at the poll timeout: the page stops polling
    // (its 60-s refresh makes the next QR).
    let a = page.session_login(&token).await.unwrap();
    assert_eq!(a.code(), 8, "{}", a.text());
    let again = page.session_login(&token).await.unwrap();
    assert_eq!(again.code(), 8);
}

#[tokio::test]
async fn vue_chat_quick_login_with_the_stored_auth_token() {
    let s = stack(&[]).await;
    let (alice, _) = s.login("13800000001").await;
    let mut page = VueChat::new(&s);
    // A first QR login leaves the page with alice's authToken.
    let token = page.pc_session(None).await["token"]
        .as_str()
        .unwrap()
        .to_owned();
    s.post(&format!("/scan_pc/{token}"), json!({}), Some(&alice))
        .await;
    s.post("/confirm_pc", json!({"token": token}), Some(&alice))
        .await;
    assert_scanned(&page.session_login(&token).await.unwrap(), "Alice Liu");
    let done = page.session_login(&token).await.unwrap();
    assert_logged_in(&mut page, &done, "alice");

    // sendQuickLoginRequest(): the remembered userId, the stored authToken.
    let session = page.pc_session(Some("alice")).await;
    assert_eq!(
        session["status"], 1,
        "quick login starts scanned: {session}"
    );
    let quick = session["token"].as_str().unwrap().to_owned();
    assert_scanned(&page.session_login(&quick).await.unwrap(), "Alice Liu");
    let poll = page.session_login(&quick);
    until_polling(&s, &quick).await;
    // The phone confirms straight away, no /scan_pc.
    let c = s
        .post(
            "/confirm_pc",
            json!({"token": quick, "user_id": "alice", "quick_login": 1}),
            Some(&alice),
        )
        .await;
    assert_eq!(c.code(), 0, "{}", c.body);
    assert_logged_in(&mut page, &poll.await.unwrap(), "alice");
}

#[tokio::test]
async fn vue_chat_quick_login_without_a_session_is_an_ordinary_qr() {
    let s = stack(&[]).await;
    let mut page = VueChat::new(&s);
    let session = page.pc_session(Some("alice")).await;
    assert_eq!(
        session["status"], 0,
        "no session, no quick login: {session}"
    );
}

#[tokio::test]
async fn vue_chat_old_client_rides_on_the_session_cookie() {
    let s = stack(&[]).await;
    let mut page = VueChat::new(&s);
    let a = page
        .post(
            "/login",
            Data::Json(&json!({"mobile": "13800000001", "code": "66666", "platform": 5, "clientId": "vue-chat-client-id"})),
        )
        .await;
    page.keep(&a, true);
    assert!(
        !page.cookies.is_empty(),
        "a login sets the session cookie: {a:?}"
    );
    let cookie = a.header_list("set-cookie").join(";").to_ascii_lowercase();
    assert!(cookie.contains("httponly"), "{cookie}");
    assert!(cookie.contains("samesite=lax"), "{cookie}");
    // The header lost (not exposed, or cleared): the cookie alone is the session.
    page.auth = None;
    let session = page.pc_session(Some("alice")).await;
    assert_eq!(
        session["status"], 1,
        "the cookie's user quick-logs in: {session}"
    );
}

#[tokio::test]
async fn vue_chat_password_login_and_reset() {
    let s = stack(&[]).await;
    let mut page = VueChat::new(&s);
    let a = page
        .post(
            "/login",
            Data::Json(&json!({"mobile": "13800000002", "code": "66666", "platform": 5, "clientId": "vue-chat-client-id"})),
        )
        .await;
    page.keep(&a, true);
    let reset_code = a.result()["resetCode"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert_eq!(reset_code.len(), 6, "{}", a.text());
    // resetPassword(code, newPassword): no mobile, the stored authToken.
    let r = page
        .post(
            "/reset_pwd",
            Data::Json(&json!({"resetCode": reset_code, "newPassword": "correct-horse-42"})),
        )
        .await;
    assert_eq!(r.code(), 0, "{}", r.text());
    let mut fresh = VueChat::new(&s);
    let a = fresh
        .post(
            "/login_pwd",
            Data::Json(&json!({"mobile": "13800000002", "password": "correct-horse-42", "platform": 5, "clientId": "vue-chat-2"})),
        )
        .await;
    fresh.keep(&a, true);
    assert_eq!(a.result()["userId"], "bob");
    // changePassword, then requestResetPasswordAuthCode() with its default `{}`.
    let c = fresh
        .post(
            "/change_pwd",
            Data::Json(
                &json!({"oldPassword": "correct-horse-42", "newPassword": "battery-staple-7"}),
            ),
        )
        .await;
    assert_eq!(c.code(), 0, "{}", c.text());
    let r = fresh.post("/send_reset_code", Data::Json(&json!({}))).await;
    assert_eq!(r.code(), 0, "{}", r.text());
}

#[tokio::test]
async fn vue_chat_favorites_delete_with_an_empty_body() {
    let s = stack(&[]).await;
    let mut page = VueChat::new(&s);
    let a = page
        .post(
            "/login",
            Data::Json(&json!({"mobile": "13800000001", "code": "66666", "platform": 5, "clientId": "vue-chat-client-id"})),
        )
        .await;
    page.keep(&a, true);
    // favMessage: messageUid as a string (stringValue of a Long).
    let fav = json!({"messageUid": "1234567890123", "type": 1, "convType": 0, "convTarget": "bob", "convLine": 0,
        "origin": "Bob Chen", "sender": "bob", "title": "hello", "url": "", "thumbUrl": "", "data": ""});
    let add = page.post("/fav/add", Data::Json(&fav)).await;
    assert_eq!(add.code(), 0, "{}", add.text());
    let list = page
        .post("/fav/list", Data::Json(&json!({"id": 0, "count": 20})))
        .await;
    assert_eq!(list.code(), 0, "{}", list.text());
    let items = list.result()["items"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert_eq!(items.len(), 1, "{}", list.text());
    assert!(list.result()["hasMore"].is_boolean());
    let id = &items[0]["id"];
    let id = id
        .as_i64()
        .map(|i| i.to_string())
        .or(id.as_str().map(str::to_owned))
        .unwrap();
    // delFav: `this._post('/fav/del/' + id, '')`.
    let del = page.post(&format!("/fav/del/{id}"), Data::Nothing).await;
    assert_eq!(del.code(), 0, "{}", del.text());
    let list = page
        .post("/fav/list", Data::Json(&json!({"id": 0, "count": 20})))
        .await;
    assert_eq!(list.result()["items"], json!([]), "{}", list.text());
}

#[tokio::test]
async fn vue_chat_probes_the_app_server_with_get_root_ok() {
    let s = stack(&[]).await;
    // `_getAppServer()`'s probe: axios.get(APP_SERVER) compared to 'Ok',
    // without credentials.
    let req = Request::new("GET", "/")
        .header("Host", format!("localhost:{}", s.running.app_addr.port()))
        .header("Connection", "keep-alive")
        .header("Accept", "application/json, text/plain, */*")
        .header("User-Agent", UA)
        .header("Origin", ORIGIN);
    let page = VueChat::current(&s);
    let a = exchange(s.running.app_addr, &page.fetch_metadata(req)).await;
    assert_eq!(a.status, 200, "{a:?}");
    page.cors_readable(&a, "/");
    assert_eq!(a.text(), "Ok");
}
