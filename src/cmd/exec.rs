//! `imctl exec [serve options] -- CMD ARGS...`: the whole stack around one
//! command — ephemeral on free ports unless told otherwise, CMD told where
//! everything is through its environment, its exit code passed through, the
//! stack stopped cleanly afterwards (also on Ctrl-C and SIGTERM).

use std::ffi::OsString;
use std::time::Duration;

use anyhow::Context;
use tokio::process::Command;

use super::Failure;
use crate::client::app::exit;
use crate::config::ServeConfig;
use crate::server;

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub config: ServeConfig,

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
    // Orphans of CMD (a server it started in the background) become our
    // children, so they can be stopped too.
    // SAFETY: prctl with integer arguments only.
    unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1) };
    let running = server::start(&args.config).await?;
    let app = running.app_url();
    let ws = running.state.ws_url();
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
        .env("IMCTL_ROUTE_URL", &running.state.route_url)
        .env("IMCTL_ADMIN_SECRET", &running.state.admin_secret)
        .kill_on_drop(true);
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
    stop_leftovers().await;
    // Stop the stack; a second Ctrl-C (or SIGTERM) leaves at once.
    tokio::select! {
        stopped = tokio::time::timeout(STOP_TIMEOUT, running.stop()) => match stopped {
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
async fn stop_leftovers() {
    let left = children();
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
    while !reap().is_empty() || !children().is_empty() {
        if tokio::time::Instant::now() > deadline {
            for pid in children() {
                // SAFETY: as above.
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
            reap();
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
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

/// Reaps exited children; returns their pids.
fn reap() -> Vec<libc::pid_t> {
    let mut reaped = Vec::new();
    loop {
        // SAFETY: waitpid with a valid out-pointer.
        let pid = unsafe { libc::waitpid(-1, std::ptr::null_mut(), libc::WNOHANG) };
        if pid <= 0 {
            return reaped;
        }
        reaped.push(pid);
    }
}
