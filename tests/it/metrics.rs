//! `/metrics`: Prometheus text that follows what the stack does.

use serde_json::json;

use crate::common::start;

fn value(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or_else(|| panic!("no {series} in\n{text}"))
}

#[tokio::test]
async fn metrics_follow_logins_messages_and_connections() {
    let s = start(&[]).await;
    let r = s
        .post("/send_code", json!({"mobile": "13800000003"}), None)
        .await;
    assert_eq!(r.code(), 0);
    let (mut alice, _) = s.chat("13800000001", "a").await;
    let (mut bob, _) = s.chat("13800000002", "b").await;
    alice.send_text("single", "bob", "hi", None).await.unwrap();
    bob.next_op("msg").await.unwrap();
    s.pc_session().await;

    let resp = s.get("/metrics").await;
    assert_eq!(resp.status(), 200);
    assert!(
        resp.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/openmetrics-text")
    );
    let text = resp.text().await.unwrap();
    assert_eq!(value(&text, "imctl_sms_sent_total"), 1.0);
    assert_eq!(value(&text, "imctl_logins_total{kind=\"sms\"}"), 2.0);
    assert!(value(&text, "imctl_messages_stored_total") >= 1.0);
    assert!(value(&text, "imctl_deliveries_total") >= 1.0);
    assert!(value(&text, "imctl_commit_batch_size_count") >= 1.0);
    assert!(value(&text, "imctl_commit_seconds_count") >= 1.0);
    // alice and bob on Android (the built-in robot counts as "other").
    assert_eq!(value(&text, "imctl_connections{platform=\"android\"}"), 2.0);
    assert_eq!(value(&text, "imctl_qr_sessions{state=\"created\"}"), 1.0);
    assert!(value(&text, "imctl_process_resident_memory_bytes") > 1e6);

    // Connections are read when scraped: bob leaves, the gauge follows.
    bob.close().await;
    for _ in 0..200 {
        let text = s.get("/metrics").await.text().await.unwrap();
        if value(&text, "imctl_connections{platform=\"android\"}") == 1.0 {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    panic!("the connection gauge never dropped to 1");
}
