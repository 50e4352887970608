//! Several real `imctl serve` nodes joined through a real nats-server and
//! one PostgreSQL database: cross-node delivery, a QR login spread over
//! three nodes, `/route` by hash, a ban on every node, and a node killed
//! under load losing no acknowledged message.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use imctl::client::AppClient;
use imctl::client::chat::{ChatConn, ChatError};
use imctl::nats_local::{self, LocalNats};
use imctl::pg_local;
use serde_json::{Value, json};

use crate::common::Served;

/// NATS of the test's own (subjects are the same in every cluster) and
/// nodes on one new database.
struct TestCluster {
    nats: LocalNats,
    database: String,
    /// Shared by the nodes, as `imctl cluster` does: uploads are seen by all.
    data: tempfile::TempDir,
    nodes: Vec<Option<Served>>,
}

impl TestCluster {
    /// `None` after saying why the test is skipped (NATS or PostgreSQL missing).
    fn start(test: &str, nodes: usize, extra: &[&str]) -> Option<Self> {
        let nats = nats_local::or_skip(test, LocalNats::start())?;
        let pg = pg_local::shared_or_skip(test)?;
        let mut cluster = TestCluster {
            nats,
            database: pg.fresh_database().unwrap(),
            data: tempfile::tempdir().unwrap(),
            nodes: Vec::new(),
        };
        // One at a time: the first migrates and seeds the database.
        for i in 1..=nodes {
            cluster.add_node(i, extra);
        }
        Some(cluster)
    }

    fn add_node(&mut self, i: usize, extra: &[&str]) {
        let name = format!("n{i}");
        let mut args = vec![
            "--node",
            &name,
            "--nats",
            &self.nats.url(),
            "--database",
            &self.database,
            "--data-dir",
            self.data.path().to_str().unwrap(),
            "--app-port",
            "0",
            "--broker-port",
            "0",
            "--admin-secret",
            "cluster-secret",
        ]
        .into_iter()
        .map(str::to_owned)
        .collect::<Vec<_>>();
        args.extend(extra.iter().map(|a| a.to_string()));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        self.nodes.push(Some(Served::start(&args)));
    }

    fn node(&self, i: usize) -> &Served {
        self.nodes[i].as_ref().expect("node running")
    }

    /// Waits until every node's `/_dev/status` counts `n` nodes.
    async fn until_nodes(&self, n: usize) {
        let deadline = Instant::now() + Duration::from_secs(20);
        for served in self.nodes.iter().flatten() {
            loop {
                let status = get_json(format!("{}/_dev/status", served.app), false).await;
                if status["cluster"]["nodes"].as_array().map(Vec::len) == Some(n) {
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "nodes never saw {n} nodes: {status}"
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

async fn login(app: &str, mobile: &str, client_id: &str) -> String {
    let (result, _) = AppClient::new(app)
        .login(mobile, "66666", client_id, 2)
        .await
        .unwrap();
    result.token
}

/// POSTs `body` as JSON (with `authToken` when given); the answer's JSON.
async fn post_json(url: impl AsRef<str>, body: Value, auth: Option<&str>) -> Value {
    let mut req = reqwest::Client::new().post(url.as_ref()).json(&body);
    if let Some(token) = auth {
        req = req.header("authToken", token);
    }
    req.send().await.unwrap().json().await.unwrap()
}

/// GETs `url`'s JSON, as the admin with `admin` set.
async fn get_json(url: impl AsRef<str>, admin: bool) -> Value {
    let mut req = reqwest::Client::new().get(url.as_ref());
    if admin {
        req = req.header("X-Admin-Secret", "cluster-secret");
    }
    req.send().await.unwrap().json().await.unwrap()
}

async fn connect(ws: &str, token: &str, client_id: &str) -> ChatConn {
    let (conn, connected) = ChatConn::connect(ws, token, client_id, 2).await.unwrap();
    assert!(!connected.node.is_empty());
    conn
}

/// The error that ends `conn`, skipping whatever it is sent before.
async fn closed_by_server(conn: &mut ChatConn) -> ChatError {
    loop {
        if let Err(e) = conn.wait_push().await {
            return e;
        }
    }
}

/// The next `msg` push, skipping presence and the like.
async fn next_msg(conn: &mut ChatConn) -> Value {
    loop {
        let push = conn.wait_push().await.unwrap();
        if push["op"] == "msg" {
            return push;
        }
    }
}

#[tokio::test]
async fn messages_cross_nodes_one_to_one_and_in_groups() {
    let test = "messages_cross_nodes_one_to_one_and_in_groups";
    let Some(cluster) = TestCluster::start(test, 3, &[]) else {
        return;
    };
    cluster.until_nodes(3).await;
    let (n1, n2, n3) = (cluster.node(0), cluster.node(1), cluster.node(2));
    let alice = login(&n1.app, "13800000001", "alice-pc").await;
    let bob = login(&n2.app, "13800000002", "bob-pc").await;
    let carol = login(&n3.app, "13800000003", "carol-pc").await;
    let mut a = connect(&n1.ws, &alice, "alice-pc").await;
    let mut b = connect(&n2.ws, &bob, "bob-pc").await;
    let mut c = connect(&n3.ws, &carol, "carol-pc").await;

    let ack = a
        .send_text("single", "bob", "hi bob", Some("a-1"))
        .await
        .unwrap();
    let push = next_msg(&mut b).await;
    assert_eq!(push["message"]["msgId"], ack.msg_id.as_str());
    assert_eq!(push["message"]["content"]["text"], "hi bob", "{push}");

    let group = a
        .request(json!({"op": "group.create", "name": "across", "members": ["bob", "carol"]}))
        .await
        .unwrap();
    let gid = group["group"]["id"].as_str().unwrap().to_owned();
    let ack = a
        .send_text("group", &gid, "hi all", Some("a-2"))
        .await
        .unwrap();
    for conn in [&mut b, &mut c] {
        // Group notifications may come first; the message comes.
        let push = loop {
            let push = next_msg(conn).await;
            if push["message"]["msgId"] == ack.msg_id.as_str() {
                break push;
            }
        };
        assert_eq!(push["message"]["content"]["text"], "hi all");
    }
    // Presence sees the whole cluster: bob on n2 and carol on n3 are online
    // for alice on n1 (group members); carol leaving n3 makes her offline
    // there, and a second device of bob's coming and going on n1 does not.
    let ask = json!({"op": "presence", "users": ["bob", "carol"]});
    let online_of = |presence: &Value| -> Vec<bool> {
        presence["users"]
            .as_array()
            .unwrap()
            .iter()
            .map(|u| u["online"] == true)
            .collect()
    };
    let presence = a.request(ask.clone()).await.unwrap();
    assert_eq!(online_of(&presence), [true, true], "{presence}");
    let bob_on_n1 = connect(&n1.ws, &bob, "bob-phone").await;
    bob_on_n1.close().await;
    c.close().await;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let presence = a.request(ask.clone()).await.unwrap();
        match online_of(&presence)[..] {
            [true, false] => break,
            [true, true] => {}
            _ => panic!("bob is still on n2: {presence}"),
        }
        assert!(
            Instant::now() < deadline,
            "carol never went offline: {presence}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut c = connect(&n3.ws, &carol, "carol-pc").await;
    // An upload through n1 is served by n2 (one media directory).
    let (_, auth) = AppClient::new(&n1.app)
        .login("13800000001", "66666", "alice-pc", 2)
        .await
        .unwrap();
    let png = crate::common::png(4, 4, 3, |x, y| vec![x as u8 * 60, y as u8 * 60, 0]);
    let up: Value = reqwest::Client::new()
        .post(format!("{}/media", n1.app))
        .header("authToken", auth)
        .header("content-type", "image/png")
        .body(png.clone())
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let path = up["url"].as_str().unwrap().split("/media/").nth(1).unwrap();
    let got = reqwest::get(format!("{}/media/{path}", n2.app))
        .await
        .unwrap();
    assert_eq!(got.status(), 200);
    assert_eq!(got.bytes().await.unwrap().as_ref(), png.as_slice());
    // And back: carol on n3 to alice on n1.
    let ack = c
        .send_text("single", "alice", "hi alice", Some("c-1"))
        .await
        .unwrap();
    let push = loop {
        let push = next_msg(&mut a).await;
        if push["message"]["msgId"] == ack.msg_id.as_str() {
            break push;
        }
    };
    assert_eq!(push["message"]["content"]["text"], "hi alice");
}

#[tokio::test]
async fn a_qr_login_works_with_each_call_on_another_node() {
    let test = "a_qr_login_works_with_each_call_on_another_node";
    let Some(cluster) = TestCluster::start(test, 3, &[]) else {
        return;
    };
    let (n1, n2, n3) = (
        &cluster.node(0).app,
        &cluster.node(1).app,
        &cluster.node(2).app,
    );
    // The page creates the session on n1 and polls n3; the phone is on n2.
    let body = json!({"clientId": "web-1", "platform": 5});
    let created = post_json(format!("{n1}/pc_session"), body, None).await;
    assert_eq!(created["code"], 0, "{created}");
    let token = created["result"]["token"].as_str().unwrap().to_owned();
    let poll = {
        let (n3, token) = (n3.clone(), token.clone());
        tokio::spawn(async move {
            post_json(format!("{n3}/session_login/{token}"), json!({}), None).await
        })
    };
    let (_, auth) = AppClient::new(n2)
        .login("13800000001", "66666", "alice-phone", 2)
        .await
        .unwrap();
    let auth = auth.as_str();
    // Let the poll reach n3 first, so the scan must wake it across nodes.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let scanned = post_json(format!("{n2}/scan_pc/{token}"), json!({}), Some(auth)).await;
    assert_eq!(scanned["code"], 0, "{scanned}");
    let first = poll.await.unwrap();
    assert_eq!(
        first["code"], 9,
        "the poll on n3 saw the scan on n2: {first}"
    );
    // Status 3 (seen) everywhere, then confirmed on n3, answered on n1.
    let body = json!({"token": token});
    let confirm = post_json(format!("{n3}/confirm_pc"), body, Some(auth)).await;
    assert_eq!(confirm["code"], 0, "{confirm}");
    let done = post_json(format!("{n1}/session_login/{token}"), json!({}), None).await;
    assert_eq!(done["code"], 0, "{done}");
    assert_eq!(done["result"]["userId"], "alice", "{done}");
    // Used up on every node.
    for app in [n1, n2, n3] {
        let again = post_json(format!("{app}/session_login/{token}"), json!({}), None).await;
        assert_ne!(again["code"], 0, "a QR login is used once: {again}");
    }
}

#[tokio::test]
async fn an_sms_code_sent_through_one_node_logs_in_on_another_once() {
    let test = "an_sms_code_sent_through_one_node_logs_in_on_another_once";
    let Some(cluster) = TestCluster::start(test, 2, &[]) else {
        return;
    };
    let (n1, n2) = (&cluster.node(0).app, &cluster.node(1).app);
    let sent: Value = post_json(
        format!("{n1}/send_code"),
        json!({"mobile": "13900000077"}),
        None,
    )
    .await;
    assert_eq!(sent["code"], 0, "{sent}");
    // The SMS is in n2's outbox too.
    let outbox = get_json(format!("{n2}/_dev/sms?mobile=13900000077&wait=5"), false).await;
    let code = outbox[0]["code"]
        .as_str()
        .expect("n2's outbox has the SMS")
        .to_owned();
    // Too soon for another code through n2: the limit is shared.
    let again: Value = post_json(
        format!("{n2}/send_code"),
        json!({"mobile": "13900000077"}),
        None,
    )
    .await;
    assert_ne!(
        again["code"], 0,
        "the resend limit holds across nodes: {again}"
    );
    let body = json!({"mobile": "13900000077", "code": code, "clientId": "c", "platform": 2});
    let first = post_json(format!("{n2}/login"), body.clone(), None).await;
    assert_eq!(first["code"], 0, "{first}");
    let second = post_json(format!("{n1}/login"), body, None).await;
    assert_ne!(
        second["code"], 0,
        "a code is used once on any node: {second}"
    );
}

#[tokio::test]
async fn route_by_hash_is_stable_and_a_node_leaving_moves_only_its_users() {
    let test = "route_by_hash_is_stable_and_a_node_leaving_moves_only_its_users";
    let Some(mut cluster) = TestCluster::start(test, 3, &["--no-rate-limits"]) else {
        return;
    };
    cluster.until_nodes(3).await;
    let n1 = cluster.node(0).app.clone();
    let mut tokens = Vec::new();
    for i in 0..24 {
        tokens.push(login(&n1, &format!("139000001{i:02}"), "pc").await);
    }
    let route_of = |ws: &str| ws.replace("ws://", "http://").replace("/ws", "/route");
    let routes = |route_url: String, tokens: Vec<String>| async move {
        let mut nodes = Vec::new();
        for token in tokens {
            let r: Value = post_json(&route_url, json!({"token": token}), None).await;
            assert_eq!(r["code"], 0, "{r}");
            nodes.push(r["result"]["node"].as_str().unwrap().to_owned());
        }
        nodes
    };
    let before = routes(route_of(&cluster.node(0).ws), tokens.clone()).await;
    let distinct: HashSet<&String> = before.iter().collect();
    assert_eq!(
        distinct.len(),
        3,
        "24 users spread over the 3 nodes: {before:?}"
    );
    // Any node answers the same.
    assert_eq!(
        routes(route_of(&cluster.node(2).ws), tokens.clone()).await,
        before
    );
    // n2 stops: only its users move.
    drop(cluster.nodes[1].take());
    cluster.until_nodes(2).await;
    let after = routes(route_of(&cluster.node(0).ws), tokens.clone()).await;
    for (b, a) in before.iter().zip(&after) {
        assert_ne!(a, "n2");
        if b != "n2" {
            assert_eq!(a, b, "a user of a live node moved");
        }
    }
}

#[tokio::test]
async fn a_ban_closes_the_users_connections_on_every_node() {
    let test = "a_ban_closes_the_users_connections_on_every_node";
    let Some(cluster) = TestCluster::start(test, 3, &[]) else {
        return;
    };
    cluster.until_nodes(3).await;
    let bob = login(&cluster.node(0).app, "13800000002", "bob-pc").await;
    let mut on2 = connect(&cluster.node(1).ws, &bob, "bob-pc").await;
    let mut on3 = connect(&cluster.node(2).ws, &bob, "bob-phone").await;
    let listed = get_json(format!("{}/admin/connections", cluster.node(0).app), true).await;
    let bobs: Vec<&str> = listed["connections"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["userId"] == "bob")
        .map(|c| c["node"].as_str().unwrap())
        .collect();
    assert_eq!(
        bobs.len(),
        2,
        "n1 lists bob's connections on n2 and n3: {listed}"
    );
    assert!(bobs.contains(&"n2") && bobs.contains(&"n3"), "{listed}");
    // `imctl status` on any node shows the cluster; its metrics name the node.
    let dir = tempfile::tempdir().unwrap();
    let out = crate::common::imctl(
        dir.path(),
        &["status", "--app-server", &cluster.node(1).app],
    );
    let text = crate::common::stdout(&out);
    assert!(text.contains("cluster     node n2 of 3"), "{text}");
    for n in ["n1", "n2", "n3"] {
        assert!(text.contains(&format!("    {n} ")), "{text}");
    }
    let metrics = reqwest::get(format!("{}/metrics", cluster.node(2).app))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(metrics.contains("node=\"n3\""), "{metrics}");
    let banned: Value = reqwest::Client::new()
        .post(format!("{}/admin/users/bob/ban", cluster.node(0).app))
        .header("X-Admin-Secret", "cluster-secret")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(banned["closedConnections"], 2, "{banned}");
    for conn in [&mut on2, &mut on3] {
        let closed = closed_by_server(conn).await;
        assert!(
            matches!(
                closed,
                ChatError::Closed {
                    code: Some(4003),
                    ..
                }
            ),
            "closed as banned: {closed:?}"
        );
    }
}

/// One sender through a node that is killed: it reconnects through `/route`
/// to a live node and resends what was not acked (same clientMsgId).
async fn send_through_kill(
    route_url: String,
    token: String,
    first_ws: String,
    count: usize,
    killed: tokio::sync::watch::Receiver<bool>,
) -> (Vec<String>, usize) {
    let mut acked = Vec::new();
    let mut reconnects = 0;
    let mut conn = connect(&first_ws, &token, "alice-pc").await;
    let mut i = 0;
    while i < count {
        let sent = conn
            .send_text(
                "single",
                "bob",
                &format!("m{i}"),
                Some(&format!("kill-{i}")),
            )
            .await;
        match sent {
            Ok(ack) => {
                acked.push(ack.msg_id);
                i += 1;
            }
            Err(_) => {
                assert!(*killed.borrow(), "a send failed before the kill");
                reconnects += 1;
                conn = loop {
                    let r: Value = post_json(&route_url, json!({"token": token}), None).await;
                    let ws = r["result"]["wsUrl"].as_str().unwrap().to_owned();
                    match ChatConn::connect(&ws, &token, "alice-pc", 2).await {
                        Ok((c, _)) => break c,
                        // Routed to the dead node until its heartbeats time out.
                        Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
                    }
                };
            }
        }
    }
    (acked, reconnects)
}

#[tokio::test]
async fn a_node_killed_under_load_loses_no_acknowledged_message() {
    let test = "a_node_killed_under_load_loses_no_acknowledged_message";
    // Round-robin: the sender's reconnect lands on a live node.
    let Some(mut cluster) = TestCluster::start(test, 3, &["--route-strategy", "round-robin"])
    else {
        return;
    };
    cluster.until_nodes(3).await;
    let alice = login(&cluster.node(0).app, "13800000001", "alice-pc").await;
    let bob = login(&cluster.node(0).app, "13800000002", "bob-pc").await;
    // bob reads on n3 throughout; alice sends through n2, which dies.
    let mut reader = connect(&cluster.node(2).ws, &bob, "bob-pc").await;
    const N: usize = 400;
    let (killed_tx, killed) = tokio::sync::watch::channel(false);
    let sender = tokio::spawn(send_through_kill(
        cluster
            .node(0)
            .ws
            .replace("ws://", "http://")
            .replace("/ws", "/route"),
        alice,
        cluster.node(1).ws.clone(),
        N,
        killed,
    ));
    // Kill n2 once bob has seen a quarter of the messages arrive live.
    let mut live = HashSet::new();
    while live.len() < N / 4 {
        let push = next_msg(&mut reader).await;
        live.insert(push["message"]["msgId"].as_str().unwrap().to_owned());
    }
    killed_tx.send(true).unwrap();
    let mut n2 = cluster.nodes[1].take().unwrap();
    n2.child.kill().unwrap();
    n2.child.wait().unwrap();
    let (acked, reconnects) = sender.await.unwrap();
    assert_eq!(acked.len(), N);
    assert!(reconnects >= 1, "the kill cut the sender off");
    // bob syncs on n3: every acked message once, seqs gapless.
    crate::common::inbox_holds_exactly(&mut reader, &acked).await;
}

#[tokio::test]
async fn nats_restarting_costs_a_pause_not_a_message() {
    let test = "nats_restarting_costs_a_pause_not_a_message";
    let Some(mut cluster) = TestCluster::start(test, 2, &[]) else {
        return;
    };
    cluster.until_nodes(2).await;
    let urls = |s: &Served| (s.app.clone(), s.ws.clone());
    let (n1, n2) = (urls(cluster.node(0)), urls(cluster.node(1)));
    let alice = login(&n1.0, "13800000001", "alice-pc").await;
    let bob = login(&n2.0, "13800000002", "bob-pc").await;
    let mut a = connect(&n1.1, &alice, "alice-pc").await;
    let mut b = connect(&n2.1, &bob, "bob-pc").await;
    let ack = a
        .send_text("single", "bob", "before", Some("before"))
        .await
        .unwrap();
    assert_eq!(
        next_msg(&mut b).await["message"]["msgId"],
        ack.msg_id.as_str()
    );
    // A QR session made before NATS goes down outlives its restart.
    let body = json!({"clientId": "web-1", "platform": 5});
    let created = post_json(format!("{}/pc_session", n1.0), body, None).await;
    let token = created["result"]["token"].as_str().unwrap().to_owned();

    cluster.nats.kill_hard();
    // n1 still serves its own connections: a send is committed and acked.
    let during = a
        .send_text("single", "bob", "during", Some("during"))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    cluster.nats.start_again().unwrap();

    // Back on NATS, each node closes its connections with 4009: they may
    // have missed pushes while it was away.
    for conn in [&mut a, &mut b] {
        conn.set_timeout(Duration::from_secs(30));
        let closed = closed_by_server(conn).await;
        assert!(
            matches!(
                closed,
                ChatError::Closed {
                    code: Some(4009),
                    ..
                }
            ),
            "{closed:?}"
        );
    }
    // The clients reconnect, and pushes cross again.
    let mut a = connect(&n1.1, &alice, "alice-pc").await;
    let mut b = connect(&n2.1, &bob, "bob-pc").await;
    let ack = a
        .send_text("single", "bob", "after", Some("after"))
        .await
        .unwrap();
    assert_eq!(
        next_msg(&mut b).await["message"]["msgId"],
        ack.msg_id.as_str()
    );
    // The message sent while NATS was down is in bob's inbox for any node's sync.
    let page = b
        .request(json!({"op": "sync", "since": 0, "limit": 1000}))
        .await
        .unwrap();
    let ids: Vec<&str> = page["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["message"]["msgId"].as_str().unwrap())
        .collect();
    assert!(ids.contains(&during.msg_id.as_str()), "{ids:?}");
    // And the QR session is still there, on the other node.
    let (_, auth) = AppClient::new(&n2.0)
        .login("13800000003", "66666", "carol-phone", 2)
        .await
        .unwrap();
    let scanned: Value =
        post_json(format!("{}/scan_pc/{token}", n2.0), json!({}), Some(&auth)).await;
    assert_eq!(scanned["code"], 0, "{scanned}");
}

#[tokio::test]
async fn a_wrong_cluster_setting_is_one_line_and_an_exit_code() {
    let test = "a_wrong_cluster_setting_is_one_line_and_an_exit_code";
    let Some(pg) = pg_local::shared_or_skip(test) else {
        return;
    };
    let database = pg.fresh_database().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let serve = |args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_imctl"))
            .arg("serve")
            .args(["--app-port", "0", "--broker-port", "0", "--data-dir"])
            .arg(dir.path())
            .args(args)
            .env("IMCTL_CONFIG", "none")
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    // No shared database.
    let (code, err) = serve(&["--nats", "nats://127.0.0.1:4222"]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("share one PostgreSQL database"), "{err}");
    // TLS is not spoken.
    let (code, err) = serve(&["--nats", "tls://127.0.0.1:4222", "--database", &database]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("without TLS"), "{err}");
    // Nothing listening.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("nats://127.0.0.1:{port}");
    let (code, err) = serve(&["--nats", &url, "--database", &database]);
    assert_eq!(code, Some(3), "{err}");
    assert!(
        err.contains("cannot reach NATS") && err.contains("nats-server"),
        "{err}"
    );
    // A node name with a dot (a NATS subject separator).
    let (code, err) = serve(&["--node", "n.1", "--nats", &url, "--database", &database]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("node name"), "{err}");
}

/// `imctl cluster` starts NATS, PostgreSQL and the nodes, prints where they
/// are, and stops everything on Ctrl-C, leaving no process behind.
#[tokio::test]
async fn imctl_cluster_runs_until_ctrl_c_and_leaves_nothing() {
    use std::io::{BufRead, BufReader};
    let test = "imctl_cluster_runs_until_ctrl_c_and_leaves_nothing";
    if nats_local::or_skip(test, nats_local::find_binary()).is_none()
        || pg_local::or_skip(test, pg_local::find_bin_dir()).is_none()
    {
        return;
    }
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_imctl"))
        .args([
            "cluster",
            "--nodes",
            "2",
            "--app-port",
            "0",
            "--broker-port",
            "0",
        ])
        .env("IMCTL_CONFIG", "none")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut apps = Vec::new();
    let mut logs = None;
    for line in lines.by_ref().map_while(Result::ok) {
        // "  n1   app-server http://…  route …  broker …"
        let words: Vec<&str> = line.split_whitespace().collect();
        if words.first().is_some_and(|w| w.starts_with('n')) && words.get(1) == Some(&"app-server")
        {
            apps.push(words[2].to_owned());
        }
        if let Some(dir) = line.trim().strip_prefix("logs") {
            logs = Some(dir.trim().trim_end_matches("/n*.log").to_owned());
        }
        if line.starts_with("Ctrl-C") {
            break;
        }
    }
    assert_eq!(apps.len(), 2, "two nodes listed");
    let mut pids = Vec::new();
    for app in &apps {
        // Each node hears the other within a heartbeat or two.
        let deadline = Instant::now() + Duration::from_secs(10);
        let status = loop {
            let status: Value = reqwest::get(format!("{app}/_dev/status"))
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            if status["cluster"]["nodes"].as_array().map(Vec::len) == Some(2) {
                break status;
            }
            assert!(Instant::now() < deadline, "{status}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        pids.push(status["pid"].as_u64().unwrap());
    }
    // SAFETY: signalling our own child.
    unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGINT) };
    let deadline = Instant::now() + Duration::from_secs(30);
    let exited = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "imctl cluster did not stop");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(exited.success(), "{exited}");
    for pid in pids {
        assert!(
            !std::path::Path::new(&format!("/proc/{pid}")).exists(),
            "node pid {pid} still running"
        );
    }
    assert!(reqwest::get(format!("{}/readyz", apps[0])).await.is_err());
    let logs = logs.expect("the logs' directory is printed");
    assert!(!std::path::Path::new(&logs).exists(), "{logs} left behind");
}

/// `imctl exec --nodes 2` runs its command against a cluster and tells it
/// every node in `IMCTL_NODES`.
#[test]
fn imctl_exec_nodes_hands_the_command_a_cluster() {
    let test = "imctl_exec_nodes_hands_the_command_a_cluster";
    if nats_local::or_skip(test, nats_local::find_binary()).is_none()
        || pg_local::or_skip(test, pg_local::find_bin_dir()).is_none()
    {
        return;
    }
    let imctl = env!("CARGO_BIN_EXE_imctl");
    let out = std::process::Command::new(imctl)
        .args(["exec", "--nodes", "2", "--", "sh", "-c"])
        .arg(format!(
            "echo \"$IMCTL_NODES\"; {imctl} status --app-server \"$IMCTL_APP_SERVER\""
        ))
        .env("IMCTL_CONFIG", "none")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let nodes: Value = serde_json::from_str(stdout.lines().next().unwrap()).unwrap();
    let names: Vec<&str> = nodes
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["node"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["n1", "n2"], "{nodes}");
    assert!(
        nodes[1]["appServer"]
            .as_str()
            .unwrap()
            .starts_with("http://127.0.0.1:")
    );
    assert!(stdout.contains("cluster     node n1 of 2"), "{stdout}");
}
