//! A node cut off by the network, for real: three nodes in three network
//! namespaces joined by a bridge, NATS and PostgreSQL on the bridge's
//! address, and one node's link taken down mid-load. Needs root (CI runs
//! as root); elsewhere, or where namespaces are not allowed, it says why it
//! is skipped.

use std::collections::HashSet;
use std::net::Ipv4Addr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use imctl::client::AppClient;
use imctl::client::chat::ChatConn;
use imctl::nats_local::{self, LocalNats};
use imctl::pg_local::{self, LocalPostgres};
use serde_json::{Value, json};

/// A bridge and a namespace per node, each joined to it by a veth pair;
/// all removed on drop.
struct Net {
    tag: String,
    subnet: u8,
    namespaces: Vec<String>,
}

fn ip(args: &[&str]) -> Result<(), String> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| format!("ip: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

impl Net {
    fn create(nodes: usize) -> Result<Net, String> {
        let pid = std::process::id();
        let mut net = Net {
            tag: format!("{}", pid % 100_000),
            subnet: (pid % 200) as u8 + 20,
            namespaces: Vec::new(),
        };
        let bridge = net.bridge();
        ip(&["link", "add", &bridge, "type", "bridge"])?;
        ip(&["addr", "add", &format!("{}/24", net.host()), "dev", &bridge])?;
        ip(&["link", "set", &bridge, "up"])?;
        for i in 1..=nodes {
            let ns = format!("imn{}{i}", net.tag);
            ip(&["netns", "add", &ns])?;
            net.namespaces.push(ns.clone());
            let (outside, inside) = (net.veth(i), format!("imp{}{i}", net.tag));
            ip(&[
                "link", "add", &outside, "type", "veth", "peer", "name", &inside,
            ])?;
            ip(&["link", "set", &inside, "netns", &ns])?;
            ip(&["link", "set", &outside, "master", &bridge, "up"])?;
            let addr = format!("{}/24", net.node(i));
            ip(&[
                "netns", "exec", &ns, "ip", "addr", "add", &addr, "dev", &inside,
            ])?;
            ip(&["netns", "exec", &ns, "ip", "link", "set", &inside, "up"])?;
            ip(&["netns", "exec", &ns, "ip", "link", "set", "lo", "up"])?;
        }
        Ok(net)
    }

    fn bridge(&self) -> String {
        format!("imb{}", self.tag)
    }

    /// The bridge's side of node `i`'s link.
    fn veth(&self, i: usize) -> String {
        format!("imh{}{i}", self.tag)
    }

    /// This side's address on the bridge (NATS and PostgreSQL listen there).
    fn host(&self) -> Ipv4Addr {
        Ipv4Addr::new(10, 231, self.subnet, 1)
    }

    fn node(&self, i: usize) -> Ipv4Addr {
        Ipv4Addr::new(10, 231, self.subnet, 10 + i as u8)
    }

    fn network(&self) -> String {
        format!("10.231.{}.0/24", self.subnet)
    }

    /// Takes node `i`'s link down: its packets go nowhere, nothing is reset.
    fn cut(&self, i: usize) {
        ip(&["link", "set", &self.veth(i), "down"]).unwrap();
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        // Deleting one end of a veth pair deletes both: a namespace whose
        // sockets still retransmit through a cut link would outlive its
        // name, and keep its pair, for minutes.
        for (i, ns) in self.namespaces.iter().enumerate() {
            let _ = ip(&["link", "del", &self.veth(i + 1)]);
            let _ = ip(&["netns", "del", ns]);
        }
        let _ = ip(&["link", "del", &self.bridge()]);
    }
}

/// Node processes, killed on drop (before the network goes).
struct Nodes(Vec<Child>);

impl Drop for Nodes {
    fn drop(&mut self) {
        for child in &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Connects with a bounded wait: a connect to a cut-off node never answers.
async fn connect(ws: &str, token: &str) -> Option<ChatConn> {
    let connecting = ChatConn::connect(ws, token, "alice-pc", 2);
    match tokio::time::timeout(Duration::from_secs(3), connecting).await {
        Ok(Ok((conn, _))) => Some(conn),
        _ => None,
    }
}

#[tokio::test]
async fn a_node_cut_off_by_the_network_loses_no_acknowledged_message() {
    let test = "a_node_cut_off_by_the_network_loses_no_acknowledged_message";
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("SKIPPED {test}: needs root for network namespaces");
        return;
    }
    if pg_local::or_skip(test, pg_local::find_bin_dir()).is_none()
        || nats_local::or_skip(test, nats_local::find_binary()).is_none()
    {
        return;
    }
    let net = match Net::create(3) {
        Ok(net) => net,
        Err(e) => {
            eprintln!("SKIPPED {test}: this machine does not allow network namespaces ({e})");
            return;
        }
    };
    let nats = LocalNats::start_on(net.host()).unwrap();
    let mut pg = LocalPostgres::start().unwrap();
    pg.listen_also(net.host(), &net.network()).unwrap();
    pg.create_database("cut").unwrap();
    let database = format!(
        "postgres://{}@{}:{}/cut",
        pg_local::USER,
        net.host(),
        pg.port()
    );
    let data = tempfile::tempdir().unwrap();
    let mut nodes = Nodes(Vec::new());
    for (i, ns) in net.namespaces.iter().enumerate() {
        let i = i + 1;
        let log = std::fs::File::create(data.path().join(format!("n{i}.log"))).unwrap();
        let child = Command::new("ip")
            .args(["netns", "exec", ns, env!("CARGO_BIN_EXE_imctl"), "serve"])
            .args(["--node", &format!("n{i}"), "--nats", &nats.url()])
            .args(["--database", &database, "--data-dir"])
            .arg(data.path())
            .args([
                "--host",
                "0.0.0.0",
                "--advertise-host",
                &net.node(i).to_string(),
            ])
            .args(["--route-strategy", "round-robin", "--admin-secret", "cut"])
            .env("IMCTL_CONFIG", "none")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        nodes.0.push(child);
        // One at a time: the first migrates and seeds the database.
        let ready = format!("http://{}:8888/readyz", net.node(i));
        let deadline = Instant::now() + Duration::from_secs(60);
        while !reqwest::get(&ready).await.is_ok_and(|r| r.status() == 200) {
            let log = std::fs::read_to_string(data.path().join(format!("n{i}.log")));
            assert!(Instant::now() < deadline, "n{i} not ready: {log:?}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    let app = |i: usize| format!("http://{}:8888", net.node(i));
    let ws = |i: usize| format!("ws://{}:8083/ws", net.node(i));
    let client = AppClient::new(&app(1));
    let (alice, _) = client
        .login("13800000001", "66666", "alice-pc", 2)
        .await
        .unwrap();
    let (bob, _) = client
        .login("13800000002", "66666", "bob-pc", 2)
        .await
        .unwrap();
    // bob reads on n3; alice sends through n2, which is cut off.
    let (mut reader, _) = ChatConn::connect(&ws(3), &bob.token, "bob-pc", 2)
        .await
        .unwrap();
    reader.set_timeout(Duration::from_secs(60));
    const N: usize = 300;
    let route = format!("http://{}:8083/route", net.node(1));
    let (token, first) = (alice.token.clone(), ws(2));
    let sender = tokio::spawn(async move {
        let mut conn = connect(&first, &token).await.expect("connects to n2");
        // Short while n2 answers: a send that hangs means the link is gone.
        conn.set_timeout(Duration::from_secs(3));
        let (mut acked, mut reconnects, mut i) = (Vec::new(), 0, 0);
        while i < N {
            let text = format!("m{i}");
            match conn
                .send_text("single", "bob", &text, Some(&format!("cut-{i}")))
                .await
            {
                Ok(ack) => {
                    acked.push(ack.msg_id);
                    i += 1;
                }
                Err(_) => {
                    reconnects += 1;
                    conn = loop {
                        let r: Value = reqwest::Client::new()
                            .post(&route)
                            .json(&json!({"token": token}))
                            .send()
                            .await
                            .unwrap()
                            .json()
                            .await
                            .unwrap();
                        let url = r["result"]["wsUrl"].as_str().unwrap().to_owned();
                        if let Some(c) = connect(&url, &token).await {
                            break c;
                        }
                    };
                    // The cut node may hold bob's head lock until PostgreSQL
                    // ends its transaction (10 s): wait for the resend's ack.
                    conn.set_timeout(Duration::from_secs(30));
                }
            }
        }
        (acked, reconnects)
    });
    let mut live = HashSet::new();
    while live.len() < N / 4 {
        let push = reader.wait_push().await.unwrap();
        if push["op"] == "msg" {
            live.insert(push["message"]["msgId"].as_str().unwrap().to_owned());
        }
    }
    net.cut(2);
    let (acked, reconnects) = sender.await.unwrap();
    assert_eq!(acked.len(), N);
    assert!(reconnects >= 1, "the cut reached the sender");
    crate::common::inbox_holds_exactly(&mut reader, &acked).await;
    drop(nodes);
}
