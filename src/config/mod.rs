//! `imctl serve` options: every knob is a flag, an `IMCTL_*` variable and a
//! key of `imctl.toml` (see `file`), in that order of precedence.

pub mod file;

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Args;

/// The longest duration any option takes (longer ones would overflow clocks).
const MAX_DURATION: Duration = Duration::from_secs(365 * 24 * 3600);

pub fn duration(s: &str) -> Result<Duration, String> {
    let d =
        humantime::parse_duration(s).map_err(|e| format!("{e} (examples: 300ms, 50s, 5m, 7d)"))?;
    if d > MAX_DURATION {
        return Err(format!("{s} is longer than the maximum of 365 days"));
    }
    Ok(d)
}

/// A [`duration`] greater than zero.
pub fn positive_duration(s: &str) -> Result<Duration, String> {
    match duration(s)? {
        d if d.is_zero() => Err(format!("{s} must be greater than 0")),
        d => Ok(d),
    }
}

#[derive(Debug, Clone, Args)]
pub struct ServeConfig {
    /// Address to listen on; anything but loopback exposes the dev API and the super code
    #[arg(long, env = "IMCTL_HOST", default_value = "127.0.0.1")]
    pub host: IpAddr,

    /// Host put in every URL handed to clients (routeUrl, wsUrl, portraits, media) [default: loopback when listening on loopback; listening on 0.0.0.0 or ::, the host each request was addressed to]
    #[arg(long, env = "IMCTL_ADVERTISE_HOST", value_parser = crate::http::advertise::parse_advertise_host)]
    pub advertise_host: Option<String>,

    /// Port of the app-server (login API, web client, dev API); 0 picks a free port
    #[arg(long, env = "IMCTL_APP_PORT", default_value_t = 8888)]
    pub app_port: u16,

    /// Port of the broker (WebSocket chat); 0 picks a free port
    #[arg(long, env = "IMCTL_BROKER_PORT", default_value_t = 8083)]
    pub broker_port: u16,

    /// Where the database lives [default: the platform's data directory, e.g. ~/.local/share/imctl]
    #[arg(long, env = "IMCTL_DATA_DIR", conflicts_with = "ephemeral")]
    pub data_dir: Option<PathBuf>,

    /// The database: a SQLite file (a path, or sqlite://PATH) or a PostgreSQL database (postgres://user:pass@host:port/db, which must exist) [default: imctl.db in the data directory]
    #[arg(
        long,
        env = "IMCTL_DATABASE_URL",
        conflicts_with = "ephemeral",
        hide_env_values = true
    )]
    pub database: Option<String>,

    /// Keep everything in memory and forget it on exit (for CI)
    #[arg(long, env = "IMCTL_EPHEMERAL")]
    pub ephemeral: bool,

    /// Seed a fresh database from this JSON file instead of the built-in fixtures
    #[arg(long, env = "IMCTL_FIXTURES", conflicts_with = "no_fixtures")]
    pub fixtures: Option<PathBuf>,

    /// Start a fresh database with no users at all
    #[arg(long, env = "IMCTL_NO_FIXTURES")]
    pub no_fixtures: bool,

    /// Load this snapshot (from `imctl export`) into a new database, instead of the fixtures; refused if the database has data
    #[arg(long, env = "IMCTL_IMPORT", conflicts_with = "fixtures")]
    pub import: Option<PathBuf>,

    /// On a clean shutdown (Ctrl-C, SIGTERM), write a snapshot of the data to this file
    #[arg(long, env = "IMCTL_EXPORT_ON_EXIT")]
    pub export_on_exit: Option<PathBuf>,

    /// Login code accepted for any mobile without /send_code; "none" disables it
    #[arg(long, env = "IMCTL_SUPER_CODE", default_value = "66666")]
    pub super_code: String,

    /// How long an SMS code stays valid
    #[arg(long, env = "IMCTL_SMS_TTL", default_value = "5m", value_parser = duration)]
    pub sms_ttl: Duration,

    /// Minimum time between two SMS codes to one mobile
    #[arg(long, env = "IMCTL_SMS_INTERVAL", default_value = "60s", value_parser = duration)]
    pub sms_interval: Duration,

    /// Wrong codes after which an SMS code is burned
    #[arg(long, env = "IMCTL_SMS_MAX_ATTEMPTS", default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..))]
    pub sms_max_attempts: u32,

    /// How long a QR login session lives after /pc_session
    #[arg(long, env = "IMCTL_QR_TTL", default_value = "300s", value_parser = duration)]
    pub qr_ttl: Duration,

    /// How long /session_login holds a request before answering code 8
    #[arg(long, env = "IMCTL_POLL_TIMEOUT", default_value = "50s", value_parser = duration)]
    pub poll_timeout: Duration,

    /// Text before the token in the QR code (Wildfire's is wildfirechat://pcsession/)
    #[arg(long, env = "IMCTL_QR_PREFIX", default_value = "imctl://pcsession/")]
    pub qr_prefix: String,

    /// Extra CORS origin allowed besides loopback pages (and, with --host beyond loopback, pages on private networks); '*' reflects any origin (repeatable, or comma-separated)
    #[arg(long, env = "IMCTL_CORS_ORIGIN", value_delimiter = ',')]
    pub cors_origin: Vec<String>,

    /// Lifetime of an IM token (the broker credential)
    #[arg(long, env = "IMCTL_TOKEN_TTL", default_value = "7d", value_parser = duration)]
    pub token_ttl: Duration,

    /// Largest WebSocket frame the broker accepts, in bytes; larger ones close the connection (1009)
    #[arg(long, env = "IMCTL_MAX_FRAME", default_value_t = 64 * 1024, value_parser = clap::value_parser!(u32).range(1024..=16 * 1024 * 1024))]
    pub max_frame: u32,

    /// Close a WebSocket connection after this long without any frame from the client (pings count)
    #[arg(long, env = "IMCTL_IDLE_TIMEOUT", default_value = "90s", value_parser = duration)]
    pub idle_timeout: Duration,

    /// Close a WebSocket connection (4001) that has not sent `connect` within this long
    #[arg(long, env = "IMCTL_CONNECT_TIMEOUT", default_value = "10s", value_parser = positive_duration)]
    pub connect_timeout: Duration,

    /// Close a WebSocket connection (4009) whose client has not taken the frames written to it within this long
    #[arg(long, env = "IMCTL_WRITE_TIMEOUT", default_value = "10s", value_parser = positive_duration)]
    pub write_timeout: Duration,

    /// Bytes queued for one WebSocket connection before it counts as too slow and is closed (4009)
    #[arg(long, env = "IMCTL_QUEUE_BYTES", default_value_t = 8 * 1024 * 1024, value_parser = clap::value_parser!(u32).range(64 * 1024..))]
    pub queue_bytes: u32,

    /// Live WebSocket connections one user may have; more are refused (error 429, close 4029)
    #[arg(long, env = "IMCTL_MAX_CONNECTIONS_PER_USER", default_value_t = 16, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub max_connections_per_user: u32,

    /// WebSocket connections the broker holds at once, before `connect` included; more get 503 (lowered to fit the open-file limit)
    #[arg(long, env = "IMCTL_MAX_WEBSOCKETS", default_value_t = 50_000, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_websockets: u32,

    /// Secret of the /admin API (X-Admin-Secret header) [default: a random one, shown in the banner]
    #[arg(long, env = "IMCTL_ADMIN_SECRET", hide_env_values = true)]
    pub admin_secret: Option<String>,

    /// Largest upload accepted by POST /media, in bytes
    #[arg(long, env = "IMCTL_MAX_UPLOAD", default_value_t = 20 * 1024 * 1024)]
    pub max_upload: usize,

    /// Total bytes of uploads kept, uploads in flight included; a full quota answers 507 [default: 1 GiB on disk, 256 MiB in memory with --ephemeral]
    #[arg(long, env = "IMCTL_MEDIA_QUOTA")]
    pub media_quota: Option<u64>,

    /// How long an HTTP client may stall: sending a request's headers or the next bytes of its body, or taking the next bytes of an answer; also how long an idle keep-alive connection stays open
    #[arg(long, env = "IMCTL_HTTP_TIMEOUT", default_value = "10s", value_parser = positive_duration)]
    pub http_timeout: Duration,

    /// HTTP connections served at once per port (upgraded WebSockets not counted); beyond it a few more get /healthz and /readyz, the rest 503
    #[arg(long, env = "IMCTL_MAX_CONNECTIONS", default_value_t = 1000, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_connections: u32,

    /// How long shutdown (Ctrl-C, SIGTERM) waits for clients before closing what is left; a second signal exits at once
    #[arg(long, env = "IMCTL_SHUTDOWN_TIMEOUT", default_value = "10s", value_parser = duration)]
    pub shutdown_timeout: Duration,

    /// Live QR login sessions at once, all clients together; /pc_session answers code 3 beyond it
    #[arg(long, env = "IMCTL_MAX_QR_SESSIONS", default_value_t = 10_000, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_qr_sessions: u32,

    /// Live QR login sessions at once from one client address
    #[arg(long, env = "IMCTL_MAX_QR_SESSIONS_PER_IP", default_value_t = 1000, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_qr_sessions_per_ip: u32,

    /// SMS codes sent to one mobile per day (Wildfire's limit; --sms-test-code mobiles are exempt)
    #[arg(long, env = "IMCTL_SMS_PER_MOBILE_PER_DAY", default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..))]
    pub sms_per_mobile_per_day: u32,

    /// /send_code and /login requests from one client address per minute (the super code and --sms-test-code logins are exempt)
    #[arg(long, env = "IMCTL_LOGINS_PER_IP_PER_MINUTE", default_value_t = 200, value_parser = clap::value_parser!(u32).range(1..))]
    pub logins_per_ip_per_minute: u32,

    /// Turn off the per-mobile and per-address SMS and login limits (load tests)
    #[arg(long, env = "IMCTL_NO_RATE_LIMITS")]
    pub no_rate_limits: bool,

    /// Only friends may send each other 1:1 messages, show typing, or be put in a group together (the robot excepted)
    #[arg(long, env = "IMCTL_FRIENDS_ONLY")]
    pub friends_only: bool,

    /// Name of this broker node, reported by /route and `connected`; unique in a cluster
    #[arg(long, env = "IMCTL_NODE", default_value = "n1", value_parser = node_name)]
    pub node: String,

    /// Join a cluster through this NATS server (nats://host:4222): pushes to other nodes, the node registry and the QR and SMS state go through it; every node uses the same PostgreSQL --database
    #[arg(long, env = "IMCTL_NATS_URL", hide_env_values = true)]
    pub nats: Option<String>,

    /// How /route picks a node in a cluster: hash (a user's devices meet on one node; a node leaving moves only its users), round-robin, least-connections
    #[arg(long, env = "IMCTL_ROUTE_STRATEGY", value_enum, default_value_t = crate::cluster::RouteStrategy::Hash)]
    pub route_strategy: crate::cluster::RouteStrategy,

    /// Lifetime of an authToken (the app-server login session)
    #[arg(long, env = "IMCTL_SESSION_TTL", default_value = "30d", value_parser = duration)]
    pub session_ttl: Duration,

    /// A fixed SMS code for a mobile, MOBILE=CODE (repeatable): /send_code sends it and /login always takes it
    #[arg(long = "sms-test-code", env = "IMCTL_SMS_TEST_CODES", value_delimiter = ',', value_parser = test_code)]
    pub sms_test_code: Vec<(String, String)>,

    /// A fault to inject, `KIND key=value …` (repeatable; `imctl chaos --help` lists the kinds), e.g. "qr.ttl ms=5000"; in imctl.toml: [[fault]] rule = "…"
    #[arg(long = "fault", value_name = "RULE", env = "IMCTL_FAULTS", value_delimiter = ';', value_parser = fault_rule)]
    pub fault: Vec<crate::wire::fault::Rule>,

    /// Read settings from this TOML file; "none" reads none [default: ./imctl.toml when it exists]
    #[arg(long, env = "IMCTL_CONFIG")]
    pub config: Option<PathBuf>,
}

/// `http(s)://host[:port]` and nothing more, as browsers send `Origin`.
fn is_origin(origin: &str) -> bool {
    let origin = origin.trim_end_matches('/');
    let Some(rest) = origin
        .strip_prefix("http://")
        .or_else(|| origin.strip_prefix("https://"))
    else {
        return false;
    };
    !rest.is_empty()
        && !rest.chars().any(|c| {
            matches!(c, '/' | '*' | '?' | '#' | '@') || c.is_whitespace() || c.is_control()
        })
}

/// A node name: one NATS subject token, short enough to read in logs.
fn node_name(s: &str) -> Result<String, String> {
    let ok = (1..=32).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if ok {
        Ok(s.to_owned())
    } else {
        Err(format!(
            "{s:?}: a node name has 1 to 32 letters, digits, '-' or '_' (e.g. n2)"
        ))
    }
}

/// `MOBILE=CODE`, with a valid mobile and a code of 4 to 8 digits.
fn fault_rule(s: &str) -> Result<crate::wire::fault::Rule, String> {
    s.parse().map_err(|e| format!("bad rule: {e}"))
}

fn test_code(s: &str) -> Result<(String, String), String> {
    let (mobile, code) = s
        .split_once('=')
        .ok_or_else(|| format!("{s:?}: expected MOBILE=CODE, e.g. 13800000009=123456"))?;
    let (mobile, code) = (mobile.trim(), code.trim());
    if !crate::wire::ids::is_valid_mobile(mobile) {
        return Err(format!(
            "{mobile:?} is not a mobile number (1[3-9] followed by 9 digits)"
        ));
    }
    if !(4..=8).contains(&code.len()) || !code.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("{code:?} for {mobile}: a code has 4 to 8 digits"));
    }
    Ok((mobile.to_owned(), code.to_owned()))
}

impl ServeConfig {
    /// Refuses settings that would quietly open a door or never work; called
    /// by `server::start` before anything is bound or created.
    pub fn check(&self) -> anyhow::Result<()> {
        if let Some(secret) = &self.admin_secret
            && (secret.trim().is_empty() || secret.trim() != secret)
        {
            // HTTP trims header values, so a blank secret would match an empty header.
            anyhow::bail!(
                "--admin-secret must not be blank or start or end with spaces (an empty X-Admin-Secret header would match it); \
                 choose a real secret, or leave it out for a random one shown in the banner"
            );
        }
        if let Some(url) = &self.nats
            && url.contains("://")
            && !url.starts_with("nats://")
        {
            anyhow::bail!(
                "--nats {url:?}: give nats://HOST:PORT (imctl connects to NATS without TLS; \
                 run the nodes and NATS on a private network)"
            );
        }
        if self.nats.is_some()
            && !self
                .database
                .as_deref()
                .is_some_and(|d| d.starts_with("postgres://") || d.starts_with("postgresql://"))
        {
            anyhow::bail!(
                "--nats: the nodes of a cluster share one PostgreSQL database; add --database postgres://USER:PASS@HOST:PORT/DB \
                 (the same on every node), or try `imctl cluster --nodes 3`, which starts everything"
            );
        }
        if self.super_code.trim().is_empty() {
            anyhow::bail!(
                "--super-code must not be empty; use --super-code none to turn the super code off"
            );
        }
        if let Some(origin) = self
            .cors_origin
            .iter()
            .find(|o| o.trim() != "*" && !is_origin(o))
        {
            anyhow::bail!(
                "--cors-origin {origin:?} is not an origin: give scheme://host[:port], e.g. https://app.example.com, \
                 or '*' to let pages from any origin call the stack"
            );
        }
        Ok(())
    }

    /// `--media-quota`, or its default for where uploads live.
    pub fn media_quota(&self) -> u64 {
        const MIB: u64 = 1024 * 1024;
        self.media_quota.unwrap_or(if self.ephemeral {
            256 * MIB
        } else {
            1024 * MIB
        })
    }

    /// The super code, or `None` when disabled.
    pub fn super_code(&self) -> Option<&str> {
        match self.super_code.trim() {
            "" | "none" | "off" => None,
            code => Some(code),
        }
    }

    /// The options of `imctl serve --ephemeral --app-port 0 --broker-port 0`
    /// plus `extra`: what tests and `exec`-style embedding start from.
    pub fn ephemeral_on_free_ports(extra: &[&str]) -> Self {
        #[derive(clap::Parser)]
        struct Wrapper {
            #[command(flatten)]
            config: ServeConfig,
        }
        let args = [
            "imctl",
            "--ephemeral",
            "--app-port",
            "0",
            "--broker-port",
            "0",
        ]
        .into_iter()
        .chain(extra.iter().copied());
        <Wrapper as clap::Parser>::try_parse_from(args)
            .unwrap_or_else(|e| panic!("bad serve options {extra:?}: {e}"))
            .config
    }
}
