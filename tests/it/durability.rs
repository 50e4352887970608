//! Everything acknowledged survives `kill -9` of the real binary.

use imctl::client::AppClient;
use imctl::client::chat::ChatConn;
use serde_json::json;

use crate::common::spawn_serve;

#[tokio::test]
async fn acked_messages_survive_sigkill_and_restart() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().to_str().unwrap().to_owned();
    let args = [
        "--data-dir",
        data.as_str(),
        "--app-port",
        "0",
        "--broker-port",
        "0",
    ];
    let (mut child, app, ws) = spawn_serve(&args);
    let client = AppClient::new(&app);
    let (alice, _) = client
        .login("13800000001", "66666", "alice-phone", 2)
        .await
        .unwrap();
    let (mut conn, _) = ChatConn::connect(&ws, &alice.token, "alice-phone", 2)
        .await
        .unwrap();

    const N: usize = 300;
    let mut acked = Vec::with_capacity(N);
    for i in 0..N {
        let ack = conn
            .send_text(
                "single",
                "bob",
                &format!("durable {i}"),
                Some(&format!("d-{i}")),
            )
            .await
            .unwrap();
        acked.push(ack.msg_id);
    }
    // No clean shutdown: the process dies right after the last ack.
    child.kill().unwrap();
    child.wait().unwrap();

    let (mut child, app, ws) = spawn_serve(&args);
    let client = AppClient::new(&app);
    let (bob, _) = client
        .login("13800000002", "66666", "bob-phone", 2)
        .await
        .unwrap();
    let (mut conn, connected) = ChatConn::connect(&ws, &bob.token, "bob-phone", 2)
        .await
        .unwrap();
    assert_eq!(connected.head, N as i64);
    let mut got = Vec::new();
    let mut since = 0;
    loop {
        let page = conn
            .request(json!({"op": "sync", "since": since, "limit": 1000}))
            .await
            .unwrap();
        for e in page["entries"].as_array().unwrap() {
            since = e["seq"].as_i64().unwrap();
            got.push(e["message"]["msgId"].as_str().unwrap().to_owned());
        }
        if page["more"] == false {
            break;
        }
    }
    assert_eq!(
        got, acked,
        "every acknowledged message, in order, nothing else"
    );
    // The old IM token still works after the restart.
    ChatConn::connect(&ws, &alice.token, "alice-phone", 2)
        .await
        .unwrap();
    child.kill().unwrap();
    child.wait().unwrap();
}
