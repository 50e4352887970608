//! `imctl bench`: load scenarios against a running stack or one it spawns.
//! Each scenario logs its users in through the login API (with the super
//! code), drives the broker with lean WebSocket clients, and returns a
//! `Report`: counts, rates and HDR latency histograms.

mod chaos;
mod chat;
mod connect;
mod login;

pub use chaos::{ChaosOpts, chaos};
pub use chat::{ChatOpts, GroupOpts, chat, group};
pub use connect::{ConnectOpts, connect};
pub use login::{LoginOpts, login};

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context;
use futures_util::{SinkExt, StreamExt};
use hdrhistogram::Histogram;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

use crate::client::AppClient;
use crate::wire::http::LoginResult;
use crate::wire::ws::{ConnectReq, Incoming, Reply, Request, RouteRequest};

pub use crate::client::chat::Socket as Ws;

/// The stack under load: its URLs, and the child process when spawned.
pub struct Target {
    pub app: AppClient,
    pub super_code: String,
    child: Option<Child>,
    /// Where a server spawned on disk keeps its data, to restart it there.
    data_dir: Option<std::path::PathBuf>,
    _data: Option<tempfile::TempDir>,
}

/// How to get a stack to measure.
#[derive(Debug, Clone)]
pub enum Stack {
    /// A running `imctl serve`.
    Running { app_server: String },
    /// Start `imctl serve` as a child: in memory, or on disk (a temp dir
    /// when no directory is given).
    Spawn {
        ephemeral: bool,
        data_dir: Option<std::path::PathBuf>,
    },
}

impl Target {
    pub async fn open(stack: &Stack, super_code: &str) -> anyhow::Result<Self> {
        let (app_url, child, data_dir, data) = match stack {
            Stack::Running { app_server } => (app_server.clone(), None, None, None),
            Stack::Spawn {
                ephemeral,
                data_dir,
            } => {
                let (temp, dir) = match (ephemeral, data_dir) {
                    (true, _) => (None, None),
                    (false, Some(d)) => (None, Some(d.clone())),
                    (false, None) => {
                        let t = tempfile::tempdir().context("cannot create a temp data dir")?;
                        let d = t.path().to_path_buf();
                        (Some(t), Some(d))
                    }
                };
                let (child, url) = spawn_serve(dir.as_deref(), super_code)?;
                (url, Some(child), dir, temp)
            }
        };
        let target = Self {
            app: AppClient::new(&app_url),
            super_code: super_code.to_owned(),
            child,
            data_dir,
            _data: data,
        };
        target
            .app
            .config()
            .await
            .context("the app-server does not answer /config")?;
        Ok(target)
    }

    /// Whether `kill_and_restart` can work: a server this bench spawned on disk.
    pub fn can_restart(&self) -> bool {
        self.child.is_some() && self.data_dir.is_some()
    }

    /// SIGKILLs the spawned server (no shutdown, no final commit: a crash)
    /// and starts it again on the same data directory, on new free ports.
    pub async fn kill_and_restart(&mut self) -> anyhow::Result<()> {
        let (Some(child), Some(dir)) = (self.child.as_mut(), self.data_dir.clone()) else {
            anyhow::bail!("only a server spawned on disk can be restarted");
        };
        // `Child::kill` is SIGKILL on Unix.
        child.kill().context("cannot kill the spawned server")?;
        child.wait().context("cannot reap the killed server")?;
        // Not on a blocking-pool thread: the child's parent-death signal
        // fires when the thread that spawned it exits, and pool threads do.
        let (child, url) = spawn_serve(Some(&dir), &self.super_code)?;
        self.child = Some(child);
        self.app = AppClient::new(&url);
        self.app
            .config()
            .await
            .context("the restarted app-server does not answer /config")?;
        Ok(())
    }

    /// The server's resident memory in bytes, from `/metrics`.
    pub async fn rss(&self) -> anyhow::Result<u64> {
        let text = self
            .app
            .get_bytes(&format!("{}/metrics", self.app.base()))
            .await?;
        let text = String::from_utf8_lossy(&text);
        text.lines()
            .find_map(|l| l.strip_prefix("imctl_process_resident_memory_bytes "))
            .and_then(|v| v.trim().parse::<f64>().ok())
            .map(|v| v as u64)
            .filter(|&v| v > 0)
            .context("no imctl_process_resident_memory_bytes in /metrics (not Linux?)")
    }

    /// Logs in `n` bench users (mobiles from `base`), `concurrency` at a time.
    pub async fn users(
        &self,
        base: u64,
        n: usize,
        concurrency: usize,
    ) -> anyhow::Result<Vec<LoginResult>> {
        let mut out = Vec::with_capacity(n);
        let mobiles: Vec<String> = (0..n as u64).map(|i| bench_mobile(base + i)).collect();
        for chunk in mobiles.chunks(concurrency.max(1)) {
            let logins = chunk.iter().map(|m| {
                let app = self.app.clone();
                let code = self.super_code.clone();
                let m = m.clone();
                async move {
                    app.login(&m, &code, &format!("bench-{m}"), 2)
                        .await
                        .map(|(r, _)| r)
                        .with_context(|| format!("bench login of {m} (is the super code {code}?)"))
                }
            });
            for r in futures_util::future::join_all(logins).await {
                out.push(r?);
            }
        }
        Ok(out)
    }

    /// The broker's WebSocket URL, asked from `/route` as a client would.
    pub async fn ws_url(&self, user: &LoginResult) -> anyhow::Result<String> {
        let route_url = crate::client::login::route_url(&self.app, user.route_url.clone()).await?;
        let route = self
            .app
            .route(
                &route_url,
                &RouteRequest {
                    user_id: Some(user.user_id.clone()),
                    client_id: None,
                    token: user.token.clone(),
                },
            )
            .await?;
        Ok(route.ws_url)
    }
}

impl Drop for Target {
    /// Stops the spawned server cleanly (SIGTERM: it commits and closes its
    /// database), killing it if it takes more than a few seconds.
    fn drop(&mut self) {
        let Some(child) = self.child.as_mut() else {
            return;
        };
        #[cfg(unix)]
        // SAFETY: sending a signal to our own child's pid.
        unsafe {
            libc::kill(child.id() as libc::pid_t, libc::SIGTERM);
        }
        let until = Instant::now() + Duration::from_secs(5);
        while Instant::now() < until {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
    }
}

/// A valid mobile number for bench user `i` (`177` + 8 digits).
pub fn bench_mobile(i: u64) -> String {
    format!("177{:08}", i % 100_000_000)
}

/// Starts `imctl serve` on free ports; returns it and the app-server URL
/// read from its banner.
fn spawn_serve(
    data_dir: Option<&std::path::Path>,
    super_code: &str,
) -> anyhow::Result<(Child, String)> {
    use std::io::{BufRead, BufReader};
    let exe = std::env::current_exe().context("cannot find the imctl binary")?;
    let mut cmd = Command::new(exe);
    cmd.args([
        "serve",
        "--app-port",
        "0",
        "--broker-port",
        "0",
        "--log",
        "warn",
    ])
    .args(["--super-code", super_code])
    .env_remove("IMCTL_APP_PORT")
    .env_remove("IMCTL_BROKER_PORT")
    .stdout(Stdio::piped())
    .stderr(Stdio::inherit());
    match data_dir {
        Some(d) => cmd.arg("--data-dir").arg(d),
        None => cmd.arg("--ephemeral"),
    };
    // If the bench dies (killed, not dropped), the server goes too.
    #[cfg(target_os = "linux")]
    {
        use std::os::unix::process::CommandExt;
        // SAFETY: prctl is async-signal-safe; it only sets this process's
        // parent-death signal between fork and exec.
        unsafe {
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
                Ok(())
            });
        }
    }
    let mut child = cmd.spawn().context("cannot start imctl serve")?;
    let stdout = child.stdout.take().expect("piped");
    let mut lines = BufReader::new(stdout).lines();
    let mut app = None;
    for line in lines.by_ref().map_while(Result::ok) {
        if let Some(u) = line.trim().strip_prefix("web page") {
            app = Some(u.trim().trim_end_matches('/').to_owned());
            break;
        }
    }
    // Keep draining so the child never blocks on a full pipe.
    std::thread::spawn(move || lines.for_each(drop));
    match app {
        Some(url) => Ok((child, url)),
        None => {
            let _ = child.kill();
            anyhow::bail!("imctl serve exited before printing its banner")
        }
    }
}

/// Opens a WebSocket and sends `connect`; returns once `connected` arrives.
pub async fn connect_ws(ws_url: &str, token: &str, client_id: &str) -> anyhow::Result<Ws> {
    tokio::time::timeout(CONNECT_TIMEOUT, connect_ws_now(ws_url, token, client_id))
        .await
        .map_err(|_| {
            anyhow::anyhow!(
                "no `connected` from {ws_url} within {CONNECT_TIMEOUT:?} (is the server out of file descriptors? see `ulimit -n`)"
            )
        })?
}

const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);

async fn connect_ws_now(ws_url: &str, token: &str, client_id: &str) -> anyhow::Result<Ws> {
    let mut ws = crate::client::chat::open_socket(ws_url)
        .await
        .with_context(|| format!("cannot connect to {ws_url}"))?;
    let hello = Request::Connect(ConnectReq {
        token: Some(token.into()),
        client_id: Some(client_id.into()),
        platform: Some(2),
    });
    ws.send(Message::text(hello.frame(Some(1)))).await?;
    while let Some(frame) = ws.next().await {
        if let Message::Text(t) = frame? {
            match Incoming::read(serde_json::from_str(t.as_str())?) {
                Ok(Incoming::Reply(_, Reply::Connected { .. })) => return Ok(ws),
                Ok(Incoming::Reply(_, Reply::Error { message, .. })) => {
                    anyhow::bail!("connect refused: {}", Value::String(message))
                }
                _ => {}
            }
        }
    }
    anyhow::bail!("the broker closed the connection during connect")
}

/// A latency histogram in microseconds, 1 µs to 1 min, 3 significant digits.
pub fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000, 3).expect("valid bounds")
}

/// Microseconds since `t0`, as recorded in bench messages.
pub fn micros_since(t0: Instant) -> u64 {
    t0.elapsed().as_micros() as u64
}

/// Percentiles of a histogram, in milliseconds.
pub fn latency_json(h: &Histogram<u64>) -> Value {
    let ms = |us: u64| (us as f64 / 1000.0 * 1000.0).round() / 1000.0;
    json!({
        "count": h.len(),
        "p50_ms": ms(h.value_at_quantile(0.50)),
        "p90_ms": ms(h.value_at_quantile(0.90)),
        "p99_ms": ms(h.value_at_quantile(0.99)),
        "p999_ms": ms(h.value_at_quantile(0.999)),
        "max_ms": ms(h.max()),
    })
}

/// One line of a latency summary.
pub fn latency_line(h: &Histogram<u64>) -> String {
    if h.is_empty() {
        return "no samples".into();
    }
    let ms = |q: f64| h.value_at_quantile(q) as f64 / 1000.0;
    format!(
        "p50 {:.2} ms · p90 {:.2} · p99 {:.2} · p99.9 {:.2} · max {:.2}  ({} samples)",
        ms(0.5),
        ms(0.9),
        ms(0.99),
        ms(0.999),
        h.max() as f64 / 1000.0,
        h.len()
    )
}

/// What a scenario measured: rows for people, JSON for machines.
pub struct Report {
    pub scenario: &'static str,
    pub rows: Vec<(String, String)>,
    pub json: Value,
    /// Set when the run found what it checks for broken: the exit is non-zero.
    pub failure: Option<String>,
}

impl Report {
    pub fn table(&self) -> String {
        let width = self.rows.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
        let mut out = format!("imctl bench {}\n", self.scenario);
        for (k, v) in &self.rows {
            out.push_str(&format!("  {k:<width$}  {v}\n"));
        }
        out
    }
}

/// A spinner on stderr that shows a live figure while a scenario runs.
pub fn progress(what: &str) -> indicatif::ProgressBar {
    let bar = indicatif::ProgressBar::new_spinner();
    bar.set_style(
        indicatif::ProgressStyle::with_template("{spinner} {prefix} {msg} ({elapsed})")
            .expect("valid template"),
    );
    bar.set_prefix(what.to_owned());
    bar.enable_steady_tick(Duration::from_millis(100));
    bar
}
