//! The command line: one module per subcommand, each an `Args` and a `run`.

pub mod admin;
pub mod bench;
pub mod client;
pub mod serve;
pub mod simulate;

use clap::{Parser, Subcommand};

use crate::client::ClientError;
pub use crate::client::app::Failure;
use crate::client::app::exit;

const EXIT_CODES: &str = "\
Exit codes:
  0  success
  1  error (see the message)
  2  bad command line
  3  the app-server or broker cannot be reached
  4  the QR session is unknown, used up or expired
  5  the server refused (wrong user, wrong state, cancelled, bad code, not a member)
  6  timed out waiting (no ack, fewer messages than --count)";

#[derive(Debug, Parser)]
#[command(name = "imctl", version, about = "A local development stack for instant-messaging apps", after_help = EXIT_CODES)]
pub struct Cli {
    /// Log filter, RUST_LOG syntax (e.g. debug, imctl=trace) [default: info for serve, warn otherwise]
    #[arg(long, env = "IMCTL_LOG", global = true)]
    pub log: Option<String>,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the app-server (SMS and QR login), the web page and the dev API
    Serve(serve::Args),
    /// Stand in for the phone: log in by SMS, scan, confirm, cancel, approve a web QR login
    #[command(after_help = EXIT_CODES)]
    Simulate(simulate::Args),
    /// Chat in the terminal as a user (login, route, connect, sync), or script it with --send/--listen
    Client(client::Args),
    /// Measure a stack: 1:1 chat, group fan-out, idle connections, QR logins
    Bench(bench::Args),
    /// Administer a running stack: users, connections, bans, mutes, system messages
    #[command(after_help = EXIT_CODES)]
    Admin(admin::Args),
}

impl Cli {
    /// The log filter: `--log`, else `RUST_LOG`, else a per-command default.
    pub fn log_filter(&self) -> String {
        self.log
            .clone()
            .or_else(|| std::env::var("RUST_LOG").ok().filter(|s| !s.is_empty()))
            .unwrap_or_else(|| match self.command {
                Command::Serve(_) => "info".into(),
                _ => "warn".into(),
            })
    }
}

pub async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Serve(args) => serve::run(args).await,
        Command::Simulate(args) => simulate::run(args).await,
        Command::Admin(args) => admin::run(args).await,
        Command::Client(args) => client::run(args).await,
        Command::Bench(args) => bench::run(args).await,
    }
}

/// Picks the process exit code for an error, by its most specific cause.
pub fn exit_code(err: &anyhow::Error) -> u8 {
    err.chain()
        .find_map(|e| {
            e.downcast_ref::<ClientError>()
                .map(ClientError::exit_code)
                .or_else(|| e.downcast_ref::<Failure>().map(|f| f.exit))
        })
        .unwrap_or(exit::ERROR)
}

/// Long-polls a QR login with a spinner on stderr that follows each state.
pub async fn wait_for_qr_login(
    app: &crate::client::AppClient,
    token: &str,
    deadline: tokio::time::Instant,
) -> anyhow::Result<(crate::wire::http::LoginResult, String)> {
    let spinner = indicatif::ProgressBar::new_spinner();
    spinner.set_style(
        indicatif::ProgressStyle::with_template("{spinner} {msg} ({elapsed})")
            .expect("valid template"),
    );
    spinner.enable_steady_tick(std::time::Duration::from_millis(100));
    spinner.set_message("waiting for a phone to scan");
    let outcome = crate::client::login::wait_qr_login(app, token, deadline, |who| {
        spinner.set_message(format!(
            "scanned by {} ({}); waiting for confirmation on the phone",
            who.user_name, who.user_id
        ));
    })
    .await;
    spinner.finish_and_clear();
    outcome
}
