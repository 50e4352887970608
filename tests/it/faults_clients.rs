//! imctl's own clients under injected faults (`imctl chaos`): the
//! interactive terminal client in tmux, the scripted `--send`, the web
//! client and the dashboard's Faults panel in headless Chromium — each
//! against a real stack whose faults are set through `/_dev/faults`.
//!
//! Needs tmux (terminal tests) and Chromium with chromedriver (browser
//! tests); without them these say SKIPPED and pass, unless
//! `IMCTL_REQUIRE_TMUX=1` / `IMCTL_REQUIRE_BROWSER=1`.

use serde_json::{Value, json};

use crate::browser::Browser;
use crate::client::{client, until_online};
use crate::common::{TestServer, simulate, start, stderr, stdout, until_polling};
use crate::terminal::{Tmux, tmux_available};

const ALICE: &str = "13800000001";
const BOB: &str = "13800000002";

/// The rule with `id` in `GET /_dev/faults`, if it is still listed.
async fn rule(s: &TestServer, id: &Value) -> Option<Value> {
    s.faults().await["rules"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| &r["id"] == id)
        .cloned()
}

#[tokio::test]
async fn terminal_client_reconnects_after_an_injected_close() {
    if !tmux_available("terminal_client_reconnects_after_an_injected_close") {
        return;
    }
    let s = start(&[]).await;
    let tmux = Tmux::new();
    let bob = tmux.client(&s.url, "bob");
    bob.wait_for("logged in as bob").await;
    until_online(&s, "bob").await;
    let (mut alice, _) = s.chat(ALICE, "alice-faults").await;

    // Added through the API, it acts at once on bob's connection.
    let added = s.add_fault("ws.close user=bob code=4009").await;
    assert_eq!(added["fired"], 1, "{added}");
    let screen = bob
        .wait("the disconnect, then the reconnect", |s| {
            let lost = s.find("connection lost");
            let back = s.rfind("reconnected;");
            matches!((lost, back), (Some(l), Some(b)) if l < b)
        })
        .await;
    assert!(
        screen.contains("injected: ws.close"),
        "the pane does not say why the link dropped:\n{screen}"
    );
    until_online(&s, "bob").await;

    // The new connection carries pushes.
    alice
        .send_text("single", "bob", "after the injected close", None)
        .await
        .unwrap();
    bob.wait_for("alice: after the injected close").await;
    bob.press("C-d");
    bob.wait_for("[exited 0]").await;
    alice.close().await;
}

#[tokio::test]
async fn terminal_client_gets_dropped_pushes_back_by_sync_once() {
    if !tmux_available("terminal_client_gets_dropped_pushes_back_by_sync_once") {
        return;
    }
    let s = start(&[]).await;
    let tmux = Tmux::new();
    let bob = tmux.client(&s.url, "bob");
    bob.wait_for("logged in as bob").await;
    until_online(&s, "bob").await;
    let (mut alice, _) = s.chat(ALICE, "alice-faults").await;

    let drop_rule = s.add_fault("ws.drop-pushes user=bob").await;
    let lost = "lost in transit 7f3a";
    alice.send_text("single", "bob", lost, None).await.unwrap();
    // Instead of the message: the fault notice.
    let screen = bob.wait_for("⚡ injected: ws.drop-pushes").await;
    assert!(
        !screen.contains(lost),
        "the push was not dropped:\n{screen}"
    );
    let listed = rule(&s, &drop_rule["id"])
        .await
        .expect("the rule is listed");
    assert_eq!(listed["fired"], 1, "{listed}");

    // No more faults; a close makes bob's client reconnect and sync.
    assert_eq!(s.clear_faults(None).await, 1);
    let screen = bob.screen();
    assert!(
        !screen.contains(lost),
        "the dropped push came anyway:\n{screen}"
    );
    s.add_fault("ws.close user=bob").await;
    bob.wait_for("reconnected; 1 new message while disconnected")
        .await;
    bob.wait_for(&format!("alice: {lost}")).await;
    // A later message is shown after it: nothing else of the first is pending.
    until_online(&s, "bob").await;
    alice
        .send_text("single", "bob", "the next one", None)
        .await
        .unwrap();
    let screen = bob.wait_for("alice: the next one").await;
    assert_eq!(
        screen.matches(lost).count(),
        1,
        "the synced message is not shown exactly once:\n{screen}"
    );
    let synced_at = screen.find("reconnected; 1 new message").unwrap();
    assert!(
        screen.find(lost).unwrap() > synced_at,
        "shown before the sync:\n{screen}"
    );
    bob.press("C-d");
    bob.wait_for("[exited 0]").await;
    alice.close().await;
}

#[tokio::test]
async fn scripted_send_resends_after_an_injected_500_and_is_stored_once() {
    let s = start(&[]).await;
    let dir = tempfile::tempdir().unwrap();
    let failing = s.add_fault("ws.fail-ack user=alice times=1").await;
    let text = "resent with the same clientMsgId";

    let sent = client(
        dir.path(),
        &s.url,
        &["--user", "alice", "--send", "bob", text, "--json"],
    )
    .output()
    .await
    .unwrap();
    assert!(
        sent.status.success(),
        "{}\n{}",
        stdout(&sent),
        stderr(&sent)
    );
    let ack: Value = serde_json::from_str(stdout(&sent).trim()).unwrap();
    // Answering the resend: the message the failed attempt stored.
    assert_eq!(ack["duplicate"], true, "{ack}");
    // The fault fired: the first answer was the 500, so this ack answers the resend.
    let listed = rule(&s, &failing["id"]).await.expect("the rule is listed");
    assert_eq!(listed["fired"], 1, "{listed}");
    assert_eq!(listed["spent"], true, "{listed}");

    let (mut bob, _) = s.chat(BOB, "bob-check").await;
    let page = bob
        .request(json!({"op": "sync", "since": 0}))
        .await
        .unwrap();
    let stored: Vec<&Value> = page["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| &e["message"])
        .filter(|m| m["content"]["text"] == text)
        .collect();
    assert_eq!(stored.len(), 1, "stored {} times: {page}", stored.len());
    assert_eq!(stored[0]["msgId"], ack["msgId"], "{ack} {page}");
    assert_eq!(stored[0]["clientMsgId"], ack["clientMsgId"], "{ack} {page}");
    bob.close().await;
}

#[tokio::test]
async fn web_client_shows_a_new_qr_after_an_injected_expiry_and_a_cancel() {
    let Some(b) =
        Browser::start("web_client_shows_a_new_qr_after_an_injected_expiry_and_a_cancel").await
    else {
        return;
    };
    let s = start(&[]).await;
    let phone = tempfile::tempdir().unwrap();
    b.client.goto(&s.url).await.unwrap();
    let first = b.qr_token("").await;
    b.until(
        "the event stream in the inspector",
        &format!("document.getElementById('insp-list').textContent.includes('/pc_session/{first}/events')"),
    )
    .await;

    let expire = s.add_fault("qr.expire latest").await;
    assert_eq!(expire["fired"], 1, "{expire}");
    let second = b.qr_token(&first).await;
    assert_ne!(second, first);
    b.until(
        "the expiry said",
        "document.getElementById('login-state').textContent.includes('expired')",
    )
    .await;
    assert!(
        s.running.state.qr.get(&first).is_err(),
        "the first session lives on"
    );

    // The phone scans the new QR, then cancels.
    for step in ["scan", "cancel"] {
        let out = simulate(phone.path(), &s.url, &[step, &second, "--as", "alice"]).await;
        assert!(out.status.success(), "{step}: {}", stderr(&out));
    }
    let third = b.qr_token(&second).await;
    assert_ne!(third, first);
    b.until(
        "the cancel said",
        "document.getElementById('login-state').textContent.includes('cancelled')",
    )
    .await;
    assert_eq!(
        s.running.state.qr.get(&third).unwrap().status() as i32,
        0,
        "the newest QR waits for a scan"
    );
    b.close().await;
}

#[tokio::test]
async fn web_client_retries_after_injected_503s() {
    let Some(b) = Browser::start("web_client_retries_after_injected_503s").await else {
        return;
    };
    let s = start(&[]).await;
    b.client.goto(&s.url).await.unwrap();
    let before = b.qr_token("").await;

    let failing = s
        .add_fault("api.http path=/pc_session status=503 times=2")
        .await;
    b.client.refresh().await.unwrap();
    // Two 503s, then a QR (2 s between tries).
    let token = b.qr_token(&before).await;
    assert!(s.running.state.qr.get(&token).is_ok(), "{token}");
    let listed = rule(&s, &failing["id"]).await.expect("the rule is listed");
    assert_eq!(listed["fired"], 2, "{listed}");
    assert_eq!(listed["spent"], true, "{listed}");

    // The inspector marks both answers as injected, apart from real failures.
    let lines = b
        .js("return [...document.querySelectorAll('#insp-list li.fault')].map(li => li.textContent)")
        .await;
    let lines: Vec<&str> = lines
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l.as_str().unwrap())
        .collect();
    assert_eq!(lines.len(), 2, "{lines:?}");
    for line in &lines {
        assert!(
            line.contains("FAULT") && line.contains("api.http") && line.contains("503"),
            "{lines:?}"
        );
    }
    b.close().await;
}

#[tokio::test]
async fn dashboard_faults_panel_adds_fires_and_clears_rules() {
    let Some(b) = Browser::start("dashboard_faults_panel_adds_fires_and_clears_rules").await else {
        return;
    };
    let s = start(&[]).await;
    b.client.goto(&format!("{}/_dev/", s.url)).await.unwrap();
    b.until(
        "the live feed",
        "document.getElementById('live').textContent === 'live'",
    )
    .await;
    b.until(
        "no rules yet",
        "!document.getElementById('fault-rules-none').hidden",
    )
    .await;

    // A typed rule.
    b.type_into("#fault-rule", "ws.drop-pushes user=bob for=10s")
        .await;
    b.click("#fault-add").await;
    let shown = b
        .until(
            "the rule in the panel",
            "document.querySelector('#fault-rules li')?.textContent",
        )
        .await;
    let listed = s.faults().await["rules"].clone();
    let rules = listed.as_array().unwrap();
    assert_eq!(rules.len(), 1, "{listed}");
    assert_eq!(rules[0]["kind"], "ws.drop-pushes", "{listed}");
    let drop_id = rules[0]["id"].clone();
    let canonical = rules[0]["rule"].as_str().unwrap();
    assert!(
        canonical.contains("user=bob"),
        "{canonical}: not the typed rule"
    );
    assert!(
        shown.as_str().unwrap().contains(canonical),
        "{shown} does not show {canonical}"
    );
    assert_eq!(
        b.js("return document.getElementById('fault-rule').value")
            .await,
        json!(""),
        "the form kept the added rule"
    );

    // "Expire this QR" on a live session a page waits on.
    let token = s.pc_session().await;
    let poll = s.spawn_poll(&token);
    until_polling(&s, &token).await;
    b.click("[data-fault=expire-qr]").await;
    let answer = poll.await.unwrap();
    assert_eq!(answer.code(), 8, "{}", answer.body);
    assert!(
        answer.body.get("result").is_none_or(Value::is_null),
        "the session is not gone: {}",
        answer.body
    );
    let live: Value = s.get("/_dev/pc_sessions").await.json().await.unwrap();
    assert!(
        !live
            .as_array()
            .unwrap()
            .iter()
            .any(|x| x["token"] == token.as_str()),
        "{live}"
    );
    let injected = b
        .until(
            "the injection in the panel",
            "[...document.querySelectorAll('#fault-injected li')].map(li => li.textContent).find(t => t.includes('qr.expire'))",
        )
        .await;
    assert!(
        injected.as_str().unwrap().contains(&token[..8]),
        "{injected} does not name the session"
    );
    let listed = s.faults().await;
    let expire = listed["rules"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["kind"] == "qr.expire")
        .unwrap_or_else(|| panic!("no qr.expire rule: {listed}"))
        .clone();
    assert_eq!(expire["fired"], 1, "{expire}");

    // A rule's clear button removes that rule only.
    let item = format!("#fault-rules li[data-id='{drop_id}']");
    b.click(&format!("{item} button[data-action=clear]")).await;
    b.until(
        "the rule gone from the panel",
        &format!("!document.querySelector(\"{item}\") && document.querySelectorAll('#fault-rules li').length === 1"),
    )
    .await;
    assert!(rule(&s, &drop_id).await.is_none(), "the rule is still set");
    assert!(
        rule(&s, &expire["id"]).await.is_some(),
        "the other rule went too"
    );
    b.close().await;
}
