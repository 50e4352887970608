//! `bench connect`: many connected, idle WebSockets: the connect rate and
//! the server's memory per connection. Held long with `--churn`, it is a
//! soak: connections keep closing and reopening beside the held ones while
//! the server's memory is sampled, which must stay flat after warm-up.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde_json::json;
use tokio::sync::watch;

use super::{Report, Target, Ws, connect_ws, histogram, latency_json, latency_line};

pub struct ConnectOpts {
    pub connections: usize,
    pub concurrency: usize,
    /// Devices per bench user (each connection has its own clientId).
    pub per_user: usize,
    /// How long to hold them before measuring memory.
    pub hold: Duration,
    /// While holding: keep closing and reopening connections (a soak).
    pub churn: bool,
    /// How often to sample the server's memory while holding.
    pub sample_every: Duration,
}

/// The share of the hold that counts as warm-up (allocator pools filling).
const WARM_UP_SHARE: f64 = 0.1;

const CONNECT_BASE: u64 = 30_000_000;

pub async fn connect(target: &Target, opts: &ConnectOpts) -> anyhow::Result<Report> {
    anyhow::ensure!(opts.connections > 0, "--connections must be at least 1");
    let limit = crate::rlimit::raise_nofile();
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
    let (stop_tx, stop_rx) = watch::channel(false);
    let churned = Arc::new(AtomicU64::new(0));
    let churn_errors = Arc::new(AtomicU64::new(0));
    let mut churners = Vec::new();
    if opts.churn {
        // Half the connections (at most --concurrency) cycle; the rest are held.
        let n = opts.concurrency.max(1).min(opts.connections.div_ceil(2));
        for _ in 0..n {
            // Connection `slot` was opened as `bench-c{slot}`.
            let slot = conns.len() - 1;
            let ws = conns.pop().expect("more connections than churners");
            let user = &users[slot / per_user];
            let churn = Churn {
                ws_url: ws_url.clone(),
                token: user.token.clone(),
                client_id: format!("bench-c{slot}"),
                churned: churned.clone(),
                errors: churn_errors.clone(),
            };
            churners.push(tokio::spawn(churn.run(ws, stop_rx.clone())));
        }
    }
    // Held connections are read, so the server's pings get their pongs (a
    // connection nobody reads is closed at --idle-timeout, rightly).
    let held_closed = Arc::new(AtomicU64::new(0));
    let holders: Vec<_> = conns
        .drain(..)
        .map(|ws| tokio::spawn(hold_open(ws, stop_rx.clone(), held_closed.clone())))
        .collect();
    let samples = sample_rss(target, opts.hold, opts.sample_every, &churned).await?;
    let _ = stop_tx.send(true);
    for c in churners {
        c.await?;
    }
    let mut held = Vec::with_capacity(holders.len());
    for h in holders {
        held.extend(h.await?);
    }
    let after = samples.last().map_or(before, |s| s.1);
    let per_conn = after.saturating_sub(before) as f64 / opts.connections as f64;
    let rate = opts.connections as f64 / took.as_secs_f64();
    drop(held);
    let held_closed = held_closed.load(Ordering::Relaxed);
    let soak = Soak::new(&samples, opts.hold);
    let churned = churned.load(Ordering::Relaxed);
    let churn_errors = churn_errors.load(Ordering::Relaxed);
    let json = json!({
        "scenario": "connect",
        "connections": opts.connections,
        "connectSecs": took.as_secs_f64(),
        "connectsPerSec": rate.round(),
        "connect": latency_json(&hist),
        "serverRssBefore": before,
        "serverRssAfter": after,
        "bytesPerConnection": per_conn.round(),
        "holdSecs": opts.hold.as_secs_f64(),
        "churn": opts.churn,
        "churned": churned,
        "churnErrors": churn_errors,
        "heldClosedByServer": held_closed,
        "rssSamples": samples.iter().map(|(t, b)| json!([t.as_secs_f64(), b])).collect::<Vec<_>>(),
        "rssAfterWarmUp": soak.first,
        "rssMaxAfterWarmUp": soak.max,
        "rssGrowthAfterWarmUp": soak.growth(),
    });
    let mut rows = vec![
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
    if opts.churn || samples.len() > 2 {
        rows.push((
            "churn".into(),
            if opts.churn {
                format!("{churned} connections closed and reopened ({churn_errors} failed)")
            } else {
                "none".into()
            },
        ));
        rows.push((
            "held connections".into(),
            format!("{held_closed} closed by the server while held"),
        ));
        rows.push(("server memory while held".into(), soak.line()));
        for (t, b) in spread(&samples, 12) {
            rows.push((format!("  at {:>7.1} s", t.as_secs_f64()), mib(b)));
        }
    }
    Ok(Report {
        scenario: "connect",
        rows,
        json,
        failure: None,
    })
}

/// One connection that closes and reopens, over and over, until stopped.
struct Churn {
    ws_url: String,
    token: String,
    client_id: String,
    churned: Arc<AtomicU64>,
    errors: Arc<AtomicU64>,
}

impl Churn {
    async fn run(self, first: Ws, stop: watch::Receiver<bool>) {
        let mut ws = Some(first);
        while !*stop.borrow() {
            if let Some(mut open) = ws.take() {
                let _ = open.close(None).await;
            }
            match connect_ws(&self.ws_url, &self.token, &self.client_id).await {
                Ok(open) => {
                    ws = Some(open);
                    self.churned.fetch_add(1, Ordering::Relaxed);
                }
                Err(_) => {
                    self.errors.fetch_add(1, Ordering::Relaxed);
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    }
}

/// Reads a held connection until stopped; returns it if it is still open.
async fn hold_open(
    mut ws: Ws,
    mut stop: watch::Receiver<bool>,
    closed: Arc<AtomicU64>,
) -> Option<Ws> {
    use futures_util::StreamExt;
    loop {
        tokio::select! {
            frame = ws.next() => if !matches!(frame, Some(Ok(_))) {
                closed.fetch_add(1, Ordering::Relaxed);
                return None;
            },
            _ = stop.changed() => return Some(ws),
        }
    }
}

/// The server's memory every `every` over `hold`: `(time since start, bytes)`,
/// the first at the start and the last at the end.
async fn sample_rss(
    target: &Target,
    hold: Duration,
    every: Duration,
    churned: &AtomicU64,
) -> anyhow::Result<Vec<(Duration, u64)>> {
    let start = Instant::now();
    let bar = super::progress("holding");
    let mut samples = vec![(Duration::ZERO, target.rss().await?)];
    let mut next = every;
    loop {
        let left = hold.saturating_sub(start.elapsed());
        tokio::time::sleep(left.min(next.saturating_sub(start.elapsed()))).await;
        let at = start.elapsed();
        samples.push((at, target.rss().await?));
        bar.set_message(format!(
            "{} · {} churned",
            mib(samples.last().map_or(0, |s| s.1)),
            churned.load(Ordering::Relaxed)
        ));
        if at >= hold {
            break;
        }
        next = at + every;
    }
    bar.finish_and_clear();
    Ok(samples)
}

/// Memory after warm-up: the first sample past it, the highest, the last.
struct Soak {
    first: u64,
    max: u64,
    last: u64,
}

impl Soak {
    fn new(samples: &[(Duration, u64)], hold: Duration) -> Self {
        let warm = hold.mul_f64(WARM_UP_SHARE);
        let after: Vec<u64> = samples
            .iter()
            .filter(|(t, _)| *t >= warm)
            .map(|s| s.1)
            .collect();
        Self {
            first: after.first().copied().unwrap_or_default(),
            max: after.iter().copied().max().unwrap_or_default(),
            last: after.last().copied().unwrap_or_default(),
        }
    }

    fn growth(&self) -> i64 {
        self.last as i64 - self.first as i64
    }

    fn line(&self) -> String {
        format!(
            "{} after warm-up ({:.0}% of the hold) → {} at the end (max {}): {:+.1} MiB",
            mib(self.first),
            WARM_UP_SHARE * 100.0,
            mib(self.last),
            mib(self.max),
            self.growth() as f64 / 1_048_576.0
        )
    }
}

fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / 1_048_576.0)
}

/// At most `n` samples, evenly spread, always the first and the last.
fn spread(samples: &[(Duration, u64)], n: usize) -> Vec<(Duration, u64)> {
    if samples.len() <= n {
        return samples.to_vec();
    }
    (0..n)
        .map(|i| samples[i * (samples.len() - 1) / (n - 1)])
        .collect()
}
