//! `imctl admin`: the admin API from a terminal.

use clap::Subcommand;
use reqwest::Method;
use serde_json::{Value, json};

use crate::client::AppClient;

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

    /// The admin secret (shown in the `imctl serve` banner)
    #[arg(
        long,
        env = "IMCTL_ADMIN_SECRET",
        hide_env_values = true,
        global = true
    )]
    pub admin_secret: Option<String>,

    /// Print the server's JSON instead of human output
    #[arg(long, global = true)]
    pub json: bool,

    #[command(subcommand)]
    pub action: Action,
}

#[derive(Debug, Subcommand)]
pub enum Action {
    /// List users
    Users,
    /// Create a user
    CreateUser {
        /// Display name
        #[arg(long)]
        name: String,
        /// User id [default: a random one]
        #[arg(long)]
        id: Option<String>,
        /// Mobile number, so the user can log in by SMS
        #[arg(long)]
        mobile: Option<String>,
        /// Portrait URL
        #[arg(long)]
        portrait: Option<String>,
    },
    /// List live WebSocket connections
    Connections,
    /// Ban a user: close their connections, refuse login and connect
    Ban { user: String },
    /// Lift a ban
    Unban { user: String },
    /// Mute a user in a group, or the whole group without --user
    Mute {
        group: String,
        #[arg(long)]
        user: Option<String>,
    },
    /// Undo a mute
    Unmute {
        group: String,
        #[arg(long)]
        user: Option<String>,
    },
    /// Dissolve a group
    Dissolve { group: String },
    /// Send a system message to a user or to every member of a group
    Message {
        #[arg(
            long,
            conflicts_with = "to_group",
            required_unless_present = "to_group"
        )]
        to_user: Option<String>,
        #[arg(long)]
        to_group: Option<String>,
        text: String,
    },
}

/// A value for a table cell: control characters escaped (`\u{1b}`, `\n`),
/// so stored text written before validation existed cannot clear the
/// screen or forge rows.
fn cell(value: &str) -> String {
    value
        .chars()
        .map(|c| {
            if c.is_control() {
                c.escape_default().to_string()
            } else {
                c.to_string()
            }
        })
        .collect()
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    let Some(secret) = args.admin_secret.filter(|s| !s.is_empty()) else {
        anyhow::bail!(
            "the admin API needs its secret: pass --admin-secret or set IMCTL_ADMIN_SECRET (the `imctl serve` banner shows it)"
        );
    };
    let client = AppClient::new(&args.app_server);
    let call = |method: Method, path: String, body: Option<Value>| {
        let (client, secret) = (client.clone(), secret.clone());
        async move { client.admin(&secret, method, &path, body.as_ref()).await }
    };
    let (value, human) = match args.action {
        Action::Users => {
            let v = call(Method::GET, "/admin/users".into(), None).await?;
            let lines = v["users"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|u| {
                    format!(
                        "{:<12} {:<12} {}{}",
                        cell(u["userId"].as_str().unwrap_or_default()),
                        cell(u["mobile"].as_str().unwrap_or("-")),
                        cell(u["displayName"].as_str().unwrap_or_default()),
                        if u["banned"] == true {
                            "  [banned]"
                        } else {
                            ""
                        }
                    )
                })
                .collect::<Vec<_>>()
                .join("\n");
            (v, lines)
        }
        Action::CreateUser {
            name,
            id,
            mobile,
            portrait,
        } => {
            let body =
                json!({"userId": id, "mobile": mobile, "displayName": name, "portrait": portrait});
            let v = call(Method::POST, "/admin/users".into(), Some(body)).await?;
            let human = format!("created {}", v["userId"].as_str().unwrap_or_default());
            (v, human)
        }
        Action::Connections => {
            let v = call(Method::GET, "/admin/connections".into(), None).await?;
            let lines = v["connections"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|c| {
                    format!(
                        "{:<12} {:<24} platform {}",
                        cell(c["userId"].as_str().unwrap_or_default()),
                        cell(c["clientId"].as_str().unwrap_or_default()),
                        c["platform"]
                    )
                })
                .collect::<Vec<_>>()
                .join("\n");
            (
                v,
                if lines.is_empty() {
                    "no connections".into()
                } else {
                    lines
                },
            )
        }
        Action::Ban { user } => {
            let v = call(Method::POST, format!("/admin/users/{user}/ban"), None).await?;
            let human = format!(
                "banned {user}; closed {} connection(s)",
                v["closedConnections"]
            );
            (v, human)
        }
        Action::Unban { user } => (
            call(Method::POST, format!("/admin/users/{user}/unban"), None).await?,
            format!("unbanned {user}"),
        ),
        Action::Mute { group, user } => {
            let v = call(
                Method::POST,
                format!("/admin/groups/{group}/mute"),
                Some(json!({"userId": user})),
            )
            .await?;
            (
                v,
                format!("muted {} in {group}", user.as_deref().unwrap_or("everyone")),
            )
        }
        Action::Unmute { group, user } => {
            let v = call(
                Method::POST,
                format!("/admin/groups/{group}/unmute"),
                Some(json!({"userId": user})),
            )
            .await?;
            (
                v,
                format!(
                    "unmuted {} in {group}",
                    user.as_deref().unwrap_or("everyone")
                ),
            )
        }
        Action::Dissolve { group } => (
            call(
                Method::POST,
                format!("/admin/groups/{group}/dissolve"),
                None,
            )
            .await?,
            format!("dissolved {group}"),
        ),
        Action::Message {
            to_user,
            to_group,
            text,
        } => {
            let to = match (to_user, to_group) {
                (Some(u), _) => json!({"type": "single", "target": u}),
                (None, Some(g)) => json!({"type": "group", "target": g}),
                (None, None) => unreachable!("clap requires one"),
            };
            let v = call(
                Method::POST,
                "/admin/messages".into(),
                Some(json!({"to": to, "text": text})),
            )
            .await?;
            let human = format!("sent {}", v["msgId"].as_str().unwrap_or_default());
            (v, human)
        }
    };
    if args.json {
        println!("{value}");
    } else {
        println!("{human}");
    }
    Ok(())
}
