//! `imctl exec [serve options] -- CMD ARGS...`: the whole stack around one
//! command — ephemeral on free ports unless told otherwise, CMD told where
//! everything is through its environment, its exit code passed through, the
//! stack stopped cleanly afterwards (also on Ctrl-C and SIGTERM).

use std::ffi::OsString;
use std::time::Duration;

use anyhow::Context;
use tokio::process::Command;

use super::Failure;
use super::cluster::LocalCluster;
use crate::client::app::exit;
use crate::config::ServeConfig;
use crate::server;

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub config: ServeConfig,

    /// Run a cluster of this many nodes (NATS and PostgreSQL in a temporary
    /// directory, as `imctl cluster` does) instead of one stack; the nodes
    /// take their settings from IMCTL_* and imctl.toml
    #[arg(long, value_parser = clap::value_parser!(u16).range(1..=16))]
    pub nodes: Option<u16>,

    /// The command to run, and its arguments, after `--`
    #[arg(last = true, required = true, value_name = "CMD")]
    pub command: Vec<OsString>,
}

pub const AFTER_HELP: &str = "\
CMD's environment gets:
  IMCTL_APP_SERVER    the app-server, e.g. http://127.0.0.1:41234
  IMCTL_BROKER_URL    the broker's WebSocket, e.g. ws://127.0.0.1:41235/ws
  IMCTL_ROUTE_URL     the broker's /route
  IMCTL_ADMIN_SECRET  the admin API's secret
  IMCTL_NODES         with --nodes: every node's URLs and pid, as JSON
                      [{\"node\":\"n1\",\"appServer\":…,\"brokerUrl\":…,\"routeUrl\":…,\"pid\":…}, …]
                      (the variables above then name node n1)
The stack is ephemeral and on free ports unless --data-dir, --app-port or --broker-port
(or IMCTL_*, or imctl.toml) say otherwise.

Exit code: CMD's own (128 + N when signal N ended it); 1 when the stack cannot start.
Ctrl-C: CMD gets it from the terminal; if it has not exited 2 s later it is sent
SIGINT, then SIGTERM, then SIGKILL, 2 s apart. SIGTERM to imctl is passed on at once
(SIGKILL 4 s later). Processes CMD leaves behind are stopped too (SIGTERM, then SIGKILL),
and CMD gets SIGTERM if imctl itself dies.

Example: imctl exec -- npm test";

/// CMD's exit, to become imctl's: its code, or 128 + the signal that ended it.
#[derive(Debug, thiserror::Error)]
#[error("the command exited with {0}")]
pub struct ChildExit(pub u8);

/// How long CMD has to finish after a Ctrl-C reached it from the terminal
/// before it is sent SIGINT by us, then SIGTERM, then SIGKILL.
const GRACE: Duration = Duration::from_secs(2);

pub async fn run(args: Args) -> anyhow::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    // Before anything starts, so no signal finds the default action.
    let mut signals = Signals {
        int: signal(SignalKind::interrupt()).context("cannot listen for Ctrl-C")?,
        term: signal(SignalKind::terminate()).context("cannot listen for SIGTERM")?,
    };
    let stack = match args.nodes {
        Some(nodes) => {
            let strategy = args.config.route_strategy;
            Stack::Cluster(Box::new(
                LocalCluster::start(nodes, (0, 0), strategy).await?,
            ))
        }
        None => Stack::One(Box::new(server::start(&args.config).await?)),
    };
    // Orphans of CMD (a server it started in the background) become our
    // children, so they can be stopped too. After the stack started: a
    // cluster's PostgreSQL is nobody's orphan to stop.
    // SAFETY: prctl with integer arguments only.
    unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1) };
    let (app, ws, route, secret) = stack.urls();
    let (program, rest) = args.command.split_first().expect("clap requires CMD");
    eprintln!(
        "imctl exec: stack ready (app-server {app}, broker {ws}); running {}",
        args.command
            .iter()
            .map(|a| a.to_string_lossy())
            .collect::<Vec<_>>()
            .join(" ")
    );
    let mut cmd = Command::new(program);
    cmd.args(rest)
        .env("IMCTL_APP_SERVER", &app)
        .env("IMCTL_BROKER_URL", &ws)
        .env("IMCTL_ROUTE_URL", &route)
        .env("IMCTL_ADMIN_SECRET", &secret)
        .kill_on_drop(true);
    if let Stack::Cluster(cluster) = &stack {
        cmd.env("IMCTL_NODES", cluster.nodes_json());
    }
    // If imctl dies (even by SIGKILL), CMD is told.
    // SAFETY: only an async-signal-safe prctl between fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
            Ok(())
        });
    }
    let outcome = match cmd.spawn() {
        Ok(child) => supervise(child, &mut signals).await,
        Err(e) => Err(Failure::new(
            exit::ERROR,
            format!("cannot run {}: {e}", program.to_string_lossy()),
        )
        .into()),
    };
    stop_leftovers(&stack.pids()).await;
    // Stop the stack; a second Ctrl-C (or SIGTERM) leaves at once.
    tokio::select! {
        stopped = tokio::time::timeout(STOP_TIMEOUT, stack.stop()) => match stopped {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::error!("stopping the stack failed: {e:#}"),
            Err(_) => tracing::error!("the stack did not stop within {STOP_TIMEOUT:?}; leaving anyway"),
        },
        _ = signals.int.recv() => eprintln!("imctl exec: interrupted while stopping the stack"),
        _ = signals.term.recv() => eprintln!("imctl exec: terminated while stopping the stack"),
    }
    let code = outcome?;
    if code == 0 {
        Ok(())
    } else {
        Err(ChildExit(code).into())
    }
}

/// What CMD runs against.
enum Stack {
    One(Box<server::Running>),
    Cluster(Box<LocalCluster>),
}

impl Stack {
    /// The app-server, broker WebSocket, route URL and admin secret (node 1's).
    fn urls(&self) -> (String, String, String, String) {
        match self {
            Stack::One(r) => (
                r.app_url(),
                r.state.ws_url(),
                r.state.route_url.clone(),
                r.state.admin_secret.clone(),
            ),
            Stack::Cluster(c) => {
                let n1 = &c.nodes[0];
                (
                    n1.app_server.clone(),
                    n1.broker_url.clone(),
                    n1.route_url.clone(),
                    c.admin_secret.clone(),
                )
            }
        }
    }

    /// Processes of the stack itself, which are our children too.
    fn pids(&self) -> Vec<libc::pid_t> {
        match self {
            Stack::One(_) => Vec::new(),
            Stack::Cluster(c) => c.pids().into_iter().map(|p| p as libc::pid_t).collect(),
        }
    }

    async fn stop(self) -> anyhow::Result<()> {
        match self {
            Stack::One(r) => r.stop().await,
            Stack::Cluster(c) => {
                c.stop().await;
                Ok(())
            }
        }
    }
}

struct Signals {
    int: tokio::signal::unix::Signal,
    term: tokio::signal::unix::Signal,
}

/// How long stopping the stack may take after CMD is done.
const STOP_TIMEOUT: Duration = Duration::from_secs(10);

/// Waits for CMD, passing Ctrl-C and SIGTERM on; returns its exit code.
async fn supervise(mut child: tokio::process::Child, signals: &mut Signals) -> anyhow::Result<u8> {
    let pid = child.id().map(|p| p as libc::pid_t);
    let send = |sig: libc::c_int| {
        if let Some(pid) = pid {
            // SAFETY: signalling our own child, which we have not reaped yet.
            unsafe { libc::kill(pid, sig) };
        }
    };
    // After a stop request: the signals still to send, one per GRACE.
    let mut escalation: Vec<libc::c_int> = Vec::new();
    let mut deadline = None;
    let status = loop {
        let tick = async {
            match deadline {
                Some(d) => tokio::time::sleep_until(d).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            status = child.wait() => break status.context("waiting for the command")?,
            _ = signals.int.recv() => {
                // From a terminal, CMD got this Ctrl-C too: give it a moment first.
                if deadline.is_none() {
                    escalation = vec![libc::SIGKILL, libc::SIGTERM, libc::SIGINT];
                    deadline = Some(tokio::time::Instant::now() + GRACE);
                }
            }
            _ = signals.term.recv() => {
                if deadline.is_none() {
                    send(libc::SIGTERM);
                    escalation = vec![libc::SIGKILL];
                    deadline = Some(tokio::time::Instant::now() + GRACE * 2);
                }
            }
            _ = tick => {
                match escalation.pop() {
                    Some(sig) => {
                        send(sig);
                        deadline = Some(tokio::time::Instant::now() + GRACE);
                    }
                    None => deadline = None,
                }
            }
        }
    };
    use std::os::unix::process::ExitStatusExt;
    Ok(match (status.code(), status.signal()) {
        (Some(code), _) => code.clamp(0, 255) as u8,
        (None, Some(sig)) => (128 + sig).clamp(0, 255) as u8,
        (None, None) => exit::ERROR,
    })
}

/// Stops what CMD left behind (now our children, as subreaper): SIGTERM,
/// then SIGKILL after GRACE, and reaps them.
async fn stop_leftovers(except: &[libc::pid_t]) {
    let left: Vec<_> = children()
        .into_iter()
        .filter(|p| !except.contains(p))
        .collect();
    if left.is_empty() {
        return;
    }
    tracing::info!(
        count = left.len(),
        "stopping processes the command left behind"
    );
    for &pid in &left {
        // SAFETY: signalling our own children.
        unsafe { libc::kill(pid, libc::SIGTERM) };
    }
    let deadline = tokio::time::Instant::now() + GRACE;
    let others = || -> Vec<libc::pid_t> {
        children()
            .into_iter()
            .filter(|p| !except.contains(p))
            .collect()
    };
    while !others().is_empty() {
        reap(&left);
        if tokio::time::Instant::now() > deadline {
            for pid in others() {
                // SAFETY: as above.
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    reap(
        &others()
            .into_iter()
            .chain(left.iter().copied())
            .collect::<Vec<_>>(),
    );
}

/// Our live child processes, from `/proc/*/stat`.
fn children() -> Vec<libc::pid_t> {
    let me = std::process::id().to_string();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.flatten()
        .filter_map(|e| {
            let pid: libc::pid_t = e.file_name().to_str()?.parse().ok()?;
            let stat = std::fs::read_to_string(e.path().join("stat")).ok()?;
            // After the `(comm)` field: state, then the parent's pid.
            let mut rest = stat.rsplit_once(')')?.1.split_whitespace();
            let state = rest.next()?;
            (rest.next()? == me && state != "Z").then_some(pid)
        })
        .collect()
}

/// Reaps those of `pids` that exited (not any child: the stack's own are
/// waited for by their owners).
fn reap(pids: &[libc::pid_t]) {
    for &pid in pids {
        // SAFETY: waitpid on one pid with a null status pointer.
        unsafe { libc::waitpid(pid, std::ptr::null_mut(), libc::WNOHANG) };
    }
}
