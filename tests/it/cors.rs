//! Which pages may call the stack, credentialed CORS as Wildfire's web
//! clients need it, the session cookie, and bodies as the clients send them.

use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::common::{TestServer, start};

/// `http://127.0.0.1:PORT` of a server, whatever address it listens on.
fn loopback(s: &TestServer) -> String {
    let port = s.url.rsplit(':').next().unwrap();
    format!("http://127.0.0.1:{port}")
}

async fn login_from(s: &TestServer, origin: &str) -> reqwest::Response {
    s.http
        .post(format!("{}/login", loopback(s)))
        .header("origin", origin)
        .json(&json!({"mobile": "13800000001", "code": "66666", "clientId": "web", "platform": 5}))
        .send()
        .await
        .unwrap()
}

fn header<'a>(r: &'a reqwest::Response, name: &str) -> Option<&'a str> {
    r.headers().get(name).map(|v| v.to_str().unwrap())
}

/// What a browser needs to hand a credentialed answer to the page.
fn assert_credentialed(r: &reqwest::Response, origin: &str) {
    assert_eq!(header(r, "access-control-allow-origin"), Some(origin));
    assert_eq!(header(r, "access-control-allow-credentials"), Some("true"));
    let vary = header(r, "vary").unwrap_or_default().to_ascii_lowercase();
    assert!(vary.contains("origin"), "vary: {vary}");
}

/// Without `Access-Control-Allow-Origin` a browser hands the page nothing
/// (the credentials header alone grants nothing).
fn assert_refused(r: &reqwest::Response) {
    assert_eq!(header(r, "access-control-allow-origin"), None);
}

#[tokio::test]
async fn preflights_and_answers_are_credentialed_for_allowed_pages() {
    let s = start(&[]).await;
    let origin = "http://localhost:8080";
    let preflight = s
        .http
        .request(reqwest::Method::OPTIONS, format!("{}/login", s.url))
        .header("origin", origin)
        .header("access-control-request-method", "POST")
        .header("access-control-request-headers", "content-type,authtoken")
        .header("access-control-request-private-network", "true")
        .send()
        .await
        .unwrap();
    assert!(preflight.status().is_success(), "{}", preflight.status());
    assert_credentialed(&preflight, origin);
    assert_eq!(
        header(&preflight, "access-control-allow-private-network"),
        Some("true")
    );
    let allowed = header(&preflight, "access-control-allow-headers")
        .unwrap()
        .to_ascii_lowercase();
    assert!(
        allowed.contains("authtoken") && allowed.contains("content-type"),
        "{allowed}"
    );

    let r = login_from(&s, origin).await;
    assert_credentialed(&r, origin);
    let exposed = header(&r, "access-control-expose-headers")
        .unwrap()
        .to_ascii_lowercase();
    assert!(exposed.contains("authtoken"), "{exposed}");
    assert!(r.headers().contains_key("authtoken"));

    // A page elsewhere gets no CORS headers at all, and never `*`.
    for other in ["http://192.168.1.20:3000", "http://evil.example", "null"] {
        assert_refused(&login_from(&s, other).await);
    }
}

#[tokio::test]
async fn beyond_loopback_pages_on_private_networks_may_call() {
    let s = start(&["--host", "0.0.0.0"]).await;
    for origin in [
        "http://192.168.1.20:3000",
        "http://10.0.2.2:8080",
        "http://mybox.local:5173",
    ] {
        assert_credentialed(&login_from(&s, origin).await, origin);
    }
    for origin in ["http://8.8.8.8:3000", "http://evil.example"] {
        assert_refused(&login_from(&s, origin).await);
    }
}

#[tokio::test]
async fn star_reflects_any_origin_to_the_login_api() {
    let s = start(&["--cors-origin", "*"]).await;
    let origin = "https://any.example:9443";
    let r = login_from(&s, origin).await;
    assert_credentialed(&r, origin);
    // The dev API's answers (SMS codes, QR tokens) stay for listed pages.
    for path in ["/_dev/sms", "/admin/users"] {
        let r = s
            .http
            .get(format!("{}{path}", s.url))
            .header("origin", origin)
            .send()
            .await
            .unwrap();
        assert_refused(&r);
    }
}

#[tokio::test]
async fn the_broker_checks_origins_by_the_same_rule() {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    async fn upgrade(ws: &str, origin: &str) -> Result<(), u16> {
        let mut req = ws.into_client_request().unwrap();
        req.headers_mut().insert("origin", origin.parse().unwrap());
        match tokio_tungstenite::connect_async(req).await {
            Ok(_) => Ok(()),
            Err(tokio_tungstenite::tungstenite::Error::Http(r)) => Err(r.status().as_u16()),
            Err(e) => panic!("{e}"),
        }
    }
    let local = start(&[]).await;
    let ws = local.ws_url();
    assert_eq!(upgrade(&ws, "http://localhost:3000").await, Ok(()));
    assert_eq!(upgrade(&ws, "http://192.168.1.20:3000").await, Err(403));

    let lan = start(&["--host", "0.0.0.0"]).await;
    let port = lan.ws_url().rsplit(':').next().unwrap().to_owned();
    let ws = format!("ws://127.0.0.1:{port}");
    assert_eq!(upgrade(&ws, "http://192.168.1.20:3000").await, Ok(()));
    assert_eq!(upgrade(&ws, "http://evil.example").await, Err(403));
}

#[tokio::test]
async fn a_login_sets_an_http_only_cookie_for_the_pages_calls_not_the_phones() {
    let s = start(&[]).await;
    let port = s.url.rsplit(':').next().unwrap().to_owned();
    let r = login_from(&s, "http://localhost:8080").await;
    let auth = header(&r, "authtoken").unwrap().to_owned();
    let cookie = header(&r, "set-cookie").unwrap().to_owned();
    // Named by port: two stacks on one host keep their own sessions.
    let name = format!("imctl_session_{port}");
    assert!(cookie.starts_with(&format!("{name}={auth};")), "{cookie}");
    for attr in ["HttpOnly", "SameSite=Lax", "Path=/"] {
        assert!(cookie.contains(attr), "{cookie} lacks {attr}");
    }
    let call = |path: String, body: Value, headers: Vec<(&'static str, String)>| {
        let mut req = s.http.post(format!("{}{path}", s.url)).json(&body);
        for (k, v) in headers {
            req = req.header(k, v);
        }
        async move { req.send().await.unwrap().json::<Value>().await.unwrap() }
    };
    let by_cookie = || vec![("cookie", format!("other=1; {name}={auth}"))];
    let favorites = || ("/fav/list".to_owned(), json!({"id": 0, "count": 10}));

    // What the web page calls takes the cookie when no header comes.
    let (path, body) = favorites();
    assert_eq!(call(path, body, vec![]).await["code"], 13);
    let (path, body) = favorites();
    let r = call(path, body, by_cookie()).await;
    assert_eq!(r["code"], 0, "{r}");
    // A wrong header is not rescued by the cookie: the header wins.
    let (path, body) = favorites();
    let mut both = by_cookie();
    both.push(("authToken", "wrong".into()));
    assert_eq!(call(path, body, both).await["code"], 13);
    // Another port's cookie is not ours.
    let (path, body) = favorites();
    let other = vec![("cookie", format!("imctl_session_1={auth}"))];
    assert_eq!(call(path, body, other).await["code"], 13);

    // What the phone does needs the header: a page on another port of this
    // host, which the cookie follows, must not scan and confirm for it.
    let token = s.pc_session().await;
    let r = call(format!("/scan_pc/{token}"), json!({}), by_cookie()).await;
    assert_eq!(r["code"], 13, "{r}");
    let r = call("/confirm_pc".into(), json!({"token": token}), by_cookie()).await;
    assert_eq!(r["code"], 13, "{r}");
    let r = call("/send_destroy_code".into(), json!({}), by_cookie()).await;
    assert_eq!(r["code"], 13, "{r}");
    let r = call(
        format!("/scan_pc/{token}"),
        json!({}),
        vec![("authToken", auth.clone())],
    )
    .await;
    assert_eq!(r["code"], 0, "{r}");
}

#[tokio::test]
async fn empty_bodies_of_any_content_type_are_empty_objects() {
    let s = start(&[]).await;
    let (auth, _) = s.login("13800000001").await;
    for content_type in [
        None,
        Some("application/json; charset=utf-8"),
        Some("text/plain"),
        Some("application/x-www-form-urlencoded"),
    ] {
        let token = s.pc_session().await;
        let mut req = s
            .http
            .post(format!("{}/scan_pc/{token}", s.url))
            .header("authToken", &auth);
        if let Some(ct) = content_type {
            req = req.header("content-type", ct).body("");
        }
        let r: Value = req.send().await.unwrap().json().await.unwrap();
        assert_eq!(r["code"], 0, "{content_type:?}: {r}");
        // An endpoint with fields: an empty body is `{}`, so a missing field.
        let mut req = s.http.post(format!("{}/send_code", s.url));
        if let Some(ct) = content_type {
            req = req.header("content-type", ct);
        }
        let r: Value = req.body("").send().await.unwrap().json().await.unwrap();
        assert_eq!(r["code"], 15, "{r}");
        assert!(
            r["message"]
                .as_str()
                .unwrap()
                .contains("missing field `mobile`"),
            "{r}"
        );
    }
    // Unknown fields are ignored; platform may be a numeric string.
    let r = s
        .post(
            "/login",
            json!({"mobile": "13800000002", "code": "66666", "clientId": "c", "platform": "2", "extra": [1]}),
            None,
        )
        .await;
    assert_eq!(r.code(), 0, "{}", r.body);
}

/// The answer's bytes as a client reads them off the socket.
async fn raw_exchange(url: &str, request: String) -> String {
    let addr = url.trim_start_matches("http://");
    let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    tcp.write_all(request.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), tcp.read_to_end(&mut out))
        .await
        .expect("the server closes after Connection: close")
        .unwrap();
    String::from_utf8_lossy(&out).into_owned()
}

#[tokio::test]
async fn the_session_header_goes_out_as_auth_token_in_its_exact_case() {
    let s = start(&[]).await;
    let body = r#"{"mobile":"13800000003","code":"66666","clientId":"ios","platform":1}"#;
    let answer = raw_exchange(
        &s.url,
        format!(
            "POST /login HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        ),
    )
    .await;
    let (head, json) = answer.split_once("\r\n\r\n").unwrap();
    assert!(head.contains("\r\nauthToken: "), "{head}");
    assert!(
        head.to_ascii_lowercase()
            .contains("content-type: application/json"),
        "{head}"
    );
    let json: Value = serde_json::from_str(json).unwrap();
    assert_eq!(json["code"], 0);
}

#[tokio::test]
async fn server_sent_events_are_cors_readable_too() {
    // The web page's EventSource on another loopback port.
    let s = start(&[]).await;
    let token = s.pc_session().await;
    let r = s
        .http
        .get(format!("{}/pc_session/{token}/events", s.url))
        .header("origin", "http://127.0.0.1:3000")
        .send()
        .await
        .unwrap();
    assert_credentialed(&r, "http://127.0.0.1:3000");
    let mut events = crate::common::Events::new(r);
    assert_eq!(events.next().await.unwrap().0, "status");
}
