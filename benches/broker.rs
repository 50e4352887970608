//! Quick broker measurements against the real release binary (until
//! `imctl bench` exists): end-to-end 1:1 throughput with a persisted
//! database, and server memory per idle connection.
//!
//! Run: `cargo bench --bench broker` (env PAIRS, WINDOW, SECS, IDLE to change the load).

#[path = "../tests/common/mod.rs"]
mod common;

use std::process::Child;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use imctl::client::AppClient;
use serde_json::{Value, json};
use tokio_tungstenite::connect_async;
use tokio_tungstenite::tungstenite::Message;

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn spawn(data_dir: &str) -> (Child, String, String) {
    common::spawn_serve(&[
        "--data-dir",
        data_dir,
        "--app-port",
        "0",
        "--broker-port",
        "0",
        "--log",
        "warn",
    ])
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap()
}

async fn token(app: &AppClient, mobile: &str) -> String {
    app.login(mobile, "66666", &format!("bench-{mobile}"), 2)
        .await
        .unwrap()
        .0
        .token
}

#[tokio::main]
async fn main() {
    let dir = tempfile::tempdir().unwrap();
    let (mut child, app_url, ws) = spawn(dir.path().to_str().unwrap());
    let app = AppClient::new(&app_url);

    // 1:1 throughput: PAIRS senders each keep WINDOW sends in flight to their receiver.
    let pairs = env_or("PAIRS", 50);
    let window = env_or("WINDOW", 64);
    let secs = env_or("SECS", 10);
    let delivered = Arc::new(AtomicU64::new(0));
    let acked = Arc::new(AtomicU64::new(0));
    let mut sockets = Vec::new();
    for p in 0..pairs {
        let (sm, rm) = (format!("139{:08}", p * 2), format!("139{:08}", p * 2 + 1));
        let sender = app.login(&sm, "66666", "bench-s", 2).await.unwrap().0;
        let receiver = app.login(&rm, "66666", "bench-r", 2).await.unwrap().0;
        let (mut rws, _) = connect_async(ws.as_str()).await.unwrap();
        rws.send(Message::text(
            json!({"id":1,"op":"connect","token":receiver.token}).to_string(),
        ))
        .await
        .unwrap();
        let (mut sws, _) = connect_async(ws.as_str()).await.unwrap();
        sws.send(Message::text(
            json!({"id":0,"op":"connect","token":sender.token}).to_string(),
        ))
        .await
        .unwrap();
        sockets.push((sws, rws, receiver.user_id));
    }
    let stop_at = Instant::now() + Duration::from_secs(2 + secs);
    let mut tasks = Vec::new();
    for (mut sws, mut rws, receiver_id) in sockets {
        let d = delivered.clone();
        tasks.push(tokio::spawn(async move {
            while let Ok(Some(Ok(m))) = tokio::time::timeout_at(stop_at.into(), rws.next()).await {
                if let Message::Text(t) = m
                    && t.as_str().starts_with(r#"{"op":"msg""#)
                {
                    d.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
        let a = acked.clone();
        tasks.push(tokio::spawn(async move {
            let frame = |i: u64| {
                json!({"id": i + 1, "op": "send", "conv": {"type":"single","target": receiver_id}, "content": {"type":"text","text":"bench"}, "clientMsgId": format!("b{i}")}).to_string()
            };
            let mut next = 0;
            for _ in 0..window {
                sws.send(Message::text(frame(next))).await.unwrap();
                next += 1;
            }
            while let Ok(Some(Ok(m))) = tokio::time::timeout_at(stop_at.into(), sws.next()).await {
                if let Message::Text(t) = m {
                    let v: Value = serde_json::from_str(t.as_str()).unwrap();
                    if v["op"] == "ack" {
                        a.fetch_add(1, Ordering::Relaxed);
                        if Instant::now() < stop_at - Duration::from_secs(1) {
                            sws.send(Message::text(frame(next))).await.unwrap();
                            next += 1;
                        }
                    }
                }
            }
        }));
    }
    // Warm up one second, then measure SECS seconds.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (d0, t0) = (delivered.load(Ordering::Relaxed), Instant::now());
    tokio::time::sleep(Duration::from_secs(secs)).await;
    let (d1, elapsed) = (delivered.load(Ordering::Relaxed), t0.elapsed());
    for t in tasks {
        t.await.unwrap();
    }
    println!(
        "1:1 chat, {pairs} pairs, window {window}, persisted: {:.0} messages/s delivered end to end; acked {} delivered {} in total",
        (d1 - d0) as f64 / elapsed.as_secs_f64(),
        acked.load(Ordering::Relaxed),
        delivered.load(Ordering::Relaxed)
    );

    child.kill().unwrap();
    child.wait().unwrap();

    // Idle connections, on a fresh server so the load above leaves no free
    // memory behind to reuse: server RSS before and after IDLE sockets.
    let dir = tempfile::tempdir().unwrap();
    let (mut child, app_url, ws) = spawn(dir.path().to_str().unwrap());
    let app = AppClient::new(&app_url);
    let idle = env_or("IDLE", 1000) as usize;
    let tok = token(&app, "13700000000").await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = rss_kib(child.id());
    let mut conns = Vec::with_capacity(idle);
    for i in 0..idle {
        let (mut c, _) = connect_async(ws.as_str()).await.unwrap();
        c.send(Message::text(
            json!({"id":1,"op":"connect","token":tok,"clientId":format!("idle-{i}")}).to_string(),
        ))
        .await
        .unwrap();
        let _connected = c.next().await;
        conns.push(c);
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let after = rss_kib(child.id());
    println!(
        "{idle} idle connections: server RSS {before} KiB → {after} KiB, {:.1} KiB per connection",
        (after.saturating_sub(before)) as f64 / idle as f64
    );
    drop(conns);
    child.kill().unwrap();
    child.wait().unwrap();
}
