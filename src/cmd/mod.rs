//! The command line: one module per subcommand, each an `Args` and a `run`.

pub mod admin;
pub mod bench;
pub mod chaos;
pub mod client;
pub mod cluster;
pub mod docs;
pub mod exec;
pub mod export;
pub mod serve;
pub mod simulate;
pub mod status;

use std::ffi::OsString;
use std::io::IsTerminal;
use std::process::ExitCode;

use anyhow::Context;
use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};
use tracing_subscriber::EnvFilter;

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
  6  timed out waiting (no ack, fewer messages than --count, not ready)
imctl exec exits with its command's code (128 + N when signal N ended it).";

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
    /// Run the app-server (SMS and QR login), the broker, the web client and the dev API
    Serve(serve::Args),
    /// Run a cluster on this machine: nats-server, PostgreSQL and N nodes, until Ctrl-C
    Cluster(cluster::Args),
    /// Run a command against a fresh stack: ephemeral, free ports, shut down after
    #[command(after_help = exec::AFTER_HELP)]
    Exec(exec::Args),
    /// Is a stack running there? Its URLs, version, uptime and counts
    #[command(after_help = EXIT_CODES)]
    Status(status::StatusArgs),
    /// Wait until a stack answers /readyz (for scripts that start `serve` in the background)
    #[command(after_help = EXIT_CODES)]
    WaitReady(status::WaitReadyArgs),
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
    /// Make a running stack misbehave on purpose (faults on the login API, QR, SMS, WebSocket, /route), to test a client's error paths
    #[command(after_help = chaos::AFTER_HELP)]
    Chaos(chaos::Args),
    /// Write a snapshot of a running stack's data (users, friends, groups, messages) to a file, for `serve --import`
    #[command(after_help = EXIT_CODES)]
    Export(export::Args),
    /// Print a shell completion script: eval "$(imctl completions bash)"
    Completions(docs::CompletionsArgs),
    /// Print the man page, or write one per subcommand with --dir
    Man(docs::ManArgs),
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

/// The whole program: parse, set up logging, run the command on a tokio
/// runtime, pick the exit code. It lives here rather than in `main.rs` so
/// the async command tree is compiled once, in the library (a binary's
/// `block_on` would instantiate all of it a second time).
pub fn main() -> ExitCode {
    let cli = match parse_from(std::env::args_os().collect()) {
        Ok(cli) => cli,
        Err(e) => {
            eprintln!("error: {e:#}");
            return ExitCode::from(2);
        }
    };
    let filter = EnvFilter::try_new(cli.log_filter()).unwrap_or_else(|e| {
        eprintln!("warning: bad log filter ({e}); using info");
        EnvFilter::new("info")
    });
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();

    let runtime = tokio::runtime::Runtime::new().expect("cannot start the tokio runtime");
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // `imctl exec` passes its command's exit code on without comment.
            if e.downcast_ref::<exec::ChildExit>().is_none() {
                eprintln!("error: {e:#}");
            }
            ExitCode::from(exit_code(&e))
        }
    }
}

pub async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Serve(args) => serve::run(args).await,
        Command::Simulate(args) => simulate::run(args).await,
        Command::Admin(args) => admin::run(args).await,
        Command::Chaos(args) => chaos::run(args).await,
        Command::Export(args) => export::run(args).await,
        Command::Client(args) => client::run(args).await,
        Command::Bench(args) => bench::run(args).await,
        Command::Exec(args) => exec::run(args).await,
        Command::Cluster(args) => cluster::run(args).await,
        Command::Status(args) => status::status(args).await,
        Command::WaitReady(args) => status::wait_ready(args).await,
        Command::Completions(args) => docs::completions(args),
        Command::Man(args) => docs::man(args),
    }
}

/// Parses the command line. For `serve` and `exec`, settings that neither a
/// flag nor an `IMCTL_*` variable gave come from the config file (so flag,
/// then env, then file, then default), and `exec` runs ephemeral on free
/// ports by default. Clap's own errors (and `--help`) exit here as clap does.
pub fn parse_from(args: Vec<OsString>) -> anyhow::Result<Cli> {
    let matches = Cli::command()
        .try_get_matches_from(&args)
        .unwrap_or_else(|e| e.exit());
    let Some((name, sub)) = matches
        .subcommand()
        .filter(|(n, _)| *n == "serve" || *n == "exec")
    else {
        return Ok(Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit()));
    };
    let file = crate::config::file::locate(sub)?;
    let mut extra = match &file {
        Some(path) => crate::config::file::flags_from(path, sub)?,
        None => Vec::new(),
    };
    let from_file: Vec<String> = extra.iter().map(|(id, _)| id.clone()).collect();
    if name == "exec" {
        let defaulted = |id: &str| {
            !crate::config::file::explicit(sub, id) && !from_file.iter().any(|f| f == id)
        };
        for (id, flag) in [
            ("app_port", "--app-port=0"),
            ("broker_port", "--broker-port=0"),
        ] {
            if defaulted(id) {
                extra.push((id.into(), vec![flag.into()]));
            }
        }
        if defaulted("data_dir") && defaulted("ephemeral") {
            extra.push(("ephemeral".into(), vec!["--ephemeral".into()]));
        }
    }
    let matches = if extra.is_empty() {
        matches
    } else {
        // The added flags go at the end, or for `exec` before the `--` that
        // starts its command.
        let at = match name {
            "exec" => args.iter().position(|a| a == "--").unwrap_or(args.len()),
            _ => args.len(),
        };
        let mut with = args[..at].to_vec();
        with.extend(extra.into_iter().flat_map(|(_, flags)| flags));
        with.extend_from_slice(&args[at..]);
        Cli::command().try_get_matches_from(&with).map_err(|e| {
            let origin = file.as_ref().map_or_else(String::new, |f| {
                format!(" (with the settings of {})", f.display())
            });
            let text = e.render().to_string();
            let text = text.trim_end();
            anyhow::anyhow!("{}{origin}", text.strip_prefix("error: ").unwrap_or(text))
        })?
    };
    let mut cli = Cli::from_arg_matches(&matches).context("reading the command line")?;
    if let Command::Serve(a) = &mut cli.command
        && a.print_config
    {
        let sub = matches.subcommand().expect("checked above").1;
        a.sources = crate::config::file::settings(sub, &from_file);
        a.config_file = file;
    }
    Ok(cli)
}

/// Picks the process exit code for an error, by its most specific cause.
pub fn exit_code(err: &anyhow::Error) -> u8 {
    err.chain()
        .find_map(|e| {
            e.downcast_ref::<ClientError>()
                .map(ClientError::exit_code)
                .or_else(|| e.downcast_ref::<Failure>().map(|f| f.exit))
                .or_else(|| e.downcast_ref::<exec::ChildExit>().map(|c| c.0))
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
