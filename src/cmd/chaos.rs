//! `imctl chaos`: add, list and clear the fault rules of a running stack.

use clap::Subcommand;

use crate::client::AppClient;
use crate::wire::fault::{Kind, Rule};
use crate::wire::http::FaultInfo;

pub const AFTER_HELP: &str = "\
A rule is KIND key=value …; scope it with user=, mobile=, client=, platform=,
token= (or latest: the newest QR session), path=; trigger it with times=N,
for=DURATION, or p=PROBABILITY [seed=N]. Without a trigger a rule fires once,
except the lasting kinds (api.delay, qr.ttl, sms.delay, ws.delay-pushes,
ws.drop-pushes, ws.refuse-connect), which last until cleared.

Examples:
  imctl chaos add qr.expire latest
  imctl chaos add api.code path=/session_login code=18 times=1
  imctl chaos add api.http path=/pc_session status=503 times=3
  imctl chaos add ws.close user=alice code=4009
  imctl chaos add ws.drop-pushes user=bob for=10s
  imctl chaos list --json
  imctl chaos clear

The same rules go in `imctl serve --fault RULE` and in imctl.toml as
[[fault]] rule = \"…\". docs/CHAOS.md describes every kind.";

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The app-server to talk to
    #[arg(
        long,
        env = "IMCTL_APP_SERVER",
        default_value = "http://127.0.0.1:8888",
        global = true
    )]
    pub app_server: String,

    #[command(subcommand)]
    pub action: Action,
}

#[derive(Debug, Subcommand)]
pub enum Action {
    /// Add a rule (KIND key=value …, one argument or several words); prints its id
    Add {
        #[arg(required = true, num_args = 1.., value_name = "RULE")]
        words: Vec<String>,
    },
    /// List the rules: what remains of each and how often it fired
    List {
        /// The server's JSON
        #[arg(long)]
        json: bool,
    },
    /// Remove rule ID, or every rule
    Clear { id: Option<u64> },
    /// List the kinds of fault
    Kinds,
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    let app = AppClient::new(&args.app_server);
    match args.action {
        Action::Add { words } => {
            let text = words.join(" ");
            // Checked here first: a bad rule is a usage error (exit 2).
            let rule: Rule = text.parse().map_err(|e| {
                crate::client::app::Failure::new(
                    crate::client::app::exit::USAGE,
                    format!("bad rule: {e}"),
                )
            })?;
            let info = app.dev_fault_add(&rule.to_string()).await?;
            println!("{}", info.id);
            eprintln!("added rule {}: {}", info.id, info.rule);
        }
        Action::List { json } => {
            let list = app.dev_faults().await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&list)?);
            } else if list.rules.is_empty() {
                println!("no fault rules");
            } else {
                for r in &list.rules {
                    println!("{}", line(r));
                }
            }
        }
        Action::Clear { id } => {
            let cleared = app.dev_faults_clear(id).await?;
            println!(
                "cleared {cleared} rule{}",
                if cleared == 1 { "" } else { "s" }
            );
        }
        Action::Kinds => {
            for kind in Kind::ALL {
                println!("{:<18} {}", kind.name(), kind.about());
            }
        }
    }
    Ok(())
}

/// `3  ws.drop-pushes user=bob for=10s  fired 2×, 7.5 s left`
fn line(r: &FaultInfo) -> String {
    let left = if r.spent {
        "spent".to_owned()
    } else {
        match (r.remaining, r.remaining_ms) {
            (Some(n), Some(ms)) => format!("{n} left, {:.1} s left", ms as f64 / 1000.0),
            (Some(n), None) => format!("{n} left"),
            (None, Some(ms)) => format!("{:.1} s left", ms as f64 / 1000.0),
            (None, None) => "until cleared".into(),
        }
    };
    format!("{:<4} {}  (fired {}×, {left})", r.id, r.rule, r.fired)
}
