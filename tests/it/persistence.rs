//! A `--data-dir` database keeps users, login sessions and the token secret.

use serde_json::json;

use crate::common::{start, start_with};
use imctl::config::ServeConfig;

fn on_disk(dir: &std::path::Path, extra: &[&str]) -> ServeConfig {
    let mut config = ServeConfig::ephemeral_on_free_ports(extra);
    config.ephemeral = false;
    config.data_dir = Some(dir.to_path_buf());
    config
}

#[tokio::test]
async fn users_sessions_and_tokens_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let s = start_with(on_disk(dir.path(), &[])).await;
    assert!(s.running.seeded);
    let (auth, first) = s.login("13655554444").await;
    assert_eq!(first["register"], true);
    let im_token = first["token"].as_str().unwrap().to_owned();
    s.running.stop().await.unwrap();
    // On PostgreSQL the data dir keeps uploads only.
    assert_eq!(
        dir.path().join("imctl.db").exists(),
        !crate::common::postgres_pass()
    );

    let s = start_with(on_disk(dir.path(), &[])).await;
    assert!(!s.running.seeded, "fixtures are seeded once");
    assert_eq!(s.client.dev_users().await.unwrap().len(), 5);
    let claims = s
        .running
        .state
        .im_tokens
        .verify(&im_token)
        .expect("IM token from before the restart verifies");
    assert_eq!(claims.sub, first["userId"].as_str().unwrap());
    let (_, again) = s.login("13655554444").await;
    assert_eq!(again["register"], false);
    assert_eq!(again["userId"], first["userId"]);
    let token = s.pc_session().await;
    let r = s
        .post(&format!("/scan_pc/{token}"), json!({}), Some(&auth))
        .await;
    assert_eq!(
        r.code(),
        0,
        "the authToken from before the restart still works: {}",
        r.body
    );
    s.running.stop().await.unwrap();
}

#[tokio::test]
async fn no_fixtures_and_custom_fixtures() {
    let s = start(&["--no-fixtures"]).await;
    assert!(s.client.dev_users().await.unwrap().is_empty());

    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("team.json");
    std::fs::write(
        &file,
        r#"{"users":[{"userId":"dora","mobile":"13700000001","displayName":"Dora"}]}"#,
    )
    .unwrap();
    let s = start(&["--fixtures", file.to_str().unwrap()]).await;
    let users = s.client.dev_users().await.unwrap();
    assert_eq!(users.len(), 1);
    assert_eq!(users[0].user_id, "dora");
    let (_, r) = s.login("13700000001").await;
    assert_eq!(r["userId"], "dora");
}

/// Sends in flight when the server stops are committed and acknowledged
/// before the connection closes: an ack for everything stored, nothing lost.
#[tokio::test]
async fn shutdown_acks_every_send_it_stores() {
    let dir = tempfile::tempdir().unwrap();
    let s = start_with(on_disk(dir.path(), &[])).await;
    let (mut alice, _) = s.chat("13800000001", "alice-stop").await;
    const N: usize = 300;
    for i in 0..N {
        let frame = json!({"id": i + 1, "op": "send", "conv": {"type": "single", "target": "bob"}, "content": {"type": "text", "text": format!("m{i}")}, "clientMsgId": format!("stop-{i}")});
        alice.send_raw(&frame.to_string()).await.unwrap();
    }
    let stopping = tokio::spawn(s.running.stop());
    let mut acked = std::collections::HashSet::new();
    let close_code = loop {
        match alice.next_push().await {
            Ok(frame) if frame["op"] == "ack" => {
                acked.insert(frame["msgId"].as_str().unwrap().to_owned());
            }
            Ok(_) => {}
            Err(imctl::client::chat::ChatError::Closed { code, .. }) => break code,
            Err(e) => panic!("{e}"),
        }
    };
    stopping.await.unwrap().unwrap();
    assert_eq!(close_code, Some(1001));

    let s = start_with(on_disk(dir.path(), &[])).await;
    let (mut bob, _) = s.chat("13800000002", "bob-after").await;
    let synced = bob
        .request(json!({"op": "sync", "since": 0, "limit": 1000}))
        .await
        .unwrap();
    let stored: std::collections::HashSet<String> = synced["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["message"]["msgId"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        stored, acked,
        "every stored message was acked, and only those"
    );
}
