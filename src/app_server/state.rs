//! State shared by the app-server's handlers.

use std::ops::Deref;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::FromRef;
use tokio_util::sync::CancellationToken;

use super::qr::QrBook;
use super::sms::SmsBook;
use crate::http::advertise::Advertise;
use crate::store::{AuthSession, Store};
use crate::token::{ImTokens, random_token};

#[derive(Clone)]
pub struct AppState(Arc<Inner>);

pub struct Inner {
    /// The cluster this node is in (`--nats`).
    pub cluster: Option<crate::cluster::Cluster>,
    pub store: Store,
    pub sms: SmsBook,
    pub qr: QrBook,
    pub im_tokens: ImTokens,
    /// The broker's `/route` on the default host (`imctl exec`'s environment);
    /// handlers hand out [`crate::http::advertise::PublicUrls::route_url`] instead.
    pub route_url: String,
    pub super_code: Option<String>,
    /// `/send_code` and `/login` calls per client address per minute
    /// (`None` with `--no-rate-limits`).
    pub login_rate: Option<super::rate::Window>,
    /// Password reset and deletion codes, per-account limits.
    pub accounts: super::account::Accounts,
    pub poll_timeout: Duration,
    pub session_ttl: Duration,
    /// `http://host:port` of this app-server on the default host, where there
    /// is no request (banner, OpenAPI servers); handlers use [`crate::http::advertise::PublicUrls`].
    pub base_url: String,
    /// How the URLs handed to clients are built.
    pub advertise: Advertise,
    /// The session cookie's name (`session::cookie_name`).
    pub session_cookie: String,
    /// The stack's metrics and change signal.
    pub telemetry: crate::telemetry::Telemetry,
    /// Faults injected on purpose (`imctl chaos`), shared with the broker.
    pub faults: crate::fault::Faults,
    /// The broker, for the admin API (connections, bans, system messages).
    pub broker: Arc<dyn crate::http::chat::Chat>,
    pub admin_secret: String,
    /// Where uploads are kept, and how large one may be.
    pub blobs: super::media::Blobs,
    pub max_upload: usize,
    /// Cancelled when the server shuts down, so long polls answer at once.
    pub shutdown: CancellationToken,
    /// When this stack started (ms since the epoch), for `/_dev/status`.
    pub started_at: i64,
    /// The database file, or `None` when ephemeral.
    /// The SQLite file, or the masked PostgreSQL URL; `None` in memory.
    pub database: Option<String>,
    /// `http://host:port` of the broker.
    pub broker_url: String,
    /// Listening beyond loopback (`--host`): the dev API's Host guard is off.
    pub exposed: bool,
}

impl Deref for AppState {
    type Target = Inner;
    fn deref(&self) -> &Inner {
        &self.0
    }
}

impl FromRef<AppState> for Advertise {
    fn from_ref(state: &AppState) -> Self {
        state.advertise.clone()
    }
}

/// What a successful login hands the client.
pub struct Credentials {
    pub auth_token: String,
    pub im_token: String,
}

impl AppState {
    pub fn new(inner: Inner) -> Self {
        Self(Arc::new(inner))
    }

    /// The broker's WebSocket URL.
    pub fn ws_url(&self) -> String {
        format!("{}/ws", self.broker_url.replacen("http://", "ws://", 1))
    }

    /// Opens a login session (`authToken`) and issues an IM token for it.
    pub async fn issue_credentials(
        &self,
        user_id: &str,
        client_id: &str,
        platform: i32,
    ) -> crate::store::Result<Credentials> {
        let auth_token = random_token(24);
        let session = AuthSession {
            user_id: user_id.to_owned(),
            client_id: client_id.to_owned(),
            platform,
        };
        self.store
            .create_auth_session(&auth_token, &session, self.session_ttl)
            .await?;
        Ok(Credentials {
            auth_token,
            im_token: self.im_tokens.issue(user_id, client_id, platform),
        })
    }
}
