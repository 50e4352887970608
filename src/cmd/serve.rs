//! `imctl serve`: the whole stack in one process.

use anyhow::Context;
use tracing::warn;

use crate::config::ServeConfig;
use crate::server::{self, Running};

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub config: ServeConfig,

    /// Print the effective configuration (as imctl.toml) and exit
    #[arg(long)]
    pub print_config: bool,

    /// With --print-config: the config file read, and where each setting
    /// came from; filled in by `cmd::parse_from`.
    #[arg(skip)]
    pub config_file: Option<std::path::PathBuf>,
    #[arg(skip)]
    pub sources: Vec<crate::config::file::Setting>,
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    if args.print_config {
        print!(
            "{}",
            crate::config::file::render(&args.sources, args.config_file.as_deref())
        );
        return Ok(());
    }
    let config = args.config;
    let running = server::start(&config).await?;
    print!("{}", banner(&config, &running).await?);
    if !config.host.is_loopback() {
        warn!(
            "listening on {}: anyone who can reach these ports can read SMS codes and messages and approve QR logins \
             as any user through /_dev{}{}; keep imctl on loopback unless that is what you want",
            config.host,
            if config.super_code().is_some() {
                ", and log in as anyone with the super code (--super-code none turns it off)"
            } else {
                ""
            },
            if config.sms_test_code.is_empty() {
                ""
            } else {
                ", and with the fixed --sms-test-code codes"
            },
        );
    }
    if config.cors_origin.iter().any(|o| o.trim() == "*") {
        warn!(
            "--cors-origin '*': any web page a visitor opens may call the login API{}",
            if config.super_code().is_some() {
                " and, with the super code, log in as any user (--super-code none turns it off)"
            } else {
                ""
            }
        );
    }
    let stop = running.shutdown_token();
    tokio::select! {
        signal = shutdown_signal() => {
            signal?;
            tracing::info!(
                "shutting down: answering long polls and closing the database (at most {}; a second Ctrl-C or SIGTERM exits at once)",
                humantime::format_duration(config.shutdown_timeout)
            );
            stop.cancel();
            tokio::spawn(async {
                if shutdown_signal().await.is_ok() {
                    eprintln!("error: a second signal: exiting at once, without a clean shutdown");
                    std::process::exit(130);
                }
            });
        }
        _ = stop.cancelled() => {}
    }
    running.wait().await
}

/// Resolves on Ctrl-C or SIGTERM.
async fn shutdown_signal() -> anyhow::Result<()> {
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .context("cannot listen for SIGTERM")?;
        tokio::select! {
            r = tokio::signal::ctrl_c() => r.context("cannot listen for Ctrl-C"),
            _ = term.recv() => Ok(()),
        }
    }
    #[cfg(not(unix))]
    tokio::signal::ctrl_c()
        .await
        .context("cannot listen for Ctrl-C")
}

async fn banner(config: &ServeConfig, running: &Running) -> anyhow::Result<String> {
    let url = running.app_url();
    let data = match &running.database {
        Some(p) => p.display().to_string(),
        None if running.state.store.is_postgres() => running.store_label.clone(),
        None => "in memory (--ephemeral): forgotten on exit".into(),
    };
    let super_code = match config.super_code() {
        Some(c) => {
            format!("{c} (on: any mobile can log in with it; --super-code none turns it off)")
        }
        None => "off".into(),
    };
    let users = running.state.store.users().await?;
    let users = users
        .iter()
        .map(|u| format!("{} {}", u.id, u.mobile.as_deref().unwrap_or("(no mobile)")))
        .collect::<Vec<_>>()
        .join(", ");
    let admin = match &config.admin_secret {
        Some(s) if !s.is_empty() => "(the one you set with --admin-secret)".to_owned(),
        _ => format!(
            "{}  (random; set your own with --admin-secret)",
            running.state.admin_secret
        ),
    };
    let broker = running.broker_url();
    let ws = running.state.ws_url();
    let simulate = if url == "http://127.0.0.1:8888" {
        String::new()
    } else {
        format!(" --app-server {url}")
    };
    let public = running.state.advertise.default_urls();
    let devices = if public.is_loopback() {
        String::new()
    } else {
        let how = if running.state.advertise.follows_requests() {
            format!(
                "each client gets URLs on the address it reached imctl by; {} is this machine's (--advertise-host sets one for all)",
                public.host()
            )
        } else {
            format!("every URL handed out names {}", public.host())
        };
        format!(
            "\x20 devices      {how}\n{}\x20 scan         the app-server's address, for a phone:\n{}\n",
            super::status::client_settings_text(&public.client_settings()),
            crate::qr_image::terminal(&public.app_server()),
        )
    };
    // A stack that misbehaves on purpose says so first.
    let faults: String = config
        .fault
        .iter()
        .map(|rule| format!("\x20 ⚡ fault     {rule}  (on purpose: --fault / [[fault]]; imctl chaos clear removes it)\n"))
        .collect();
    Ok(format!(
        "imctl {version} is ready\n\
         \x20 web page     {url}/\n\
         \x20 login API    {url}  (Wildfire-compatible: /send_code /login /pc_session /session_login …)\n\
         \x20 broker       {ws}  (route: {broker}/route, protocol: docs/PROTOCOL.md)\n\
         \x20 config       {url}/config\n\
         \x20 admin API    {url}/admin/users  secret: {admin}\n\
         \x20 dashboard    {url}/_dev/  (SMS codes, QR sessions with approve buttons, connections, messages)\n\
         \x20 API docs     {url}/docs/  ({url}/openapi.json)\n\
         \x20 dev API      {url}/_dev/sms  {url}/_dev/pc_sessions  {url}/_dev/users  {url}/_dev/status\n\
         \x20 health       {url}/healthz  {url}/readyz  {url}/metrics\n\
         \x20 data         {data}\n\
         \x20 super code   {super_code}\n\
         \x20 users        {users}\n\
         \x20 try          open {url}/ and click Simulate phone → alice, then chat with   imctl client --user bob{simulate}\n\
         \x20              imctl client --user alice{simulate}   and   imctl client --user bob{simulate}   (chat in two terminals)\n\
         \x20              imctl simulate web-login{simulate}   then   imctl simulate approve --latest --as alice{simulate}\n\
         {devices}{faults}",
        version = env!("CARGO_PKG_VERSION"),
    ))
}
