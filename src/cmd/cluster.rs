//! `imctl cluster --nodes N`: a whole cluster on this machine — NATS and
//! PostgreSQL in a temporary directory on free loopback ports, then N
//! `imctl serve` nodes joined through them — until Ctrl-C. `imctl exec
//! --nodes N` starts the same around a command ([`LocalCluster`]).

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use anyhow::Context;
use serde::Serialize;
use tokio::process::{Child, Command};

use super::Failure;
use crate::client::app::exit;
use crate::cluster::RouteStrategy;
use crate::nats_local::{self, LocalNats};
use crate::pg_local::{self, LocalPostgres};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// How many nodes
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u16).range(1..=16))]
    pub nodes: u16,

    /// The first node's app-server port (0: a free one); the others take free ports
    #[arg(long, env = "IMCTL_APP_PORT", default_value_t = 8888)]
    pub app_port: u16,

    /// The first node's broker port (0: a free one); the others take free ports
    #[arg(long, env = "IMCTL_BROKER_PORT", default_value_t = 8083)]
    pub broker_port: u16,

    /// How /route picks a node
    #[arg(long, env = "IMCTL_ROUTE_STRATEGY", value_enum, default_value_t = RouteStrategy::Hash)]
    pub route_strategy: RouteStrategy,
}

/// How long a node has to answer `/readyz` after it was started.
const READY_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a node has to stop after SIGTERM before it is killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(10);

/// One node as `IMCTL_NODES` lists it.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeUrls {
    pub node: String,
    pub app_server: String,
    pub broker_url: String,
    pub route_url: String,
    pub pid: u32,
}

/// NATS, PostgreSQL and N nodes, all stopped when dropped.
pub struct LocalCluster {
    pub nodes: Vec<NodeUrls>,
    pub admin_secret: String,
    pub nats_url: String,
    pub database_url: String,
    children: Vec<Child>,
    /// Where each node's log and data directory are.
    pub dir: PathBuf,
    // Dropped after the nodes are stopped.
    _pg: LocalPostgres,
    _nats: LocalNats,
    _dir: tempfile::TempDir,
}

impl LocalCluster {
    /// Starts everything; node 1 on `first_ports` (0 for free ones). Node 1
    /// starts alone first: it migrates and seeds the new database.
    pub async fn start(
        nodes: u16,
        first_ports: (u16, u16),
        strategy: RouteStrategy,
    ) -> anyhow::Result<Self> {
        let missing = |e: &dyn std::fmt::Display| Failure::new(exit::ERROR, e.to_string());
        let nats = tokio::task::spawn_blocking(LocalNats::start)
            .await?
            .map_err(|e| match e {
                nats_local::Error::NotInstalled => missing(&e),
                e => Failure::new(exit::ERROR, format!("cannot start nats-server: {e}")),
            })?;
        let pg = tokio::task::spawn_blocking(LocalPostgres::start)
            .await?
            .map_err(|e| match e {
                pg_local::Error::NotInstalled => missing(&e),
                e => Failure::new(exit::ERROR, format!("cannot start PostgreSQL: {e}")),
            })?;
        let database_url = pg
            .create_database("imctl")
            .context("cannot create the database")?;
        let dir = tempfile::Builder::new()
            .prefix("imctl-cluster-")
            .tempdir()
            .context("cannot create a temporary directory")?;
        let mut cluster = LocalCluster {
            nodes: Vec::new(),
            admin_secret: crate::token::random_token(16),
            nats_url: nats.url(),
            database_url,
            children: Vec::new(),
            dir: dir.path().to_owned(),
            _pg: pg,
            _nats: nats,
            _dir: dir,
        };
        for i in 1..=nodes {
            // Node 1 where asked (0: a free port, as for the others).
            let pick = |asked: u16| {
                if i == 1 && asked != 0 {
                    Ok(asked)
                } else {
                    free_port()
                }
            };
            let ports = (pick(first_ports.0)?, pick(first_ports.1)?);
            let started = cluster.start_node(i, ports, strategy).await;
            if let Err(e) = started {
                cluster.stop().await;
                return Err(e);
            }
        }
        Ok(cluster)
    }

    async fn start_node(
        &mut self,
        i: u16,
        (app_port, broker_port): (u16, u16),
        strategy: RouteStrategy,
    ) -> anyhow::Result<()> {
        let name = format!("n{i}");
        // One data directory for all: an upload through one node is served
        // by every other (with PostgreSQL it holds only the media).
        let data = self.dir.join("data");
        let log = self.dir.join(format!("{name}.log"));
        let log_file = std::fs::File::create(&log)
            .with_context(|| format!("cannot create {}", log.display()))?;
        let exe = std::env::current_exe().context("cannot find imctl's own executable")?;
        let mut cmd = Command::new(exe);
        cmd.arg("serve")
            .args(["--node", &name])
            .args(["--nats", &self.nats_url])
            .args(["--database", &self.database_url])
            .args(["--app-port", &app_port.to_string()])
            .args(["--broker-port", &broker_port.to_string()])
            .args(["--route-strategy", strategy_name(strategy)])
            .arg("--data-dir")
            .arg(&data)
            .env("IMCTL_ADMIN_SECRET", &self.admin_secret)
            // The nodes' own settings come from IMCTL_* and imctl.toml;
            // these are decided here.
            .env_remove("IMCTL_DATABASE_URL")
            .env_remove("IMCTL_EPHEMERAL")
            .stdin(Stdio::null())
            .stdout(log_file.try_clone()?)
            .stderr(log_file)
            .kill_on_drop(true);
        // SAFETY: only an async-signal-safe prctl between fork and exec: a
        // node outlives no `imctl cluster`, however it ends.
        unsafe {
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
                Ok(())
            });
        }
        let child = cmd.spawn().context("cannot start a node")?;
        let pid = child.id().unwrap_or_default();
        self.children.push(child);
        let (app_port, broker_port) = self.wait_ready(&name, &log, app_port, broker_port).await?;
        let app_server = format!("http://127.0.0.1:{app_port}");
        self.nodes.push(NodeUrls {
            node: name,
            broker_url: format!("ws://127.0.0.1:{broker_port}/ws"),
            route_url: format!("http://127.0.0.1:{broker_port}/route"),
            app_server,
            pid,
        });
        Ok(())
    }

    /// Waits for the node's `/readyz`; a node that exits first fails with
    /// the end of its log.
    async fn wait_ready(
        &mut self,
        name: &str,
        log: &std::path::Path,
        app_port: u16,
        broker_port: u16,
    ) -> anyhow::Result<(u16, u16)> {
        let http = reqwest::Client::new();
        let url = format!("http://127.0.0.1:{app_port}/readyz");
        let deadline = tokio::time::Instant::now() + READY_TIMEOUT;
        let child = self.children.last_mut().expect("just started");
        loop {
            if let Some(status) = child.try_wait()? {
                let tail = tail(log);
                return Err(Failure::new(
                    exit::ERROR,
                    format!("node {name} exited ({status}) before it was ready:\n{tail}"),
                )
                .into());
            }
            let ready = http
                .get(&url)
                .timeout(Duration::from_secs(2))
                .send()
                .await
                .is_ok_and(|r| r.status().is_success());
            if ready {
                return Ok((app_port, broker_port));
            }
            if tokio::time::Instant::now() > deadline {
                return Err(Failure::new(
                    exit::ERROR,
                    format!(
                        "node {name} was not ready within {READY_TIMEOUT:?}:\n{}",
                        tail(log)
                    ),
                )
                .into());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// `IMCTL_NODES`: every node's URLs, as JSON.
    pub fn nodes_json(&self) -> String {
        serde_json::to_string(&self.nodes).expect("serializable")
    }

    /// The pids of the nodes and of nats-server, our children (for `exec`
    /// to leave alone; PostgreSQL runs detached).
    pub fn pids(&self) -> Vec<u32> {
        let nodes = self.nodes.iter().map(|n| n.pid);
        nodes.chain(self._nats.pid()).collect()
    }

    /// Nodes that exited since the last call, with how.
    pub fn exited(&mut self) -> Vec<(String, std::process::ExitStatus)> {
        let mut gone = Vec::new();
        for (child, node) in self.children.iter_mut().zip(&self.nodes) {
            if child.id().is_some()
                && let Ok(Some(status)) = child.try_wait()
            {
                gone.push((node.node.clone(), status));
            }
        }
        gone
    }

    /// Stops the nodes (SIGTERM, then SIGKILL after [`STOP_TIMEOUT`]), then
    /// NATS and PostgreSQL, and removes the directory.
    pub async fn stop(mut self) {
        for child in &self.children {
            if let Some(pid) = child.id() {
                // SAFETY: signalling our own child, not yet reaped.
                unsafe { libc::kill(pid as libc::pid_t, libc::SIGTERM) };
            }
        }
        for child in &mut self.children {
            if tokio::time::timeout(STOP_TIMEOUT, child.wait())
                .await
                .is_err()
            {
                let _ = child.kill().await;
            }
        }
        tokio::task::spawn_blocking(move || drop(self)).await.ok();
    }
}

fn strategy_name(s: RouteStrategy) -> &'static str {
    match s {
        RouteStrategy::Hash => "hash",
        RouteStrategy::RoundRobin => "round-robin",
        RouteStrategy::LeastConnections => "least-connections",
    }
}

fn free_port() -> anyhow::Result<u16> {
    let listener = std::net::TcpListener::bind(("127.0.0.1", 0)).context("no free port")?;
    Ok(listener.local_addr()?.port())
}

/// The last lines of a node's log.
fn tail(log: &std::path::Path) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(15)..].join("\n")
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut int = signal(SignalKind::interrupt()).context("cannot listen for Ctrl-C")?;
    let mut term = signal(SignalKind::terminate()).context("cannot listen for SIGTERM")?;
    eprintln!(
        "imctl cluster: starting nats-server, PostgreSQL and {} nodes…",
        args.nodes
    );
    let mut cluster = LocalCluster::start(
        args.nodes,
        (args.app_port, args.broker_port),
        args.route_strategy,
    )
    .await?;
    println!("imctl cluster: {} nodes ready", cluster.nodes.len());
    for n in &cluster.nodes {
        println!(
            "  {:<4} app-server {}  route {}  broker {}",
            n.node, n.app_server, n.route_url, n.broker_url
        );
    }
    println!("  nats      {}", cluster.nats_url);
    println!(
        "  database  {}",
        crate::store::mask_password(&cluster.database_url)
    );
    println!("  admin secret {}", cluster.admin_secret);
    println!("  logs      {}/n*.log", cluster.dir.display());
    println!("Ctrl-C stops everything. A node that dies (try kill -9) leaves the others serving.");
    let mut every = tokio::time::interval(Duration::from_millis(500));
    loop {
        tokio::select! {
            _ = int.recv() => break,
            _ = term.recv() => break,
            _ = every.tick() => {
                for (node, status) in cluster.exited() {
                    eprintln!("imctl cluster: node {node} exited ({status}); the others carry on");
                }
            }
        }
    }
    eprintln!("imctl cluster: stopping…");
    cluster.stop().await;
    Ok(())
}
