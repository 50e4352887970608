//! `bench connect`: many connected, idle WebSockets: the connect rate and
//! the server's memory per connection.

use std::time::{Duration, Instant};

use serde_json::json;

use super::{Report, Target, connect_ws, histogram, latency_json, latency_line};

pub struct ConnectOpts {
    pub connections: usize,
    pub concurrency: usize,
    /// Devices per bench user (each connection has its own clientId).
    pub per_user: usize,
    /// How long to hold them before measuring memory.
    pub hold: Duration,
}

const CONNECT_BASE: u64 = 30_000_000;

pub async fn connect(target: &Target, opts: &ConnectOpts) -> anyhow::Result<Report> {
    anyhow::ensure!(opts.connections > 0, "--connections must be at least 1");
    let limit = super::raise_nofile();
    if limit > 0 && (opts.connections as u64) + 100 > limit {
        anyhow::bail!(
            "{} connections need as many open files, and this process may open {limit}; raise `ulimit -n` or connect fewer",
            opts.connections
        );
    }
    let per_user = opts.per_user.max(1);
    let users = target
        .users(CONNECT_BASE, opts.connections.div_ceil(per_user), 50)
        .await?;
    let ws_url = target.ws_url(&users[0]).await?;
    // Let the logins' memory settle before the baseline.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let before = target.rss().await?;

    let bar = super::progress("connect");
    let started = Instant::now();
    let mut conns = Vec::with_capacity(opts.connections);
    let mut hist = histogram();
    let indices: Vec<usize> = (0..opts.connections).collect();
    for chunk in indices.chunks(opts.concurrency.max(1)) {
        let opening = chunk.iter().map(|&i| {
            let user = &users[i / per_user];
            let url = ws_url.clone();
            async move {
                let t = Instant::now();
                let ws = connect_ws(&url, &user.token, &format!("bench-c{i}")).await?;
                Ok::<_, anyhow::Error>((ws, t.elapsed()))
            }
        });
        for r in futures_util::future::join_all(opening).await {
            let (ws, took) = r?;
            let _ = hist.record((took.as_micros() as u64).max(1));
            conns.push(ws);
        }
        bar.set_message(format!("{} connected", conns.len()));
    }
    let took = started.elapsed();
    bar.finish_and_clear();
    tokio::time::sleep(opts.hold).await;
    let after = target.rss().await?;
    let per_conn = after.saturating_sub(before) as f64 / opts.connections as f64;
    let rate = opts.connections as f64 / took.as_secs_f64();
    drop(conns);
    let json = json!({
        "scenario": "connect",
        "connections": opts.connections,
        "connectSecs": took.as_secs_f64(),
        "connectsPerSec": rate.round(),
        "connect": latency_json(&hist),
        "serverRssBefore": before,
        "serverRssAfter": after,
        "bytesPerConnection": per_conn.round(),
    });
    let rows = vec![
        (
            "connections".into(),
            format!("{} (held {:?})", opts.connections, opts.hold),
        ),
        (
            "connect rate".into(),
            format!("{rate:.0}/s ({:.2} s in all)", took.as_secs_f64()),
        ),
        ("connect + `connected`".into(), latency_line(&hist)),
        (
            "server memory".into(),
            format!(
                "{:.1} MiB → {:.1} MiB: {:.1} KiB per connection",
                before as f64 / 1_048_576.0,
                after as f64 / 1_048_576.0,
                per_conn / 1024.0
            ),
        ),
    ];
    Ok(Report {
        scenario: "connect",
        rows,
        json,
        failure: None,
    })
}
