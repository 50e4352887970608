//! ios-chat, Wildfire's iOS client, as AFNetworking over NSURLSession sends
//! its calls.
//!
//! Mirrors wildfirechat/ios-chat `wfchat/WildFireChat/AppService/AppService.m`:
//! `AFJSONRequestSerializer` (JSON with `Content-Type: application/json`;
//! `parameters:nil`, as for `/scan_pc/%@` and `/fav/del/%d`, sets neither body
//! nor content type), `acceptableContentTypes = {application/json}` (any
//! other answer type fails the call), `[dict[@"code"] intValue] == 0` as the
//! only success test, and after `/login` and `/login_pwd`
//! `[r allHeaderFields][@"authToken"]`. The probe of `GET /` takes
//! `text/plain` or `application/json` and compares the body to `Ok`.

use std::net::SocketAddr;

use serde_json::{Value, json};

use super::vue_chat::{VueChat, assert_logged_in, assert_scanned};
use super::{Answer, Request, assert_numeric, exchange, sms_code, stack};
use crate::common::{TestServer, until_polling};

pub struct Ios {
    addr: SocketAddr,
    host: String,
    pub auth: Option<String>,
}

impl Ios {
    pub fn new(s: &TestServer) -> Self {
        Self {
            addr: s.running.app_addr,
            host: format!("127.0.0.1:{}", s.running.app_addr.port()),
            auth: None,
        }
    }

    fn base(&self, method: &'static str, path: &str) -> Request {
        let mut req = Request::new(method, path)
            .header("Host", &self.host)
            .header("Accept", "*/*");
        if let Some(a) = &self.auth {
            req = req.header("authToken", a);
        }
        req.header(
            "User-Agent",
            "WildFireChat/1.0 (iPhone; iOS 17.2; Scale/3.00)",
        )
        .header("Accept-Language", "en-US;q=1")
        .header("Accept-Encoding", "gzip, deflate, br")
        .header("Connection", "keep-alive")
    }

    /// `[self post:path data:… isLogin:…]`; `None` is `data:nil`: no body,
    /// no content type, and no `Content-Length` either (the barest POST
    /// HTTP/1.1 allows). The answer passed AFNetworking's checks.
    pub async fn post(&mut self, path: &str, data: Option<&Value>, is_login: bool) -> Answer {
        let mut req = self.base("POST", path);
        if let Some(d) = data {
            let body = serde_json::to_vec(d).unwrap();
            req = req
                .header("Content-Type", "application/json")
                .header("Content-Length", body.len().to_string());
            req.body = Some(body);
        }
        let answer = exchange(self.addr, &req).await;
        assert!((200..300).contains(&answer.status), "{path}: {answer:?}");
        assert_eq!(
            answer.mime().as_deref(),
            Some("application/json"),
            "{path}: AFNetworking refuses any other answer type: {answer:?}"
        );
        if is_login && answer.code() == 0 {
            let t = answer
                .header("authToken")
                .unwrap_or_else(|| panic!("{path}: no authToken: {answer:?}"));
            self.auth = Some(t.to_owned());
        }
        answer
    }

    pub async fn sms_login(&mut self, mobile: &str, code: &str) -> (Answer, Value) {
        let a = self
            .post(
                "/login",
                Some(&json!({"mobile": mobile, "code": code, "clientId": "ios-client-id", "platform": 1})),
                true,
            )
            .await;
        assert_eq!(a.code(), 0, "{}", a.text());
        let r = a.result();
        assert!(r["userId"].is_string() && r["token"].is_string(), "{r}");
        assert!(r["register"].is_boolean(), "{r}");
        (a, r)
    }

    /// `pcScaned:`: `/scan_pc/<token>`, no body, no content type.
    pub async fn scan(&mut self, token: &str) -> Answer {
        self.post(&format!("/scan_pc/{token}"), None, false).await
    }

    /// `pcConfirmLogin:`.
    pub async fn confirm(&mut self, token: &str, user_id: &str) -> Answer {
        self.post(
            "/confirm_pc",
            Some(&json!({"token": token, "user_id": user_id, "quick_login": 1})),
            false,
        )
        .await
    }
}

async fn page_with_qr(s: &TestServer) -> (VueChat, String) {
    let mut page = VueChat::new(s);
    let token = page.pc_session(None).await["token"]
        .as_str()
        .unwrap()
        .to_owned();
    (page, token)
}

#[tokio::test]
async fn ios_sms_login() {
    let s = stack(&[]).await;
    let mut phone = Ios::new(&s);
    let a = phone
        .post("/send_code", Some(&json!({"mobile": "13900000003"})), false)
        .await;
    assert_eq!(a.code(), 0, "{}", a.text());
    let code = sms_code(&s, "13900000003").await;
    let (_, r) = phone.sms_login("13900000003", &code).await;
    assert_eq!(r["register"], true);
    assert!(phone.auth.is_some());
}

/// Swift reads `allHeaderFields["authToken"]` case-sensitively: the name
/// must go out in this exact case (the HTTP/1 stack lower-cases by default).
#[tokio::test]
async fn ios_login_answer_names_the_header_authtoken_in_exact_case() {
    let s = stack(&[]).await;
    let mut phone = Ios::new(&s);
    let (a, _) = phone.sms_login("13800000001", "66666").await;
    assert!(
        a.sent_exactly("authToken"),
        "header names sent: {:?}",
        a.headers
    );
}

#[tokio::test]
async fn ios_scans_with_no_body_and_confirms() {
    let s = stack(&[]).await;
    let mut phone = Ios::new(&s);
    phone.sms_login("13800000001", "66666").await;
    let (mut page, token) = page_with_qr(&s).await;
    let poll = page.session_login(&token);
    until_polling(&s, &token).await;
    let a = phone.scan(&token).await;
    assert_eq!(a.code(), 0, "{}", a.text());
    assert_scanned(&poll.await.unwrap(), "Alice Liu");
    let poll = page.session_login(&token);
    until_polling(&s, &token).await;
    let a = phone.confirm(&token, "alice").await;
    assert_eq!(a.code(), 0, "{}", a.text());
    assert_logged_in(&mut page, &poll.await.unwrap(), "alice");
}

#[tokio::test]
async fn ios_scan_and_confirm_between_polls_give_the_page_9_then_0() {
    let s = stack(&[]).await;
    let mut phone = Ios::new(&s);
    phone.sms_login("13800000002", "66666").await;
    let (mut page, token) = page_with_qr(&s).await;
    assert_eq!(phone.scan(&token).await.code(), 0);
    assert_eq!(phone.confirm(&token, "bob").await.code(), 0);
    assert_scanned(&page.session_login(&token).await.unwrap(), "Bob Chen");
    let done = page.session_login(&token).await.unwrap();
    assert_logged_in(&mut page, &done, "bob");
}

#[tokio::test]
async fn ios_cancel_gives_the_page_18() {
    let s = stack(&[]).await;
    let mut phone = Ios::new(&s);
    phone.sms_login("13800000003", "66666").await;
    let (page, token) = page_with_qr(&s).await;
    assert_eq!(phone.scan(&token).await.code(), 0);
    assert_scanned(&page.session_login(&token).await.unwrap(), "Carol Wang");
    let poll = page.session_login(&token);
    until_polling(&s, &token).await;
    let a = phone
        .post("/cancel_pc", Some(&json!({"token": token})), false)
        .await;
    assert_eq!(a.code(), 0, "{}", a.text());
    assert_eq!(poll.await.unwrap().code(), 18);
}

#[tokio::test]
async fn ios_scanning_an_expired_qr_fails_with_8() {
    let s = stack(&["--qr-ttl", "300ms"]).await;
    let mut phone = Ios::new(&s);
    phone.sms_login("13800000001", "66666").await;
    let (page, token) = page_with_qr(&s).await;
    assert_eq!(page.session_login(&token).await.unwrap().code(), 8);
    assert_eq!(phone.scan(&token).await.code(), 8);
    assert_eq!(phone.confirm(&token, "alice").await.code(), 8);
}

#[tokio::test]
async fn ios_confirms_a_quick_login_without_scanning() {
    let s = stack(&[]).await;
    let mut phone = Ios::new(&s);
    phone.sms_login("13800000002", "66666").await;
    // A page that logged bob in before: it quick-logs in with his authToken.
    let (mut page, token) = page_with_qr(&s).await;
    assert_eq!(phone.scan(&token).await.code(), 0);
    assert_eq!(phone.confirm(&token, "bob").await.code(), 0);
    assert_scanned(&page.session_login(&token).await.unwrap(), "Bob Chen");
    let done = page.session_login(&token).await.unwrap();
    assert_logged_in(&mut page, &done, "bob");

    let session = page.pc_session(Some("bob")).await;
    assert_eq!(session["status"], 1, "{session}");
    let quick = session["token"].as_str().unwrap().to_owned();
    assert_scanned(&page.session_login(&quick).await.unwrap(), "Bob Chen");
    let poll = page.session_login(&quick);
    until_polling(&s, &quick).await;
    // The PCLoginRequest push opens PCLoginConfirmViewController: confirm only.
    assert_eq!(phone.confirm(&quick, "bob").await.code(), 0);
    assert_logged_in(&mut page, &poll.await.unwrap(), "bob");
}

#[tokio::test]
async fn ios_password_login_and_reset() {
    let s = stack(&[]).await;
    let mut phone = Ios::new(&s);
    let (_, r) = phone.sms_login("13800000003", "66666").await;
    let reset_code = r["resetCode"].as_str().unwrap_or_default().to_owned();
    assert_eq!(reset_code.len(), 6, "{r}");
    let a = phone
        .post(
            "/reset_pwd",
            Some(&json!({"resetCode": reset_code, "newPassword": "correct-horse-42"})),
            false,
        )
        .await;
    assert_eq!(a.code(), 0, "{}", a.text());

    let mut other = Ios::new(&s);
    let a = other
        .post(
            "/login_pwd",
            Some(&json!({"mobile": "13800000003", "password": "correct-horse-42", "clientId": "ios-2", "platform": 1})),
            true,
        )
        .await;
    assert_eq!(a.code(), 0, "{}", a.text());
    assert_eq!(a.result()["userId"], "carol");
    assert!(other.auth.is_some());
    // changePassword with the new session.
    let a = other
        .post(
            "/change_pwd",
            Some(&json!({"oldPassword": "correct-horse-42", "newPassword": "battery-staple-7"})),
            false,
        )
        .await;
    assert_eq!(a.code(), 0, "{}", a.text());
}

#[tokio::test]
async fn ios_favorites_delete_with_no_body() {
    let s = stack(&[]).await;
    let mut phone = Ios::new(&s);
    phone.sms_login("13800000001", "66666").await;
    // addFavoriteItem: every string defaulted to @"".
    let fav = json!({"type": 1, "messageUid": 1_234_567_890_123_i64, "convType": 0, "convLine": 0, "convTarget": "bob",
        "origin": "", "sender": "bob", "title": "hello", "url": "", "thumbUrl": "", "data": ""});
    assert_eq!(phone.post("/fav/add", Some(&fav), false).await.code(), 0);
    let a = phone
        .post("/fav/list", Some(&json!({"id": 0, "count": 20})), false)
        .await;
    assert_eq!(a.code(), 0, "{}", a.text());
    let result = a.result();
    assert!(result["hasMore"].is_boolean(), "{result}");
    let item = result["items"][0].clone();
    for key in ["convType", "convLine", "id", "type", "timestamp"] {
        assert_numeric(&item, key);
    }
    assert_eq!(item["convTarget"], "bob");
    let id = item["id"].to_string().trim_matches('"').to_owned();
    let a = phone.post(&format!("/fav/del/{id}"), None, false).await;
    assert_eq!(a.code(), 0, "{}", a.text());
}

#[tokio::test]
async fn ios_probes_get_root_for_plain_ok() {
    let s = stack(&[]).await;
    let phone = Ios::new(&s);
    let a = exchange(s.running.app_addr, &phone.base("GET", "/")).await;
    assert_eq!(a.status, 200, "{a:?}");
    assert!(
        matches!(a.mime().as_deref(), Some("text/plain" | "application/json")),
        "AFHTTPResponseSerializer takes text/plain or application/json: {a:?}"
    );
    assert_eq!(a.text(), "Ok");
}
