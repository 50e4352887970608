//! The web client's server side: the page and its assets, and the QR state
//! as server-sent events (`GET /pc_session/{token}/events`).

use std::time::Duration;

use serde_json::{Value, json};

use imctl::app_server::web::{ASSETS, Asset};

use crate::common::{Events, TestServer, start, until_polling};

#[tokio::test]
async fn events_follow_scan_and_confirm_and_hand_over_the_login() {
    let s = start(&[]).await;
    let token = s.pc_session().await;
    let mut events = Events::new(Events::open(&s, &token).await);

    let (name, first) = events.next().await.unwrap();
    assert_eq!(name, "status");
    assert_eq!(first["status"], 0);
    assert_eq!(first["statusName"], "created");
    assert!(first["expiresInMs"].as_i64().unwrap() > 290_000, "{first}");

    let (auth, _) = s.login("13800000001").await;
    let scan = s
        .post(&format!("/scan_pc/{token}"), json!({}), Some(&auth))
        .await;
    assert_eq!(scan.code(), 0, "{}", scan.body);
    let (name, scanned) = events.next().await.unwrap();
    assert_eq!(name, "scanned");
    assert_eq!(scanned["code"], 9);
    assert_eq!(scanned["result"]["userId"], "alice");
    assert_eq!(scanned["result"]["userName"], "Alice Liu");
    // The stream is the PC's channel, so the scan counts as seen (status 3).
    let info = s.running.state.qr.get(&token).unwrap();
    assert_eq!(info.status() as i32, 3);

    let confirm = s
        .post(
            "/confirm_pc",
            json!({"token": token, "user_id": "alice"}),
            Some(&auth),
        )
        .await;
    assert_eq!(confirm.code(), 0, "{}", confirm.body);
    let (name, done) = events.next().await.unwrap();
    assert_eq!(name, "confirmed");
    assert_eq!(done["code"], 0);
    assert_eq!(done["result"]["userId"], "alice");
    assert!(
        done["result"]["routeUrl"]
            .as_str()
            .unwrap()
            .ends_with("/route")
    );
    let web_auth = done["authToken"].as_str().unwrap();
    assert!(web_auth.len() >= 32, "{web_auth}");
    // The stream ends with the login; the session is used up.
    assert!(events.next().await.is_none());
    let again = Events::open(&s, &token).await;
    assert_eq!(again.status(), 404);
    let body: Value = again.json().await.unwrap();
    assert_eq!(body["code"], 8, "{body}");

    // The authToken and the IM token both work.
    let other = s.pc_session().await;
    let scan = s
        .post(&format!("/scan_pc/{other}"), json!({}), Some(web_auth))
        .await;
    assert_eq!(scan.code(), 0, "{}", scan.body);
    let route: Value = s
        .http
        .post(done["result"]["routeUrl"].as_str().unwrap())
        .json(&json!({"userId": "alice", "clientId": "pc-1", "token": done["result"]["token"]}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(route["code"], 0, "{route}");
}

#[tokio::test]
async fn events_report_a_cancel_and_a_scan_that_happened_before() {
    let s = start(&[]).await;
    let token = s.pc_session().await;
    let (auth, _) = s.login("13800000002").await;
    s.post(&format!("/scan_pc/{token}"), json!({}), Some(&auth))
        .await;
    // Opened after the scan: the scan is reported at once.
    let mut events = Events::new(Events::open(&s, &token).await);
    assert_eq!(events.next().await.unwrap().0, "status");
    let (name, scanned) = events.next().await.unwrap();
    assert_eq!(name, "scanned");
    assert_eq!(scanned["result"]["userId"], "bob");
    drop(events);

    // Reopened (a page reload): the status event names the scanner.
    let mut events = Events::new(open_when_free(&s, &token).await);
    let (_, status) = events.next().await.unwrap();
    assert_eq!(status["status"], 3, "{status}");
    assert_eq!(status["scanner"]["userId"], "bob");
    let cancel = s
        .post("/cancel_pc", json!({"token": token}), Some(&auth))
        .await;
    assert_eq!(cancel.code(), 0, "{}", cancel.body);
    let (name, cancelled) = events.next().await.unwrap();
    assert_eq!(name, "cancelled");
    assert_eq!(cancelled["code"], 18);
    assert!(events.next().await.is_none());
}

/// The waiter slot is freed when the server notices the last stream closed.
async fn open_when_free(s: &TestServer, token: &str) -> reqwest::Response {
    for _ in 0..200 {
        let r = Events::open(s, token).await;
        if r.status() != 409 {
            return r;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("the first stream never let go of the session");
}

#[tokio::test]
async fn one_waiter_at_a_time_stream_or_long_poll() {
    let s = start(&[]).await;
    let token = s.pc_session().await;
    let events = Events::new(Events::open(&s, &token).await);

    let second = Events::open(&s, &token).await;
    assert_eq!(second.status(), 409);
    let body: Value = second.json().await.unwrap();
    assert_eq!(body["code"], 15);
    assert!(
        body["message"].as_str().unwrap().contains("only one"),
        "{body}"
    );
    let poll = s
        .post(&format!("/session_login/{token}"), json!({}), None)
        .await;
    assert_eq!(poll.code(), 15, "{}", poll.body);

    // Closing the stream frees the slot for a long poll.
    drop(events);
    let mut answered = None;
    for _ in 0..200 {
        let p = s.spawn_poll(&token);
        tokio::time::sleep(Duration::from_millis(10)).await;
        if p.is_finished() {
            let r = p.await.unwrap();
            assert_eq!(r.code(), 15, "{}", r.body);
            continue;
        }
        until_polling(&s, &token).await;
        answered = Some(p);
        break;
    }
    let poll = answered.expect("the long poll got the slot after the stream closed");
    poll.abort();
}

#[tokio::test]
async fn events_for_an_unknown_session_are_a_clear_404() {
    let s = start(&[]).await;
    let r = Events::open(&s, "no-such-token").await;
    assert_eq!(r.status(), 404);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["code"], 8);
    assert!(
        body["message"].as_str().unwrap().contains("/pc_session"),
        "{body}"
    );
}

#[tokio::test]
async fn shutdown_ends_the_stream_with_an_event() {
    let s = start(&[]).await;
    let token = s.pc_session().await;
    let mut events = Events::new(Events::open(&s, &token).await);
    assert_eq!(events.next().await.unwrap().0, "status");
    s.running.state.shutdown.cancel();
    let (name, body) = events.next().await.unwrap();
    assert_eq!(name, "shutdown");
    assert_eq!(body["code"], 8);
}

#[tokio::test]
async fn the_page_and_its_assets_are_served_with_a_strict_policy() {
    let s = start(&[]).await;
    let page = s
        .http
        .get(format!("{}/", s.url))
        .header("accept", "text/html")
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), 200);
    let csp = page.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(csp.contains("script-src 'self'"), "{csp}");
    assert!(!csp.contains("unsafe-inline"), "{csp}");
    let html = page.text().await.unwrap();
    assert!(html.contains(r#"<script src="/assets/app.js""#));
    // No inline script for the policy to allow: only our two files.
    assert_eq!(html.matches("<script").count(), 2, "{html}");
    assert_eq!(html.matches("<script src=\"/assets/").count(), 2, "{html}");

    for (file, kind) in [
        ("app.js", "text/javascript"),
        ("dom.js", "text/javascript"),
        ("app.css", "text/css"),
    ] {
        let r = s.get(&format!("/assets/{file}")).await;
        assert_eq!(r.status(), 200, "{file}");
        assert!(
            r.headers()["content-type"]
                .to_str()
                .unwrap()
                .starts_with(kind),
            "{file}"
        );
        assert_eq!(r.headers()["x-content-type-options"], "nosniff");
    }
    assert_eq!(s.get("/assets/../Cargo.toml").await.status(), 404);
    assert_eq!(s.get("/assets/nope.js").await.status(), 404);
}

/// Peer-controlled text must never reach the DOM as HTML: the scripts have no
/// HTML sinks at all, so this cannot regress quietly. It reads every script
/// the server serves, and every `.js` file in `web/` must be one of them, so
/// a new module cannot escape it.
#[test]
fn the_script_never_writes_html() {
    let scripts: Vec<&Asset> = ASSETS.iter().filter(|a| a.name.ends_with(".js")).collect();
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/app_server/web");
    let mut on_disk: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|name| name.ends_with(".js"))
        .collect();
    on_disk.sort();
    let mut served: Vec<&str> = scripts.iter().map(|a| a.name).collect();
    served.sort();
    assert_eq!(
        served,
        on_disk,
        "every script in {} is served",
        dir.display()
    );
    for script in scripts {
        let js = script.body;
        for sink in [
            "innerHTML",
            "outerHTML",
            "insertAdjacentHTML",
            "document.write",
            "eval(",
            "new Function",
        ] {
            assert!(
                !js.contains(sink),
                "a page script uses {sink}: {}",
                script.name
            );
        }
    }
}

/// The browser refuses a module served as anything but JavaScript, and an
/// import of a file that is not served breaks the whole page.
#[tokio::test]
async fn every_module_is_served_as_javascript_and_imports_only_served_modules() {
    let s = start(&[]).await;
    for script in ASSETS.iter().filter(|a| a.name.ends_with(".js")) {
        let r = s.get(&format!("/assets/{}", script.name)).await;
        assert_eq!(r.status(), 200, "{}", script.name);
        assert!(
            r.headers()["content-type"]
                .to_str()
                .unwrap()
                .starts_with("text/javascript"),
            "{}",
            script.name
        );
        assert_eq!(r.headers()["x-content-type-options"], "nosniff");
        assert_eq!(r.headers()["cache-control"], "no-cache");
        assert_eq!(r.text().await.unwrap(), script.body);
        for line in script.body.lines().filter(|l| l.starts_with("import ")) {
            let from = line
                .split_once(" from \"./")
                .and_then(|(_, rest)| rest.strip_suffix("\";"))
                .unwrap_or_else(|| {
                    panic!(
                        "{}: an import not of the form from \"./x.js\": {line}",
                        script.name
                    )
                });
            assert!(
                ASSETS.iter().any(|a| a.name == from),
                "{} imports {from}, which is not served",
                script.name
            );
        }
    }
}
