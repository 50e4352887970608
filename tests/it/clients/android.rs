//! android-chat, Wildfire's Android client, as OkHttp sends its calls.
//!
//! Mirrors wildfirechat/android-chat
//! `uikit/src/main/java/cn/wildfire/chat/kit/net/OKHttpHelper.java` (every
//! POST body is `RequestBody.create("application/json; charset=utf-8", …)`,
//! `""` when there are no parameters; the interceptor adds the `authToken`
//! stored per host and port and stores any `authToken` an answer carries; a
//! typed callback succeeds only on HTTP 2xx, `code == 0` and a non-null
//! `result`) and `chat/src/main/java/cn/wildfire/chat/app/AppService.java`
//! (the calls, Gson-serialised maps that leave out null values; `/scan_pc`
//! wants `result.status == 1`, `/confirm_pc` `result.status == 2`;
//! `/fav/list` read with `JSONObject.getString`/`getInt`, which throw on a
//! missing key). The phone's QR screens are `PCLoginActivity.java`.

use std::net::SocketAddr;

use serde_json::{Value, json};

use super::vue_chat::{Data, VueChat, assert_logged_in, assert_scanned};
use super::{Answer, Request, assert_numeric, exchange, sms_code, stack};
use crate::common::{TestServer, until_polling};

/// The phone: OkHttp plus its stored authToken.
pub struct Android {
    addr: SocketAddr,
    host: String,
    pub auth: Option<String>,
}

impl Android {
    pub fn new(s: &TestServer) -> Self {
        Self {
            addr: s.running.app_addr,
            host: format!("127.0.0.1:{}", s.running.app_addr.port()),
            auth: None,
        }
    }

    /// `OKHttpHelper.post(url, param, …)`; `None` is `param == null`.
    pub async fn post(&mut self, path: &str, param: Option<&Value>) -> Answer {
        let body = param.map_or_else(Vec::new, |p| serde_json::to_vec(p).unwrap());
        let mut req = Request::new("POST", path);
        if let Some(a) = &self.auth {
            req = req.header("authToken", a);
        }
        req = req
            .header("Content-Type", "application/json; charset=utf-8")
            .header("Content-Length", body.len().to_string());
        req = self.bridge(req);
        req.body = Some(body);
        let answer = exchange(self.addr, &req).await;
        self.keep(&answer);
        answer
    }

    /// `OKHttpHelper.get(url, …)`.
    pub async fn get(&mut self, path: &str) -> Answer {
        let mut req = Request::new("GET", path);
        if let Some(a) = &self.auth {
            req = req.header("authToken", a);
        }
        let answer = exchange(self.addr, &self.bridge(req)).await;
        self.keep(&answer);
        answer
    }

    /// What OkHttp's BridgeInterceptor adds.
    fn bridge(&self, req: Request) -> Request {
        req.header("Host", &self.host)
            .header("Connection", "Keep-Alive")
            .header("Accept-Encoding", "gzip")
            .header("User-Agent", "okhttp/4.12.0")
    }

    /// The interceptor stores any authToken an answer carries (any case:
    /// OkHttp's header lookup ignores it).
    fn keep(&mut self, answer: &Answer) {
        if let Some(t) = answer.header("authToken").filter(|t| !t.is_empty()) {
            self.auth = Some(t.to_owned());
        }
    }

    /// `/scan_pc/{token}` with `param == null`: status 1 or a failure.
    pub async fn scan(&mut self, token: &str) -> Answer {
        self.post(&format!("/scan_pc/{token}"), None).await
    }

    /// `confirmPCLogin(token, userId)`.
    pub async fn confirm(&mut self, token: &str, user_id: &str) -> Answer {
        self.post(
            "/confirm_pc",
            Some(&json!({"user_id": user_id, "token": token, "quick_login": 1})),
        )
        .await
    }

    pub async fn sms_login(&mut self, mobile: &str, code: &str) -> Value {
        let a = self
            .post(
                "/login",
                Some(&json!({"mobile": mobile, "code": code, "platform": 2, "clientId": "android-client-id"})),
            )
            .await;
        let r = success(&a);
        assert!(r["userId"].is_string() && r["token"].is_string(), "{r}");
        assert!(r["register"].is_boolean(), "{r}");
        assert!(self.auth.is_some(), "no authToken header: {a:?}");
        r
    }
}

/// A `SimpleCallback<T>` success: `code == 0` and a non-null `result`
/// (`OKHttpHelper.handleResponse`); the result.
pub fn success(a: &Answer) -> Value {
    assert_eq!(a.code(), 0, "{}", a.text());
    let r = a.result();
    assert!(
        !r.is_null(),
        "code 0 without a result fails on Android: {}",
        a.text()
    );
    r
}

/// The web page whose QR the phone scans: vue-chat, waiting.
async fn page_with_qr(s: &TestServer) -> (VueChat, String) {
    let mut page = VueChat::new(s);
    let token = page.pc_session(None).await["token"]
        .as_str()
        .unwrap()
        .to_owned();
    (page, token)
}

#[tokio::test]
async fn android_sms_login() {
    let s = stack(&[]).await;
    let mut phone = Android::new(&s);
    // requestAuthCode: a StatusResult, code == 0.
    let a = phone
        .post("/send_code", Some(&json!({"mobile": "13900000002"})))
        .await;
    assert_eq!(a.code(), 0, "{}", a.text());
    let code = sms_code(&s, "13900000002").await;
    let r = phone.sms_login("13900000002", &code).await;
    assert_eq!(r["register"], true);
}

#[tokio::test]
async fn android_scans_and_confirms_a_web_login() {
    let s = stack(&[]).await;
    let mut phone = Android::new(&s);
    phone.sms_login("13800000001", "66666").await;
    let (mut page, token) = page_with_qr(&s).await;

    let poll = page.session_login(&token);
    until_polling(&s, &token).await;
    let scanned = success(&phone.scan(&token).await);
    assert_eq!(
        scanned["status"], 1,
        "scanPCLogin wants status 1: {scanned}"
    );
    assert_scanned(&poll.await.unwrap(), "Alice Liu");

    let poll = page.session_login(&token);
    until_polling(&s, &token).await;
    let confirmed = success(&phone.confirm(&token, "alice").await);
    assert_eq!(
        confirmed["status"], 2,
        "confirmPCLogin wants status 2: {confirmed}"
    );
    assert_logged_in(&mut page, &poll.await.unwrap(), "alice");
}

#[tokio::test]
async fn android_scan_and_confirm_between_polls_give_the_page_9_then_0() {
    let s = stack(&[]).await;
    let mut phone = Android::new(&s);
    phone.sms_login("13800000002", "66666").await;
    let (mut page, token) = page_with_qr(&s).await;
    assert_eq!(success(&phone.scan(&token).await)["status"], 1);
    assert_eq!(success(&phone.confirm(&token, "bob").await)["status"], 2);
    assert_scanned(&page.session_login(&token).await.unwrap(), "Bob Chen");
    let done = page.session_login(&token).await.unwrap();
    assert_logged_in(&mut page, &done, "bob");
}

#[tokio::test]
async fn android_cancel_gives_the_page_18() {
    let s = stack(&[]).await;
    let mut phone = Android::new(&s);
    phone.sms_login("13800000003", "66666").await;
    let (page, token) = page_with_qr(&s).await;
    assert_eq!(success(&phone.scan(&token).await)["status"], 1);
    assert_scanned(&page.session_login(&token).await.unwrap(), "Carol Wang");
    let poll = page.session_login(&token);
    until_polling(&s, &token).await;
    // cancelPCLogin: the activity closes on success or failure alike.
    let a = phone
        .post("/cancel_pc", Some(&json!({"token": token})))
        .await;
    assert_eq!(a.code(), 0, "{}", a.text());
    assert_eq!(poll.await.unwrap().code(), 18);
}

#[tokio::test]
async fn android_scanning_an_expired_qr_fails_with_8() {
    let s = stack(&["--qr-ttl", "300ms"]).await;
    let mut phone = Android::new(&s);
    phone.sms_login("13800000001", "66666").await;
    let (page, token) = page_with_qr(&s).await;
    assert_eq!(page.session_login(&token).await.unwrap().code(), 8);
    let a = phone.scan(&token).await;
    assert_eq!(a.code(), 8, "onUiFailure(8): {}", a.text());
}

#[tokio::test]
async fn android_confirms_a_quick_login_without_scanning() {
    let s = stack(&[]).await;
    let mut phone = Android::new(&s);
    phone.sms_login("13800000001", "66666").await;
    // The page remembers alice and holds her authToken.
    let mut page = VueChat::new(&s);
    let a = page
        .post(
            "/login",
            Data::Json(&json!({"mobile": "13800000001", "code": "66666", "platform": 5, "clientId": "vue-chat-client-id"})),
        )
        .await;
    page.keep(&a, true);
    let session = page.pc_session(Some("alice")).await;
    assert_eq!(session["status"], 1, "{session}");
    let token = session["token"].as_str().unwrap().to_owned();
    assert_scanned(&page.session_login(&token).await.unwrap(), "Alice Liu");
    let poll = page.session_login(&token);
    until_polling(&s, &token).await;
    // showPCLoginActivity(isConfirmPcLogin): confirm, no /scan_pc.
    assert_eq!(success(&phone.confirm(&token, "alice").await)["status"], 2);
    assert_logged_in(&mut page, &poll.await.unwrap(), "alice");
}

#[tokio::test]
async fn android_password_login_and_reset() {
    let s = stack(&[]).await;
    let mut phone = Android::new(&s);
    let r = phone.sms_login("13800000002", "66666").await;
    // SMSLoginActivity hands loginResult.getResetCode() to ResetPasswordActivity.
    let reset_code = r["resetCode"].as_str().unwrap_or_default().to_owned();
    assert_eq!(reset_code.len(), 6, "{r}");
    // resetPassword(null, code, password): no mobile, a StatusResult.
    let a = phone
        .post(
            "/reset_pwd",
            Some(&json!({"resetCode": reset_code, "newPassword": "correct-horse-42"})),
        )
        .await;
    assert_eq!(a.code(), 0, "{}", a.text());

    let mut other = Android::new(&s);
    let a = other
        .post(
            "/login_pwd",
            Some(&json!({"mobile": "13800000002", "password": "correct-horse-42", "platform": 2, "clientId": "android-2"})),
        )
        .await;
    let r = success(&a);
    assert_eq!(r["userId"], "bob");
    assert!(r["token"].is_string() && r["register"].is_boolean(), "{r}");
    assert!(other.auth.is_some(), "no authToken header: {a:?}");
    let a = other
        .post(
            "/login_pwd",
            Some(&json!({"mobile": "13800000002", "password": "wrong-horse-42", "platform": 2, "clientId": "android-2"})),
        )
        .await;
    assert_eq!(a.code(), 6, "{}", a.text());
}

#[tokio::test]
async fn android_favorites_have_every_key_and_delete_with_an_empty_json_body() {
    let s = stack(&[]).await;
    let mut phone = Android::new(&s);
    phone.sms_login("13800000001", "66666").await;
    // addFavoriteItem: Gson drops the null origin, url, thumbUrl and data.
    let a = phone
        .post(
            "/fav/add",
            Some(&json!({"messageUid": 1_234_567_890_123_i64, "type": 1, "convType": 0, "convTarget": "bob", "convLine": 0, "sender": "bob", "title": "hello"})),
        )
        .await;
    assert_eq!(a.code(), 0, "{}", a.text());
    let a = phone
        .post("/fav/list", Some(&json!({"id": 0, "count": 20})))
        .await;
    let result = success(&a);
    assert!(result["hasMore"].is_boolean(), "{result}");
    let items = result["items"].as_array().expect("items");
    assert_eq!(items.len(), 1, "{result}");
    let item = &items[0];
    for key in ["convType", "convLine", "id", "type", "timestamp"] {
        assert_numeric(item, key);
    }
    // getString throws on a missing key; JSONObject.NULL would read "null".
    for key in [
        "convTarget",
        "origin",
        "sender",
        "title",
        "url",
        "thumbUrl",
        "data",
    ] {
        assert!(
            item[key].is_string(),
            "{key} missing or not a string in {item}"
        );
    }
    assert_eq!(item["convTarget"], "bob");
    assert!(item.get("messageUid").is_some(), "{item}");

    let id = item["id"].to_string().trim_matches('"').to_owned();
    let a = phone.post(&format!("/fav/del/{id}"), None).await;
    assert_eq!(a.code(), 0, "{}", a.text());
    let a = phone
        .post("/fav/list", Some(&json!({"id": 0, "count": 20})))
        .await;
    assert_eq!(success(&a)["items"], json!([]));
}

#[tokio::test]
async fn android_startup_probe_and_version_check() {
    let s = stack(&[]).await;
    let mut phone = Android::new(&s);
    // probeAppServer: any 2xx counts.
    let a = phone.get("/").await;
    assert!((200..300).contains(&a.status), "{a:?}");
    let a = phone
        .get("/version/check?platform=2&currentVersion=1.0.0&buildNumber=1")
        .await;
    let r = success(&a);
    assert_eq!(r["needUpdate"], false, "{r}");
    assert_eq!(r["forceUpdate"], false, "{r}");
}
