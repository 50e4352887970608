//! `imctl export`: a snapshot of a running stack's data, through the admin
//! API, as pretty JSON (`imctl serve --import` loads it).

use std::io::Write;
use std::path::PathBuf;

use anyhow::Context;

use crate::client::AppClient;
use crate::client::app::{Failure, exit};
use crate::store::snapshot::{self, Snapshot};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Where to write the snapshot; - for stdout
    pub file: PathBuf,

    /// The app-server to talk to
    #[arg(
        long,
        env = "IMCTL_APP_SERVER",
        default_value = "http://127.0.0.1:8888"
    )]
    pub app_server: String,

    /// The admin secret (shown in the `imctl serve` banner)
    #[arg(long, env = "IMCTL_ADMIN_SECRET", hide_env_values = true)]
    pub admin_secret: Option<String>,
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    let Some(secret) = args.admin_secret.filter(|s| !s.is_empty()) else {
        anyhow::bail!(
            "export uses the admin API, which needs its secret: pass --admin-secret or set IMCTL_ADMIN_SECRET (the `imctl serve` banner shows it)"
        );
    };
    let client = AppClient::new(&args.app_server);
    let text = client
        .admin_get_text(&secret, "/admin/export")
        .await
        .with_context(|| format!("cannot export from {}", client.base()))?;
    // Into the snapshot's own types: each message's content stays raw JSON.
    let snapshot: Snapshot = serde_json::from_str(&text).map_err(|e| {
        Failure::new(
            exit::ERROR,
            format!(
                "{} answered /admin/export with something that is not a snapshot ({e}); is it an older imctl?",
                client.base()
            ),
        )
    })?;
    let summary = snapshot::summary(&snapshot);
    if args.file.as_os_str() == "-" {
        let mut out = std::io::stdout().lock();
        serde_json::to_writer_pretty(&mut out, &snapshot)?;
        writeln!(out)?;
        out.flush()?;
        eprintln!("exported {summary}");
    } else {
        snapshot::write(&args.file, &snapshot)?;
        println!("exported {summary} to {}", args.file.display());
    }
    Ok(())
}
