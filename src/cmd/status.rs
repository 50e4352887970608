//! `imctl status` and `imctl wait-ready`: is a stack serving there, and where
//! is everything — for people and for scripts.

use std::time::Duration;

use clap::ValueEnum;
use tokio::time::Instant;

use super::Failure;
use crate::client::AppClient;
use crate::client::app::exit;
use crate::wire::http::{ClientSettings, StackStatus};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Output {
    /// For people
    Text,
    /// One JSON object
    Json,
    /// `export NAME=value` lines for a shell: eval "$(imctl status -o env)"
    Env,
}

#[derive(Debug, clap::Args)]
pub struct StatusArgs {
    /// The app-server to ask
    #[arg(
        long,
        env = "IMCTL_APP_SERVER",
        default_value = "http://127.0.0.1:8888"
    )]
    pub app_server: String,

    /// Output format
    #[arg(short = 'o', long = "output", value_enum, default_value_t = Output::Text)]
    pub output: Output,
}

#[derive(Debug, clap::Args)]
pub struct WaitReadyArgs {
    /// The app-server to wait for
    #[arg(
        long,
        env = "IMCTL_APP_SERVER",
        default_value = "http://127.0.0.1:8888"
    )]
    pub app_server: String,

    /// Give up after this long (exit 6)
    #[arg(long, default_value = "30s", value_parser = crate::config::duration)]
    pub timeout: Duration,

    /// Print nothing when ready
    #[arg(long, short)]
    pub quiet: bool,
}

pub async fn status(args: StatusArgs) -> anyhow::Result<()> {
    let app = AppClient::new(&args.app_server);
    let status = match app.dev_status().await {
        Ok(s) => s,
        Err(e) => {
            if args.output == Output::Json {
                println!(
                    "{}",
                    serde_json::json!({"running": false, "appServer": app.base(), "error": e.to_string()})
                );
            }
            return Err(Failure::new(
                exit::ERROR,
                format!("no imctl stack answers at {}: {e}", app.base()),
            )
            .into());
        }
    };
    print!("{}", render(&status, args.output));
    Ok(())
}

fn render(s: &StackStatus, output: Output) -> String {
    match output {
        Output::Json => {
            let mut v = serde_json::to_value(s).expect("wire types serialize");
            v["running"] = true.into();
            format!("{v}\n")
        }
        Output::Env => [
            ("IMCTL_APP_SERVER", s.app_server.as_str()),
            ("IMCTL_BROKER_URL", s.ws_url.as_str()),
            ("IMCTL_ROUTE_URL", s.route_url.as_str()),
            (
                "IMCTL_IM_SERVER_HOST",
                s.clients.android.im_server_host.as_str(),
            ),
        ]
        .iter()
        .map(|(k, v)| format!("export {k}={}\n", shell_quote(v)))
        .collect(),
        Output::Text => format!(
            "imctl {} is running (pid {}, up {})\n\
             \x20 app-server  {}\n\
             \x20 broker      {}  (route {})\n\
             \x20 data        {}\n\
             \x20 users {} · connections {} · live QR sessions {}\n{}{}{}",
            s.version,
            s.pid,
            humantime::format_duration(Duration::from_secs(s.uptime_ms.max(0) as u64 / 1000)),
            s.app_server,
            s.ws_url,
            s.route_url,
            s.database.as_deref().unwrap_or("in memory (--ephemeral)"),
            s.users,
            s.connections,
            s.qr_sessions,
            s.cluster.as_ref().map(cluster_text).unwrap_or_default(),
            match s.faults {
                0 => String::new(),
                n => format!(
                    "  ⚡ {n} fault rule{} set on purpose: `imctl chaos list` shows them, `imctl chaos clear` removes them\n",
                    if n == 1 { "" } else { "s" }
                ),
            },
            if is_loopback_url(&s.app_server) {
                String::new()
            } else {
                client_settings_text(&s.clients)
            },
        ),
    }
}

/// A cluster node's view: every live node with its app-server and connections.
fn cluster_text(c: &crate::wire::http::ClusterStatus) -> String {
    let mut out = format!(
        "\x20 cluster     node {} of {}{}\n",
        c.node,
        c.nodes.len(),
        if c.nats_connected {
            ""
        } else {
            " (NATS unreachable)"
        }
    );
    for n in &c.nodes {
        out += &format!(
            "\x20   {:<6} {}  broker port {}  connections {}\n",
            n.name, n.app_url, n.broker_port, n.connections
        );
    }
    out
}

/// Whether a URL's host is loopback (the official clients' settings are
/// only worth printing for an address a device can reach).
pub fn is_loopback_url(url: &str) -> bool {
    let authority = url.split_once("://").map_or(url, |(_, rest)| rest);
    crate::http::advertise::is_loopback_host(authority.split('/').next().unwrap_or_default())
}

/// The official Wildfire clients' settings, ready to paste.
pub fn client_settings_text(c: &ClientSettings) -> String {
    let (app, host) = (&c.android.app_server_address, &c.android.im_server_host);
    let v = &c.vue_chat;
    format!(
        "\x20 Android      Config.java   APP_SERVER_ADDRESS = \"{app}\";  IM_SERVER_HOST = \"{host}\";\n\
         \x20 iOS          WFCConfig.m   APP_SERVER_ADDRESS = @\"{}\";  IM_SERVER_HOST = @\"{}\";\n\
         \x20 vue-chat     config.js     APP_SERVER = '{}';  IM_SERVER_HOST = '{}';  ROUTE_PORT = {};  USE_WSS = {};  WS_PATH = '{}';\n\
         \x20              (the Android emulator reaches this machine as 10.0.2.2: use that instead of {host} there)\n",
        c.ios.app_server_address,
        c.ios.im_server_host,
        v.app_server,
        v.im_server_host,
        v.route_port,
        v.use_wss,
        v.ws_path,
    )
}

/// Single quotes for a POSIX shell.
pub fn shell_quote(s: &str) -> String {
    if !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_./:@%+=,".contains(&b))
    {
        return s.to_owned();
    }
    format!("'{}'", s.replace('\'', r"'\''"))
}

pub async fn wait_ready(args: WaitReadyArgs) -> anyhow::Result<()> {
    let app = AppClient::new(&args.app_server);
    let started = Instant::now();
    let deadline = started + args.timeout;
    loop {
        let last = match app.readyz().await {
            Ok(()) => {
                if !args.quiet {
                    println!(
                        "ready: {} (after {:.1} s)",
                        app.base(),
                        started.elapsed().as_secs_f64()
                    );
                }
                return Ok(());
            }
            Err(e) => e,
        };
        if Instant::now() + Duration::from_millis(100) > deadline {
            return Err(Failure::new(
                exit::TIMED_OUT,
                format!(
                    "{} was not ready within {}: {last}",
                    app.base(),
                    humantime::format_duration(args.timeout)
                ),
            )
            .into());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::shell_quote;

    #[test]
    fn shell_quoting_keeps_urls_plain_and_quotes_the_rest() {
        assert_eq!(
            shell_quote("http://127.0.0.1:8888"),
            "http://127.0.0.1:8888"
        );
        assert_eq!(shell_quote("a b"), "'a b'");
        assert_eq!(shell_quote("it's"), r"'it'\''s'");
        assert_eq!(shell_quote(""), "''");
        assert_eq!(shell_quote("$(rm -rf /)"), "'$(rm -rf /)'");
    }
}
