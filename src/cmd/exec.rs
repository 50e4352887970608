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
SIGINT, then SIGTERM, then SIGKILL, 2 s apart. SIGTERM to imctl is passed on at once.

Example: imctl exec -- npm test";

/// CMD's exit, to become imctl's: its code, or 128 + the signal that ended it.
#[derive(Debug, thiserror::Error)]
#[error("the command exited with {0}")]
pub struct ChildExit(pub u8);

/// How long CMD has to finish after a Ctrl-C reached it from the terminal
/// before it is sent SIGINT by us, then SIGTERM, then SIGKILL.
const GRACE: Duration = Duration::from_secs(2);

pub async fn run(args: Args) -> anyhow::Result<()> {
    let running = server::start(&args.config).await?;
    let app = running.app_url();
    let broker = running.broker_url();
    let ws = format!("{}/ws", broker.replacen("http://", "ws://", 1));
    let (program, rest) = args.command.split_first().expect("clap requires CMD");
    eprintln!(
        "imctl exec: stack ready (app-server {app}, broker {ws}); running {}",
        args.command
            .iter()
            .map(|a| a.to_string_lossy())
            .collect::<Vec<_>>()
            .join(" ")
    );
    let child = Command::new(program)
        .args(rest)
        .env("IMCTL_APP_SERVER", &app)
        .env("IMCTL_BROKER_URL", &ws)
        .env("IMCTL_ROUTE_URL", &running.state.route_url)
        .env("IMCTL_ADMIN_SECRET", &running.state.admin_secret)
        .spawn();
    let outcome = match child {
        Ok(child) => supervise(child).await,
        Err(e) => Err(Failure::new(
            exit::ERROR,
            format!("cannot run {}: {e}", program.to_string_lossy()),
        )
        .into()),
    };
    running.stop().await.context("stopping the stack")?;
    let code = outcome?;
    if code == 0 {
        Ok(())
    } else {
        Err(ChildExit(code).into())
    }
}

/// Waits for CMD, passing Ctrl-C and SIGTERM on; returns its exit code.
async fn supervise(mut child: tokio::process::Child) -> anyhow::Result<u8> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut int = signal(SignalKind::interrupt()).context("cannot listen for Ctrl-C")?;
    let mut term = signal(SignalKind::terminate()).context("cannot listen for SIGTERM")?;
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
            _ = int.recv() => {
                // From a terminal, CMD got this Ctrl-C too: give it a moment first.
                if escalation.is_empty() && deadline.is_none() {
                    escalation = vec![libc::SIGKILL, libc::SIGTERM, libc::SIGINT];
                    deadline = Some(tokio::time::Instant::now() + GRACE);
                }
            }
            _ = term.recv() => {
                send(libc::SIGTERM);
                escalation = vec![libc::SIGKILL];
                deadline = Some(tokio::time::Instant::now() + GRACE * 2);
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
